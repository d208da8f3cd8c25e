"""Typed errors; each class carries its own handling policy.

`retriable`: a later attempt may succeed (the scheduler retries the task).
`exit_code`: what an executor process exits with, so a runner (local or a
Kubernetes podFailurePolicy) can classify the failure without parsing logs.
`http_status`: what the APIs answer.
"""

from __future__ import annotations


class FerryError(Exception):
    retriable: bool = False
    exit_code: int = 1
    http_status: int = 500


class MalformedMessage(FerryError):
    """Bytes on a topic that are not a valid Ferry event; goes to dead letters."""

    http_status = 400


class ValidationFailed(FerryError):
    """Input that decoded but breaks a rule; carries field-level errors."""

    http_status = 422

    def __init__(self, errors):  # errors: Sequence[shared.events.FieldError]
        self.errors = tuple(errors)
        super().__init__("; ".join(str(e) for e in self.errors))


class RecordTooLarge(FerryError):
    """A record over the bus's size limit: resending the same bytes cannot help."""

    exit_code = 2


class NotFound(FerryError):
    http_status = 404


class IllegalCommand(FerryError):
    """A command that makes no sense in the current state, e.g. resume a running task."""

    http_status = 409


class ConfigurationError(FerryError):
    """Bad settings or parameters: retrying cannot help."""

    exit_code = 2
    http_status = 400


class DataError(FerryError):
    """Missing or corrupt party data: retrying cannot help."""

    exit_code = 3


class TransientError(FerryError):
    """Broker unavailable, node lost, peer timed out: a later attempt may succeed."""

    retriable = True
    exit_code = 75  # EX_TEMPFAIL


class Suspended(FerryError):
    """An executor stopped on request after writing its checkpoint."""

    retriable = True
    exit_code = 143  # 128 + SIGTERM, what a container runtime reports too


class Unreachable(FerryError):
    """A service or broker did not answer within its timeout; the message names which and where."""

    retriable = True
    exit_code = 69  # EX_UNAVAILABLE
    http_status = 503
