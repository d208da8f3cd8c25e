"""The local runner's fork server: executors forked from one pre-imported interpreter on a real broker."""

from __future__ import annotations

import asyncio

from services.scheduler.adapters.launchers import LocalProcessLauncher
from services.scheduler.adapters.zygote import Zygote
from shared.events import AlgorithmTaskSpec, Peer
from tests.kafka_broker_fixture import create_catalogue_topics


def _noop(sleep_s: float) -> AlgorithmTaskSpec:
    return AlgorithmTaskSpec("z.step.node-a.worker", "z.step", "z", "step", "ferry.noop", "1",
                             {"sleep_s": sleep_s}, "node-a", "worker", (Peer("node-a", "worker"),))


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("PPid:")))


async def test_executors_fork_from_the_zygote_run_to_their_exit_code_and_stop_on_terminate(tmp_path, kafka_bootstrap):
    await create_catalogue_topics(kafka_bootstrap)
    zygote = Zygote(env={"FERRY_KAFKA__BOOTSTRAP": kafka_bootstrap, "FERRY_BUS__KIND": "kafka"},
                    preload=("torch", "services.executor.main"))
    launcher = LocalProcessLauncher(tmp_path, {"FERRY_KAFKA__BOOTSTRAP": kafka_bootstrap,
                                               "FERRY_BUS__KIND": "kafka"}, zygote)
    try:
        quick = await launcher.launch(_noop(0.1), "quick")
        slow = await launcher.launch(_noop(120.0), "slow")
        server_pid = zygote._server.pid
        assert _ppid(slow._process.pid) == server_pid  # a fork of the zygote, not a fresh interpreter
        assert await asyncio.wait_for(quick.wait(), 120) == 0
        assert "executor.finished" in (tmp_path / "logs" / "quick.log").read_text()
        await asyncio.sleep(1.0)  # let it reach its sleep
        slow.terminate()
        assert await asyncio.wait_for(slow.wait(), 60) == 143  # checkpointed and stopped, as on SIGTERM
        assert "executor.suspended" in (tmp_path / "logs" / "slow.log").read_text()
    finally:
        await launcher.close()
    assert zygote._server.returncode is not None  # closing the launcher ends the zygote


async def test_a_broken_executor_reports_its_exit_code_through_the_zygote(tmp_path, kafka_bootstrap):
    zygote = Zygote(preload=("services.executor.main",))
    try:
        process = await zygote.spawn({"FERRY_KAFKA__BOOTSTRAP": kafka_bootstrap}, tmp_path / "x.log")
        assert await asyncio.wait_for(process.wait(), 60) == 2  # no FERRY_TASK_SPEC: a configuration error
        assert "executor.no_task" in (tmp_path / "x.log").read_text()
    finally:
        await zygote.close()


def test_the_default_preload_leaves_an_executor_nothing_heavy_to_import_after_the_fork():
    """Every module an executor's entry point imports is already in the zygote, so a fork starts
    without re-importing settings, logging or the HTTP stack (0.5 s of CPU each, 11 per flow)."""
    import subprocess
    import sys

    script = (
        "import importlib, os, sys\n"
        "from services.scheduler.adapters.zygote import DEFAULT_PRELOAD\n"
        "for m in DEFAULT_PRELOAD: importlib.import_module(m)\n"
        "before = set(sys.modules)\n"
        "os.environ.pop('FERRY_TASK_SPEC', None)\n"
        "from services.executor.main import main\n"
        "assert main() == 2\n"  # no task: returns once settings, logging and threads are set up
        "print(sorted(set(sys.modules) - before))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    imported_after = eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - our own subprocess's list
    heavy = [m for m in imported_after if m.split(".")[0] in ("fastapi", "starlette", "pydantic_settings", "uvicorn")
             or m in ("shared.runtime", "shared.settings", "shared.logging", "shared.http")]
    assert heavy == []
