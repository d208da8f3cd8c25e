"""`ferry flow validate|submit|run FILE`.

validate: offline, against the algorithms installed here; exit 1 listing every field error.
submit:   publish FlowSubmitted to the flows topic of the Kafka cluster (upstream systems do the same).
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


async def _submit(flow, bootstrap: str) -> None:
    from shared import topics
    from shared.bus.kafka import KafkaBus, KafkaSettings
    from shared.clock import SystemClock
    from shared.messaging import EventPublisher

    bus = KafkaBus(KafkaSettings(bootstrap=bootstrap, client_id="ferry-cli"))
    await bus.start()
    try:
        await bus.ensure_topics([topics.FLOWS])
        await EventPublisher(bus, "cli", SystemClock()).publish(topics.FLOWS.name, flow.flow_id, flow)
    finally:
        await bus.stop()


def submit(args: argparse.Namespace) -> int:
    from shared.settings import FerrySettings

    if validate(args) != 0:
        return 1
    flow = load_flow(args.file, args.id)
    bootstrap = args.bootstrap or FerrySettings().kafka.bootstrap
    asyncio.run(_submit(flow, bootstrap))
    print(f"submitted flow {flow.flow_id} to {bootstrap}")
    return 0


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
    from services.executor.threads import HOW_TO_CHANGE
    from shared.settings import FerrySettings

    threads = args.torch_threads or FerrySettings().executor.torch_threads
    print(f"executors use {threads} torch thread(s) each; {HOW_TO_CHANGE}", file=sys.stderr)
    view = asyncio.run(run_flow_embedded(flow, timeout_s=args.timeout, work_dir=work_dir, torch_threads=threads))
    print(json.dumps(view, indent=2, default=str))
    return 0 if view.get("status") == "SUCCEEDED" else 1


def main(args: argparse.Namespace) -> int:
    return {"validate": validate, "submit": submit, "run": run}[args.action](args)
