"""The federation's ACLs as data: what each role may do, derived from the topic catalogue."""
from __future__ import annotations

import struct

from shared.kafka_acls import (GROUP, PREFIXED, READ, TOPIC, WRITE, AclBinding, decode_create_acls,
                               encode_create_acls, federation_acls)


def _rights(principal: str) -> set[tuple[str, str]]:
    names = {READ: "Read", WRITE: "Write"}
    return {(names.get(a.operation, str(a.operation)), a.resource_name)
            for a in federation_acls() if a.principal == principal}


def test_a_party_writes_round_traffic_progress_its_exit_and_dead_letters_and_reads_only_rounds():
    assert _rights("User:party") == {("Write", "ferry.rounds"), ("Write", "ferry.progress"),
                                     ("Write", "ferry.observations"), ("Write", "ferry.dead-letters"),
                                     ("Read", "ferry.rounds")}


def test_the_monitor_may_declare_an_executor_lost():
    assert ("Write", "ferry.observations") in _rights("User:monitor")


def test_upstream_submits_flows_and_reads_verdicts_only():
    rights = _rights("User:upstream")
    assert ("Write", "ferry.flows") in rights and ("Read", "ferry.flows.rejected") in rights
    assert not any(op == "Write" and name != "ferry.flows" for op, name in rights)
    assert ("Read", "ferry.flows") not in rights


def test_services_read_their_inputs_and_use_only_their_own_group():
    acls = federation_acls()
    assert AclBinding("User:scheduler", TOPIC, "ferry.tasks.planned", 3, READ) in acls
    assert AclBinding("User:scheduler", TOPIC, "ferry.jobs", 3, READ) in acls  # rebuilds from its output
    groups = {(a.principal, a.resource_name) for a in acls if a.resource_type == GROUP}
    assert groups == {("User:splitter", "ferry-splitter"), ("User:scheduler", "ferry-scheduler"),
                      ("User:monitor", "ferry-monitor"), ("User:upstream", "ferry-upstream")}
    assert all(a.pattern == PREFIXED for a in acls if a.resource_type == GROUP)


def test_no_acl_names_a_role_without_rights_or_a_super_user():
    principals = {a.principal for a in federation_acls()}
    assert principals == {"User:splitter", "User:scheduler", "User:monitor", "User:party", "User:upstream"}


def test_create_acls_wire_format():
    body = encode_create_acls([AclBinding("User:party", TOPIC, "ferry.rounds", 3, READ)])
    assert body == (struct.pack(">i", 1) + b"\x02" + struct.pack(">h", 12) + b"ferry.rounds" + b"\x03"
                    + struct.pack(">h", 10) + b"User:party" + struct.pack(">h", 1) + b"*" + b"\x03\x03")
    resp = struct.pack(">ii", 0, 2) + struct.pack(">hh", 0, -1) + struct.pack(">hh", 31, 4) + b"nope"
    assert decode_create_acls(resp) == [(0, None), (31, "nope")]
