"""Specs of the algorithms Ferry ships, registered like any plug-in's.

Only declarations live here (the splitter validates against them); the
implementations named in `entry` live in services/executor/algorithms and are
imported by the executor alone.
"""

from __future__ import annotations

from shared.algorithms import AlgorithmSpec, ParamSpec, RoleSpec
from shared.dp_limits import smallest_target_epsilon

_IMPL = "services.executor.algorithms"

_TRAINING_PARAMS = (
    ParamSpec("model", "str", "logreg", choices=("logreg", "mlp", "cnn"), help="model structure"),
    ParamSpec("hidden", "int", 64, minimum=1, maximum=65536, help="hidden units of the MLP"),
    ParamSpec("rounds", "int", 10, minimum=1, maximum=10000, help="federated rounds (or epochs, centralized)"),
    ParamSpec("local_epochs", "int", 1, minimum=1, maximum=1000, help="epochs over its own rows per round, per party"),
    ParamSpec("batch_size", "int", 32, minimum=1, maximum=1_000_000, help="rows per optimizer step"),
    ParamSpec("lr", "float", 0.1, minimum=1e-12, help="learning rate of the local optimizer"),
    ParamSpec("optimizer", "str", "sgd", choices=("sgd", "adam"), help="the local optimizer"),
    ParamSpec("seed", "int", 0, minimum=0, maximum=2**31 - 1,
              help="seeds model initialisation, data order, splits and client sampling"),
    ParamSpec("test_fraction", "float", 0.2, minimum=0.01, maximum=0.9,
              help="share of each party's rows held out for evaluation"),
)

_ROBUST = ("median", "trimmed_mean", "krum")


def _compression_without_secure_aggregation(params):
    if params.get("secure_aggregation") and params.get("compression", "none") != "none":
        return [("compression", f"{params['compression']!r} cannot be combined with secure_aggregation: its masks "
                                f"cancel only in the 32-bit ring it quantises into; use compression: none")]
    return []


def _sparse_graph_needs_secure_aggregation(params):
    """secagg_graph other than full needs secure_aggregation"""
    if params.get("secagg_graph", "full") != "full" and not params.get("secure_aggregation"):
        return [("secagg_graph", f"{params['secagg_graph']!r} shapes secure aggregation's key sharing and "
                                 f"masks; it needs secure_aggregation: true")]
    return []


def _secure_needs_an_averaging_strategy(params):
    """secure_aggregation needs an averaging strategy (not median, trimmed_mean or krum)"""
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
    delta = params.get("dp_delta", 1e-5)
    if params.get("dp_target_epsilon") is not None and params["dp_target_epsilon"] < smallest_target_epsilon(delta):
        problems.append(("dp_target_epsilon", f"must be >= {smallest_target_epsilon(delta):.4g} at dp_delta={delta}: "
                                              f"the accountant certifies no smaller epsilon however much noise is "
                                              f"added (raise dp_target_epsilon or dp_delta; shared/dp_limits.py)"))
    if params.get("strategy") in _ROBUST:
        problems.append(("dp", f"cannot be combined with strategy {params['strategy']!r}: DP-FedAvg noises "
                               f"the sum of clipped updates; use an averaging strategy"))
    if mode == "distributed" and not params.get("secure_aggregation"):
        problems.append(("dp", "'distributed' needs secure_aggregation: true; without it the aggregator "
                               "sees each client's update with only its 1/sqrt(n) share of the noise"))
    if mode == "central" and params.get("dp_honest_fraction", 1.0) != 1.0:
        problems.append(("dp_honest_fraction", "applies to dp='distributed' only: in central mode the "
                                               "aggregator adds all the noise"))
    return problems


def _async_is_plain_averaging(params):
    """aggregation: async (FedBuff) averages plain updates of every joined client"""
    if params.get("aggregation", "sync") != "async":
        return []
    problems = []
    if params.get("secure_aggregation"):
        problems.append(("aggregation", "async cannot be combined with secure_aggregation: masks cancel only in a "
                                        "sum of one round's cohort, and a buffer mixes clients of several versions"))
    if params.get("dp", "off") != "off":
        problems.append(("aggregation", "async cannot be combined with dp: DP-FedAvg's accounting is per round of "
                                        "one cohort; use local_dp for example-level privacy"))
    if params.get("strategy") in _ROBUST:
        problems.append(("aggregation", f"async cannot be combined with strategy {params['strategy']!r}: a buffer "
                                        f"is averaged; use an averaging strategy"))
    if params.get("fraction_fit", 1.0) != 1.0:
        problems.append(("fraction_fit", "async trains every joined client as soon as it is free: no sampling"))
    return problems


def _enough_clients_for_krum(params):
    """krum with krum_f=f needs min_clients >= f + 3"""
    f = params.get("krum_f")
    if params.get("strategy") == "krum" and f is not None and params.get("min_clients", 1) < f + 3:
        return [("min_clients", f"krum with krum_f={f} needs at least {f + 3} clients per round")]
    return []


NOOP = AlgorithmSpec(
    "ferry.noop", "1",
    roles=(RoleSpec("worker", f"{_IMPL}.noop:NoopRole", needs_data=False),),
    params=(ParamSpec("sleep_s", "float", 0.0, minimum=0.0, maximum=3600.0, help="seconds to sleep"),
            ParamSpec("fail", "bool", False, help="exit with a non-retriable error, for tests")),
    description="Does nothing (optionally sleeps or fails); for smoke tests of the platform.",
)

DATA_VALIDATE = AlgorithmSpec(
    "ferry.data.validate", "1",
    roles=(RoleSpec("party", f"{_IMPL}.data_steps:ValidateRole"),),
    params=(ParamSpec("min_rows", "int", 1, minimum=1, help="fewest rows a party's dataset may have"),),
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
                                                        "fedadagrad", "median", "trimmed_mean", "krum"),
                  help="the server's aggregation rule"),
        ParamSpec("mu", "float", 0.0, minimum=0.0, help="FedProx proximal term"),
        ParamSpec("server_lr", "float", 1.0, minimum=1e-12, help="FedAvgM / FedOpt server learning rate"),
        ParamSpec("server_momentum", "float", 0.9, minimum=0.0, maximum=1.0, help="FedAvgM server momentum"),
        ParamSpec("trim_fraction", "float", 0.1, minimum=0.0, maximum=0.49,
                  help="trimmed_mean: share of clients cut at each end, per coordinate"),
        ParamSpec("beta1", "float", 0.9, minimum=0.0, maximum=0.999999, help="FedOpt first-moment decay"),
        ParamSpec("beta2", "float", 0.99, minimum=0.0, maximum=0.999999, help="FedOpt second-moment decay"),
        ParamSpec("tau", "float", 1e-3, minimum=1e-12, help="FedOpt adaptivity (epsilon)"),
        ParamSpec("krum_f", "int", minimum=0, help="Byzantine clients Krum tolerates (default: trim_fraction * n)"),
        ParamSpec("fraction_fit", "float", 1.0, minimum=0.0, maximum=1.0, help="clients sampled per round"),
        ParamSpec("min_clients", "int", 1, minimum=1, help="fewest clients a round may aggregate; fewer fails the round"),
        ParamSpec("round_timeout_s", "float", 300.0, minimum=0.001,
                  help="seconds to wait for joins and for each round's updates"),
        ParamSpec("min_round_s", "float", 0.0, minimum=0.0, maximum=600.0,
                  help="the aggregator holds each round but the last open until it has lasted this long (demos, "
                       "watching a flow live); suspend and cancel end the hold; round_s reports the work alone"),
        ParamSpec("secure_aggregation", "bool", False,
                  help="Bonawitz et al. secure aggregation: the aggregator sees only the sum"),
        ParamSpec("secagg_clip", "float", 4.0, minimum=1e-6, help="clip of update deltas before quantizing"),
        ParamSpec("secagg_threshold", "int", minimum=2, help="Shamir threshold t (default: a strict majority)"),
        ParamSpec("secagg_threshold_fraction", "float", 0.5, minimum=0.5, maximum=2 / 3,
                  help="t > fraction x cohort; 2/3 tolerates clients colluding with the aggregator"),
        ParamSpec("secagg_graph", "str", "full", choices=("full", "sparse"),
                  help="secure aggregation's communication graph: full (every pair of clients) or sparse "
                       "(SecAgg+, Bell et al. 2020: k = O(log n) neighbours each, thresholds per neighbourhood)"),
        ParamSpec("min_cohort", "int", minimum=1,
                  help="clients refuse rounds with a smaller cohort (secure aggregation: at least 3)"),
        ParamSpec("update_clip_norm", "float", minimum=1e-12,
                  help="L2 bound of each client's update (delta); clients clip to it, larger ones are refused"),
        ParamSpec("compression", "str", "none", choices=("none", "fp16", "bf16", "int8", "int4", "topk"),
                  help="how clients encode their update delta (services/executor/ml/compression.py)"),
        ParamSpec("topk_fraction", "float", 0.01, minimum=1e-6, maximum=1.0,
                  help="compression topk: share of values sent per round, the rest fed back next round"),
        ParamSpec("dp", "str", "off", choices=("off", "central", "distributed"),
                  help="DP-FedAvg: clip each update, add Gaussian noise at the aggregator (central) or "
                       "a share at each client under secure aggregation (distributed)"),
        ParamSpec("dp_clip", "float", 1.0, minimum=1e-9, help="L2 bound C on each client's update delta"),
        ParamSpec("dp_noise_multiplier", "float", minimum=1e-6, help="sigma: noise std of the sum is sigma * C"),
        ParamSpec("dp_target_epsilon", "float", minimum=0.03,
                  help="epsilon after all rounds; the accountant picks the noise multiplier (at least ~0.10 "
                       "at dp_delta 1e-5: no noise certifies less)"),
        ParamSpec("dp_delta", "float", 1e-5, minimum=1e-30, maximum=1e-3,
                  help="delta of the (epsilon, delta) guarantee; above 1e-3 it would guarantee little"),
        ParamSpec("dp_honest_fraction", "float", 1.0, minimum=1e-6, maximum=1.0,
                  help="distributed DP: share of each cohort assumed to add its noise honestly"),
        ParamSpec("aggregation", "str", "sync", choices=("sync", "async"),
                  help="sync: each round waits for its sampled clients; async: FedBuff, the aggregator applies "
                       "every async_buffer_size updates as they arrive, stale ones weighted 1/sqrt(1+staleness)"),
        ParamSpec("async_buffer_size", "int", 2, minimum=1, maximum=100_000,
                  help="async: updates applied together (at most the number of clients)"),
        ParamSpec("async_max_staleness", "int", 4, minimum=0, maximum=10_000,
                  help="async: updates trained on a model this many versions old or older are refused"),
        ParamSpec("local_dp", "bool", False,
                  help="example-level local DP: each client trains with DP-SGD (Poisson batches, per-row clipping, "
                       "Gaussian noise; Opacus per-example gradients and accountant) and reports its epsilon"),
        ParamSpec("local_dp_clip", "float", 1.0, minimum=1e-9, help="local DP: L2 bound of each row's gradient"),
        ParamSpec("local_dp_noise_multiplier", "float", 1.0, minimum=1e-6, maximum=1e6,
                  help="local DP: noise std of each step's gradient sum is this times local_dp_clip"),
    ),
    checks=(_secure_needs_an_averaging_strategy, _enough_clients_for_krum, _compression_without_secure_aggregation,
            _dp_is_consistent, _sparse_graph_needs_secure_aggregation, _async_is_plain_averaging),
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

PSI = AlgorithmSpec(
    "ferry.psi", "2",  # 2: X25519 over curve25519 (1: ristretto255), points in 32k-point messages
    roles=(RoleSpec("guest", f"{_IMPL}.vertical_psi:PsiGuest", min_parties=1, max_parties=1,
                    help="matches the blinded ids; usually the party that holds the label"),
           RoleSpec("host", f"{_IMPL}.vertical_psi:PsiHost", min_parties=1)),
    params=(ParamSpec("id_column", "str", "id", help="column of record ids (integers or fixed-width byte strings)"),
            ParamSpec("timeout_s", "float", 600.0, minimum=0.001, maximum=86400.0,
                      help="longest wait for another party's message"),
            ParamSpec("workers", "int", minimum=1, maximum=1024,
                      help="threads for the group operations (default and cap: this node's cores)")),
    description="Private set intersection (ECDH: X25519 over ids hashed to the prime-order group): every party learns which ids all "
                "share and keeps its rows of them in one agreed order (artifact psi-<step>) for "
                "vertical training; nothing about the other ids.",
)

_VERTICAL_DATA = (
    ParamSpec("align_with", "str", help="the ferry.psi step whose aligned rows to use; without it the parties' "
                                        "datasets must already hold the same ids in the same order"),
    ParamSpec("id_column", "str", "id", help="record-id column, never used as a feature"),
    ParamSpec("timeout_s", "float", 600.0, minimum=0.001, maximum=86400.0,
              help="longest wait for another party's message"),
)


def _even_key_bits(params):
    """The key generator looks for a modulus of exactly key_bits bits made of two key_bits/2-bit
    primes: with an odd size it would search forever."""
    if params.get("key_bits", 2048) % 2:
        return [("key_bits", f"must be even (two primes of key_bits / 2 bits each), got {params['key_bits']}")]
    return []


def _stable_l2_step(params):
    """Each step scales the weights by 1 - lr * alpha besides the data's gradient (vertical/lr.py
    step): from lr * alpha = 2 on that factor is <= -1 and the weights grow without bound."""
    lr, alpha = params.get("lr", 0.15), params.get("alpha", 0.01)
    if lr * alpha >= 2:
        return [("alpha", f"lr x alpha must be < 2, got {lr} x {alpha} = {lr * alpha:g}: each step would scale "
                          f"the weights by 1 - lr x alpha <= -1 and training would diverge")]
    return []


def _weak_privacy_needs_insecure(params):
    problems = []
    if params.get("encryption") == "none" and not params.get("insecure"):
        problems.append(("encryption", "'none' sends partial scores and residuals in the clear; "
                                       "set insecure: true to allow it (development and benchmarks only)"))
    if params.get("key_bits", 2048) < 2048 and not params.get("insecure"):
        problems.append(("key_bits", f"{params['key_bits']}-bit Paillier keys are breakable; use >= 2048 "
                                     f"or set insecure: true (tests only)"))
    return problems


HETERO_LR = AlgorithmSpec(
    "ferry.hetero_lr", "1",
    roles=(RoleSpec("guest", f"{_IMPL}.vertical_lr:HeteroLrGuest", min_parties=1, max_parties=1,
                    help="holds the label and some features; evaluates on its held-out rows"),
           RoleSpec("host", f"{_IMPL}.vertical_lr:HeteroLrHost", min_parties=1,
                    help="holds other features of the same people (one or more hosts)"),
           RoleSpec("arbiter", f"{_IMPL}.vertical_lr:HeteroLrArbiter", min_parties=1, max_parties=1,
                    needs_data=False, help="holds the Paillier private key; sees only masked gradients and the loss")),
    params=_VERTICAL_DATA + (
        ParamSpec("epochs", "int", 30, minimum=1, maximum=10000, help="most epochs; fewer once the loss converged"),
        ParamSpec("batch_size", "int", 64, minimum=1, maximum=1_000_000),
        ParamSpec("lr", "float", 0.15, minimum=1e-12, maximum=100.0, help="learning rate at epoch 0"),
        ParamSpec("lr_schedule", "str", "inverse_sqrt", choices=("constant", "inverse", "inverse_sqrt"),
                  help="lr / (1 + decay * epoch), its square root, or constant"),
        ParamSpec("lr_decay", "float", 0.1, minimum=0.0, maximum=1e6),
        ParamSpec("alpha", "float", 0.01, minimum=0.0, maximum=1e6, help="L2 penalty (not on the intercept)"),
        ParamSpec("tol", "float", 1e-4, minimum=0.0, maximum=1e6,
                  help="converged once the epoch's mean loss changes by less than this"),
        ParamSpec("seed", "int", 0, minimum=0, maximum=2**31 - 1, help="mini-batch order and held-out rows"),
        ParamSpec("test_fraction", "float", 0.2, minimum=0.01, maximum=0.9,
                  help="share of the aligned rows held out for the guest's evaluation"),
        ParamSpec("standardise", "bool", True, help="each party standardises its own features (training-row statistics)"),
        ParamSpec("encryption", "str", "paillier", choices=("paillier", "none")),
        ParamSpec("key_bits", "int", 2048, minimum=512, maximum=8192, help="Paillier modulus size"),
        ParamSpec("insecure", "bool", False, help="allow encryption none or keys under 2048 bits; warns loudly"),
    ),
    checks=(_weak_privacy_needs_insecure, _even_key_bits, _stable_l2_step),
    description="Vertical (hetero) logistic regression: guest with the label, hosts with other features of the "
                "same people, an arbiter with the Paillier key; gradients travel encrypted and masked "
                "(Hardy et al. 2017, FATE's hetero-LR).",
)

HETERO_LR_PREDICT = AlgorithmSpec(
    "ferry.hetero_lr_predict", "1",
    roles=(RoleSpec("guest", f"{_IMPL}.vertical_predict:PredictGuest", min_parties=1, max_parties=1),
           RoleSpec("host", f"{_IMPL}.vertical_predict:PredictHost", min_parties=1)),
    params=_VERTICAL_DATA + (
        ParamSpec("model_from", "str", required=True, help="the ferry.hetero_lr step whose model parts to use"),
        ParamSpec("threshold", "float", 0.5, minimum=0.0, maximum=1.0),
    ),
    description="Scores aligned rows with a vertical model: each party applies its own part, the host sends "
                "its partial scores to the guest, which keeps the predictions (artifact predictions-<step>).",
)

BUILTIN = (NOOP, DATA_VALIDATE, STANDARDISE, FEDAVG, EVALUATE, CENTRALIZED, LOCAL_TRAIN, PSI, HETERO_LR,
           HETERO_LR_PREDICT)
