"""ECDH-PSI (X25519 over ids hashed to the prime-order group): the pure protocol, run between two simulated parties."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from nacl import bindings as sodium

from services.executor.vertical import psi
from shared.errors import ConfigurationError, DataError


def _run(guest_ids, host_ids, context=b"ctx", pool=None):
    """The protocol's steps as the roles run them; returns (guest rows, host rows) in shared order."""
    g, h = psi.Blinder.fresh(), psi.Blinder.fresh()
    g_pts = g.hash_and_blind(context, guest_ids, pool)
    g_order = psi.sorted_order(g_pts)
    g_sent = psi.take(g_pts, g_order)
    h_pts = h.hash_and_blind(context, host_ids, pool)
    h_order = psi.sorted_order(h_pts)
    h_sent = psi.from_array(psi.to_array(psi.take(h_pts, h_order)), "host")
    g_double = b"".join(h.blind(part, "guest", pool) for part in psi.batches(g_sent, 7))
    h_double = g.blind(h_sent, "host", pool)
    mine, theirs = psi.matches(g_double, h_double)
    guest_rows = g_order[mine]
    host_rows = h_order[np.sort(theirs)]
    g_aligned = guest_rows[psi.shared_order(context, [guest_ids[r] for r in guest_rows])]
    h_aligned = host_rows[psi.shared_order(context, [host_ids[r] for r in host_rows])]
    return g_aligned, h_aligned, (g_sent, h_sent, g_double, h_double)


def _points(blob: bytes) -> set[bytes]:
    return {blob[i:i + psi.POINT_BYTES] for i in range(0, len(blob), psi.POINT_BYTES)}


def test_both_sides_find_exactly_the_shared_ids_in_the_same_order():
    rng = np.random.default_rng(0)
    guest = rng.permutation(np.arange(0, 3000))
    host = rng.permutation(np.arange(1500, 5000))
    with ThreadPoolExecutor(2) as pool:  # several batches per side, on both cores
        g_rows, h_rows, _ = _run(psi.id_bytes(guest), psi.id_bytes(host), pool=pool)
    assert sorted(guest[g_rows].tolist()) == list(range(1500, 3000))
    assert guest[g_rows].tolist() == host[h_rows].tolist()          # aligned: same id at every position
    assert guest[g_rows].tolist() != sorted(guest[g_rows].tolist())  # the order is not the ids' order


def test_the_pool_changes_nothing_but_speed():
    ids, b = psi.id_bytes(np.arange(4500)), psi.Blinder.fresh()
    with ThreadPoolExecutor(2) as pool:
        assert b.hash_and_blind(b"c", ids, pool) == b.hash_and_blind(b"c", ids)


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
    assert not _points(g_sent) & _points(h_sent)              # same ids, different secret scalars
    a = psi.Blinder.fresh()
    assert not _points(a.hash_and_blind(b"one", ids)) & _points(a.hash_and_blind(b"two", ids))
    assert psi.context_of("f", "t1") != psi.context_of("f", "t2") != psi.context_of("f1", "t")
    assert psi.context_of("ab", "c") != psi.context_of("a", "bc")  # length-prefixed: no ambiguity
    assert psi.context_of("f", "t", ["a", "b"]) == psi.context_of("f", "t", ["b", "a", "b"])  # every party's view
    assert psi.context_of("f", "t", ["a", "b"]) != psi.context_of("f", "t", ["a", "c"])


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


def test_small_order_points_are_refused_naming_the_sender_and_torsion_is_annihilated():
    """A point of small order would pin the blinded value to a few possibilities; libsodium refuses
    it and the role names who sent it. A point with a small-order component blinds to the same
    value as the point without it (the clamped scalar is a multiple of the cofactor): it leaks nothing."""
    blinder = psi.Blinder.fresh()
    good = blinder.hash_and_blind(b"c", [b"1", b"2"])
    for bad in (bytes(32), (1).to_bytes(32, "little")):   # u = 0 (order 2) and u = 1 (order 4)
        with pytest.raises(DataError, match="lab sent a PSI point of small order"):
            blinder.blind(good + bad, "lab")
    point = sodium.crypto_core_ed25519_from_uniform(bytes(range(32)))
    order_8 = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
    mixed = sodium.crypto_core_ed25519_add(point, order_8)
    assert blinder.blind(psi.to_montgomery(mixed), "lab") == blinder.blind(psi.to_montgomery(point), "lab")


def test_hashed_ids_are_the_group_points_libsodium_maps_to_curve25519():
    points = [sodium.crypto_core_ed25519_from_uniform(bytes([i]) * 32) for i in range(1, 30)]
    assert [psi.to_montgomery(p) for p in points] == [sodium.crypto_sign_ed25519_pk_to_curve25519(p) for p in points]
    hashed = psi.hash_to_group(b"c", [b"1", b"2", b"1"])
    assert hashed[0] == hashed[2] != hashed[1]


def test_blinding_commutes_and_a_fresh_scalar_is_a_fresh_key():
    a, b = psi.Blinder.fresh(), psi.Blinder.fresh()
    assert a.scalar != b.scalar
    h = a.hash_and_blind(b"c", [b"x"])
    assert b.blind(h, "a") == a.blind(b.hash_and_blind(b"c", [b"x"]), "b")
