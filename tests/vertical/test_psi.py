"""ECDH-PSI over ristretto255: the pure protocol, run between two simulated parties."""

from __future__ import annotations

import numpy as np
import pytest

from services.executor.vertical import psi
from shared.errors import ConfigurationError, DataError


def _run(guest_ids, host_ids, context=b"ctx", workers=1):
    """The protocol's steps as the roles run them; returns (guest rows, host rows) in shared order."""
    g, h = psi.Blinder.fresh(), psi.Blinder.fresh()
    g_pts = g.hash_and_blind(context, guest_ids, workers)
    g_order = psi.sorted_order(g_pts)
    g_sent = [g_pts[i] for i in g_order]
    h_pts = h.hash_and_blind(context, host_ids, workers)
    h_order = psi.sorted_order(h_pts)
    h_sent = psi.from_array(psi.to_array([h_pts[i] for i in h_order]), "host")
    g_double = h.blind(g_sent, workers)
    h_double = g.blind(h_sent, workers)
    mine, theirs = psi.matches(g_double, h_double)
    guest_rows = g_order[mine]
    host_rows = h_order[np.sort(theirs)]
    g_aligned = guest_rows[psi.shared_order(context, [guest_ids[r] for r in guest_rows])]
    h_aligned = host_rows[psi.shared_order(context, [host_ids[r] for r in host_rows])]
    return g_aligned, h_aligned, (g_sent, h_sent, g_double, h_double)


def test_both_sides_find_exactly_the_shared_ids_in_the_same_order():
    rng = np.random.default_rng(0)
    guest = rng.permutation(np.arange(0, 600))
    host = rng.permutation(np.arange(300, 1000))
    g_rows, h_rows, _ = _run(psi.id_bytes(guest), psi.id_bytes(host), workers=2)
    assert sorted(guest[g_rows].tolist()) == list(range(300, 600))
    assert guest[g_rows].tolist() == host[h_rows].tolist()          # aligned: same id at every position
    assert guest[g_rows].tolist() != sorted(guest[g_rows].tolist())  # the order is not the ids' order


def test_the_shared_order_depends_only_on_ids_and_context_not_on_keys_or_store_order():
    ids = psi.id_bytes(np.arange(50))
    first, _, _ = _run(ids, ids, b"flow-1/step")
    again, _, _ = _run(ids[::-1], ids, b"flow-1/step")
    assert [ids[i] for i in first] == [ids[::-1][i] for i in again]
    other, _, _ = _run(ids, ids, b"flow-2/step")
    assert first.tolist() != other.tolist()


def test_blinded_points_reveal_nothing_recognisable_and_contexts_separate():
    ids = psi.id_bytes(np.arange(20))
    _, _, (g_sent, h_sent, _, _) = _run(ids, ids)
    assert not set(g_sent) & set(h_sent)              # same ids, different secret scalars
    a = psi.Blinder.fresh()
    assert not set(a.hash_and_blind(b"one", ids)) & set(a.hash_and_blind(b"two", ids))
    assert psi.context_of("f", "t1") != psi.context_of("f", "t2") != psi.context_of("f1", "t")
    assert psi.context_of("ab", "c") != psi.context_of("a", "bc")  # length-prefixed: no ambiguity


def test_ids_are_canonical_across_dtypes_and_byte_widths():
    assert psi.id_bytes(np.array([7, 42], np.int32)) == psi.id_bytes(np.array([7, 42], np.uint64)) == [b"7", b"42"]
    padded = np.zeros((2, 8), np.uint8)
    padded[0, :3] = list(b"abc")
    padded[1, :2] = list(b"xy")
    assert psi.id_bytes(padded) == [b"abc", b"xy"]
    with pytest.raises(ConfigurationError, match="integers or fixed-width byte strings"):
        psi.id_bytes(np.array([1.5, 2.5]))
    with pytest.raises(DataError, match="duplicate"):
        psi.check_unique([b"1", b"2", b"1"], "dataset d")


def test_malformed_points_are_refused_naming_the_sender():
    with pytest.raises(DataError, match="lab sent PSI points"):
        psi.from_array(np.zeros((3, 31), np.uint8), "lab")
