"""Images for the real node's containerd, written as OCI archives for `ctr images import`.

- the pod sandbox ("pause") image, from the pause binary built with the kubelet;
- a Docker image, incrementally: ``docker save`` streams every layer, but only the layers whose
  snapshots the node lacks are kept in the archive. Ferry's image is ~6 GB, almost all of it
  the dependencies' layer, and a source change touches only its last few MB; containerd skips
  unpacking layers whose snapshot exists, so it never needs the big layer's tarball again.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import IO, Iterable

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
KEEP_ALWAYS_BYTES = 64 << 20  # smaller layers are kept while hashed; larger ones only if known missing


class NeedFullImport(Exception):
    """A layer the node lacks was too large to keep on the off chance: import the whole image."""


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """The snapshot keys containerd gives an image's layers (OCI image spec, ChainID)."""
    chain: list[str] = []
    for diff_id in diff_ids:
        chain.append(diff_id if not chain else
                     "sha256:" + hashlib.sha256(f"{chain[-1]} {diff_id}".encode()).hexdigest())
    return chain


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _write_layout(out: Path, ref: str, config: bytes, layers: list[tuple[str, int]], blobs: dict[str, Path | bytes]) -> Path:
    """An OCI image archive at `out`: manifest for config + layers, with the blobs given."""
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": _digest(config), "size": len(config)},
                           "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": s} for d, s in layers]}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": OCI_MANIFEST, "digest": _digest(manifest), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": ref}}]}).encode()
    members: dict[str, Path | bytes] = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": index,
                                        f"blobs/sha256/{_digest(manifest)[7:]}": manifest,
                                        f"blobs/sha256/{_digest(config)[7:]}": config}
    members |= {f"blobs/sha256/{d[7:]}": blob for d, blob in blobs.items()}
    with tarfile.open(out, "w") as tar:
        for name, blob in members.items():
            if isinstance(blob, Path):
                tar.add(blob, arcname=name)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    return out


def pause_image_archive(pause: Path, ref: str, out: Path) -> Path:
    """An image with one layer, /pause, as its entrypoint: the pod sandbox."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("pause")
        info.size, info.mode, info.mtime = pause.stat().st_size, 0o755, 0
        with pause.open("rb") as f:
            tar.addfile(info, f)
    layer = layer_buf.getvalue()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
                         "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]}}).encode()
    return _write_layout(out, ref, config, [(_digest(layer), len(layer))], {_digest(layer): layer})


def docker_archive_to_oci(stream: IO[bytes], ref: str, have: set[str], workdir: Path, out: Path) -> tuple[Path, int]:
    """Read `docker save`'s stream; write an OCI archive with only the layers whose chain ID is
    not in `have` (the node's committed snapshots). Returns (archive, layers kept)."""
    sizes: dict[str, int] = {}
    kept: dict[str, Path] = {}
    big_unkept: set[str] = set()
    configs: dict[str, bytes] = {}
    workdir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith("/layer.tar"):
                keep = member.size <= KEEP_ALWAYS_BYTES
                src = tar.extractfile(member)
                digest, partial = hashlib.sha256(), workdir / f"layer-{len(sizes)}"
                with (partial.open("wb") if keep else io.BytesIO()) as sink:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        if keep:
                            sink.write(block)
                diff_id = "sha256:" + digest.hexdigest()
                sizes[diff_id] = member.size
                if keep:
                    kept[diff_id] = partial.rename(workdir / diff_id[7:])
                else:
                    big_unkept.add(diff_id)
            elif member.isfile() and member.name.endswith(".json") and "/" not in member.name \
                    and member.name != "manifest.json":
                configs[member.name] = tar.extractfile(member).read()
    if len(configs) != 1:
        raise ValueError(f"docker save of {ref}: expected one image config, found {sorted(configs)}")
    config = next(iter(configs.values()))
    diff_ids = json.loads(config)["rootfs"]["diff_ids"]
    missing = [d for d, c in zip(diff_ids, chain_ids(diff_ids)) if c not in have]
    if any(d in big_unkept for d in missing):
        raise NeedFullImport(f"{ref}: a large layer is new to the node")
    blobs = {d: kept[d] for d in missing}
    for d in set(kept) - set(blobs):
        kept[d].unlink()
    _write_layout(out, ref, config, [(d, sizes[d]) for d in diff_ids], blobs)
    shutil.rmtree(workdir, ignore_errors=True)
    return out, len(blobs)


def qualified(ref: str) -> str:
    """Docker's short name as containerd spells it: ferry:latest -> docker.io/library/ferry:latest."""
    name, _, tag = ref.rpartition(":") if ":" in ref.split("/")[-1] else (ref, "", "latest")
    first = name.split("/")[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    return f"{name}:{tag}"
