"""`ferry flow ...`: validate, submit, run, watch and control flows.

validate FILE   offline, against the algorithms installed here; exit 1 listing every field error.
submit FILE     publish FlowSubmitted to the flows topic (as upstream systems do) unless its id is taken
                (identical content: a no-op; other content: a conflict), and wait for the splitter's
                answer, saying which; --wait: then watch it to the end.
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
from shared.events import FieldError


def load_flow(path: str, flow_id: str | None):
    from services.splitter.core.flow_document import check_document_size, parse_flow_document

    if flow_id is not None and not flow_id.strip():
        raise ValidationFailed([FieldError("--id", "must not be empty; leave it out for a new id")])
    check_document_size(Path(path).stat().st_size)  # before reading: a 50 MB file costs nothing
    text = Path(path).read_bytes()
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


async def _submit(flow, kafka, wait_s: float, connect_timeout_s: float = 10.0) -> tuple[str, str]:
    """Publish unless the flow id is already taken; then wait for the splitter's answer.

    kafka: adapter settings, or a bootstrap string (then TLS and the rest come from FERRY_KAFKA__*).
    Returns (outcome, detail): "identical" (nothing published: the same flow is already
    there, an idempotent no-op), "conflict" (nothing published: the id is taken by other
    content), "planned", "rejected", or "submitted" (no answer within wait_s). An unreachable
    broker raises Unreachable after connect_timeout_s, naming it."""
    import dataclasses

    from services.splitter.app import conflict_error, content_digest
    from services.splitter.core.naming import task_id
    from shared import topics
    from shared.bus.kafka import KafkaBus
    from shared.clock import SystemClock
    from shared.errors import MalformedMessage
    from shared.events import FlowRejected, FlowSubmitted, TaskPlanned
    from shared.messaging import EventPublisher
    from shared.settings import FerrySettings
    from shared.wire import codec

    settings = kafka
    if isinstance(kafka, str):
        settings = dataclasses.replace(FerrySettings().kafka.adapter_settings("ferry-cli"), bootstrap=kafka)
    bus = KafkaBus(settings)
    try:
        try:
            await asyncio.wait_for(bus.start(), connect_timeout_s)
            await asyncio.wait_for(bus.ensure_topics(topics.CATALOGUE), connect_timeout_s)
        except (asyncio.TimeoutError, TransientError) as exc:
            raise Unreachable(f"could not reach the Kafka broker at {settings.bootstrap} within "
                              f"{connect_timeout_s:g}s (--bootstrap or FERRY_KAFKA__BOOTSTRAP; "
                              f"--connect-timeout)") from exc
        key = flow.flow_id.encode()
        digest = content_digest(flow)
        for record in await bus.read_all(topics.FLOWS.name):
            if record.key != key:
                continue
            try:
                earlier = codec.decode(record.value).event
            except MalformedMessage:
                continue
            if isinstance(earlier, FlowSubmitted) and earlier.flow_id == flow.flow_id:
                first = content_digest(earlier)
                if first == digest:
                    return "identical", "already submitted with identical content: nothing to do"
                return "conflict", str(conflict_error(flow.flow_id, first, digest))
        # Plans are keyed by task id, derived from the flow id and the step name: listen where
        # the first step's plan will land, and where a rejection (keyed by flow id) would.
        first_task = task_id(flow.flow_id, flow.steps[0].name).encode()
        answers = [await bus.tail(topics.TASKS_PLANNED.name, first_task),
                   await bus.tail(topics.FLOWS_REJECTED.name, key)]
        try:
            await EventPublisher(bus, "cli", SystemClock()).publish(topics.FLOWS.name, flow.flow_id, flow)
            deadline = asyncio.get_running_loop().time() + wait_s
            while asyncio.get_running_loop().time() < deadline:
                for consumer in answers:
                    for record in await consumer.poll(0.2):
                        try:
                            event = codec.decode(record.value).event
                        except MalformedMessage:
                            continue
                        if isinstance(event, FlowRejected) and event.flow_id == flow.flow_id:
                            return "rejected", "; ".join(str(e) for e in event.errors)
                        if isinstance(event, TaskPlanned) and event.flow_id == flow.flow_id:
                            return "planned", f"{len(event.flow_task_ids)} tasks planned"
            return "submitted", f"no answer from the splitter within {wait_s:g} s"
        finally:
            for consumer in answers:
                await consumer.stop()
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
    outcome, detail = asyncio.run(_submit(flow, settings, args.answer_timeout, args.connect_timeout))
    stream = sys.stderr if outcome in ("conflict", "rejected") else sys.stdout
    print(f"flow {flow.flow_id}: {outcome}: {detail} ({settings.bootstrap})", file=stream)
    if outcome in ("conflict", "rejected"):
        return 1
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
    from services.embedded import run_flow_embedded
    from services.executor.threads import HOW_TO_CHANGE
    from shared.logging import configure_logging
    from shared.settings import FerrySettings

    configure_logging("WARNING")

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
    if args.vertical_demo_data:
        from services.executor.vertical.split import prepare_vertical_parties

        if work_dir is None:
            print("--vertical-demo-data needs --work-dir", file=sys.stderr)
            return 1
        prepare_vertical_parties(work_dir)
    threads = args.torch_threads or FerrySettings().executor.torch_threads
    print(f"executors use {threads} torch thread(s) each; {HOW_TO_CHANGE}", file=sys.stderr)
    view = asyncio.run(run_flow_embedded(flow, timeout_s=args.timeout, work_dir=work_dir, torch_threads=threads))
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
    p.add_argument("--answer-timeout", type=float, default=30.0, metavar="S",
                   help="seconds to wait for the splitter's answer (planned or rejected; default 30)")
    p.add_argument("--wait", action="store_true", help="then watch it live to the end and print the results")
    p.add_argument("--timeout", type=float, default=None, help="--wait: give up watching after S seconds")
    p = actions.add_parser("run", help="run a flow on the embedded platform (no Kafka) and print the result")
    document(p)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the flow")
    p.add_argument("--work-dir", default=None,
                   help="the parties' folders, <dir>/parties/<party>/{data,checkpoints,artifacts}")
    p.add_argument("--demo-data", action="store_true",
                   help="first import the demo's breast-cancer parties into --work-dir")
    p.add_argument("--vertical-demo-data", action="store_true",
                   help="first import breast_cancer split by columns (hospital: label + 15 features, "
                        "lab: the other 15) as dataset breast_cancer_v into --work-dir")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="intra-op threads per executor (default FERRY_EXECUTOR__TORCH_THREADS, else 1)")
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
