"""Per-party CPU limits of the local runner: parsed like Kubernetes quantities, enforced by real cgroups."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.scheduler.adapters.cpu_limits import (PERIOD_US, SETTING, CpuLimitUnavailable, CpuLimiter, _Hierarchy,
                                                    find_hierarchy, parse_cpu_limits, parse_cpu_quantity, v2_weight)
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
    for unwritable in (_Hierarchy(1, tmp_path / "no-such-cgroup"), _Hierarchy(2, tmp_path / "no-such-cgroup")):
        with pytest.raises(CpuLimitUnavailable, match=rf"{SETTING}: cannot"):
            CpuLimiter({"slow": 0.1}, unwritable)
    assert CpuLimiter({}, unwritable).cores_for("slow") is None  # no limit asked for: nothing to enforce


def test_v2_weights_keep_the_proportions_of_v1_shares():
    assert (v2_weight(2), v2_weight(1024), v2_weight(262_144)) == (1, 39, 10_000)
    assert v2_weight(512) / v2_weight(102) == pytest.approx(5, rel=0.1)


def _cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


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
        assert own.endswith(f"/ferry-cpu-limit-{os.getpid()}"), own
        group = next(limiter._hierarchy.base.glob(f"**/ferry-cpu-limit-{os.getpid()}"))
        if limiter._hierarchy.version == 1:
            quota, weight = (group / "cpu.cfs_quota_us").read_text(), (group / "cpu.shares").read_text()
        else:
            quota, weight = (group / "cpu.max").read_text().split()[0], (group / "cpu.weight").read_text()
        assert int(quota) == round(0.1 * PERIOD_US)
        # Weighed as Kubernetes weighs a pod that requests what it is limited to: 0.1 x 1024 shares.
        assert int(weight) == (102 if limiter._hierarchy.version == 1 else v2_weight(102))
        # Start-up (importing torch and the executor) wants a whole core for seconds. At 0.1 CPU it
        # gets at most a tenth of one (the quota, on an idle machine) and far less than an unlimited
        # busy process next to it (the weight, on a loaded one). Measured until that process has had
        # a CPU second: about a second on an idle machine (the executor still importing, unlimited
        # or not), longer when the machine is shared, so clock ticks do not decide the ratio.
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            cpu0, spun0, wall0 = _cpu_seconds(pid), _cpu_seconds(spinner.pid), time.monotonic()
            while _cpu_seconds(spinner.pid) - spun0 < 1.0 and time.monotonic() - wall0 < 40:
                await asyncio.sleep(0.2)
            used, spun = _cpu_seconds(pid) - cpu0, _cpu_seconds(spinner.pid) - spun0
            wall = time.monotonic() - wall0
        finally:
            spinner.kill()
            spinner.wait()
        assert used / wall <= 0.1 * 1.5, (used, spun, wall)
        assert used <= 0.5 * spun, (used, spun, wall)
    finally:
        handle.kill()
        await asyncio.wait_for(handle.wait(), 30)
        await launcher.close()
    assert not group.exists()  # the executor's cgroup is removed with it


def _fake_v2(tmp_path: Path) -> _Hierarchy:
    """A cgroup v2 tree as plain files (the kernel's would create a group's files on mkdir)."""
    base = tmp_path / "sched"
    (base / "ferry").mkdir(parents=True)
    for group in (base, base / "ferry"):
        (group / "cgroup.subtree_control").write_text("")
    return _Hierarchy(2, base)


def test_v2_groups_get_quota_weight_and_the_process_and_the_parent_weighs_its_children(tmp_path):
    limiter = CpuLimiter({"fast": 0.5, "slow": 0.1}, _fake_v2(tmp_path))
    parent = tmp_path / "sched" / "ferry"
    assert (tmp_path / "sched" / "cgroup.subtree_control").read_text() == "+cpu"  # handed down to children
    fast = limiter.confine("job/fast", 101, limiter.cores_for("fast"))
    slow = limiter.confine("job/slow", 102, limiter.cores_for("slow"))
    assert fast == parent / "ferry-job_fast"
    assert (fast / "cpu.max").read_text() == "50000 100000" and (slow / "cpu.max").read_text() == "10000 100000"
    assert (slow / "cgroup.procs").read_text() == "102"
    assert int((parent / "cpu.weight").read_text()) == v2_weight(512) + v2_weight(102)


def test_a_group_that_cannot_be_removed_yet_is_retried_at_the_next_release(tmp_path):
    limiter = CpuLimiter({"a": 0.5}, _fake_v2(tmp_path))
    first = limiter.confine("first", 101, 0.5)
    second = limiter.confine("second", 102, 0.5)
    limiter.release("first")  # its files stand for a process still in it: rmdir fails
    assert first.exists()
    for f in [*first.iterdir(), *second.iterdir()]:
        f.unlink()  # the process ended
    limiter.release("second")
    assert not first.exists() and not second.exists()
