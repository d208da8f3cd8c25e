"""The hetero-LR protocol math, encrypted and plain, against the same computation in the clear.

The Paillier tests use 512-bit keys: they check the protocol's arithmetic, which
does not depend on the key size (the default and the bench use 2048 bits).
"""

from __future__ import annotations

import numpy as np
import pytest

from services.executor.vertical import lr
from services.executor.vertical.paillier import PaillierBackend, PaillierDecryptor, PlainBackend, PlainDecryptor
from shared.errors import DataError

TEST_KEY_BITS = 512  # protocol logic only; see the module docstring


@pytest.fixture(scope="module")
def paillier():
    return PaillierDecryptor(TEST_KEY_BITS)


def _batch(seed=0, n=12, fg=3, fh=4):
    rng = np.random.default_rng(seed)
    x_g, x_h = lr.with_intercept(rng.normal(size=(n, fg))), rng.normal(size=(n, fh))
    w_g, w_h = rng.normal(size=fg + 1) * 0.5, rng.normal(size=fh) * 0.5
    y = lr.labels_pm(rng.integers(0, 2, n), "t")
    return x_g, x_h, w_g, w_h, y


def _one_batch(backend, decryptor, x_g, x_h, w_g, w_h, y):
    """The messages of one mini-batch, each through the wire form; returns what each party ends with."""
    u_h, enc_u, enc_s = lr.host_forward(backend, w_h, x_h)
    wire_u, wire_s = backend.to_wire(enc_u), backend.to_wire([enc_s])      # host -> guest
    enc_u, enc_s = backend.from_wire(wire_u, "host"), backend.from_wire(wire_s, "host")[0]
    u_g = x_g @ w_g
    enc_wx, enc_d = lr.guest_residual(backend, [enc_u], u_g, y)
    enc_d = backend.from_wire(backend.to_wire(enc_d), "guest")             # guest -> host
    loss = decryptor.decrypt(backend.to_wire([lr.guest_loss_sum(backend, enc_wx, [enc_u], [enc_s], [], u_g, y)]),
                             "guest")[0]
    grads = {}
    for name, x in (("guest", x_g), ("host", x_h)):
        masked, masks = backend.mask(lr.gradient_sum(backend, enc_d, x))
        exponents = [getattr(m, "exponent", 0) for m in masked]
        answer = decryptor.decrypt_masked(backend.to_wire(masked), name)   # party -> arbiter -> party
        grads[name] = backend.unmask(answer, masks, exponents, "arbiter")
    return grads, loss


@pytest.mark.parametrize("kind", ["paillier", "plain"])
def test_one_batch_gives_the_gradients_and_loss_of_the_joined_table(kind, paillier):
    backend, decryptor = (paillier.backend, paillier) if kind == "paillier" else (PlainBackend(), PlainDecryptor())
    x_g, x_h, w_g, w_h, y = _batch()
    grads, loss = _one_batch(backend, decryptor, x_g, x_h, w_g, w_h, y)
    want_grad, want_loss = lr.taylor_reference(np.concatenate([x_g, x_h], axis=1), y, np.concatenate([w_g, w_h]))
    np.testing.assert_allclose(np.concatenate([grads["guest"], grads["host"]]), want_grad, rtol=1e-6, atol=1e-6)
    assert loss == pytest.approx(want_loss, rel=1e-6)


@pytest.mark.parametrize("kind", ["paillier", "plain"])
def test_two_hosts_the_loss_with_cross_terms_and_the_gradients_match_the_joined_table(kind, paillier):
    backend, decryptor = (paillier.backend, paillier) if kind == "paillier" else (PlainBackend(), PlainDecryptor())
    x_g, x_h, w_g, w_h, y = _batch(3, fh=5)
    parts = [(x_h[:, :2], w_h[:2]), (x_h[:, 2:], w_h[2:])]  # host 1 and host 2
    sent = [lr.host_forward(backend, w, x) for x, w in parts]
    enc_u = [backend.from_wire(backend.to_wire(e), "h") for _, e, _ in sent]
    enc_s = [backend.from_wire(backend.to_wire([s]), "h")[0] for _, _, s in sent]
    cross = [lr.cross_term(backend, backend.from_wire(backend.to_wire(enc_u[0]), "g"), sent[1][0])]  # at host 2
    u_g = x_g @ w_g
    enc_wx, enc_d = lr.guest_residual(backend, enc_u, u_g, y)
    loss = decryptor.decrypt(backend.to_wire([lr.guest_loss_sum(backend, enc_wx, enc_u, enc_s, cross, u_g, y)]), "g")[0]
    grads = [decryptor.decrypt(backend.to_wire(lr.gradient_sum(backend, enc_d, x)), "p") for x in (x_g, *(x for x, _ in parts))]
    want_grad, want_loss = lr.taylor_reference(np.concatenate([x_g, x_h], axis=1), y, np.concatenate([w_g, w_h]))
    np.testing.assert_allclose(np.concatenate(grads), want_grad, rtol=1e-6, atol=1e-6)
    assert loss == pytest.approx(want_loss, rel=1e-6)


def test_what_the_arbiter_decrypts_is_uniformly_masked(paillier):
    backend = paillier.backend
    x_g, x_h, w_g, w_h, y = _batch(1)
    _, enc_u, _ = lr.host_forward(backend, w_h, x_h)
    _, enc_d = lr.guest_residual(backend, [enc_u], x_g @ w_g, y)
    grad = lr.gradient_sum(backend, enc_d, x_h)
    seen = [int.from_bytes(row.tobytes(), "big")
            for row in paillier.decrypt_masked(backend.to_wire(backend.mask(grad)[0]), "host")["m"]]
    # Unmasked, a gradient's encoding is a small number (or n minus one); masked it spans Z_n.
    assert all(v.bit_length() > TEST_KEY_BITS - 40 for v in seen)
    assert min(v for v in seen) < backend.n - 2 ** 200


def test_ciphertexts_leave_re_randomised(paillier):
    backend = paillier.backend
    enc = backend.encrypt(np.array([1.0, 2.0]))
    derived = backend.scale(enc, 0.25)
    first = backend.to_wire(derived)["c"]
    again = backend.to_wire(backend.scale(enc, 0.25))["c"]
    assert not np.array_equal(first, again)  # same plaintexts, fresh randomness each time
    np.testing.assert_allclose(paillier.decrypt({"c": first, "e": backend.to_wire(derived)["e"]}, "x"), [0.25, 0.5])


def test_malformed_ciphertexts_and_keys_are_refused_naming_the_sender(paillier):
    backend = paillier.backend
    with pytest.raises(DataError, match="lab sent ciphertexts"):
        backend.from_wire({"c": np.zeros((2, 3), np.uint8), "e": np.zeros(2, np.int64)}, "lab")
    with pytest.raises(DataError, match="coordinator sent a 512-bit Paillier modulus"):
        PaillierBackend.from_key_wire(backend.key_wire(), "coordinator", 2048)
    with pytest.raises(DataError, match="binary labels"):
        lr.labels_pm(np.array([0, 1, 2]), "d")


def test_schedules_batches_and_splits_are_the_same_at_every_party():
    assert lr.learning_rate("inverse_sqrt", 0.4, 3.0, 1) == pytest.approx(0.2)
    assert lr.learning_rate("inverse", 0.4, 1.0, 3) == pytest.approx(0.1)
    assert lr.learning_rate("constant", 0.4, 1.0, 3) == 0.4
    a, b = lr.batch_positions(100, 32, 7, 2), lr.batch_positions(100, 32, 7, 2)
    assert [x.tolist() for x in a] == [x.tolist() for x in b] and sorted(np.concatenate(a).tolist()) == list(range(100))
    assert lr.batch_positions(100, 32, 7, 3)[0].tolist() != a[0].tolist()
    train, test = lr.split_positions(50, 0.2, 3)
    assert len(test) == 10 and not set(train) & set(test) and len(train) + len(test) == 50


def test_sgd_on_the_taylor_gradient_learns_a_separable_problem():
    rng = np.random.default_rng(2)
    x = lr.with_intercept(rng.normal(size=(400, 4)))
    y01 = (x[:, 0] - 2 * x[:, 1] + 0.5 > 0).astype(int)
    w = np.zeros(5)
    for epoch in range(30):
        for pos in lr.batch_positions(400, 64, 0, epoch):
            grad, _ = lr.taylor_reference(x[pos], lr.labels_pm(y01[pos], "t"), w)
            w = lr.step(w, grad, len(pos), lr.learning_rate("inverse_sqrt", 0.5, 0.1, epoch), 0.001, True)
    assert lr.scores(lr.sigmoid(x @ w), y01)["accuracy"] > 0.95
