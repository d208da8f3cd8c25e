from __future__ import annotations

import re

import pytest

from services.splitter.core.naming import MAX_ID_LENGTH, algo_task_id, derived_id, is_safe_name, task_id

# what Kubernetes accepts as a label value and as a DNS-1123 subdomain, both at most 63 characters
LABEL_VALUE = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")


def assert_kubernetes_safe(identifier: str) -> None:
    assert len(identifier) <= MAX_ID_LENGTH
    assert LABEL_VALUE.match(identifier), identifier
    assert all(label and label[0].isalnum() and label[-1].isalnum() for label in identifier.split("."))


@pytest.mark.parametrize("name, safe", [
    ("a", True), ("node-a", True), ("0x1", True), ("a" * 63, True),
    ("", False), ("a" * 64, False), ("-a", False), ("a-", False), ("A", False), ("a_b", False), ("a.b", False),
])
def test_safe_names_are_dns_1123_labels(name, safe):
    assert is_safe_name(name) is safe


def test_short_ids_are_the_readable_parts_joined_by_dots():
    assert task_id("flow-1", "train") == "flow-1.train"
    assert algo_task_id("flow-1", "train", "hospital-a", "client") == "flow-1.train.hospital-a.client"


def test_the_separator_keeps_ids_of_different_flows_apart():
    assert task_id("a-b", "c") != task_id("a", "b-c")


def test_long_ids_are_cut_and_suffixed_with_a_hash_of_the_exact_parts():
    flow = "f" * 30
    long_a = algo_task_id(flow, "train", "hospital-" + "a" * 20, "client")
    long_b = algo_task_id(flow, "train", "hospital-" + "a" * 19 + "b", "client")
    for identifier in (long_a, long_b):
        assert_kubernetes_safe(identifier)
        assert identifier.startswith(flow + ".train.hospital")
        assert re.search(r"-[0-9a-f]{12}$", identifier)
    assert long_a != long_b
    assert long_a == algo_task_id(flow, "train", "hospital-" + "a" * 20, "client")


@pytest.mark.parametrize("parts", [
    ("flow", "step", "party", "Client_Role"), ("flow", "step", "party", "___"), ("x" * 63, "y" * 63),
    ("-.-", "a"),
])
def test_unsafe_or_oversized_parts_still_give_kubernetes_safe_ids(parts):
    identifier = derived_id(*parts)
    assert_kubernetes_safe(identifier)
    assert identifier != ".".join(parts)


def test_sanitising_never_merges_distinct_parts():
    assert derived_id("flow", "Role_A") != derived_id("flow", "role-a")
