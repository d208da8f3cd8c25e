"""Primitives: share encryption bound to its round, PRG masks, signatures, pinned identity keys."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from services.executor.secagg import crypto
from services.executor.secagg.crypto import RoundContext
from services.executor.secagg.errors import BadCiphertext, BadSignature, UntrustedKey
from services.executor.federation.identity import Trust, in_memory_federation
from services.executor.secagg.keys import KeyRing
from services.executor.secagg.messages import Stage, check, signed

ROUND3 = RoundContext("flow-1", "flow-1.train", "train", 3, 1)


def _pairs():
    return crypto.x25519_pair(), crypto.x25519_pair()


def _encrypt(ctx, a, b, text=b"share of b and s"):
    key = crypto.share_key(a[0], b[1], ctx, "alice", "bob")
    return crypto.seal(key, text, ctx.info("share", "alice", "bob"))


def _decrypt(ctx, a, b, blob):
    key = crypto.share_key(b[0], a[1], ctx, "alice", "bob")
    return crypto.unseal(key, blob, ctx.info("share", "alice", "bob"), "share from alice to bob")


def test_a_share_decrypts_for_its_recipient_in_its_round():
    a, b = _pairs()
    assert _decrypt(ROUND3, a, b, _encrypt(ROUND3, a, b)) == b"share of b and s"


def test_a_share_encrypted_for_round_3_does_not_decrypt_as_round_4():
    a, b = _pairs()
    blob = _encrypt(ROUND3, a, b)
    for other in (dataclasses.replace(ROUND3, round=4), dataclasses.replace(ROUND3, attempt=2),
                  dataclasses.replace(ROUND3, task_id="flow-2.train"), dataclasses.replace(ROUND3, flow_id="x")):
        with pytest.raises(BadCiphertext, match="another round/attempt"):
            _decrypt(other, a, b, blob)


def test_the_key_binds_direction_and_stage():
    a, b = _pairs()
    shared = crypto.agree(a[0], b[1])
    assert shared == crypto.agree(b[0], a[1])  # X25519 is symmetric ...
    keys = {crypto.share_key(a[0], b[1], ROUND3, "alice", "bob"),
            crypto.share_key(a[0], b[1], ROUND3, "bob", "alice"),
            crypto.hkdf(shared, ROUND3.info("pair-mask", "alice", "bob"))}
    assert len(keys) == 3  # ... the derived keys are not


def test_tampered_ciphertext_and_wrong_associated_data_are_rejected():
    a, b = _pairs()
    blob = bytearray(_encrypt(ROUND3, a, b))
    blob[20] ^= 1
    with pytest.raises(BadCiphertext, match="authentication failed"):
        _decrypt(ROUND3, a, b, bytes(blob))
    key = crypto.share_key(b[0], a[1], ROUND3, "alice", "bob")
    with pytest.raises(BadCiphertext):
        crypto.unseal(key, _encrypt(ROUND3, a, b), ROUND3.info("share", "alice", "carol"), "misdirected")


def test_prg_is_a_deterministic_keystream_of_uniform_words():
    words = crypto.prg_words(b"k" * 32, 100_000)
    assert words.dtype == np.uint32 and words.shape == (100_000,)
    assert np.array_equal(words, crypto.prg_words(b"k" * 32, 100_000))
    assert np.mean(words == crypto.prg_words(b"j" * 32, 100_000)) < 1e-3
    assert abs(words.astype(np.float64).mean() / 2 ** 32 - 0.5) < 0.005
    # prefix-stable: a shorter stream is the start of a longer one
    assert np.array_equal(crypto.prg_words(b"k" * 32, 10), words[:10])


def test_pair_masks_agree_on_both_sides_and_self_masks_depend_on_the_round():
    (a_sk, a_pk), (b_sk, b_pk) = _pairs()
    m_ab = crypto.pair_mask(a_sk, b_pk, ROUND3, "alice", "bob", 64)
    assert np.array_equal(m_ab, crypto.pair_mask(b_sk, a_pk, ROUND3, "bob", "alice", 64))
    seed = b"s" * 32
    r3 = crypto.self_mask(seed, ROUND3, "alice", 64)
    assert not np.array_equal(r3, crypto.self_mask(seed, dataclasses.replace(ROUND3, round=4), "alice", 64))
    assert not np.array_equal(r3, crypto.self_mask(seed, ROUND3, "bob", 64))


def test_signatures_cover_header_blobs_round_and_recipient():
    ring = KeyRing.generate("alice")
    message = signed(ROUND3, ring, Stage.MASKED, "coordinator", {"note": 1}, {"y": b"\x01\x02"})
    check(ROUND3, message, ring.public)
    for forged in (dataclasses.replace(message, header={"note": 2}),
                   dataclasses.replace(message, blobs={"y": b"\x01\x03"}),
                   dataclasses.replace(message, recipient="mallory"),
                   dataclasses.replace(message, stage=Stage.SHARES)):
        with pytest.raises(BadSignature, match="from alice"):
            check(ROUND3, forged, ring.public)
    with pytest.raises(BadSignature):
        check(dataclasses.replace(ROUND3, round=4), message, ring.public)
    with pytest.raises(BadSignature):
        check(ROUND3, message, KeyRing.generate("alice").public)


def test_pinned_identity_keys_reject_any_other_key():
    alice, mallory = KeyRing.generate("alice"), KeyRing.generate("mallory")
    ring = KeyRing.generate("coordinator", pinned={"alice": alice.public})
    assert ring.accept("alice", alice.public) == alice.public
    with pytest.raises(UntrustedKey, match="the key registry pins"):
        ring.accept("alice", mallory.public)
    with pytest.raises(UntrustedKey, match="no pinned identity key"):
        ring.accept("bob", mallory.public)
    # without pins nothing is trusted, unless trust on first use is asked for by name
    with pytest.raises(UntrustedKey, match="no pinned identity key"):
        KeyRing.generate("coordinator").accept("bob", mallory.public)
    tofu = KeyRing.generate("coordinator", trust_on_first_use=True)
    assert tofu.accept("bob", mallory.public) == mallory.public


def test_the_executors_ring_takes_its_pins_from_the_federation_registry():
    trusts = in_memory_federation(["alice", "coordinator"])
    ring = KeyRing.from_trust(trusts["alice"])
    assert ring.public == trusts["alice"].identity.public and not ring.trust_on_first_use
    assert ring.accept("coordinator", trusts["coordinator"].identity.public)
    with pytest.raises(UntrustedKey):
        ring.accept("coordinator", KeyRing.generate("x").public)
    insecure = KeyRing.from_trust(Trust(trusts["alice"].identity, None))
    assert insecure.trust_on_first_use
