"""The round setup: what the aggregator commits to before any client trains.

The ANNOUNCE of round r carries one setup, and ANNOUNCE is signed like every
round message, so the setup is the aggregator's signed word: the digest of the
global model, the cohort, the secure-aggregation threshold, the clip and
weight bounds and the minimum cohort. A client trains only if

- the model it received hashes to the digest (no per-client models),
- it is in the cohort, and the cohort is at least the flow's minimum
  (no cohort of two with a colluding client),
- the threshold is the flow's rule for that cohort size (> n/2, up to 2n/3 on
  request), recomputed by the client from its own step params,
- the bounds are the flow's own.

Under secure aggregation the transcript hash is bound into every key, nonce
and signature of the round (RoundContext), so consistency signatures given in
one run of a round are worthless in any other.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from services.executor.secagg.graph import degree
from shared.errors import FerryError

DOMAIN = b"ferry-round-setup/v1"
SECURE_MIN_COHORT = 3   # a sum of two inputs reveals the other one to either party
MAX_THRESHOLD_FRACTION = 2 / 3


class SetupRejected(FerryError):
    """A round setup a client refuses to train for; `reason` is a short label for metrics."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class RoundSetup:
    round: int
    attempt: int
    model_digest: str
    cohort: tuple[str, ...]
    min_cohort: int
    n_features: int
    n_classes: int
    secure: bool = False
    threshold: int = 0           # secure aggregation: Shamir t for this cohort
    clip: float = 0.0            # secure aggregation: per-coordinate clip C of the quantizer
    clip_norm: float = 0.0       # L2 bound of each update's delta (0: none declared)
    weight_scale: float = 0.0    # secure aggregation: client weight = min(1, num_examples / scale)
    graph: str = "full"          # secure aggregation: full, or the SecAgg+ sparse graph over the cohort

    def to_body(self) -> bytes:
        return canonical(asdict(self))

    @classmethod
    def from_body(cls, body: bytes) -> "RoundSetup":
        try:
            raw = json.loads(body)
            raw["cohort"] = tuple(str(c) for c in raw["cohort"])
            setup = cls(**raw)
        except (ValueError, TypeError, KeyError) as exc:
            raise SetupRejected("bad_setup", f"the ANNOUNCE body is not a round setup: {exc}") from exc
        return setup

    def digest(self) -> str:
        return hashlib.sha256(DOMAIN + self.to_body()).hexdigest()


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def model_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256(DOMAIN + b"/model")
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        little = a.astype(a.dtype.newbyteorder("<"), copy=False)
        h.update(canonical([name, little.dtype.str, list(a.shape)]))
        h.update(memoryview(np.ascontiguousarray(little).reshape(-1).view(np.uint8)))  # no copy
    return h.hexdigest()


# --- the flow's rules, computed alike by the aggregator and every client ------------------

def min_cohort(params: Mapping[str, Any]) -> int:
    secure = bool(params.get("secure_aggregation"))
    return max(int(params.get("min_clients") or 1), int(params.get("min_cohort") or 0),
               SECURE_MIN_COHORT if secure else 1)


def secagg_graph(params: Mapping[str, Any]) -> str:
    return str(params.get("secagg_graph") or "full")


def sharing_group(params: Mapping[str, Any], n: int) -> int:
    """How many parties hold shares of one client's secrets: the cohort (full graph), or the
    client and its k neighbours (SecAgg+ sparse graph)."""
    return degree(secagg_graph(params), n) + 1


def cohort_threshold(params: Mapping[str, Any], n: int) -> int:
    """Shamir t for a cohort of n: above m/2 always, above fraction * m when the flow asks (<= 2/3),
    with m the sharing group (the cohort, or a neighbourhood under the sparse graph). Under the full
    graph t is also at least min_clients; under the sparse one min_clients bounds the cohort instead
    (min_cohort), since no neighbourhood holds every client."""
    m = sharing_group(params, n)
    fraction = min(max(float(params.get("secagg_threshold_fraction") or 0.5), 0.5), MAX_THRESHOLD_FRACTION)
    floor = int(params.get("min_clients") or 1) if secagg_graph(params) == "full" else 1
    return max(math.floor(fraction * m) + 1, int(params.get("secagg_threshold") or 0), floor, 2)


def clip_norm(params: Mapping[str, Any]) -> float:
    return float(params.get("update_clip_norm") or 0.0)


def check_setup(setup: RoundSetup, me: str, model: Mapping[str, np.ndarray], params: Mapping[str, Any],
                *, clip: float = 0.0) -> None:
    """Raises SetupRejected unless a client may train for this setup."""
    if model_digest(model) != setup.model_digest:
        raise SetupRejected("model_digest", f"round {setup.round}: the model received does not match the "
                                            f"signed digest {setup.model_digest[:16]}...")
    if me not in setup.cohort:
        raise SetupRejected("not_in_cohort", f"round {setup.round}: {me} is not in the cohort {list(setup.cohort)}")
    if len(set(setup.cohort)) != len(setup.cohort):
        raise SetupRejected("bad_cohort", f"round {setup.round}: the cohort names a party twice")
    need = min_cohort(params)
    if setup.min_cohort != need or len(setup.cohort) < need:
        raise SetupRejected("cohort_too_small", f"round {setup.round}: cohort of {len(setup.cohort)} "
                                                f"(setup says minimum {setup.min_cohort}); the flow's minimum is {need}")
    if bool(setup.secure) != bool(params.get("secure_aggregation")):
        raise SetupRejected("wrong_mode", f"round {setup.round}: secure={setup.secure}, the flow says "
                                          f"secure_aggregation={bool(params.get('secure_aggregation'))}")
    if setup.clip_norm != clip_norm(params):
        raise SetupRejected("wrong_bounds", f"round {setup.round}: clip_norm {setup.clip_norm}, the flow says "
                                            f"{clip_norm(params)}")
    if setup.secure:
        if setup.graph != secagg_graph(params):
            raise SetupRejected("wrong_mode", f"round {setup.round}: graph {setup.graph!r}, the flow says "
                                              f"secagg_graph={secagg_graph(params)!r}")
        t, m = cohort_threshold(params, len(setup.cohort)), sharing_group(params, len(setup.cohort))
        if setup.threshold != t or not 2 * setup.threshold > m or t > m:
            raise SetupRejected("threshold", f"round {setup.round}: threshold {setup.threshold} for a cohort "
                                             f"of {len(setup.cohort)} (sharing groups of {m}); the flow's rule gives {t}")
        if setup.clip != clip:
            raise SetupRejected("wrong_bounds", f"round {setup.round}: clip {setup.clip}, the flow says {clip}")
        if not setup.weight_scale > 0 or not math.isfinite(setup.weight_scale):
            raise SetupRejected("wrong_bounds", f"round {setup.round}: weight scale {setup.weight_scale}")


def setup_for(params: Mapping[str, Any], *, round: int, attempt: int, global_w: Mapping[str, np.ndarray],
              shape: Mapping[str, Any], cohort, clip: float = 0.0, weight_scale: float = 0.0) -> RoundSetup:
    """The aggregator's setup of a round; it refuses to announce one its clients would refuse."""
    secure = bool(params.get("secure_aggregation"))
    cohort = tuple(sorted(cohort))
    need = min_cohort(params)
    if len(cohort) < need:
        raise SetupRejected("cohort_too_small", f"round {round}: only {len(cohort)} clients {list(cohort)} to "
                                                f"sample, the flow's minimum cohort is {need}")
    threshold = cohort_threshold(params, len(cohort)) if secure else 0
    if secure and threshold > sharing_group(params, len(cohort)):
        raise SetupRejected("threshold", f"round {round}: threshold {threshold} exceeds the {sharing_group(params, len(cohort))} "
                                         f"parties sharing each secret (secagg_threshold too high for the graph)")
    return RoundSetup(round=int(round), attempt=int(attempt), model_digest=model_digest(global_w), cohort=cohort,
                      min_cohort=need, n_features=int(shape["n_features"]), n_classes=int(shape["n_classes"]),
                      secure=secure, threshold=threshold,
                      clip=float(clip) if secure else 0.0, clip_norm=clip_norm(params),
                      weight_scale=float(weight_scale) if secure else 0.0,
                      graph=secagg_graph(params) if secure else "full")


class AnnounceGate:
    """A client's promise: it answers at most one ANNOUNCE per (round, attempt), in order.

    Local training is deterministic, so answering round r twice to different cohorts
    would let an aggregator subtract two sums and learn one update. A resumed or retried
    aggregator continues under a newer attempt, which this admits.
    """

    def __init__(self) -> None:
        self.last: tuple[int, int] | None = None   # (attempt, round) answered last

    def admit(self, setup: RoundSetup) -> None:
        key = (int(setup.attempt), int(setup.round))
        if self.last is not None and key <= self.last:
            reason = "second_announce" if key == self.last else "old_round"
            raise SetupRejected(reason, f"already answered round {self.last[1]} of attempt {self.last[0]}; "
                                        f"refusing round {setup.round} of attempt {setup.attempt}")
        self.last = key
