"""ferry.noop: exercises the platform without training anything."""

from __future__ import annotations

from shared.algorithms import RoleResult
from shared.errors import ConfigurationError


class NoopRole:
    async def run(self, ctx) -> RoleResult:
        ctx.log.info("noop.start", sleep_s=ctx.params["sleep_s"])
        await ctx.report(stage="sleeping")
        await ctx.sleep(float(ctx.params["sleep_s"]))
        if ctx.params["fail"]:
            raise ConfigurationError("ferry.noop was asked to fail (params.fail = true)")
        return RoleResult(metrics={"slept_s": float(ctx.params["sleep_s"])})
