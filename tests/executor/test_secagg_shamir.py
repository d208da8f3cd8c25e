"""Shamir sharing over GF(2^521 - 1): any t shares rebuild the secret, t - 1 reveal nothing."""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.executor.secagg import shamir
from services.executor.secagg.errors import NotEnoughShares, ProtocolViolation


def _holders(n: int) -> dict[str, int]:
    return {f"p{i}": i + 1 for i in range(n)}


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 7), data=st.data())
def test_every_subset_of_t_shares_reconstructs(n, data):
    t = data.draw(st.integers(1, n))
    secret = os.urandom(32)
    shares = shamir.split(secret, t, _holders(n))
    for subset in itertools.combinations(shares.values(), t):
        assert shamir.reconstruct(list(subset), t) == secret


def test_t_minus_one_shares_are_refused_and_interpolate_to_something_else():
    secret = os.urandom(32)
    shares = list(shamir.split(secret, 3, _holders(5)).values())
    with pytest.raises(NotEnoughShares, match="2 shares, the threshold is 3"):
        shamir.reconstruct(shares[:2], 3)
    # Interpolating too few points gives an unrelated field element, not the secret.
    assert shamir.interpolate_at_zero(shares[:2]) != int.from_bytes(secret, "big")


def test_a_garbage_share_is_detected_not_silently_truncated():
    """A random share interpolates to a 521-bit value, which cannot be a 32-byte secret. (A
    targeted small change can pass: the server checks rebuilt mask keys against their public keys.)"""
    secret = os.urandom(32)
    shares = list(shamir.split(secret, 2, _holders(3)).values())
    bad = shamir.Share(shares[0].x, int.from_bytes(os.urandom(65), "big") % shamir.PRIME)
    with pytest.raises(ProtocolViolation, match="inconsistent"):
        shamir.reconstruct([bad, shares[1]], 2)


def test_shares_are_fresh_each_time_and_round_trip_as_bytes():
    secret = os.urandom(32)
    a, b = shamir.split(secret, 2, _holders(3)), shamir.split(secret, 2, _holders(3))
    assert a["p0"] != b["p0"]  # random coefficients (secrets.randbelow)
    blob = a["p1"].to_bytes()
    assert len(blob) == shamir.SHARE_BYTES and shamir.Share.from_bytes(blob) == a["p1"]
    with pytest.raises(ProtocolViolation):
        shamir.Share.from_bytes(blob[:-1])


def test_duplicate_indices_and_bad_thresholds_are_refused():
    with pytest.raises(ValueError):
        shamir.split(b"x" * 32, 4, _holders(3))
    with pytest.raises(ValueError):
        shamir.split(b"x" * 32, 2, {"a": 1, "b": 1})
    share = shamir.split(b"x" * 32, 2, _holders(2))["p0"]
    with pytest.raises(ProtocolViolation, match="duplicate"):
        shamir.reconstruct([share, share], 2)
