"""ferry-example-histogram: a federated histogram of one feature, as a Ferry algorithm plug-in.

Kept import-light on purpose: the ``ferry.algorithms`` entry point loads
`ferry_example_histogram.spec`, and everything Python imports on the way
(this file included) is paid by the splitter and `ferry flow validate`,
which never run the roles. numpy and the executor's transport are imported
by `ferry_example_histogram.roles` alone, when an executor runs a role.
"""

__version__ = "0.1.0"
