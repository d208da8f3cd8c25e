from __future__ import annotations

import json

import pytest
import yaml

from services.splitter.core.flow_document import parse_flow_document
from shared.errors import ValidationFailed
from shared.events import FlowSubmitted, PartyRole, StepSpec

FULL = """
flow: breast-cancer-fedavg
id: bc-1
labels: {team: oncology}
parties:
  hospital-a: {data: breast_cancer}
  hospital-b: {data: bc_b}
  coordinator:
steps:
  - name: standardise
    algorithm: ferry.standardise
    version: 1
    parties:
      client: [hospital-a, {party: hospital-b, data: override}]
      aggregator: coordinator
  - name: train
    algorithm: ferry.fedavg
    version: "1"
    params: {rounds: 5, lr: 0.1}
    parties:
      client: [hospital-a, hospital-b]
      aggregator: [coordinator]
    depends_on: standardise
"""


def errors_of(source, **kwargs) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        parse_flow_document(source, **kwargs)
    return {e.path: e.reason for e in caught.value.errors}


def test_a_full_document_becomes_the_flow_it_describes():
    flow = parse_flow_document(FULL, default_flow_id="ignored", submitted_by="alice")
    assert flow == FlowSubmitted(
        "bc-1", "breast-cancer-fedavg",
        (StepSpec("standardise", "ferry.standardise", "1", {},
                  (PartyRole("hospital-a", "client", "breast_cancer"), PartyRole("hospital-b", "client", "override"),
                   PartyRole("coordinator", "aggregator", "")), ()),
         StepSpec("train", "ferry.fedavg", "1", {"rounds": 5, "lr": 0.1},
                  (PartyRole("hospital-a", "client", "breast_cancer"), PartyRole("hospital-b", "client", "bc_b"),
                   PartyRole("coordinator", "aggregator", "")), ("standardise",))),
        "alice", {"team": "oncology"})


def test_json_text_bytes_and_loaded_mappings_parse_like_yaml():
    as_yaml = parse_flow_document(FULL)
    document = yaml.safe_load(FULL)
    assert parse_flow_document(json.dumps(document)) == as_yaml
    assert parse_flow_document(FULL.encode()) == as_yaml
    assert parse_flow_document(document) == as_yaml


def test_the_callers_flow_id_is_used_when_the_document_has_none():
    document = FULL.replace("id: bc-1\n", "")
    assert parse_flow_document(document, default_flow_id="flow-abc").flow_id == "flow-abc"
    assert "caller supplies no flow id" in errors_of(document)["id"]


@pytest.mark.parametrize("text, fragment", [
    ("flow: x\nsteps: [\n  - name: a\n", "line "),
    ("flow: x\n  bad: indentation\nsteps: []\n", "line 2, column"),
    ("- just\n- a list\n", "must be a mapping, got a list"),
    ("", "got an empty document"),
    (b"flow: \xff\n", "not UTF-8"),
])
def test_unreadable_documents_are_reported_at_the_root(text, fragment):
    errors = errors_of(text)
    assert list(errors) == ["$"]
    assert fragment in errors["$"]


def test_duplicate_keys_are_an_error_not_a_silent_overwrite():
    text = "flow: x\nsteps:\n  - name: a\n    params: {}\n    params: {rounds: 2}\n"
    assert "duplicate key 'params'" in errors_of(text)["$"]
    assert "line 5" in errors_of(text)["$"]


def test_yaml_merge_keys_may_be_overridden():
    text = """
flow: x
id: f
steps:
  - &base {name: a, algorithm: ferry.noop, version: "1", parties: {worker: n}}
  - <<: *base
    name: b
"""
    assert [s.name for s in parse_flow_document(text).steps] == ["a", "b"]


@pytest.mark.parametrize("text, path, fragment", [
    ("flow: x\nid: f\nstep: []\n", "step", "did you mean 'steps'"),
    ("flow: x\nid: f\nsteps: [{name: a, algorithm: n, version: '1', parties: {}, depend_on: [b]}]\n",
     "steps[0].depend_on", "did you mean 'depends_on'"),
    ("flow: x\nid: f\nsteps: [{name: a, algorithm: n, version: '1', parties: {w: [{party: p, dat: d}]}}]\n",
     "steps[0].parties.w[0].dat", "did you mean 'data'"),
    ("flow: x\nid: f\nparties: {p: {dataset: d}}\nsteps: []\n", "parties.p.dataset", "did you mean 'data'"),
    ("flow: x\nid: f\nzzz: 1\nsteps: []\n", "zzz", "known keys: flow, id, labels, parties, steps"),
])
def test_unknown_keys_suggest_the_closest_known_one(text, path, fragment):
    assert fragment in errors_of(text)[path]


def test_missing_required_keys_are_each_reported():
    errors = errors_of("labels: {}\nsteps: [{name: a, parties: {w: p}}]\n", default_flow_id="f")
    assert {path for path, reason in errors.items() if reason == "is required"} == {
        "flow", "steps[0].algorithm", "steps[0].version"}


@pytest.mark.parametrize("steps_yaml, path, fragment", [
    ("steps: {a: 1}", "steps", "must be a list of steps, got dict"),
    ("steps: [train]", "steps[0]", "a step must be a mapping, got str"),
    ("steps: [{name: 3, algorithm: a, version: '1', parties: {}}]", "steps[0].name", "must be a string, got int"),
    ("steps: [{name: a, algorithm: a, version: 1.0, parties: {}}]", "steps[0].version", "quote it"),
    ("steps: [{name: a, algorithm: a, version: '1', params: [1], parties: {}}]", "steps[0].params",
     "must be a mapping of parameters, got list"),
    ("steps: [{name: a, algorithm: a, version: '1', parties: [p]}]", "steps[0].parties",
     "must map each role to its parties"),
    ("steps: [{name: a, algorithm: a, version: '1', parties: {client: [p, 7]}}]", "steps[0].parties.client[1]",
     "must be a party name or {party: NAME, data: DATASET}, got int"),
    ("steps: [{name: a, algorithm: a, version: '1', parties: {client: 7}}]", "steps[0].parties.client",
     "must be a party or a list of parties"),
    ("steps: [{name: a, algorithm: a, version: '1', parties: {w: p}, depends_on: 4}]", "steps[0].depends_on",
     "must be a list of step names"),
    ("steps: [{name: a, algorithm: a, version: '1', parties: {w: p}, depends_on: [b, ~]}]",
     "steps[0].depends_on[1]", "got null"),
    ("labels: {team: 5}\nsteps: []", "labels.team", "must be strings (quote them)"),
    ("parties: [a, b]\nsteps: []", "parties", "must be a mapping of party"),
    ("parties: {a: data}\nsteps: []", "parties.a", "must be a mapping like {data: DATASET}"),
])
def test_wrong_types_name_the_field(steps_yaml, path, fragment):
    assert fragment in errors_of(f"flow: x\nid: f\n{steps_yaml}\n")[path]


@pytest.mark.parametrize("params_yaml, path, fragment", [
    ("{start: 2024-01-01}", "steps[0].params.start", "a date cannot be carried as JSON"),
    ("{lr: .nan}", "steps[0].params.lr", "must be a finite number"),
    ("{seed: 123456789012345678901}", "steps[0].params.seed", "too large"),
    ("{grid: [{1: a}]}", "steps[0].params.grid[0].1", "keys must be strings"),
])
def test_params_must_be_json(params_yaml, path, fragment):
    step = f"{{name: a, algorithm: a, version: '1', parties: {{w: p}}, params: {params_yaml}}}"
    text = f"flow: x\nid: f\nsteps: [{step}]\n"
    assert fragment in errors_of(text)[path]


def test_every_structural_problem_is_reported_at_once():
    text = """
flow: 7
steps:
  - name: a
    algorithm: ferry.noop
    version: "1"
    parties: {worker: [node-a, 3]}
    params: {x: .inf}
  - name: b
    algorithm: ferry.noop
    parties: {worker: node-b}
    depend_on: [a]
"""
    assert set(errors_of(text)) == {"flow", "id", "steps[0].parties.worker[1]", "steps[0].params.x",
                                    "steps[1].version", "steps[1].depend_on"}


def test_alias_bombs_are_refused_before_anything_walks_them():
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    text = "\n".join(levels) + "\nflow: x\nsteps: []\n"  # 10^10 nodes once expanded
    assert "aliases expand the document past" in errors_of(text)["$"]


def test_a_self_referencing_alias_is_refused():
    assert "an alias refers to itself" in errors_of("flow: &loop [*loop]\nsteps: []\n")["$"]
