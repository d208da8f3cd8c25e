"""`ferry flow validate|submit|run FILE`.

validate: offline, against the algorithms installed here; exit 1 listing every field error.
submit:   publish FlowSubmitted to the flows topic (unless its id is taken: identical content is a
          no-op, other content a conflict) and wait for the splitter's answer; says which.
run:      run the flow on the embedded platform (in-process bus, inline executors) and print the result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path

from shared.errors import ValidationFailed
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


async def _submit(flow, bootstrap: str, wait_s: float) -> tuple[str, str]:
    """Publish unless the flow id is already taken; then wait for the splitter's answer.

    Returns (outcome, detail): "identical" (nothing published: the same flow is already
    there, an idempotent no-op), "conflict" (nothing published: the id is taken by other
    content), "planned", "rejected", or "submitted" (no answer within wait_s)."""
    from services.splitter.app import conflict_error, content_digest
    from services.splitter.core.naming import task_id
    from shared import topics
    from shared.bus.kafka import KafkaBus, KafkaSettings
    from shared.clock import SystemClock
    from shared.errors import MalformedMessage
    from shared.events import FlowRejected, FlowSubmitted, TaskPlanned
    from shared.messaging import EventPublisher
    from shared.wire import codec

    bus = KafkaBus(KafkaSettings(bootstrap=bootstrap, client_id="ferry-cli"))
    await bus.start()
    try:
        await bus.ensure_topics(topics.CATALOGUE)
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
        await bus.stop()


def submit(args: argparse.Namespace) -> int:
    from shared.settings import FerrySettings

    if validate(args) != 0:
        return 1
    flow = load_flow(args.file, args.id)
    bootstrap = args.bootstrap or FerrySettings().kafka.bootstrap
    outcome, detail = asyncio.run(_submit(flow, bootstrap, getattr(args, "wait", 30.0)))
    stream = sys.stderr if outcome in ("conflict", "rejected") else sys.stdout
    print(f"flow {flow.flow_id}: {outcome}: {detail} ({bootstrap})", file=stream)
    return 1 if outcome in ("conflict", "rejected") else 0


def run(args: argparse.Namespace) -> int:
    from services.embedded import run_flow_embedded
    from shared.logging import configure_logging

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
    if getattr(args, "vertical_demo_data", False):
        from services.executor.vertical.split import prepare_vertical_parties

        if work_dir is None:
            print("--vertical-demo-data needs --work-dir", file=sys.stderr)
            return 1
        prepare_vertical_parties(work_dir)
    from services.executor.threads import HOW_TO_CHANGE
    from shared.settings import FerrySettings

    threads = args.torch_threads or FerrySettings().executor.torch_threads
    print(f"executors use {threads} torch thread(s) each; {HOW_TO_CHANGE}", file=sys.stderr)
    view = asyncio.run(run_flow_embedded(flow, timeout_s=args.timeout, work_dir=work_dir, torch_threads=threads))
    print(json.dumps(view, indent=2, default=str))
    return 0 if view.get("status") == "SUCCEEDED" else 1


def main(args: argparse.Namespace) -> int:
    return {"validate": validate, "submit": submit, "run": run}[args.action](args)
