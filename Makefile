# The README's two commands: `make demo` and `make test`. Both install what is
# missing first (a virtualenv in .venv with the project and its dependencies;
# `make test` also fetches the Kafka broker's artifacts from Maven Central).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml examples/plugins/*/pyproject.toml 2>/dev/null | sha1sum | cut -c1-12)

.PHONY: install demo test kafka-up kafka-down k8s-build k8s-up k8s-down k8s-status proto bench-quick clean

$(STAMP):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	for p in examples/plugins/*/; do if [ -f "$$p/pyproject.toml" ]; then $(PY) -m pip install -q -e "$$p" || exit 1; fi; done
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m services.cli demo

test: install
	$(PY) -m shared.devtools.kafka_broker fetch
	$(PY) -m shared.devtools.k8s_cluster build
	$(PY) -m pytest -q -p no:cacheprovider

kafka-up: install
	$(PY) -m shared.devtools.kafka_broker up

kafka-down: install
	$(PY) -m shared.devtools.kafka_broker down

# A real Kubernetes control plane + kwok nodes (see README, "Kubernetes"); the first
# k8s-build compiles it from the Go module proxy into ~/.cache/ferry/k8s.
k8s-build: install
	$(PY) -m shared.devtools.k8s_cluster build

k8s-up: install
	$(PY) -m shared.devtools.k8s_cluster up $(if $(NODES),--nodes $(NODES))

k8s-down: install
	$(PY) -m shared.devtools.k8s_cluster down

k8s-status: install
	$(PY) -m shared.devtools.k8s_cluster status

proto: install
	$(PY) -m shared.wire.codegen

bench-quick: install
	for b in bench/*.py; do $(PY) $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) *.egg-info
