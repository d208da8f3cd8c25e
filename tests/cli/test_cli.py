"""`ferry`: every --help answers, network calls time out with names, `ferry algorithms`, and the
flow commands over a live monitor (embedded platform served over HTTP)."""

from __future__ import annotations

import argparse
import json
import socket
import time
import uuid
from pathlib import Path

import pytest

from services.cli import PASS_THROUGH, build_parser, main
from services.splitter.core.flow_document import parse_flow_document
from tests.dashboard.live import LivePlatform

ROOT = Path(__file__).resolve().parents[2]


def _commands(parser: argparse.ArgumentParser, prefix=()) -> list[tuple[str, ...]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append(prefix + (name,))
                out += _commands(sub, prefix + (name,))
    return out


COMMANDS = _commands(build_parser())


def test_the_command_tree_is_complete():
    names = {" ".join(c) for c in COMMANDS}
    assert {"flow watch", "flow submit", "flow list", "flow show", "flow suspend", "flow resume",
            "flow cancel", "algorithms", "data", "kafka"} <= names


@pytest.mark.parametrize("command", COMMANDS + [("data", "import"), ("data", "info")], ids=" ".join)
def test_every_subcommand_answers_help(command, capsys):
    try:
        code = main([*command, "--help"])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr().out
    assert code == 0 and "usage:" in out, (command, out)
    if command[0] in PASS_THROUGH or command[-1] in ("watch", "submit"):
        assert "--help" in out or "-h" in out


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens once the socket is closed


def test_submit_to_an_unreachable_broker_fails_fast_naming_it(capsys, monkeypatch):
    # Run alone, no session fixture has put TLS settings in the environment; what is under test
    # here is the unreachable broker, so the client may be a development one.
    monkeypatch.setenv("FERRY_KAFKA__INSECURE_PLAINTEXT", "true")
    bootstrap = f"127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    code = main(["flow", "submit", str(ROOT / "examples" / "flows" / "noop.yaml"), "--bootstrap", bootstrap,
                 "--connect-timeout", "2"])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 69 and f"could not reach the Kafka broker at {bootstrap} within 2s" in err, err
    assert elapsed < 15


@pytest.mark.parametrize("argv", [["flow", "list"], ["flow", "show", "x"], ["flow", "suspend", "x"],
                                  ["flow", "watch", "x"]], ids=" ".join)
def test_monitor_commands_name_the_monitor_they_could_not_reach(argv, capsys):
    url = f"http://127.0.0.1:{_closed_port()}"
    code = main([*argv, "--monitor", url, "--connect-timeout", "2"])
    err = capsys.readouterr().err
    assert code == 69 and f"could not reach the monitor at {url}" in err, err


def test_algorithms_lists_builtin_and_plugin_algorithms_with_their_parameters(capsys):
    assert main(["algorithms"]) == 0
    out = capsys.readouterr().out
    assert "ferry.fedavg" in out and "built-in" in out and "plug-in ferry-example-histogram" in out
    assert "test_fraction" in out and "0.01 .. 0.9" in out
    assert main(["algorithms", "ferry.noop", "--json"]) == 0
    (spec,) = json.loads(capsys.readouterr().out)
    assert spec["source"] == "built-in" and [p["name"] for p in spec["params"]] == ["sleep_s", "fail"]
    assert main(["algorithms", "nope"]) == 1


def test_flow_watch_list_show_and_commands_over_a_live_monitor(tmp_path, capsys):
    flow_id = f"cli-{uuid.uuid4().hex[:6]}"
    flow = parse_flow_document((ROOT / "examples" / "flows" / "noop.yaml").read_text(), default_flow_id=flow_id)
    with LivePlatform(tmp_path) as live:
        live.call(live.platform.submit(flow))
        monitor = ["--monitor", live.url]
        assert main(["flow", "watch", flow_id, *monitor, "--timeout", "600"]) == 0
        out = capsys.readouterr().out
        assert f"flow {flow_id}: SUCCEEDED" in out and out.count("node-a") >= 2  # the result table
        assert main(["flow", "list", *monitor]) == 0
        assert flow_id in capsys.readouterr().out
        assert main(["flow", "show", flow_id, *monitor]) == 0
        assert "second" in capsys.readouterr().out
        assert main(["flow", "suspend", flow_id, *monitor]) == 1  # IllegalCommand: the API's 409, verbatim
        assert "HTTP 409" in capsys.readouterr().err
        assert main(["flow", "cancel", "no-such-flow", *monitor]) == 1
        assert "HTTP 404: unknown flow 'no-such-flow'" in capsys.readouterr().err
