"""`ferry flow watch ID` (and `submit --wait`): live progress of one flow, then its result table.

Progress comes from the monitor's event stream (GET /dashboard/events?flow=ID,
server-sent events pushed by the monitor's fold), not from polling. One bar
per step: status, round r/R of training steps, the newest accuracy, and an ETA.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from services.monitor_client import MonitorClient
from shared.errors import NotFound, Unreachable

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
STYLE = {"SUCCEEDED": "green", "FAILED": "red", "CANCELLED": "bright_black", "SUSPENDED": "yellow",
         "SUSPENDING": "yellow", "RUNNING": "blue", "RETRYING": "dark_orange"}
RESULT_METRICS = ("test_accuracy", "test_loss", "server_accuracy", "accuracy", "train_loss", "rows")
KEEPALIVE_GRACE_S = 45.0  # the stream sends a keep-alive every 15 s


def events(client: MonitorClient, flow_id: str) -> Iterator[tuple[str, dict | list]]:
    """(event, data) from the monitor's stream for one flow, until the caller stops iterating."""
    url = f"{client.url}/dashboard/events"
    timeout = httpx.Timeout(client.timeout_s, read=KEEPALIVE_GRACE_S)
    try:
        with httpx.stream("GET", url, params={"flow": flow_id}, timeout=timeout) as response:
            if response.status_code != 200:
                raise Unreachable(f"the monitor at {client.url} answered HTTP {response.status_code} for its event "
                                  f"stream; is it a Ferry monitor?")
            kind, data = "message", []
            for line in response.iter_lines():
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    yield kind, json.loads("\n".join(data))
                    kind, data = "message", []
    except httpx.TimeoutException as exc:
        raise Unreachable(f"the monitor at {client.url} went silent for {KEEPALIVE_GRACE_S:g}s while watching flow "
                          f"{flow_id} (--monitor or FERRY_MONITOR_URL)") from exc
    except httpx.TransportError as exc:
        raise Unreachable(f"could not reach the monitor at {client.url} ({type(exc).__name__}: {exc}); is it "
                          f"running? (--monitor or FERRY_MONITOR_URL)") from exc


def _accuracy(task: dict) -> str:
    for algo in sorted(task["algos"], key=lambda a: "aggregat" not in a["role"]):
        for key in ("test_accuracy", "accuracy", "server_accuracy"):
            value = algo["metrics"].get(key)
            if value is not None:
                return f"acc {value:.3f}"
    return ""


def _step_line(task: dict) -> tuple[str, int, int, str]:
    status = task["status"] or "PENDING"
    total = max((a["total_rounds"] for a in task["algos"]), default=0)
    done = max((a["round"] for a in task["algos"]), default=0)
    if not total:
        total, done = 1, 1 if status == "SUCCEEDED" else 0
    style = STYLE.get(status, "white")
    label = f"{task['step']:<14} [{style}]{status:<10}[/]"
    return label, min(done, total), total, _accuracy(task)


def watch(client: MonitorClient, flow_id: str, console: Console, timeout_s: float | None = None) -> dict:
    """Show live progress until the flow ends (or timeout_s passes); returns the last detail."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    detail: dict | None = None
    bars: dict[str, int] = {}
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=24),
               MofNCompleteColumn(), TextColumn("{task.fields[acc]}"), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        header = progress.add_task(f"flow {flow_id}: waiting for the monitor", total=None, acc="")
        for kind, data in events(client, flow_id):
            if kind == "missing":
                progress.update(header, description=f"flow {flow_id}: not known to the monitor yet")
            elif kind == "flow":
                detail = data
                style = STYLE.get(detail["status"], "white")
                progress.update(header, description=f"flow {flow_id} [{style}]{detail['status']}[/] "
                                f"({detail['steps_succeeded']}/{detail['steps']} steps)")
                for task in detail["tasks"]:
                    label, done, total, acc = _step_line(task)
                    if task["task_id"] not in bars:
                        bars[task["task_id"]] = progress.add_task(label, total=total, acc=acc)
                    progress.update(bars[task["task_id"]], description=label, completed=done, total=total, acc=acc)
                if detail["status"] in TERMINAL:
                    progress.update(header, total=1, completed=1)
                    break
            if deadline is not None and time.monotonic() > deadline:
                break
    if detail is None:
        raise NotFound(f"flow {flow_id} never appeared on the monitor at {client.url}")
    return detail


def result_table(detail: dict) -> Table:
    table = Table(title=f"flow {detail['flow_id']}: {detail['status']}", title_justify="left")
    for column in ("step", "party", "role", "status", "attempt", "round", "results"):
        table.add_column(column)
    for task in detail["tasks"]:
        for algo in task["algos"]:
            metrics = algo["metrics"]
            shown = [f"{k}={metrics[k]:.4g}" for k in RESULT_METRICS if metrics.get(k) is not None]
            status = algo["status"]
            table.add_row(task["step"], algo["party"], algo["role"],
                          f"[{STYLE.get(status, 'white')}]{status}[/]", str(algo["attempt"]),
                          f"{algo['round']}/{algo['total_rounds']}" if algo["total_rounds"] else "",
                          " ".join(shown) or (algo["reason"] if status in ("FAILED", "CANCELLED") else ""))
    return table
