"""Per-party CPU limits of the local runner: parsed like Kubernetes quantities, enforced by real cgroups."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from services.scheduler.adapters.cpu_limits import (PERIOD_US, SETTING, CpuLimitUnavailable, CpuLimiter, _Hierarchy,
                                                    find_hierarchy, parse_cpu_limits, parse_cpu_quantity)
from services.scheduler.adapters.launchers import LocalProcessLauncher
from shared.errors import ConfigurationError
from shared.events import AlgorithmTaskSpec, Peer
from tests.kafka_broker_fixture import create_catalogue_topics

V1_MOUNTS = """\
30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
33 30 0:29 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V1_CGROUP = "3:cpuacct:/\n2:cpu:/jobs/sched\n0::/\n"


def test_cpu_quantities_read_as_kubernetes_reads_them_and_bad_ones_name_the_party():
    assert parse_cpu_limits({"a": "250m", "b": "0.5", "c": 2, "d": ".1"}) == {"a": 0.25, "b": 0.5, "c": 2.0, "d": 0.1}
    for bad in ("2 cores", "0", "-1", "1Gi", True, ""):
        with pytest.raises(ConfigurationError, match=rf"{SETTING}\[slow\].*{bad!r}".replace("(", r"\(")):
            parse_cpu_quantity(bad, "slow")


def test_the_cpu_controller_is_found_in_either_hierarchy_and_its_absence_names_the_setting(tmp_path):
    v1 = find_hierarchy(V1_MOUNTS, V1_CGROUP)
    assert (v1.version, v1.base) == (1, Path("/sys/fs/cgroup/cpu/jobs/sched"))
    (tmp_path / "me").mkdir()
    (tmp_path / "me" / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    v2 = find_hierarchy(f"40 1 0:30 / {tmp_path} rw - cgroup2 cgroup2 rw\n", "0::/me\n")
    assert (v2.version, v2.base) == (2, tmp_path / "me")
    (tmp_path / "me" / "cgroup.controllers").write_text("hugetlb\n")  # this machine's cgroup2: no cpu there
    with pytest.raises(CpuLimitUnavailable, match=SETTING):
        find_hierarchy(f"40 1 0:30 / {tmp_path} rw - cgroup2 cgroup2 rw\n", "0::/me\n")


def test_a_limit_that_cannot_be_enforced_fails_at_start_instead_of_being_ignored(tmp_path):
    unwritable = _Hierarchy(1, tmp_path / "no-such-cgroup" / "sched")
    with pytest.raises(CpuLimitUnavailable, match=rf"{SETTING}.*cannot prepare"):
        CpuLimiter({"slow": 0.1}, unwritable)
    assert CpuLimiter({}, unwritable).cores_for("slow") is None  # no limit asked for: nothing to enforce


def _cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _throttled_periods(group: Path) -> int:
    stat = dict(line.split() for line in (group / "cpu.stat").read_text().splitlines())
    return int(stat["nr_throttled"])


async def test_a_limited_executor_is_throttled_to_its_quota_and_its_cgroup_goes_when_it_ends(tmp_path, kafka_bootstrap):
    await create_catalogue_topics(kafka_bootstrap)
    limiter = CpuLimiter({"node-a": 0.1})  # the machine's real cgroups
    launcher = LocalProcessLauncher(tmp_path, {"FERRY_KAFKA__BOOTSTRAP": kafka_bootstrap, "FERRY_BUS__KIND": "kafka"},
                                    cpu=limiter)
    spec = AlgorithmTaskSpec("cpu.step.node-a.worker", "cpu.step", "cpu", "step", "ferry.noop", "1",
                             {"sleep_s": 120.0}, "node-a", "worker", (Peer("node-a", "worker"),))
    handle = await launcher.launch(spec, f"cpu-limit-{os.getpid()}")
    try:
        pid = handle.pid
        own = next(line.split(":", 2)[2] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                   if "cpu" in line.split(":")[1].split(","))
        assert own.endswith(f"/ferry/cpu-limit-{os.getpid()}"), own
        group = limiter._hierarchy.base / "ferry" / f"cpu-limit-{os.getpid()}"
        quota = (group / "cpu.max").read_text().split()[0] if limiter._hierarchy.version == 2 \
            else (group / "cpu.cfs_quota_us").read_text().strip()
        assert int(quota) == round(0.1 * PERIOD_US)
        # Start-up (importing torch and the executor) wants a whole core for seconds: at 0.1 CPU
        # it gets a tenth of one, however idle the machine.
        cpu0, wall0 = _cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(3.0)
        ratio = (_cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0)
        assert ratio <= 0.1 * 1.5, ratio
        assert _throttled_periods(group) > 0
    finally:
        handle.kill()
        await asyncio.wait_for(handle.wait(), 30)
        await launcher.close()
    assert not group.exists()  # the executor's cgroup is removed with it
