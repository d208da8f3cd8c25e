"""Per-party CPU limits for the local runner: the Linux CPU controller, as Kubernetes uses it.

On Kubernetes a party's node registry entry sets `resources.limits.cpu` and the
kubelet enforces it on the pod's cgroup. The local runner does the same for
FERRY_SCHEDULER__LOCAL_CPU_LIMITS (party -> Kubernetes CPU quantity, "250m" or
"0.25"), as the kubelet does for a pod whose requests equal its limits
(Kubernetes' Guaranteed class): a CFS bandwidth quota of cores x period (the
ceiling, when the machine is idle) and a CPU weight of cores x 1024 shares (the
order, when it is contended: without it a 0.5-CPU and a 0.1-CPU executor on a
machine with twenty runnable processes would both get the same tenth of a
core). A limit is not a guarantee: on a loaded machine a 0.5-CPU executor may
get less than 0.5 while a 0.1-CPU one stays held to 0.1. Each limited executor gets a cgroup of its own, and its process is moved
into it right after it starts (all its threads with it; a few milliseconds of
its start-up run unlimited). The group is removed when the executor ends.

cgroup v1: the group is <cpu mount>/<scheduler's cgroup>/ferry-<job>, a sibling
of the scheduler's own processes, so its weight counts against theirs and the
other processes' of the machine (a shared parent would make all executors
together weigh as one process). cgroup v2 forbids processes next to child
groups, so there the groups live under <scheduler's cgroup>/ferry, whose
weight is kept at the sum of its children's.

Either hierarchy works: cgroup v1 (a `cpu` controller mount, cpu.cfs_quota_us)
or cgroup v2 (a cgroup2 mount whose cgroup.controllers lists cpu, cpu.max).
Where neither can be written (no controller, read-only /sys/fs/cgroup, not
root), asking for a limit fails with CpuLimitUnavailable naming the setting:
a limit is never silently ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import structlog

from shared.errors import ConfigurationError

SETTING = "FERRY_SCHEDULER__LOCAL_CPU_LIMITS"
PERIOD_US = 100_000  # the kernel's and the kubelet's default CFS period
MIN_QUOTA_US = 1_000  # the kernel refuses quotas under 1 ms
SHARES_PER_CPU = 1024  # cgroup v1 cpu.shares of one CPU, as the kubelet converts millicores
MIN_SHARES, MAX_SHARES = 2, 262_144
_CPU_QUANTITY = re.compile(r"^(\d+(\.\d*)?|\.\d+)(m?)$")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")

log = structlog.get_logger("ferry.scheduler.cpu_limits")


class CpuLimitUnavailable(ConfigurationError):
    """A CPU limit was asked for but this machine's cgroups cannot enforce it."""


def parse_cpu_quantity(text: object, party: str = "") -> float:
    """Cores from a Kubernetes CPU quantity: "500m" -> 0.5, "2" -> 2.0."""
    raw = str(text).strip() if isinstance(text, (str, int, float)) and not isinstance(text, bool) else ""
    match = _CPU_QUANTITY.match(raw)
    cores = (float(match.group(1)) / (1000.0 if match.group(3) else 1.0)) if match else 0.0
    if not cores > 0:
        where = f"{SETTING}[{party}]" if party else SETTING
        raise ConfigurationError(f"{where}: not a positive Kubernetes CPU quantity: {text!r} (e.g. 250m, 0.5, 2)")
    return cores


def parse_cpu_limits(limits: Mapping[str, object]) -> dict[str, float]:
    return {str(party): parse_cpu_quantity(amount, str(party)) for party, amount in limits.items()}


@dataclass(frozen=True)
class _Hierarchy:
    version: int      # 1 or 2
    base: Path        # the scheduler's own cgroup in the hierarchy holding the cpu controller


def _mounts(mountinfo: str) -> list[tuple[str, str, str, str]]:
    """(root, mount point, fstype, super options) of each line of /proc/self/mountinfo."""
    out = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if sep and len(fields) >= 5 and len(tail) >= 3:
            out.append((fields[3], fields[4].replace("\\040", " "), tail[0], tail[2]))
    return out


def _own_path(proc_cgroup: str, controller: str | None) -> str:
    """This process's cgroup path for `controller` (v1), or its v2 path when controller is None."""
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        if (controller is None and controllers == "") or (controller in controllers.split(",")):
            return path
    return "/"


def _under(mount: str, root: str, path: str) -> Path:
    relative = path[len(root):] if root != "/" and path.startswith(root) else path
    return Path(mount) / relative.lstrip("/")


def find_hierarchy(mountinfo: str | None = None, proc_cgroup: str | None = None) -> _Hierarchy:
    """Where this process's CPU controller lives; CpuLimitUnavailable when there is none."""
    mountinfo = Path("/proc/self/mountinfo").read_text() if mountinfo is None else mountinfo
    proc_cgroup = Path("/proc/self/cgroup").read_text() if proc_cgroup is None else proc_cgroup
    mounts = _mounts(mountinfo)
    for root, point, fstype, options in mounts:
        if fstype == "cgroup" and "cpu" in options.split(","):
            return _Hierarchy(1, _under(point, root, _own_path(proc_cgroup, "cpu")))
    for root, point, fstype, _ in mounts:
        if fstype == "cgroup2":
            base = _under(point, root, _own_path(proc_cgroup, None))
            try:
                controllers = (base / "cgroup.controllers").read_text().split()
            except OSError:
                continue
            if "cpu" in controllers:
                return _Hierarchy(2, base)
    raise CpuLimitUnavailable(f"{SETTING} asks for CPU limits, but this machine has no cgroup CPU controller "
                              "(no cgroup v1 'cpu' mount, no cgroup2 mount offering 'cpu'); unset it or run "
                              "the scheduler where /sys/fs/cgroup has one")


def v2_weight(shares: int) -> int:
    """cgroup v2 cpu.weight (1..10000) of v1 cpu.shares (2..262144): the OCI runtimes' conversion."""
    return 1 + ((shares - MIN_SHARES) * 9999) // (MAX_SHARES - MIN_SHARES)


class CpuLimiter:
    """Moves executor processes into CPU-limited cgroups and removes the groups afterwards."""

    def __init__(self, limits: Mapping[str, float], hierarchy: _Hierarchy | None = None):
        self.limits = dict(limits)
        self._hierarchy = hierarchy
        self._groups: dict[str, Path] = {}
        self._leftover: set[Path] = set()  # groups whose rmdir failed: a process of the job still ran
        if self.limits:
            self._hierarchy = hierarchy or find_hierarchy()
            self._parent()  # fail at start, not at the first limited launch

    def cores_for(self, party: str) -> float | None:
        return self.limits.get(party)

    def _fail(self, what: str, error: OSError) -> CpuLimitUnavailable:
        return CpuLimitUnavailable(f"{SETTING}: cannot {what} ({error.strerror or error}); the local runner "
                                   "enforces CPU limits with cgroups and needs write access to "
                                   f"{self._hierarchy.base} (root, or a delegated cgroup)")

    def _parent(self) -> Path:
        """Where the executors' groups go: the scheduler's own group (v1), or a `ferry` child (v2)."""
        base = self._hierarchy.base
        if self._hierarchy.version == 1:
            if not base.is_dir() or not (base / "cpu.cfs_quota_us").exists():
                raise self._fail(f"use the cgroup {base}", FileNotFoundError("no CPU controller files there"))
            return base
        parent = base / "ferry"
        try:
            parent.mkdir(exist_ok=True)
            for group in (base, parent):  # children of a v2 group get cpu only when their parent hands it down
                if "cpu" not in (group / "cgroup.subtree_control").read_text().split():
                    (group / "cgroup.subtree_control").write_text("+cpu")
        except OSError as e:
            raise self._fail(f"prepare the cgroup {parent}", e) from None
        return parent

    def confine(self, name: str, pid: int, cores: float) -> Path:
        """Put process `pid` (the job `name`) under `cores` CPUs (quota and weight); returns its cgroup."""
        group = self._parent() / f"ferry-{_SAFE_NAME.sub('_', name)}"
        quota = max(MIN_QUOTA_US, round(cores * PERIOD_US))
        shares = min(MAX_SHARES, max(MIN_SHARES, round(cores * SHARES_PER_CPU)))
        try:
            group.mkdir(exist_ok=True)
            if self._hierarchy.version == 1:
                (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (group / "cpu.cfs_quota_us").write_text(str(quota))
                (group / "cpu.shares").write_text(str(shares))
            else:
                (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
                (group / "cpu.weight").write_text(str(v2_weight(shares)))
            (group / "cgroup.procs").write_text(str(pid))
        except ProcessLookupError:  # it ended already: nothing left to limit
            self._remove(group)
            return group
        except OSError as e:
            self._remove(group)
            raise self._fail(f"limit job {name} to {cores} CPUs in {group}", e) from None
        self._groups[name] = group
        self._reweigh_parent()
        log.info("cpu_limited", job=name, pid=pid, cores=cores, shares=shares, cgroup=str(group))
        return group

    def _reweigh_parent(self) -> None:
        """v2: the `ferry` group weighs what its executors would weigh as siblings of other processes."""
        if self._hierarchy.version != 2:
            return
        try:
            total = sum(int((g / "cpu.weight").read_text()) for g in self._groups.values())
            (self._hierarchy.base / "ferry" / "cpu.weight").write_text(str(min(10_000, max(1, total))))
        except OSError as e:
            log.warning("cpu_weight_not_set", error=str(e))

    def release(self, name: str) -> None:
        group = self._groups.pop(name, None)
        if group is not None:
            self._remove(group)
            self._reweigh_parent()
        for left in list(self._leftover):  # retried at every release: their last processes may be gone now
            self._remove(left, again=True)

    def close(self) -> None:
        for name in list(self._groups):
            self.release(name)

    def _remove(self, group: Path, again: bool = False) -> None:
        try:
            group.rmdir()  # a cgroup directory goes with rmdir once its processes are gone
        except FileNotFoundError:
            pass
        except OSError as e:
            if not again:
                try:
                    left = (group / "cgroup.procs").read_text().split()
                except OSError:
                    left = []
                log.warning("cpu_cgroup_not_removed_yet", cgroup=str(group), error=str(e), pids=left)
            self._leftover.add(group)
            return
        self._leftover.discard(group)

