"""`ferry certs`: the federation's CA, certificates, broker TLS settings and Kafka ACLs.

    ferry certs init  DIR                          a new CA (DIR/ca.crt, DIR/ca.key)
    ferry certs issue DIR NAME --role ROLE [--host H ...]   DIR/NAME.crt + .key signed by it
    ferry certs dev   DIR                          CA + broker + one certificate per role
    ferry certs broker-properties DIR --listener SSL://0.0.0.0:9093 --advertise SSL://kafka:9093
                                                   the broker's TLS/ACL server.properties lines
    ferry certs acls  [--apply HOST:PORT --dir DIR] the ACLs (printed, or created as admin)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _broker_properties(pki: Path, listeners: list[str], advertised: list[str]) -> str:
    from shared.devtools.kafka_broker import _pem_value
    from shared.pki import PRINCIPAL_MAPPING_RULES

    names = sorted({entry.split("://", 1)[0] for entry in listeners})
    props = {
        "listeners": ",".join(listeners), "advertised.listeners": ",".join(advertised),
        "listener.security.protocol.map": ",".join(f"{n}:SSL" for n in names),
        "ssl.client.auth": "required", "ssl.enabled.protocols": "TLSv1.3", "ssl.protocol": "TLSv1.3",
        "ssl.keystore.type": "PEM", "ssl.keystore.certificate.chain": _pem_value(pki / "broker.crt"),
        "ssl.keystore.key": _pem_value(pki / "broker.key"),
        "ssl.truststore.type": "PEM", "ssl.truststore.certificates": _pem_value(pki / "ca.crt"),
        "ssl.principal.mapping.rules": PRINCIPAL_MAPPING_RULES,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:broker;User:admin", "allow.everyone.if.no.acl.found": "false",
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def main(argv: list[str] | None = None) -> int:
    from shared.pki import BROKER_HOSTS, ROLES, create_ca, dev_pki, issue

    ap = argparse.ArgumentParser(prog="ferry certs", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("init", help="create the federation's CA")
    p.add_argument("dir", type=Path)
    p.add_argument("--name", default="Ferry federation CA")
    p = sub.add_parser("issue", help="issue a certificate signed by the CA in DIR")
    p.add_argument("dir", type=Path)
    p.add_argument("name", help="holder, e.g. hospital-a or splitter-0 (file name and CN)")
    p.add_argument("--role", required=True, choices=ROLES, help="what the ACLs let it do")
    p.add_argument("--host", action="append", default=[], help="DNS name or IP a server answers to (repeat)")
    p = sub.add_parser("dev", help="a development CA, broker certificate and one certificate per role")
    p.add_argument("dir", type=Path)
    p.add_argument("--host", action="append", default=[], help=f"broker names (default {', '.join(BROKER_HOSTS)})")
    p = sub.add_parser("broker-properties", help="print the broker's TLS and authorizer properties")
    p.add_argument("dir", type=Path, help="folder with ca.crt, broker.crt and broker.key")
    p.add_argument("--listener", action="append", required=True, help="e.g. INTERNAL://0.0.0.0:9093 (repeat)")
    p.add_argument("--advertise", action="append", required=True, help="e.g. INTERNAL://kafka:9093 (repeat)")
    p = sub.add_parser("acls", help="print the federation's ACLs, or create them on a broker")
    p.add_argument("--apply", metavar="HOST:PORT", help="create them there, connecting as admin")
    p.add_argument("--dir", type=Path, help="with --apply: folder with ca.crt, admin.crt, admin.key")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "init":
            out = create_ca(args.dir, args.name)
            print(f"CA certificate {out.cert}\nCA key {out.key} (keep it offline; it can mint any identity)")
        elif args.cmd == "issue":
            out = issue(args.dir, args.name, args.role, tuple(args.host))
            print(f"{out.cert}\n{out.key}")
        elif args.cmd == "dev":
            print(dev_pki(args.dir, tuple(args.host) or BROKER_HOSTS))
        elif args.cmd == "broker-properties":
            sys.stdout.write(_broker_properties(args.dir, args.listener, args.advertise))
        else:
            from shared.kafka_acls import apply_acls, client_context, federation_acls

            acls = federation_acls()
            if not args.apply:
                print("\n".join(str(a) for a in acls))
                return 0
            if args.dir is None:
                ap.error("--apply needs --dir")
            host, port = args.apply.rsplit(":", 1)
            d = args.dir
            apply_acls(host, int(port), client_context(str(d / "ca.crt"), str(d / "admin.crt"),
                                                       str(d / "admin.key")), acls)
            print(f"created {len(acls)} ACLs on {args.apply}")
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
