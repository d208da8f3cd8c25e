"""`ferry flow ...`: validate, submit, run, watch and control flows.

validate FILE   offline, against the algorithms installed here; exit 1 listing every field error.
submit FILE     publish FlowSubmitted to the flows topic (as upstream systems do); --wait: watch it to the end.
run FILE        run the flow on the embedded platform (in-process bus, inline executors), print the result.
watch ID        live progress from the monitor, then the result table.
list, show ID   the monitor's flows, one flow's steps and parties.
suspend|resume|cancel ID   commands through the monitor's API (its 404/409 answers, verbatim).

Every network call has a timeout; an unreachable broker or monitor is an error
naming what and where (exit code 69), never a hang.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path

from shared.errors import FerryError, TransientError, Unreachable, ValidationFailed


def load_flow(path: str, flow_id: str | None):
    from services.splitter.core.flow_document import parse_flow_document

    text = Path(path).read_text()
    return parse_flow_document(text, default_flow_id=flow_id or f"flow-{uuid.uuid4().hex[:12]}")


def _print_errors(errors) -> None:
    for e in errors:
        print(f"  {e.path}: {e.reason}", file=sys.stderr)


def validate(args: argparse.Namespace) -> int:
    from services.splitter.core.validation import FlowLimits, validate_flow
    from shared.algorithms import AlgorithmRegistry

    try:
        flow = load_flow(args.file, args.id)
    except ValidationFailed as exc:
        print(f"{args.file}: invalid flow document", file=sys.stderr)
        _print_errors(exc.errors)
        return 1
    errors = validate_flow(flow, AlgorithmRegistry.from_entry_points(), None, FlowLimits())
    if errors:
        print(f"{args.file}: flow {flow.flow_id} is invalid", file=sys.stderr)
        _print_errors(errors)
        return 1
    print(f"{args.file}: flow {flow.flow_id} is valid ({len(flow.steps)} steps)")
    return 0


async def _submit(flow, settings, timeout_s: float) -> None:
    from shared import topics
    from shared.bus.kafka import KafkaBus
    from shared.clock import SystemClock
    from shared.messaging import EventPublisher

    bus = KafkaBus(settings)

    async def publish() -> None:
        await bus.start()
        await bus.ensure_topics([topics.FLOWS])
        await EventPublisher(bus, "cli", SystemClock()).publish(topics.FLOWS.name, flow.flow_id, flow)

    try:
        await asyncio.wait_for(publish(), timeout_s)
    except (asyncio.TimeoutError, TransientError) as exc:
        raise Unreachable(f"could not reach the Kafka broker at {settings.bootstrap} within {timeout_s:g}s "
                          f"(--bootstrap or FERRY_KAFKA__BOOTSTRAP; --connect-timeout)") from exc
    finally:
        try:
            await asyncio.wait_for(bus.stop(), 5)
        except (asyncio.TimeoutError, Exception):
            pass  # nothing was sent, or it was sent and flushed: either way nothing is left to do


def submit(args: argparse.Namespace) -> int:
    import dataclasses

    from shared.settings import FerrySettings

    if validate(args) != 0:
        return 1
    flow = load_flow(args.file, args.id)
    settings = FerrySettings().kafka.adapter_settings("ferry-cli")
    if args.bootstrap:
        settings = dataclasses.replace(settings, bootstrap=args.bootstrap)
    asyncio.run(_submit(flow, settings, args.connect_timeout))
    print(f"submitted flow {flow.flow_id} to {settings.bootstrap}")
    if not args.wait:
        return 0
    return _watch_to_end(args, flow.flow_id)


def _watch_to_end(args: argparse.Namespace, flow_id: str) -> int:
    from rich.console import Console

    from services.flow_watch import result_table, watch
    from services.monitor_client import MonitorClient

    console = Console()
    with MonitorClient(args.monitor, args.connect_timeout) as client:
        detail = watch(client, flow_id, console, args.timeout)
    console.print(result_table(detail))
    if detail["status"] not in ("SUCCEEDED", "FAILED", "CANCELLED"):
        console.print(f"flow {flow_id} is still {detail['status']} after {args.timeout:g}s")
        return 1
    return 0 if detail["status"] == "SUCCEEDED" else 1


def watch_flow(args: argparse.Namespace) -> int:
    return _watch_to_end(args, args.flow_id)


def list_flows(args: argparse.Namespace) -> int:
    import time

    from rich.console import Console
    from rich.table import Table

    from services.flow_watch import STYLE
    from services.monitor_client import MonitorClient

    with MonitorClient(args.monitor, args.connect_timeout) as client:
        flows = client.flows(args.status, args.limit)
    table = Table(title=f"{len(flows)} flow(s) on {client.url}", title_justify="left")
    for column in ("flow", "status", "steps", "last change", "reason"):
        table.add_column(column)
    now_ms = time.time() * 1000
    for f in flows:
        statuses = list(f["task_statuses"].values())
        table.add_row(f["flow_id"], f"[{STYLE.get(f['status'], 'white')}]{f['status']}[/]",
                      f"{statuses.count('SUCCEEDED')}/{len(statuses)}", _ago(now_ms - f["updated_at_ms"]),
                      f["reason"][:80])
    Console().print(table)
    return 0


def _ago(ms: float) -> str:
    s = int(max(ms, 0) // 1000)
    return f"{s}s ago" if s < 120 else f"{s // 60}m ago" if s < 7200 else f"{s // 3600}h ago"


def show_flow(args: argparse.Namespace) -> int:
    from rich.console import Console

    from services.flow_watch import result_table
    from services.monitor_client import MonitorClient

    with MonitorClient(args.monitor, args.connect_timeout) as client:
        flow = client.flow(args.flow_id)
    detail = {"flow_id": flow["flow_id"], "status": flow["status"], "tasks": [
        {"step": t["step"], "algos": [{**a, "metrics": {k: v for k, v in a["metrics"].items() if v is not None}}
                                      for a in t["algorithm_tasks"]]} for t in flow["tasks"]]}
    console = Console()
    console.print(result_table(detail))
    if flow["reason"]:
        console.print(f"last change: {flow['reason']}")
    return 0


def command(args: argparse.Namespace) -> int:
    from services.monitor_client import MonitorClient

    with MonitorClient(args.monitor, args.connect_timeout) as client:
        answer = client.command(args.action, args.flow_id, args.reason)
    print(f"{args.action} of flow {answer['flow_id']} accepted (command {answer['command_id']})")
    return 0


def run(args: argparse.Namespace) -> int:
    import torch

    from services.embedded import run_flow_embedded
    from shared.logging import configure_logging

    configure_logging("WARNING")
    torch.set_num_threads(1)  # as the local runner's executors (OMP_NUM_THREADS=1): tiny models, shared cores

    try:
        flow = load_flow(args.file, args.id)
    except ValidationFailed as exc:
        _print_errors(exc.errors)
        return 1
    work_dir = Path(args.work_dir) if args.work_dir else None
    if args.demo_data:
        from services.demo import prepare_parties

        if work_dir is None:
            print("--demo-data needs --work-dir", file=sys.stderr)
            return 1
        prepare_parties(work_dir)
    view = asyncio.run(run_flow_embedded(flow, timeout_s=args.timeout, work_dir=work_dir))
    print(json.dumps(view, indent=2, default=str))
    return 0 if view.get("status") == "SUCCEEDED" else 1


ACTIONS = {"validate": validate, "submit": submit, "run": run, "watch": watch_flow, "list": list_flows,
           "show": show_flow, "suspend": command, "resume": command, "cancel": command}


def main(args: argparse.Namespace) -> int:
    try:
        return ACTIONS[args.action](args)
    except FerryError as exc:
        print(f"ferry flow {args.action}: error: {exc}", file=sys.stderr)
        return exc.exit_code


def add_flow_parser(sub) -> None:
    flow = sub.add_parser("flow", help="validate, submit, run, watch, list, show, suspend, resume or cancel flows",
                          description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = flow.add_subparsers(dest="action", required=True, metavar="ACTION")

    def network(p, monitor: bool = True, kafka: bool = False) -> None:
        if kafka:
            p.add_argument("--bootstrap", default=None, help="Kafka bootstrap (default FERRY_KAFKA__BOOTSTRAP)")
        if monitor:
            p.add_argument("--monitor", default=None,
                           help="monitor API URL (default FERRY_MONITOR_URL, else http://127.0.0.1:8083)")
        p.add_argument("--connect-timeout", type=float, default=10.0, metavar="S",
                       help="seconds to wait for the broker or monitor to answer (default 10)")

    def document(p) -> None:
        p.add_argument("file", help="flow document, YAML or JSON")
        p.add_argument("--id", default=None, help="flow id (default: the document's, else a new one)")

    p = actions.add_parser("validate", help="check a flow document offline against the installed algorithms")
    document(p)
    p = actions.add_parser("submit", help="publish a flow to Kafka for the splitter")
    document(p)
    network(p, kafka=True)
    p.add_argument("--wait", action="store_true", help="then watch it live to the end and print the results")
    p.add_argument("--timeout", type=float, default=None, help="--wait: give up watching after S seconds")
    p = actions.add_parser("run", help="run a flow on the embedded platform (no Kafka) and print the result")
    document(p)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the flow")
    p.add_argument("--work-dir", default=None,
                   help="the parties' folders, <dir>/parties/<party>/{data,checkpoints,artifacts}")
    p.add_argument("--demo-data", action="store_true",
                   help="first import the demo's breast-cancer parties into --work-dir")
    p = actions.add_parser("watch", help="live progress of a flow (step, round r/R, accuracy, ETA), then results")
    p.add_argument("flow_id")
    p.add_argument("--timeout", type=float, default=None, help="give up after S seconds")
    network(p)
    p = actions.add_parser("list", help="the monitor's flows, newest first")
    p.add_argument("--status", default=None, help="only flows in this status (RUNNING, FAILED, ...)")
    p.add_argument("--limit", type=int, default=50)
    network(p)
    p = actions.add_parser("show", help="one flow's steps, parties, attempts and results")
    p.add_argument("flow_id")
    network(p)
    for verb in ("suspend", "resume", "cancel"):
        p = actions.add_parser(verb, help=f"{verb} a flow (the monitor answers 404 unknown, 409 not now)")
        p.add_argument("flow_id")
        p.add_argument("--reason", default="", help="recorded in the flow's history")
        network(p)
    flow.set_defaults(run=main)
