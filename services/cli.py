"""`ferry`: one command for the platform's services, flows, data, the dev broker and the dev cluster."""

from __future__ import annotations

import argparse
import sys


def _service(module: str):
    def run(_args: argparse.Namespace) -> int:
        import importlib

        return importlib.import_module(module).main()
    return run


def _demo(args: argparse.Namespace) -> int:
    from services.demo import main as demo_main

    return demo_main(quick=args.quick)


def _flow(args: argparse.Namespace) -> int:
    from services.flow_cli import main as flow_main

    return flow_main(args)


def _kafka(args: argparse.Namespace) -> int:
    from shared.devtools.kafka_broker import main as broker_main

    return broker_main(args.rest)


def _k8s(args: argparse.Namespace) -> int:
    from shared.devtools.k8s_cluster import main as cluster_main

    return cluster_main(args.rest)


def _data(args: argparse.Namespace) -> int:
    from services.executor.data.cli import main as data_main

    return data_main(args.rest)


def _topics(_args: argparse.Namespace) -> int:
    from shared.topics import CATALOGUE

    print(f"{'topic':24} {'key':36} {'payload':18} {'layout':22} producers -> consumers")
    for t in CATALOGUE:
        layout = f"{t.partitions}p " + ("compacted" if t.compacted else f"{t.retention_ms // 3_600_000}h")
        print(f"{t.name:24} {t.key:36} {t.payload:18} {layout:22} "
              f"{','.join(t.producers)} -> {','.join(t.consumers)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ferry", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("splitter", "scheduler", "monitor", "executor"):
        p = sub.add_parser(name, help=f"run the {name} service (settings from FERRY_* environment)")
        p.set_defaults(run=_service(f"services.{name}.main" if name == "executor" else f"services.{name}.app"))
    demo = sub.add_parser("demo", help="run the demo flow end to end on the embedded platform")
    demo.add_argument("--quick", action="store_true", help="a smaller, faster demo")
    demo.set_defaults(run=_demo)
    flow = sub.add_parser("flow", help="validate, submit or run a flow document")
    flow.add_argument("action", choices=("validate", "submit", "run"))
    flow.add_argument("file", help="flow document, YAML or JSON")
    flow.add_argument("--id", default=None, help="flow id (default: the document's, else a new one)")
    flow.add_argument("--bootstrap", default=None, help="Kafka bootstrap for submit (default FERRY_KAFKA__BOOTSTRAP)")
    flow.add_argument("--timeout", type=float, default=600.0, help="run: seconds to wait for the flow")
    flow.add_argument("--work-dir", default=None,
                      help="run: the parties' folders, <dir>/parties/<party>/{data,checkpoints,artifacts}")
    flow.add_argument("--demo-data", action="store_true",
                      help="run: first import the demo's breast-cancer parties into --work-dir")
    flow.set_defaults(run=_flow)
    for name, handler, help_text in (("kafka", _kafka, "fetch, start or stop the development Kafka broker"),
                                     ("k8s", _k8s, "build, start or stop the development Kubernetes cluster"),
                                     ("data", _data, "import or inspect a party's LMDB data")):
        p = sub.add_parser(name, help=help_text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(run=handler)
    sub.add_parser("topics", help="print the topic catalogue").set_defaults(run=_topics)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
