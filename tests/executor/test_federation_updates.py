"""The aggregator's bounds on one plain update (check_update), on values built by hand."""

from __future__ import annotations

import numpy as np
import pytest

from services.executor.federation.updates import UpdateRejected, check_update
from services.executor.transport import to_tensors
from shared.events import RoundKind, RoundMessage

GLOBAL = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)}


def update(arrays, num_examples: int = 10) -> RoundMessage:
    return RoundMessage("flow", "task", "train", 1, 0, "party-a", RoundKind.UPDATE, recipient="hub",
                        tensors=to_tensors(arrays), num_examples=num_examples)


def test_an_in_range_update_is_returned_as_its_weights():
    weights = check_update(update({"w": np.ones((2, 3), np.float32), "b": np.ones(3, np.float32)}), GLOBAL,
                           {"num_examples": 10}, {})
    assert sorted(weights) == ["b", "w"] and np.all(weights["w"] == 1.0)


@pytest.mark.parametrize("arrays, num_examples, reason", [
    ({"w": np.ones((3, 2), np.float32), "b": np.ones(3, np.float32)}, 10, "wrong_shape"),
    ({"w": np.ones((2, 3), np.int32), "b": np.ones(3, np.int32)}, 10, "wrong_dtype"),
    ({"w": np.full((2, 3), np.nan, np.float32), "b": np.ones(3, np.float32)}, 10, "not_finite"),
    ({"w": np.ones((2, 3), np.float32), "b": np.ones(3, np.float32)}, 11, "weight_out_of_range"),
])
def test_an_out_of_range_update_is_refused_with_its_reason(arrays, num_examples, reason):
    with pytest.raises(UpdateRejected) as exc:
        check_update(update(arrays, num_examples), GLOBAL, {"num_examples": 10}, {})
    assert exc.value.reason == reason and "party-a in round 1" in str(exc.value)
