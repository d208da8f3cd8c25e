"""The runner port: one behaviour, three adapters (kubernetes, local process, inline)."""

from __future__ import annotations

from typing import Awaitable, Callable, Protocol

from shared.events import AlgorithmTaskSpec, Observation

ObservationSink = Callable[[Observation], Awaitable[None]]


class Runner(Protocol):
    name: str

    async def dispatch(self, spec: AlgorithmTaskSpec) -> str:
        """Start this attempt; returns the job name. Starting an attempt twice is a no-op."""

    async def suspend(self, spec: AlgorithmTaskSpec) -> None:
        """Stop the attempt's executor with SIGTERM; it checkpoints and exits."""

    async def resume(self, spec: AlgorithmTaskSpec) -> None:
        """Start the suspended attempt again; it continues from its checkpoint."""

    async def cancel(self, spec: AlgorithmTaskSpec) -> None:
        """Stop the attempt for good and remove what it left running."""

    async def close(self) -> None: ...
