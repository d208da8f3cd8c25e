"""Flow documents: the human-written form of a flow, in YAML or JSON.

    flow: breast-cancer-fedavg            # required: the flow's display name
    id: bc-2024-06-01                     # optional: the flow id; else the caller's default_flow_id
    labels: {team: oncology}              # optional: string -> string metadata
    parties:                              # optional: defaults per party
      hospital-a: {data: breast_cancer}   #   data: dataset used when a step entry names none
      coordinator: {}
    steps:                                # required: a non-empty list, run in dependency order
      - name: train                       # required
        algorithm: ferry.fedavg           # required
        version: "1"                      # required; a bare integer (1) reads as "1"
        params: {rounds: 5, lr: 0.1}      # optional: JSON values; defaults come from the algorithm
        parties:                          # required: role -> a party, or a list of them, where
          client:                         #   each party is a name or {party: NAME, data: DATASET}
            - hospital-a
            - {party: hospital-b, data: breast_cancer_b}
          aggregator: coordinator
        depends_on: [standardise]         # optional: step names (a single name is fine too)

JSON is read by the same YAML loader (see yaml_text), so either works;
duplicate keys are an error rather than YAML's silent "last one wins". A step party's data_ref is its
entry's `data`, else `parties.<party>.data`, else empty (validation then
complains if the role needs data).

This module checks structure only: types, required and unknown keys (with a
did-you-mean), values a protobuf Struct can carry. Whether names, algorithms,
roles and dependencies make sense is `validation.validate_flow`'s job. Every
problem found is reported at once in one `ValidationFailed`, each with the path
of the offending field (``steps[1].parties.client[0]``; ``$`` for the document).
"""

from __future__ import annotations

from typing import Any, Mapping

from services.splitter.core.document_values import (Errors, check_keys, json_problems, kind, party_list,
                                                    step_names, string)
from services.splitter.core.yaml_text import load_yaml
from shared.errors import ValidationFailed
from shared.events import FieldError, FlowSubmitted, StepSpec

FLOW_KEYS = ("flow", "id", "labels", "parties", "steps")
# The text of a flow document, checked before any parsing: an encoded flow may be at most
# 1 MB (FlowLimits.max_encoded_bytes), and comments and indentation rarely double that.
MAX_DOCUMENT_BYTES = 2_000_000
STEP_KEYS = ("name", "algorithm", "version", "params", "parties", "depends_on")
PARTY_DEFAULT_KEYS = ("data",)


def parse_flow_document(source: str | bytes | Mapping[str, Any], default_flow_id: str | None = None,
                        submitted_by: str = "") -> FlowSubmitted:
    """The flow a document describes; raises ValidationFailed listing every structural problem."""
    document = source if isinstance(source, Mapping) else load_document(source)
    errors: Errors = []
    flow = _flow(document, default_flow_id, submitted_by, errors)
    if errors:
        raise ValidationFailed(errors)
    return flow


def check_document_size(size: int) -> None:
    if size > MAX_DOCUMENT_BYTES:
        raise ValidationFailed([FieldError("$", f"the document is {size} bytes; the limit is {MAX_DOCUMENT_BYTES} "
                                                f"(checked before parsing)")])


def load_document(text: str | bytes) -> Mapping[str, Any]:
    check_document_size(len(text))  # characters of a str: at most its UTF-8 bytes, a cheap lower bound
    document = load_yaml(text)
    if not isinstance(document, Mapping):
        got = "an empty document" if document is None else f"a {type(document).__name__}"
        raise ValidationFailed([FieldError("$", f"a flow document must be a mapping, got {got}")])
    return document


def _flow(document: Mapping[str, Any], default_flow_id: str | None, submitted_by: str,
          errors: Errors) -> FlowSubmitted:
    check_keys(document, "", FLOW_KEYS, ("flow", "steps"), errors)
    name = string(document.get("flow"), "flow", errors)
    if document.get("id") is not None:
        flow_id = string(document["id"], "id", errors)
    elif default_flow_id:
        flow_id = default_flow_id
    else:
        flow_id = ""
        errors.append(FieldError("id", "is required when the caller supplies no flow id"))
    labels = _labels(document.get("labels"), errors)
    data_defaults = _party_defaults(document.get("parties"), errors)
    raw_steps = document.get("steps")
    steps: tuple[StepSpec, ...] = ()
    if raw_steps is not None and not isinstance(raw_steps, list):
        errors.append(FieldError("steps", f"must be a list of steps, got {kind(raw_steps)}"))
    elif isinstance(raw_steps, list):
        parsed = (_step(raw, f"steps[{i}]", data_defaults, errors) for i, raw in enumerate(raw_steps))
        steps = tuple(s for s in parsed if s is not None)
    return FlowSubmitted(flow_id, name, steps, submitted_by, labels)


def _step(raw: Any, path: str, data_defaults: Mapping[str, str], errors: Errors) -> StepSpec | None:
    if not isinstance(raw, Mapping):
        errors.append(FieldError(path, f"a step must be a mapping, got {kind(raw)}"))
        return None
    check_keys(raw, path, STEP_KEYS, ("name", "algorithm", "version", "parties"), errors)
    params = raw.get("params")
    if params is None:
        params = {}
    elif isinstance(params, Mapping):
        errors.extend(json_problems(params, f"{path}.params"))
    else:
        errors.append(FieldError(f"{path}.params", f"must be a mapping of parameters, got {kind(params)}"))
        params = {}
    return StepSpec(
        name=string(raw.get("name"), f"{path}.name", errors),
        algorithm=string(raw.get("algorithm"), f"{path}.algorithm", errors),
        version=_version(raw.get("version"), f"{path}.version", errors),
        params=dict(params),
        parties=party_list(raw.get("parties"), f"{path}.parties", data_defaults, errors),
        depends_on=step_names(raw.get("depends_on"), f"{path}.depends_on", errors),
    )


def _version(value: Any, path: str, errors: Errors) -> str:
    # YAML reads `version: 1` as an int; its text is unambiguous. `1.10` as a float is not.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        errors.append(FieldError(path, f"must be a string; quote it, e.g. version: \"{value}\""))
        return ""
    return string(value, path, errors)


def _labels(value: Any, errors: Errors) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        errors.append(FieldError("labels", f"must be a mapping of strings, got {kind(value)}"))
        return {}
    labels = {}
    for key, label in value.items():
        if not isinstance(key, str) or not isinstance(label, str):
            errors.append(FieldError(f"labels.{key}", f"keys and values must be strings (quote them), "
                                                     f"got {kind(key)}: {kind(label)}"))
        else:
            labels[key] = label
    return labels


def _party_defaults(value: Any, errors: Errors) -> dict[str, str]:
    """party -> default data_ref."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        errors.append(FieldError("parties", f"must be a mapping of party -> {{data: DATASET}}, got {kind(value)}"))
        return {}
    defaults = {}
    for party, settings in value.items():
        path = f"parties.{party}"
        if not isinstance(party, str):
            errors.append(FieldError(path, f"party names must be strings, got {kind(party)}"))
        elif settings is not None and not isinstance(settings, Mapping):
            errors.append(FieldError(path, f"must be a mapping like {{data: DATASET}}, got {kind(settings)}"))
        elif settings is not None:
            check_keys(settings, path, PARTY_DEFAULT_KEYS, (), errors)
            if settings.get("data") is not None:
                defaults[party] = string(settings["data"], f"{path}.data", errors)
    return defaults

