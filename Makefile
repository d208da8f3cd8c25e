# The README's two commands: `make demo` and `make test`. Both install what is
# missing first (a virtualenv in .venv with the project and its dependencies;
# `make test` also fetches the Kafka broker's artifacts from Maven Central and installs
# Debian's chromium and chromium-driver for the dashboard's browser test when missing).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml examples/plugins/*/pyproject.toml 2>/dev/null | sha1sum | cut -c1-12)

.PHONY: install demo test kafka-up kafka-down k8s-build k8s-up k8s-down k8s-status proto bench-quick clean container-tools images compose-up compose-down vendor-js

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

test: install container-tools
	$(PY) -m shared.devtools.kafka_broker fetch
	bash shared/devtools/install_chromium.sh
	$(PY) -m shared.devtools.k8s_cluster build --kubelet
	$(PY) -m pytest -q -p no:cacheprovider

kafka-up: install
	$(PY) -m shared.devtools.kafka_broker up

kafka-down: install
	$(PY) -m shared.devtools.kafka_broker down

# Docker (with containerd and runc), docker-compose, debootstrap and the CNI plugins from Debian
# (the compose test, `make images` and the development cluster's real node use them).
container-tools:
	@command -v dockerd >/dev/null && command -v docker-compose >/dev/null && command -v debootstrap >/dev/null \
	  && command -v containerd >/dev/null && test -x /usr/lib/cni/ptp \
	  || (apt-get update && apt-get install -y --no-install-recommends docker.io docker-compose debootstrap \
	      containerd runc containernetworking-plugins)

# Base images from debootstrap, Kafka from Maven Central jars, Ferry multi-stage: nothing pulled.
images: install container-tools
	$(PY) -m shared.devtools.containers build

compose-up: install container-tools
	$(PY) -m shared.devtools.containers up

compose-down: install
	$(PY) -m shared.devtools.containers down
# A real Kubernetes control plane + kwok nodes (see README, "Kubernetes"); the first
# k8s-build compiles it from the Go module proxy into ~/.cache/ferry/k8s.
k8s-build: install
	$(PY) -m shared.devtools.k8s_cluster build --kubelet

# REAL_NODE=<party>: also a real node (containerd + kubelet) running Ferry's image.
k8s-up: install $(if $(REAL_NODE),container-tools)
	$(PY) -m shared.devtools.k8s_cluster up $(if $(NODES),--nodes $(NODES)) $(if $(REAL_NODE),--real-node $(REAL_NODE))

k8s-down: install
	$(PY) -m shared.devtools.k8s_cluster down

k8s-status: install
	$(PY) -m shared.devtools.k8s_cluster status

proto: install
	$(PY) -m shared.wire.codegen

vendor-js: install
	$(PY) -m shared.devtools.vendor_js

bench-quick: install
	for b in bench/*.py; do $(PY) $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) *.egg-info
