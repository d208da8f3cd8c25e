"""Hetero logistic regression (Hardy et al. 2017; FATE's hetero-LR with an arbiter). Pure.

Rows are aligned across parties (a PSI step); the guest holds the label and
features x_g (plus the intercept), each host features x_h. With the second-order
Taylor expansion of the logistic loss around 0 and labels y in {-1, +1}:

    loss_i ≈ log 2 - y_i wx_i / 2 + (wx_i)^2 / 8,   d_i = wx_i / 4 - y_i / 2,   grad = X^T d

where wx_i = u_g,i + Σ_h u_h,i and u_p = x_p w_p. Per mini-batch:

    host    -> guest : [[u_h]], [[Σ u_h²]]          (encrypted under the arbiter's key)
    guest   -> hosts : [[d]]                          (re-randomised)
    guest   -> host h': [[u_h]] of each host h < h'; h' -> guest: [[Σ u_h u_h']]  (2+ hosts: the loss's cross terms)
    each    -> arbiter: [[X_p^T d + r_p]]             (r_p uniform mask, only its owner knows it)
    guest   -> arbiter: [[Σ loss_i]]
    arbiter -> each  : X_p^T d + r_p decrypted; the owner removes r_p and steps.

No party sees another's features, the labels or another's gradient; the arbiter
sees masked gradients and the batch loss (which it uses for the convergence check).
Every function here takes a backend (paillier.PaillierBackend or PlainBackend),
so the same code runs encrypted and in the clear.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from shared.errors import ConfigurationError, DataError

LN2 = math.log(2.0)
SCHEDULES = ("constant", "inverse", "inverse_sqrt")


def labels_pm(y: np.ndarray, dataset: str) -> np.ndarray:
    """Binary labels {0, 1} as {-1, +1}."""
    values = set(np.unique(np.asarray(y)).tolist())
    if not values <= {0, 1}:
        raise DataError(f"dataset {dataset!r}: hetero logistic regression needs binary labels 0/1, "
                        f"got values {sorted(values)[:10]}")
    return np.where(np.asarray(y) == 1, 1.0, -1.0)


@dataclass(frozen=True)
class Standardiser:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> "Standardiser":
        std = x.std(axis=0)
        return cls(x.mean(axis=0), np.where(std > 0, std, 1.0))

    @classmethod
    def identity(cls, width: int) -> "Standardiser":
        return cls(np.zeros(width), np.ones(width))

    def apply(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


def split_positions(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) positions of the aligned rows: every party computes the same ones."""
    order = np.random.default_rng([int(seed), 0x7E57]).permutation(n)
    n_test = int(round(n * float(test_fraction)))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def batch_positions(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Mini-batches of one epoch, positions into the training rows; the same at every party."""
    order = np.random.default_rng([int(seed), int(epoch), 0xBA7C]).permutation(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def learning_rate(schedule: str, lr: float, decay: float, epoch: int) -> float:
    if schedule == "constant":
        return lr
    if schedule == "inverse":
        return lr / (1.0 + decay * epoch)
    if schedule == "inverse_sqrt":
        return lr / math.sqrt(1.0 + decay * epoch)
    raise ConfigurationError(f"params.lr_schedule must be one of {SCHEDULES}, got {schedule!r}")


def with_intercept(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, np.ones((len(x), 1))], axis=1)


def host_forward(backend, w: np.ndarray, x: np.ndarray):
    """(u, [[u]], [[Σ u²]]) of one batch."""
    u = x @ w
    return u, backend.encrypt(u), backend.encrypt(np.array([u @ u]))[0]


def guest_residual(backend, enc_u_hosts: list, u_g: np.ndarray, y_pm: np.ndarray):
    """([[wx]], [[d]]) with d = wx/4 - y/2."""
    enc_wx = enc_u_hosts[0]
    for enc in enc_u_hosts[1:]:
        enc_wx = backend.add(enc_wx, enc)
    enc_wx = backend.add_plain(enc_wx, u_g)
    return enc_wx, backend.add_plain(backend.scale(enc_wx, 0.25), -0.5 * y_pm)


def guest_loss_sum(backend, enc_wx, enc_u_hosts: list, enc_s_hosts: list, enc_cross: list,
                   u_g: np.ndarray, y_pm: np.ndarray):
    """[[Σ_i loss_i]] = n log 2 - Σ y wx / 2 + Σ wx² / 8, where
    Σ wx² = Σ u_g² + 2 Σ_h Σ u_g u_h + Σ_h [[Σ u_h²]] + 2 Σ_{h<h'} [[Σ u_h u_h']]
    (the cross terms between hosts come from the hosts, see `cross_term`)."""
    terms = [backend.dot(enc_wx, -0.5 * y_pm)]
    terms += [backend.dot(enc_u, 0.25 * u_g) for enc_u in enc_u_hosts]
    terms += list(backend.scale(list(enc_s_hosts), 0.125)) + list(backend.scale(list(enc_cross), 0.25))
    return backend.total(terms) + float(len(y_pm) * LN2 + 0.125 * (u_g @ u_g))


def cross_term(backend, enc_u_other, u_mine: np.ndarray):
    """[[Σ_i u_other,i u_mine,i]]: what a host adds to the loss for each host before it."""
    return backend.dot(enc_u_other, u_mine)


def gradient_sum(backend, enc_d, x: np.ndarray):
    """[[X^T d]]: the batch's gradient, summed over its rows (divided by the batch size in the clear)."""
    return backend.xt_dot(enc_d, x)


def step(w: np.ndarray, grad_sum: np.ndarray, n: int, lr: float, alpha: float, intercept: bool) -> np.ndarray:
    """One SGD step with L2 penalty alpha (not on the intercept, the guest's last weight)."""
    penalty = alpha * w
    if intercept:
        penalty[-1] = 0.0
    return w - lr * (grad_sum / n + penalty)


def taylor_reference(x: np.ndarray, y_pm: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, float]:
    """What the protocol computes, on the joined table in the clear: (X^T d, Σ loss_i). For tests."""
    wx = x @ w
    d = 0.25 * wx - 0.5 * y_pm
    return x.T @ d, float(len(y_pm) * LN2 - 0.5 * (y_pm @ wx) + 0.125 * (wx @ wx))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))


def scores(proba: np.ndarray, y01: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, log-loss and ROC AUC of predicted probabilities."""
    y01 = np.asarray(y01).astype(int)
    p = np.clip(proba, 1e-12, 1 - 1e-12)
    out = {"accuracy": float(np.mean((proba >= threshold).astype(int) == y01)),
           "logloss": float(-np.mean(y01 * np.log(p) + (1 - y01) * np.log(1 - p))), "n": float(len(y01))}
    pos, neg = proba[y01 == 1], proba[y01 == 0]
    if len(pos) and len(neg):
        ranks = np.argsort(np.argsort(np.concatenate([pos, neg]))) + 1.0
        out["auc"] = float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))
    return out
