"""Fetch the dashboard's front-end libraries from npm, pinned, and record what was fetched.

    python -m shared.devtools.vendor_js          # (re)fetch every pin with `npm pack`
    python -m shared.devtools.vendor_js --check  # offline: the files match the manifest

The built, minified files are committed under services/monitor/dashboard/static/vendor/
with their licences, and VENDOR.json records package, version, the npm tarball's
integrity and each file's sha256, so a reviewer can re-fetch and compare. The
monitor serves these files itself: the dashboard needs no network at run time.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

VENDOR_DIR = Path(__file__).resolve().parents[2] / "services" / "monitor" / "dashboard" / "static" / "vendor"
MANIFEST = VENDOR_DIR / "VENDOR.json"


@dataclass(frozen=True)
class Pin:
    package: str
    version: str
    files: tuple[str, ...]       # paths inside the tarball's package/ folder
    licence_file: str
    licence: str
    note: str = ""


PINS = (
    Pin("cytoscape", "3.35.0", ("dist/cytoscape.min.js",), "LICENSE", "MIT"),
    Pin("cytoscape-dagre", "4.0.1", ("dist/cytoscape-dagre.min.js",), "LICENSE", "MIT",
        "bundles @dagrejs/dagre and graphlib (MIT) for the layered DAG layout"),
    Pin("chart.js", "4.5.1", ("dist/chart.umd.min.js",), "LICENSE.md", "MIT"),
)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _local_name(pin: Pin, path: str) -> str:
    return f"{pin.package}-{pin.version}-{Path(path).name}"


def fetch() -> dict:
    VENDOR_DIR.mkdir(parents=True, exist_ok=True)
    entries = []
    with tempfile.TemporaryDirectory(prefix="ferry-npm-") as tmp:
        for pin in PINS:
            spec = f"{pin.package}@{pin.version}"
            out = subprocess.run(["npm", "pack", spec, "--json", "--pack-destination", tmp], check=True,
                                 capture_output=True, text=True, timeout=120)
            packed = json.loads(out.stdout)[0]
            tarball = Path(tmp) / packed["filename"]
            files = {}
            with tarfile.open(tarball) as tar:
                for path in (*pin.files, pin.licence_file):
                    data = tar.extractfile(f"package/{path}").read()
                    name = (f"{pin.package}-{pin.version}.LICENSE" if path == pin.licence_file
                            else _local_name(pin, path))
                    (VENDOR_DIR / name).write_bytes(data)
                    files[name] = _sha256(data)
            entries.append({"package": pin.package, "version": pin.version, "licence": pin.licence,
                            "integrity": packed["integrity"], "note": pin.note,
                            "tarball_sha256": _sha256(tarball.read_bytes()), "files": files})
    manifest = {"source": "https://registry.npmjs.org (npm pack)", "packages": entries}
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def check() -> list[str]:
    """Every difference between the vendored files and the manifest (empty: they match)."""
    problems = []
    manifest = json.loads(MANIFEST.read_text())
    pinned = {(p.package, p.version) for p in PINS}
    recorded = {(e["package"], e["version"]) for e in manifest["packages"]}
    if pinned != recorded:
        problems.append(f"pins {sorted(pinned)} differ from the manifest {sorted(recorded)}; re-run vendor_js")
    for entry in manifest["packages"]:
        for name, digest in entry["files"].items():
            path = VENDOR_DIR / name
            if not path.exists():
                problems.append(f"{name} is missing")
            elif _sha256(path.read_bytes()) != digest:
                problems.append(f"{name} does not match its recorded sha256")
    return problems


def script_names() -> list[str]:
    """The vendored JavaScript files, in load order (the page includes them in this order)."""
    return [_local_name(p, f) for p in PINS for f in p.files]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vendor_js", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only verify the files against VENDOR.json")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for p in problems:
            print(p, file=sys.stderr)
        return 1 if problems else 0
    for entry in fetch()["packages"]:
        print(f"{entry['package']} {entry['version']} ({entry['licence']}): {', '.join(entry['files'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
