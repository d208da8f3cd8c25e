"""Specs of the algorithms Ferry ships, registered like any plug-in's.

Only declarations live here (the splitter validates against them); the
implementations named in `entry` live in services/executor/algorithms and are
imported by the executor alone.
"""

from __future__ import annotations

from shared.algorithms import AlgorithmSpec, ParamSpec, RoleSpec

_IMPL = "services.executor.algorithms"

_TRAINING_PARAMS = (
    ParamSpec("model", "str", "logreg", choices=("logreg", "mlp", "cnn"), help="model structure"),
    ParamSpec("hidden", "int", 64, minimum=1, maximum=65536, help="hidden units of the MLP"),
    ParamSpec("rounds", "int", 10, minimum=1, maximum=10000, help="federated rounds (or epochs, centralized)"),
    ParamSpec("local_epochs", "int", 1, minimum=1, maximum=1000),
    ParamSpec("batch_size", "int", 32, minimum=1, maximum=1_000_000),
    ParamSpec("lr", "float", 0.1, minimum=1e-12, help="learning rate of the local optimizer"),
    ParamSpec("optimizer", "str", "sgd", choices=("sgd", "adam")),
    ParamSpec("seed", "int", 0, minimum=0, maximum=2**31 - 1),
    ParamSpec("test_fraction", "float", 0.2, minimum=0.0, maximum=0.9,
              help="share of each party's rows held out for evaluation"),
)

_ROBUST = ("median", "trimmed_mean", "krum")


def _secure_needs_an_averaging_strategy(params):
    if params.get("secure_aggregation") and params.get("strategy") in _ROBUST:
        return [("secure_aggregation", f"cannot be combined with strategy {params['strategy']!r}: robust "
                                       f"rules need each client's update, which secure aggregation hides")]
    return []


_DP_PARAMS = ("dp_noise_multiplier", "dp_target_epsilon")


def _dp_is_consistent(params):
    """DP-FedAvg: one way to set the noise, an averaging strategy, and secure aggregation
    under distributed noise (without it the aggregator sees each client's small share)."""
    mode = params.get("dp", "off")
    given = [name for name in _DP_PARAMS if params.get(name) is not None]
    if mode == "off":
        return [(name, "has no effect unless dp is 'central' or 'distributed'") for name in given]
    problems = []
    if not given:
        problems.append(("dp_noise_multiplier", f"dp={mode!r} needs dp_noise_multiplier or dp_target_epsilon"))
    elif len(given) == 2:
        problems.append(("dp_target_epsilon", "give dp_noise_multiplier or dp_target_epsilon, not both"))
    for name in given:
        if not params[name] > 0:
            problems.append((name, f"must be > 0, got {params[name]}"))
    if params.get("strategy") in _ROBUST:
        problems.append(("dp", f"cannot be combined with strategy {params['strategy']!r}: DP-FedAvg noises "
                               f"the sum of clipped updates; use an averaging strategy"))
    if mode == "distributed" and not params.get("secure_aggregation"):
        problems.append(("dp", "'distributed' needs secure_aggregation: true; without it the aggregator "
                               "sees each client's update with only its 1/sqrt(n) share of the noise"))
    if mode == "central" and params.get("dp_honest_fraction", 1.0) != 1.0:
        problems.append(("dp_honest_fraction", "applies to dp='distributed' only: in central mode the "
                                               "aggregator adds all the noise"))
    if not 0.0 < params.get("dp_delta", 1e-5) < 1.0:
        problems.append(("dp_delta", f"must be in (0, 1), got {params.get('dp_delta')}"))
    if not params.get("dp_honest_fraction", 1.0) > 0:
        problems.append(("dp_honest_fraction", "must be > 0: with no honest client, noise protects nothing"))
    return problems


def _enough_clients_for_krum(params):
    f = params.get("krum_f")
    if params.get("strategy") == "krum" and f is not None and params.get("min_clients", 1) < f + 3:
        return [("min_clients", f"krum with krum_f={f} needs at least {f + 3} clients per round")]
    return []


NOOP = AlgorithmSpec(
    "ferry.noop", "1",
    roles=(RoleSpec("worker", f"{_IMPL}.noop:NoopRole", needs_data=False),),
    params=(ParamSpec("sleep_s", "float", 0.0, minimum=0.0, maximum=3600.0),
            ParamSpec("fail", "bool", False, help="exit with a non-retriable error, for tests")),
    description="Does nothing (optionally sleeps or fails); for smoke tests of the platform.",
)

DATA_VALIDATE = AlgorithmSpec(
    "ferry.data.validate", "1",
    roles=(RoleSpec("party", f"{_IMPL}.data_steps:ValidateRole"),),
    params=(ParamSpec("min_rows", "int", 1, minimum=1),),
    description="Checks each party's dataset exists, matches its schema and has enough rows.",
)

STANDARDISE = AlgorithmSpec(
    "ferry.standardise", "1",
    roles=(RoleSpec("client", f"{_IMPL}.data_steps:StandardiseClient"),
           RoleSpec("aggregator", f"{_IMPL}.data_steps:StandardiseAggregator",
                    min_parties=1, max_parties=1, needs_data=False)),
    description="Federated standardisation: parties share only sums and counts.",
)

FEDAVG = AlgorithmSpec(
    "ferry.fedavg", "1",
    roles=(RoleSpec("client", f"{_IMPL}.federated:TrainingClient"),
           RoleSpec("aggregator", f"{_IMPL}.federated:TrainingAggregator",
                    min_parties=1, max_parties=1, needs_data=False)),
    params=_TRAINING_PARAMS + (
        ParamSpec("strategy", "str", "fedavg", choices=("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi",
                                                        "fedadagrad", "median", "trimmed_mean", "krum")),
        ParamSpec("mu", "float", 0.0, minimum=0.0, help="FedProx proximal term"),
        ParamSpec("server_lr", "float", 1.0, minimum=1e-12, help="FedAvgM / FedOpt server learning rate"),
        ParamSpec("server_momentum", "float", 0.9, minimum=0.0, maximum=1.0),
        ParamSpec("trim_fraction", "float", 0.1, minimum=0.0, maximum=0.49),
        ParamSpec("beta1", "float", 0.9, minimum=0.0, maximum=0.999999, help="FedOpt first-moment decay"),
        ParamSpec("beta2", "float", 0.99, minimum=0.0, maximum=0.999999, help="FedOpt second-moment decay"),
        ParamSpec("tau", "float", 1e-3, minimum=1e-12, help="FedOpt adaptivity (epsilon)"),
        ParamSpec("krum_f", "int", minimum=0, help="Byzantine clients Krum tolerates (default: trim_fraction * n)"),
        ParamSpec("fraction_fit", "float", 1.0, minimum=0.0, maximum=1.0, help="clients sampled per round"),
        ParamSpec("min_clients", "int", 1, minimum=1),
        ParamSpec("round_timeout_s", "float", 300.0, minimum=0.001),
        ParamSpec("secure_aggregation", "bool", False,
                  help="Bonawitz et al. secure aggregation: the aggregator sees only the sum"),
        ParamSpec("secagg_clip", "float", 4.0, minimum=1e-6, help="clip of update deltas before quantizing"),
        ParamSpec("secagg_threshold", "int", minimum=2, help="Shamir threshold t (default: a strict majority)"),
        ParamSpec("secagg_trusted_keys", "dict", help="party -> Ed25519 public key (hex) to pin identities"),
        ParamSpec("dp", "str", "off", choices=("off", "central", "distributed"),
                  help="DP-FedAvg: clip each update, add Gaussian noise at the aggregator (central) or "
                       "a share at each client under secure aggregation (distributed)"),
        ParamSpec("dp_clip", "float", 1.0, minimum=1e-9, help="L2 bound C on each client's update delta"),
        ParamSpec("dp_noise_multiplier", "float", minimum=0.0, help="sigma: noise std of the sum is sigma * C"),
        ParamSpec("dp_target_epsilon", "float", minimum=0.0,
                  help="epsilon after all rounds; the accountant picks the noise multiplier"),
        ParamSpec("dp_delta", "float", 1e-5, minimum=0.0, maximum=1.0),
        ParamSpec("dp_honest_fraction", "float", 1.0, minimum=0.0, maximum=1.0,
                  help="distributed DP: share of each cohort assumed to add its noise honestly"),
    ),
    checks=(_secure_needs_an_averaging_strategy, _enough_clients_for_krum, _dp_is_consistent),
    description="Federated training (FedAvg and friends) between clients and one aggregator.",
)

EVALUATE = AlgorithmSpec(
    "ferry.evaluate", "1",
    roles=(RoleSpec("party", f"{_IMPL}.evaluate:EvaluateRole"),),
    params=(ParamSpec("model_from", "str", required=True, help="step whose final model to evaluate"),),
    description="Evaluates a trained model on each party's held-out data.",
)

CENTRALIZED = AlgorithmSpec(
    "ferry.centralized", "1",
    roles=(RoleSpec("trainer", f"{_IMPL}.centralized:CentralizedTrainer", min_parties=1, max_parties=1),),
    params=_TRAINING_PARAMS,
    description="Baseline: the same model and hyper-parameters trained on pooled data "
                "(only where pooling is allowed, for comparison).",
)

LOCAL_TRAIN = AlgorithmSpec(
    "ferry.local_train", "1",
    roles=(RoleSpec("party", f"{_IMPL}.centralized:LocalTrainer"),),
    params=_TRAINING_PARAMS,
    description="Each party trains the model on its own rows only and evaluates it on its own held-out "
                "rows: the no-collaboration baseline federated training should beat.",
)

BUILTIN = (NOOP, DATA_VALIDATE, STANDARDISE, FEDAVG, EVALUATE, CENTRALIZED, LOCAL_TRAIN)
