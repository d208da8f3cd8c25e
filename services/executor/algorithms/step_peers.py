"""Who is who in a client/aggregator step, and the error for a step that cannot go on.

Kept free of torch so steps that only move statistics (ferry.standardise) do
not pay for importing it.
"""

from __future__ import annotations

from shared.errors import FerryError


class TrainingFailed(FerryError):
    """Too few clients, or clients that disagree on the data's shape."""

    exit_code = 4


def clients_of(ctx) -> list[str]:
    return sorted(p.party for p in ctx.task.peers if p.role == "client")


def aggregator_of(ctx) -> str:
    return next(p.party for p in ctx.task.peers if p.role == "aggregator")
