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


def _algorithms(args: argparse.Namespace) -> int:
    from services.algorithms_cli import main as algorithms_main

    return algorithms_main(args)


# Commands with a parser of their own: `ferry data --help` is theirs to answer.
PASS_THROUGH = {"kafka": ("shared.devtools.kafka_broker", "fetch, start or stop the development Kafka broker"),
                "data": ("services.executor.data.cli", "import or inspect a party's LMDB data (ferry data --help)"),
                "certs": ("services.certs_cli", "make the federation's CA and Kafka TLS certificates, broker TLS "
                                                "properties and ACLs"),
                "keys": ("services.executor.federation.keys_cli", "party identities: generate keys, build/validate "
                                                                  "the federation key registry"),
                "k8s": ("shared.devtools.k8s_cluster", "build, start, stop or inspect the development Kubernetes "
                                                       "cluster")}


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
    from services.flow_cli import add_flow_parser

    add_flow_parser(sub)
    algorithms = sub.add_parser("algorithms", help="list the installed algorithms (built-in and plug-ins) and "
                                                   "their roles and parameters")
    algorithms.add_argument("name", nargs="?", help="only this algorithm")
    algorithms.add_argument("--json", action="store_true", help="machine-readable output")
    algorithms.set_defaults(run=_algorithms)
    for name, (_, help_text) in PASS_THROUGH.items():  # their own parsers; main() hands them the rest
        sub.add_parser(name, help=help_text, add_help=False)
    sub.add_parser("topics", help="print the topic catalogue").set_defaults(run=_topics)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["executor"]:  # a Job's container: before any heavy import (see its docstring)
        from services.executor import stop_as_suspended_on_sigterm

        stop_as_suspended_on_sigterm()
    if argv and argv[0] in PASS_THROUGH:
        import importlib

        return importlib.import_module(PASS_THROUGH[argv[0]][0]).main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
