"""The built-in algorithm specs as the splitter's tests know them.

Built here rather than imported so these tests pin down the contract the
example flows rely on (names, versions, roles, parameters); test_examples also
checks the examples against the registry Ferry actually ships.
"""

from __future__ import annotations

from shared.algorithms import AlgorithmSpec, ParamSpec, RoleSpec

_TRAINING = (
    ParamSpec("model", "str", "logreg", choices=("logreg", "mlp", "cnn")),
    ParamSpec("rounds", "int", 10, minimum=1, maximum=10000),
    ParamSpec("local_epochs", "int", 1, minimum=1),
    ParamSpec("batch_size", "int", 32, minimum=1),
    ParamSpec("lr", "float", 0.1, minimum=1e-12),  # "> 0"
    ParamSpec("optimizer", "str", "sgd", choices=("sgd", "adam")),
    ParamSpec("seed", "int", 0),
)
_FEDERATED = (
    ParamSpec("strategy", "str", "fedavg", choices=("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi",
                                                    "fedadagrad", "median", "trimmed_mean", "krum")),
    ParamSpec("mu", "float", 0.0, minimum=0.0),
    ParamSpec("min_clients", "int", 1, minimum=1),
    ParamSpec("round_timeout_s", "float", 300.0, minimum=1e-9),  # "> 0"
    ParamSpec("secure_aggregation", "bool", False),
    ParamSpec("dp", "str", "off", choices=("off", "central", "distributed")),
    ParamSpec("dp_clip", "float", 1.0, minimum=1e-9),
    ParamSpec("dp_noise_multiplier", "float", minimum=0.0),
    ParamSpec("dp_target_epsilon", "float", minimum=0.0),
    ParamSpec("dp_delta", "float", 1e-5, minimum=0.0, maximum=1.0),
    ParamSpec("dp_honest_fraction", "float", 1.0, minimum=0.0, maximum=1.0),
)


def _role(name: str, needs_data: bool = True, max_parties: int | None = None) -> RoleSpec:
    return RoleSpec(name, f"tests.fake:{name}", min_parties=1, max_parties=max_parties, needs_data=needs_data)


BUILTIN_SPECS = (
    AlgorithmSpec("ferry.noop", "1", (_role("worker", needs_data=False),),
                  (ParamSpec("sleep_s", "float", 0.0, minimum=0.0), ParamSpec("fail", "bool", False))),
    AlgorithmSpec("ferry.data.validate", "1", (_role("party"),), (ParamSpec("min_rows", "int", 1, minimum=1),)),
    AlgorithmSpec("ferry.standardise", "1", (_role("client"), _role("aggregator", needs_data=False, max_parties=1))),
    AlgorithmSpec("ferry.fedavg", "1", (_role("client"), _role("aggregator", needs_data=False, max_parties=1)),
                  _TRAINING + _FEDERATED),
    AlgorithmSpec("ferry.evaluate", "1", (_role("party"),), (ParamSpec("model_from", "str", required=True),)),
    AlgorithmSpec("ferry.centralized", "1", (_role("trainer", max_parties=1),), _TRAINING),
    AlgorithmSpec("ferry.local_train", "1", (_role("party"),), _TRAINING),
    AlgorithmSpec("ferry.psi", "2", (_role("guest", max_parties=1), _role("host")),
                  (ParamSpec("id_column", "str", "id"), ParamSpec("timeout_s", "float", 600.0, minimum=0.001),
                   ParamSpec("workers", "int", minimum=1))),
    AlgorithmSpec("ferry.hetero_lr", "1",
                  (_role("guest", max_parties=1), _role("host"), _role("arbiter", needs_data=False, max_parties=1)),
                  (ParamSpec("align_with", "str"), ParamSpec("id_column", "str", "id"),
                   ParamSpec("timeout_s", "float", 600.0, minimum=0.001),
                   ParamSpec("epochs", "int", 30, minimum=1), ParamSpec("batch_size", "int", 64, minimum=1),
                   ParamSpec("lr", "float", 0.15, minimum=1e-12),
                   ParamSpec("lr_schedule", "str", "inverse_sqrt", choices=("constant", "inverse", "inverse_sqrt")),
                   ParamSpec("lr_decay", "float", 0.1, minimum=0.0), ParamSpec("alpha", "float", 0.01, minimum=0.0),
                   ParamSpec("tol", "float", 1e-4, minimum=0.0), ParamSpec("seed", "int", 0, minimum=0),
                   ParamSpec("test_fraction", "float", 0.2, minimum=0.01, maximum=0.9),
                   ParamSpec("standardise", "bool", True),
                   ParamSpec("encryption", "str", "paillier", choices=("paillier", "none")),
                   ParamSpec("key_bits", "int", 2048, minimum=512), ParamSpec("insecure", "bool", False))),
    AlgorithmSpec("ferry.hetero_lr_predict", "1", (_role("guest", max_parties=1), _role("host")),
                  (ParamSpec("align_with", "str"), ParamSpec("id_column", "str", "id"),
                   ParamSpec("timeout_s", "float", 600.0, minimum=0.001),
                   ParamSpec("model_from", "str", required=True), ParamSpec("threshold", "float", 0.5))),
)

