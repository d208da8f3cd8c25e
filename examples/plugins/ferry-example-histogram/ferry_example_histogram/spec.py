"""The declaration of ``example.federated_histogram`` version "1": what the splitter validates.

Only `shared.algorithms` is imported here (no numpy, no executor code): the
splitter loads this module for every flow it validates, whether or not a
flow uses the algorithm. The roles are named by "module:attribute" strings
and imported by the executor only when it runs one.
"""

from __future__ import annotations

from shared.algorithms import AlgorithmSpec, ParamSpec, RoleSpec

NAME = "example.federated_histogram"
VERSION = "1"
ARTIFACT = "histogram"      # what both roles leave in the party's artifact folder of the flow

_ROLES = "ferry_example_histogram.roles"


def _range_is_not_empty(params):
    """A rule across parameters: each alone passes its ParamSpec, together they must make sense.

    Runs in the splitter (and `ferry flow validate`) for every flow using the algorithm, after
    every parameter passed its own checks; returns (parameter, reason) pairs, each reported at
    steps[i].params.<parameter>. Cheap and import-free, like the rest of this module.
    """
    if not params["high"] > params["low"]:
        return [("high", f"must be greater than low ({params['low']}), got {params['high']}")]
    return []


FEDERATED_HISTOGRAM = AlgorithmSpec(
    NAME, VERSION,
    roles=(
        RoleSpec("client", f"{_ROLES}:HistogramClient",
                 help="counts its own rows of one feature into the agreed bins; sends only the counts"),
        RoleSpec("aggregator", f"{_ROLES}:HistogramAggregator", min_parties=1, max_parties=1, needs_data=False,
                 help="adds the clients' counts and hands the pooled histogram back to them"),
    ),
    params=(
        ParamSpec("feature_index", "int", required=True, minimum=0,
                  help="which feature: a column of the party's feature matrix (features flattened per row)"),
        ParamSpec("bins", "int", 10, minimum=2, maximum=1000, help="equal-width bins between low and high"),
        ParamSpec("low", "float", required=True, help="left edge of the first bin"),
        ParamSpec("high", "float", required=True, help="right edge of the last bin (included); must exceed low"),
        ParamSpec("timeout_s", "float", 300.0, minimum=0.001, maximum=86400.0,
                  help="how long a party waits for its peers before giving up (a retriable failure)"),
    ),
    checks=(_range_is_not_empty,),
    description="Federated histogram of one feature: every client counts its rows into the same "
                "equal-width bins and shares only the counts; the aggregator adds them up.",
)
