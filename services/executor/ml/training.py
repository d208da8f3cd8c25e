"""Deterministic local training and evaluation (the client's half of a round).

Determinism is what makes "suspend + resume = uninterrupted" testable bit for
bit: the batch order of epoch e is a permutation drawn from
SeedSequence([seed, tag, e]); the models use no RNG in forward/backward; the
optimizer state goes in and out as named arrays. Training epochs
[0, 4) in one call therefore equals [0, 2) then [2, 4) with the state carried
over. Callers pass epoch_offset = round * local_epochs (a global epoch index),
so (seed, round, epoch) picks one order without collisions. Batch order is not
secret, so a seeded numpy generator is fine.

Centralized training is this same loop over pooled rows (train_centralized).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .local_dp import LocalDp, dp_sgd_epoch
from .metrics import classification_metrics
from .models import ModelSpec, build_model, get_weights, weight_views
from .weights import Weights, check_compatible

OPTIMIZERS = ("sgd", "adam")
# What each optimizer keeps per parameter (plain SGD: nothing).
_STATE_SLOTS = {"sgd": (), "adam": ("step", "exp_avg", "exp_avg_sq")}
_BATCH_ORDER_TAG = 0x0BA7C4  # keeps these streams apart from other uses of the same seed


@dataclass(frozen=True)
class TrainConfig:
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.1
    optimizer: str = "sgd"
    mu: float = 0.0             # FedProx proximal weight (Li et al. 2020); 0 disables it
    local_dp: LocalDp | None = None  # DP-SGD on this party's rows (local_dp.py); None: plain SGD/Adam

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.local_epochs < 1 or self.batch_size < 1 or not self.lr > 0 or self.mu < 0:
            raise ValueError(f"invalid training config {self}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "TrainConfig":
        # mu is the FedProx term: it applies only when the flow chose fedprox.
        mu = float(params.get("mu", 0.0)) if params.get("strategy") == "fedprox" else 0.0
        dp = (LocalDp(float(params.get("local_dp_clip", 1.0)), float(params.get("local_dp_noise_multiplier", 1.0)))
              if params.get("local_dp") else None)
        return cls(int(params.get("local_epochs", 1)), int(params.get("batch_size", 32)),
                   float(params.get("lr", 0.1)), str(params.get("optimizer", "sgd")), mu, dp)


@dataclass(frozen=True)
class TrainResult:
    weights: Weights
    num_examples: int                       # training rows; the FedAvg weight
    loss: float                             # mean cross-entropy over the batches of this call
    optimizer_state: dict[str, np.ndarray]  # "<param>/<slot>" -> array; {} for plain SGD
    elapsed_s: float
    dp_steps: int = 0                       # DP-SGD steps taken (local DP), for the accountant


def warm_up_torch() -> None:
    """Pay torch's one-off lazy import now, before a role says it is ready to train.

    The first torch.optim optimizer a process builds imports torch._dynamo: seconds on a quiet
    machine, 7-15 s on this loaded 2-core one, and it used to land inside a client's first round
    (first-round train_s 13-15 s against 0.24 s for the second), delaying every party of that
    round and eating into its round_timeout_s.
    """
    import torch._dynamo  # noqa: F401


def batch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence([seed, _BATCH_ORDER_TAG, epoch]))
    return rng.permutation(n)


def _make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    # foreach=False: one fixed kernel path, whatever torch picks as default on this host.
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, foreach=False)
    return torch.optim.SGD(params, lr=config.lr, foreach=False)


def _optimizer_state_arrays(opt: torch.optim.Optimizer, names: list[str]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for index, slots in opt.state_dict()["state"].items():
        for slot, value in slots.items():
            if value is None:
                continue
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"optimizer state {slot!r} is not a tensor")
            out[f"{names[index]}/{slot}"] = value.detach().cpu().numpy().copy()
    return out


def _load_optimizer_state(opt: torch.optim.Optimizer, config: TrainConfig,
                          params: list[tuple[str, nn.Parameter]],
                          arrays: Mapping[str, np.ndarray]) -> None:
    # torch would accept a partial or foreign state silently (and re-init the rest),
    # which would break resume = uninterrupted without a trace: insist on all of it.
    expected = {f"{name}/{slot}" for name, _ in params for slot in _STATE_SLOTS[config.optimizer]}
    if set(arrays) != expected:
        raise ValueError(f"optimizer state does not fit a {config.optimizer} optimizer of this "
                         f"model: missing {sorted(expected - set(arrays))}, "
                         f"unexpected {sorted(set(arrays) - expected)}")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for i, (name, param) in enumerate(params):
        slots = state.setdefault(i, {})
        for slot in _STATE_SLOTS[config.optimizer]:
            arr = np.asarray(arrays[f"{name}/{slot}"])
            if slot != "step" and tuple(arr.shape) != tuple(param.shape):
                raise ValueError(f"optimizer state {name}/{slot} has shape {arr.shape}, "
                                 f"the parameter {tuple(param.shape)}")
            # torch.tensor copies and keeps the dtype (Adam's float32 step included): bit exact.
            slots[slot] = torch.tensor(arr)
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})


def _as_tensors(X, y) -> tuple[torch.Tensor, torch.Tensor]:
    x_t = torch.tensor(np.asarray(X, dtype=np.float32))
    y_t = torch.tensor(np.asarray(y, dtype=np.int64))
    if x_t.ndim != 2 or y_t.ndim != 1 or x_t.shape[0] != y_t.shape[0]:
        raise ValueError(f"need X (rows, features) and y (rows,), got {tuple(x_t.shape)} and "
                         f"{tuple(y_t.shape)}")
    return x_t, y_t


def train_local(model: nn.Module, X, y, config: TrainConfig, *, epoch_offset: int, seed: int,
                global_weights: Mapping[str, np.ndarray] | None = None,
                optimizer_state: Mapping[str, np.ndarray] | None = None,
                share_weights: bool = False) -> TrainResult:
    """Trains `model` in place for config.local_epochs epochs, numbered from epoch_offset.

    global_weights: the round's global model, the FedProx anchor (required when mu > 0;
    the model's weights are not used instead, since after a resume they are mid-round).
    optimizer_state: as returned by a previous call, to continue it; None starts fresh.
    share_weights: the result's weights are read-only views of the model's parameters
    (weight_views), not a copy: a model's worth less memory for a caller that uses them
    before it changes the model again.
    """
    started = time.perf_counter()
    x_t, y_t = _as_tensors(X, y)
    n = int(x_t.shape[0])
    if n == 0:
        raise ValueError("no training rows")
    named = list(model.named_parameters())
    names, params = [name for name, _ in named], [p for _, p in named]
    opt = _make_optimizer(config, params)
    if optimizer_state:
        _load_optimizer_state(opt, config, named, optimizer_state)
    anchor: list[torch.Tensor] | None = None
    if config.mu > 0:
        if global_weights is None:
            raise ValueError("FedProx (mu > 0) needs the round's global_weights")
        check_compatible(weight_views(model), global_weights, "global_weights")
        anchor = [torch.tensor(np.asarray(global_weights[name], dtype=np.float32)) for name in names]

    model.train()
    loss_sum, seen = 0.0, 0
    if config.local_dp is not None:  # Poisson batches and noise from the OS CSPRNG: not reproducible
        prox = (lambda: 0.5 * config.mu * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor))) \
            if anchor is not None else None
        steps = 0
        for _ in range(config.local_epochs):
            epoch_loss, epoch_seen, epoch_steps = dp_sgd_epoch(model, x_t, y_t, opt, config.local_dp,
                                                               config.batch_size, prox)
            loss_sum, seen, steps = loss_sum + epoch_loss, seen + epoch_seen, steps + epoch_steps
        return TrainResult(_weights(model, share_weights), n, loss_sum / max(seen, 1), _optimizer_state_arrays(opt, names),
                           time.perf_counter() - started, steps)
    for e in range(config.local_epochs):
        order = torch.from_numpy(batch_order(n, seed, epoch_offset + e))
        for start in range(0, n, config.batch_size):
            idx = order[start:start + config.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x_t[idx]), y_t[idx])
            objective = loss
            if anchor is not None:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor))
                objective = loss + 0.5 * config.mu * prox
            objective.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            seen += len(idx)
    return TrainResult(_weights(model, share_weights), n, loss_sum / seen,
                       _optimizer_state_arrays(opt, names), time.perf_counter() - started)


def _weights(model: nn.Module, share: bool) -> Weights:
    return weight_views(model) if share else get_weights(model)


def train_centralized(spec: ModelSpec, X, y, config: TrainConfig, epochs: int, *,
                      seed: int = 0) -> TrainResult:
    """The baseline: train_local over pooled rows for `epochs` epochs from a fresh model."""
    model = build_model(spec, seed)
    return train_local(model, X, y, replace(config, local_epochs=epochs), epoch_offset=0, seed=seed)


EVAL_ACTIVATION_BYTES = 32 << 20  # the widest layer's output per scoring batch


def eval_batch_rows(model: nn.Module, n_features: int, most: int = 4096) -> int:
    """Rows scored at a time: up to `most`, fewer when the widest dense layer's float32 output would
    pass EVAL_ACTIVATION_BYTES (4,096 rows of a 65,536-unit layer are 1 GiB, and twice that with
    its ReLU; 128 rows are 32 MiB and score as fast). Rows are scored independently: the batch
    size changes no score in exact arithmetic (and none bit for bit with this machine's MKL)."""
    width = max([n_features] + [int(p.shape[0]) for p in model.parameters() if p.ndim == 2])
    return max(1, min(most, EVAL_ACTIVATION_BYTES // (4 * width)))


@torch.no_grad()
def evaluate(model: nn.Module, X, y, *, batch_size: int | None = None) -> dict[str, Any]:
    """loss (mean cross-entropy), accuracy, per-class precision/recall/f1/support, n, confusion.
    batch_size: rows per forward pass (default eval_batch_rows)."""
    x_t, y_t = _as_tensors(X, y)
    batch_size = batch_size or eval_batch_rows(model, int(x_t.shape[1]))
    was_training = model.training
    model.eval()
    try:
        logits = torch.cat([model(x_t[i:i + batch_size])
                            for i in range(0, max(len(x_t), 1), batch_size)])
    finally:
        model.train(was_training)
    n_classes = int(logits.shape[1])
    n = int(y_t.shape[0])
    loss = float(F.cross_entropy(logits, y_t, reduction="sum")) / n if n else 0.0
    metrics = classification_metrics(y_t.numpy(), logits.argmax(dim=1).numpy(), n_classes)
    return {"loss": loss, **metrics}
