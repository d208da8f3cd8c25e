"""Server-side strategies: how the aggregator turns client models into the next global model.

Every strategy is a frozen dataclass of hyper-parameters with explicit state:
    state = strategy.init_state(global_weights)
    state, new_global = strategy.aggregate(state, global_weights, [(weights, n), ...])
The state (`ServerState`) is named float64 arrays plus a step counter, and
converts to (arrays, JSON meta) for np.savez(allow_pickle=False) checkpoints.

The averaging family (FedAvg, FedProx, FedAvgM, FedAdagrad/FedAdam/FedYogi)
only needs the weighted mean of the clients, so its `server_step(state, global,
average)` can run on the output of secure aggregation. The robust rules need
each client's model and cannot.

Formulas, with x the global weights and a the weighted client average:
  FedAvg      x' = a                                     (McMahan et al. 2017)
  FedProx     as FedAvg; the mu term is client-side      (Li et al. 2020)
  FedAvgM     g = x - a;  v' = momentum*v + g;  x' = x - server_lr*v'
                                                          (Hsu, Qi & Brown 2019)
  FedOpt      d = a - x;  m' = beta1*m + (1-beta1)*d
              adagrad  v' = v + d^2
              adam     v' = beta2*v + (1-beta2)*d^2
              yogi     v' = v - (1-beta2)*d^2*sign(v - d^2)
              x' = x + server_lr * m' / (sqrt(v') + tau),  m_0 = 0, v_0 = tau^2
              (Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2:
              no bias correction, v initialised to tau^2)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from shared.errors import ConfigurationError

from . import aggregation
from .weights import Update, Weights, cast_like, check_compatible, check_updates, to_float64

STRATEGIES = ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad",
              "median", "trimmed_mean", "krum")
_STATE_FORMAT = 1


@dataclass(frozen=True)
class ServerState:
    strategy: str
    step: int                                   # server steps applied so far
    slots: Mapping[str, Weights] = field(default_factory=dict)  # e.g. {"m": ..., "v": ...}


class Strategy(Protocol):
    name: str
    supports_secure_aggregation: bool

    def init_state(self, global_weights: Mapping[str, np.ndarray]) -> ServerState: ...

    def aggregate(self, state: ServerState, global_weights: Mapping[str, np.ndarray],
                  updates: Sequence[Update]) -> tuple[ServerState, Weights]: ...


def _zeros(global_weights: Mapping[str, np.ndarray], fill: float = 0.0) -> Weights:
    return {k: np.full(np.shape(v), fill, dtype=np.float64) for k, v in global_weights.items()}


def _check_state(name: str, state: ServerState, global_weights: Mapping[str, np.ndarray],
                 slots: Sequence[str]) -> None:
    if state.strategy != name:
        raise ValueError(f"server state belongs to strategy {state.strategy!r}, not {name!r}")
    if sorted(state.slots) != sorted(slots):
        raise ValueError(f"{name}: state has slots {sorted(state.slots)}, expected {sorted(slots)}")
    for slot in slots:
        check_compatible(global_weights, state.slots[slot], f"{name} state {slot!r}")


class _Averaging:
    """aggregate = weighted average of the clients, then this strategy's server step."""

    supports_secure_aggregation = True

    def aggregate(self, state: ServerState, global_weights: Mapping[str, np.ndarray],
                  updates: Sequence[Update]) -> tuple[ServerState, Weights]:
        check_updates(global_weights, updates)
        return self.server_step(state, global_weights, aggregation.weighted_average(updates))

    def server_step(self, state: ServerState, global_weights: Mapping[str, np.ndarray],
                    average: Mapping[str, np.ndarray]) -> tuple[ServerState, Weights]:
        raise NotImplementedError


@dataclass(frozen=True)
class FedAvg(_Averaging):
    name: str = "fedavg"  # "fedprox" too: same server, proximal term on the clients

    def init_state(self, global_weights: Mapping[str, np.ndarray]) -> ServerState:
        return ServerState(self.name, 0, {})

    def server_step(self, state, global_weights, average):
        _check_state(self.name, state, global_weights, ())
        check_compatible(global_weights, average, "average")
        return replace(state, step=state.step + 1), cast_like(average, global_weights)


@dataclass(frozen=True)
class FedAvgM(_Averaging):
    server_lr: float = 1.0
    momentum: float = 0.9
    name = "fedavgm"

    def __post_init__(self) -> None:
        if not self.server_lr > 0 or not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"fedavgm needs server_lr > 0 and momentum in [0, 1], got {self}")

    def init_state(self, global_weights):
        return ServerState(self.name, 0, {"momentum": _zeros(global_weights)})

    def server_step(self, state, global_weights, average):
        _check_state(self.name, state, global_weights, ("momentum",))
        check_compatible(global_weights, average, "average")
        x, a, v = to_float64(global_weights), to_float64(average), state.slots["momentum"]
        new_v = {k: self.momentum * v[k] + (x[k] - a[k]) for k in x}
        new_x = {k: x[k] - self.server_lr * new_v[k] for k in x}
        return (ServerState(self.name, state.step + 1, {"momentum": new_v}),
                cast_like(new_x, global_weights))


@dataclass(frozen=True)
class FedOpt(_Averaging):
    variant: str = "adam"           # adagrad | adam | yogi
    server_lr: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        if self.variant not in ("adagrad", "adam", "yogi"):
            raise ValueError(f"unknown FedOpt variant {self.variant!r}")
        if not (self.server_lr > 0 and self.tau > 0
                and 0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0):
            raise ValueError(f"fed{self.variant} needs server_lr > 0, tau > 0, "
                             f"beta1 and beta2 in [0, 1); got {self}")

    @property
    def name(self) -> str:
        return "fed" + self.variant

    def init_state(self, global_weights):
        return ServerState(self.name, 0, {"m": _zeros(global_weights),
                                          "v": _zeros(global_weights, self.tau ** 2)})

    def server_step(self, state, global_weights, average):
        _check_state(self.name, state, global_weights, ("m", "v"))
        check_compatible(global_weights, average, "average")
        x, a = to_float64(global_weights), to_float64(average)
        m, v = state.slots["m"], state.slots["v"]
        new_m, new_v, new_x = {}, {}, {}
        for k in x:
            d = a[k] - x[k]
            d2 = d * d
            new_m[k] = self.beta1 * m[k] + (1.0 - self.beta1) * d
            if self.variant == "adagrad":
                new_v[k] = v[k] + d2
            elif self.variant == "adam":
                new_v[k] = self.beta2 * v[k] + (1.0 - self.beta2) * d2
            else:  # yogi: v moves towards d^2 by a step that does not scale with v
                new_v[k] = v[k] - (1.0 - self.beta2) * d2 * np.sign(v[k] - d2)
            new_x[k] = x[k] + self.server_lr * new_m[k] / (np.sqrt(new_v[k]) + self.tau)
        return (ServerState(self.name, state.step + 1, {"m": new_m, "v": new_v}),
                cast_like(new_x, global_weights))


class _Robust:
    supports_secure_aggregation = False

    def init_state(self, global_weights):
        return ServerState(self.name, 0, {})

    def aggregate(self, state, global_weights, updates):
        _check_state(self.name, state, global_weights, ())
        check_updates(global_weights, updates)
        combined = self._combine(updates)
        return replace(state, step=state.step + 1), cast_like(combined, global_weights)


@dataclass(frozen=True)
class Median(_Robust):
    name = "median"

    def _combine(self, updates):
        return aggregation.coordinate_median(updates)


@dataclass(frozen=True)
class TrimmedMean(_Robust):
    trim_fraction: float = 0.1
    name = "trimmed_mean"

    def __post_init__(self) -> None:
        aggregation.trim_count(1, self.trim_fraction)  # validates the range

    def _combine(self, updates):
        return aggregation.trimmed_mean(updates, self.trim_fraction)


@dataclass(frozen=True)
class Krum(_Robust):
    f: int | None = None            # assumed Byzantine clients; None: floor(trim_fraction * n)
    trim_fraction: float = 0.1
    name = "krum"

    def byzantine_count(self, n: int) -> int:
        return self.f if self.f is not None else aggregation.trim_count(n, self.trim_fraction)

    def _combine(self, updates):
        return aggregation.krum(updates, self.byzantine_count(len(updates)))


def make_strategy(name: str, params: Mapping[str, Any] | None = None) -> Strategy:
    """The strategy a flow asked for. `params` are the step's parameters (extra keys
    such as lr or rounds are ignored); beta1, beta2, tau and krum_f are optional."""
    p = dict(params or {})
    try:
        if name in ("fedavg", "fedprox"):
            return FedAvg(name=name)
        if name == "fedavgm":
            return FedAvgM(float(p.get("server_lr", 1.0)), float(p.get("server_momentum", 0.9)))
        if name in ("fedadam", "fedyogi", "fedadagrad"):
            return FedOpt(name[3:], float(p.get("server_lr", 1.0)), float(p.get("beta1", 0.9)),
                          float(p.get("beta2", 0.99)), float(p.get("tau", 1e-3)))
        if name == "median":
            return Median()
        if name == "trimmed_mean":
            return TrimmedMean(float(p.get("trim_fraction", 0.1)))
        if name == "krum":
            f = p.get("krum_f")
            return Krum(None if f is None else int(f), float(p.get("trim_fraction", 0.1)))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"strategy {name!r}: {exc}") from exc
    raise ConfigurationError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")


def state_to_arrays(state: ServerState) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(named arrays, JSON-able meta); array names are "<slot>/<weight name>"."""
    arrays: dict[str, np.ndarray] = {}
    for slot, weights in state.slots.items():
        if "/" in slot:
            raise ValueError(f"slot name {slot!r} must not contain '/'")
        for name, arr in weights.items():
            arrays[f"{slot}/{name}"] = np.array(arr, dtype=np.float64, copy=True)
    meta = {"format": _STATE_FORMAT, "strategy": state.strategy, "step": int(state.step),
            "slots": {slot: list(weights) for slot, weights in state.slots.items()}}
    return arrays, meta


def state_from_arrays(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> ServerState:
    if meta.get("format") != _STATE_FORMAT:
        raise ValueError(f"unsupported server state format {meta.get('format')!r}")
    expected = {f"{s}/{n}" for s, names in meta["slots"].items() for n in names}
    if set(arrays) != expected:
        raise ValueError(f"server state arrays {sorted(arrays)} do not match meta {sorted(expected)}")
    slots = {s: {n: np.array(arrays[f"{s}/{n}"], dtype=np.float64, copy=True) for n in names}
             for s, names in meta["slots"].items()}
    return ServerState(str(meta["strategy"]), int(meta["step"]), slots)
