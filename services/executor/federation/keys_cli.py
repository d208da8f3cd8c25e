"""`ferry keys`: provision a federation's identities.

    ferry keys generate hospital-a --out /secure/hospital-a.key   # prints "hospital-a <public hex>"
    ferry keys public /secure/hospital-a.key
    ferry keys registry --out keys.yaml hospital-a=<hex> coordinator=/secure/coordinator.key
    ferry keys registry --out keys.yaml --configmap ferry-keys --namespace ferry hospital-a=<hex> ...
    ferry keys validate keys.yaml --nodes nodes.yaml [--key /secure/hospital-a.key --party hospital-a]

Each party generates its own key where it runs and hands only the public key
to whoever assembles the registry; private keys never travel.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

from shared.errors import ConfigurationError

from .identity import (KeyRegistryError, load_registry, parse_registry, read_key, registry_document,
                       write_key, write_registry)

_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


def _generate(args) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out = Path(args.out or f"{args.party}.key")
    if out.exists():
        raise KeyRegistryError(f"{out} exists: refusing to overwrite a party's identity")
    key = Ed25519PrivateKey.generate()
    write_key(out, key)
    print(f"{args.party} {key.public_key().public_bytes_raw().hex()}")
    print(f"wrote {out} (mode 0600); give FERRY_FEDERATION__IDENTITY_KEY_FILE={out} to {args.party}'s executors",
          file=sys.stderr)
    return 0


def _public(args) -> int:
    print(read_key(Path(args.key)).public_key().public_bytes_raw().hex())
    return 0


def _entry(text: str) -> tuple[str, bytes]:
    party, sep, value = text.partition("=")
    if not sep or not party:
        raise KeyRegistryError(f"{text!r}: expected PARTY=<64 hex chars> or PARTY=<key file>")
    if _HEX.match(value):
        return party, bytes.fromhex(value)
    return party, read_key(Path(value)).public_key().public_bytes_raw()


def _registry(args) -> int:
    out = Path(args.out) if args.out else None
    keys = dict(load_registry(out).keys) if out is not None and out.exists() and not args.configmap else {}
    keys.update(_entry(e) for e in args.entries)
    parse_registry(registry_document(keys), "<new registry>")  # the same checks a reader makes
    if args.configmap:
        text = yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": args.configmap, "namespace": args.namespace},
                               "data": {"keys.yaml": yaml.safe_dump(registry_document(keys), sort_keys=True)}},
                              sort_keys=False)
        if out is None:
            print(text, end="")
        else:
            out.write_text(text)
    elif out is None:
        print(yaml.safe_dump(registry_document(keys), sort_keys=True), end="")
    else:
        write_registry(out, keys)
    print(f"{len(keys)} parties: {', '.join(sorted(keys))}", file=sys.stderr)
    return 0


def _validate(args) -> int:
    registry = load_registry(Path(args.registry))
    problems = []
    if args.nodes:
        from services.scheduler.adapters.node_registry import load_node_registry

        placed = set(load_node_registry(args.nodes).parties)
        problems += [f"party {p} is placed in {args.nodes} but has no key" for p in sorted(placed - set(registry.keys))]
    if args.key:
        party = args.party or Path(args.key).stem
        public = read_key(Path(args.key)).public_key().public_bytes_raw()
        if registry.key_for(party) != public:
            problems.append(f"{args.key} is not the key {args.registry} pins for {party}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"{args.registry}: {len(registry.keys)} parties, every key well formed and distinct"
              + (f", every party of {args.nodes} pinned" if args.nodes else ""))
    return 0 if not problems else ConfigurationError.exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ferry keys", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    g = sub.add_parser("generate", help="a new Ed25519 identity for one party")
    g.add_argument("party")
    g.add_argument("--out", help="key file (default ./<party>.key); never overwritten")
    g.set_defaults(run=_generate)
    p = sub.add_parser("public", help="print a key file's public key (hex)")
    p.add_argument("key")
    p.set_defaults(run=_public)
    r = sub.add_parser("registry", help="build or extend a key registry (or a ConfigMap holding one)")
    r.add_argument("entries", nargs="+", help="PARTY=<public hex> or PARTY=<key file>")
    r.add_argument("--out", help="registry file (extended if it exists); default stdout")
    r.add_argument("--configmap", help="write a Kubernetes ConfigMap of this name (key keys.yaml) instead")
    r.add_argument("--namespace", default="ferry")
    r.set_defaults(run=_registry)
    v = sub.add_parser("validate", help="check a registry, against the node registry and a key file")
    v.add_argument("registry")
    v.add_argument("--nodes", help="node registry whose every party must have a key")
    v.add_argument("--key", help="a private key file that must match its party's entry")
    v.add_argument("--party", help="the key's party (default: the key file's name)")
    v.set_defaults(run=_validate)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ConfigurationError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ConfigurationError.exit_code
