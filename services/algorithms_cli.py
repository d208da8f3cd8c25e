"""`ferry algorithms [NAME] [--json]`: every installed algorithm (built-in and plug-in), its roles and parameters."""

from __future__ import annotations

import argparse
import json
from importlib.metadata import entry_points

from rich.console import Console
from rich.table import Table

from shared.algorithms import ENTRY_POINT_GROUP, AlgorithmRegistry, AlgorithmSpec, ParamSpec


def sources() -> dict[tuple[str, str], str]:
    """(name, version) -> the entry point (distribution) that installed it."""
    out = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        loaded = ep.load()
        dist = ep.dist.name if ep.dist is not None else ep.value
        for spec in loaded if isinstance(loaded, (list, tuple)) else [loaded]:
            out[spec.key] = "built-in" if ep.name == "builtin" else f"plug-in {dist}"
    return out


def param_range(p: ParamSpec) -> str:
    if p.choices:
        return "one of " + ", ".join(map(str, p.choices))
    if p.minimum is not None and p.maximum is not None:
        return f"{p.minimum:g} .. {p.maximum:g}"
    if p.minimum is not None:
        return f">= {p.minimum:g}"
    if p.maximum is not None:
        return f"<= {p.maximum:g}"
    return ""


def param_default(p: ParamSpec) -> str:
    if p.required:
        return "required"
    return "—" if p.default is None else json.dumps(p.default)


def spec_json(spec: AlgorithmSpec, source: str) -> dict:
    return {"name": spec.name, "version": spec.version, "source": source, "description": spec.description,
            "roles": [{"name": r.name, "min_parties": r.min_parties, "max_parties": r.max_parties,
                       "needs_data": r.needs_data, "help": r.help} for r in spec.roles],
            "params": [{"name": p.name, "type": p.type, "default": p.default, "required": p.required,
                        "minimum": p.minimum, "maximum": p.maximum, "choices": list(p.choices), "help": p.help}
                       for p in spec.params]}


def main(args: argparse.Namespace) -> int:
    registry, origin = AlgorithmRegistry.from_entry_points(), sources()
    specs = [s for s in registry if args.name is None or s.name == args.name]
    if not specs:
        print(f"no algorithm {args.name!r}; installed: {', '.join(registry.names())}")
        return 1
    if args.json:
        print(json.dumps([spec_json(s, origin.get(s.key, "")) for s in specs], indent=1, default=str))
        return 0
    console = Console()
    for spec in specs:
        roles = ", ".join(f"{r.name} ({r.min_parties}..{r.max_parties or 'n'} parties"
                          f"{'' if r.needs_data else ', no data'})" for r in spec.roles)
        table = Table(title=f"[bold]{spec.name}[/] {spec.version}  [dim]{origin.get(spec.key, '')}[/]\n"
                            f"{spec.description}\nroles: {roles}", title_justify="left", show_lines=False)
        for column in ("parameter", "type", "default", "range", "meaning"):
            table.add_column(column, overflow="fold")
        for p in spec.params:
            table.add_row(p.name, p.type, param_default(p), param_range(p), p.help)
        if not spec.params:
            table.add_row("(none)", "", "", "", "")
        console.print(table)
        console.print()
    return 0
