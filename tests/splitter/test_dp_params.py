"""DP-FedAvg parameters are checked by the splitter, each problem naming its field."""

from __future__ import annotations

import pytest

from shared.algorithms import validate_params
from shared.builtin_algorithms import FEDAVG


def problems(params) -> dict[str, str]:
    return {e.path: e.reason for e in validate_params(FEDAVG, params, "steps[1].params")}


@pytest.mark.parametrize("params", [
    {"dp": "central", "dp_noise_multiplier": 1.1},
    {"dp": "central", "dp_target_epsilon": 3.0, "dp_delta": 1e-6, "dp_clip": 0.5, "strategy": "fedadam"},
    {"dp": "central", "dp_noise_multiplier": 1.0, "secure_aggregation": True},
    {"dp": "distributed", "dp_target_epsilon": 8.0, "secure_aggregation": True, "dp_honest_fraction": 0.6},
    {},
])
def test_consistent_dp_params_pass(params):
    assert problems(params) == {}


@pytest.mark.parametrize("params,field,reason", [
    ({"dp": "central"}, "dp_noise_multiplier", "needs dp_noise_multiplier or dp_target_epsilon"),
    ({"dp": "central", "dp_noise_multiplier": 1.0, "dp_target_epsilon": 2.0}, "dp_target_epsilon", "not both"),
    ({"dp": "central", "dp_noise_multiplier": 0.0}, "dp_noise_multiplier", "must be >= 1e-06"),
    ({"dp": "central", "dp_target_epsilon": 0.0}, "dp_target_epsilon", "must be >= 0.03"),
    ({"dp": "central", "dp_target_epsilon": 0.1}, "dp_target_epsilon", "at dp_delta=1e-05"),  # below its floor
    ({"dp_noise_multiplier": 1.0}, "dp_noise_multiplier", "no effect unless dp"),
    ({"dp": "distributed", "dp_noise_multiplier": 1.0}, "dp", "needs secure_aggregation"),
    ({"dp": "central", "dp_noise_multiplier": 1.0, "strategy": "median"}, "dp", "averaging strategy"),
    ({"dp": "central", "dp_noise_multiplier": 1.0, "dp_honest_fraction": 0.5}, "dp_honest_fraction",
     "distributed"),
    ({"dp": "central", "dp_noise_multiplier": 1.0, "dp_delta": 1.0}, "dp_delta", "must be <= 0.001"),
    ({"dp": "central", "dp_noise_multiplier": 1.0, "dp_delta": 0.0}, "dp_delta", "must be >= 1e-30"),
    ({"dp": "distributed", "dp_noise_multiplier": 1.0, "secure_aggregation": True, "dp_honest_fraction": 0.0},
     "dp_honest_fraction", "must be >= 1e-06"),
    ({"dp": "laplace"}, "dp", "must be one of"),
    ({"dp": "central", "dp_noise_multiplier": 1.0, "dp_clip": 0.0}, "dp_clip", ">="),
])
def test_inconsistent_dp_params_name_the_field(params, field, reason):
    found = problems(params)
    assert f"steps[1].params.{field}" in found, found
    assert reason in found[f"steps[1].params.{field}"]
