"""The real node's image archives (shared/devtools/k8s_node_images.py), without containerd.

The archives are imported by the real-pod tests (tests/scheduler/test_kubernetes_real_pods.py);
these check the parts a wrong byte would break silently there: chain IDs, and that an
incremental archive keeps exactly the layers the node lacks.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest

from shared.devtools.k8s_node_images import NeedFullImport, chain_ids, docker_archive_to_oci, qualified


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _docker_save(layers: list[bytes]) -> tuple[bytes, bytes]:
    """A `docker save` stream (layer dirs, config, manifest.json) and its config."""
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [_sha(layer) for layer in layers]},
                         "config": {"Entrypoint": ["ferry"]}}).encode()
    members = {f"{hashlib.sha1(layer).hexdigest()}/layer.tar": layer for layer in layers}
    members[f"{_sha(config)[7:]}.json"] = config
    members["manifest.json"] = json.dumps([{"Config": f"{_sha(config)[7:]}.json", "RepoTags": ["ferry:latest"],
                                            "Layers": [n for n in members if n.endswith("layer.tar")]}]).encode()
    return _layer(members), config


def test_chain_ids_follow_the_oci_image_spec():
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert chain_ids([a, b]) == [a, "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()]


def test_an_incremental_archive_keeps_only_the_layers_the_node_lacks(tmp_path):
    deps, code = _layer({"opt/venv/lib.py": b"x" * 1000}), _layer({"opt/app.py": b"print('v2')"})
    stream, config = _docker_save([deps, code])
    have = {chain_ids([_sha(deps)])[0]}  # the node has the dependencies' layer from the last import

    archive, kept = docker_archive_to_oci(io.BytesIO(stream), "docker.io/library/ferry:latest", have,
                                          tmp_path / "work", tmp_path / "image.tar")

    assert kept == 1
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        index = json.load(tar.extractfile("index.json"))
        (entry,) = index["manifests"]
        manifest = json.load(tar.extractfile(f"blobs/sha256/{entry['digest'][7:]}"))
        assert tar.extractfile(f"blobs/sha256/{_sha(code)[7:]}").read() == code
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "docker.io/library/ferry:latest"
    assert [(layer["digest"], layer["size"]) for layer in manifest["layers"]] == [(_sha(deps), len(deps)),
                                                                                 (_sha(code), len(code))]
    assert manifest["config"]["digest"] == _sha(config)
    assert f"blobs/sha256/{_sha(deps)[7:]}" not in names  # containerd unpacks from its snapshot


def test_a_large_new_layer_asks_for_a_full_import(tmp_path, monkeypatch):
    monkeypatch.setattr("shared.devtools.k8s_node_images.KEEP_ALWAYS_BYTES", 100)
    deps, code = _layer({"opt/venv/lib.py": b"x" * 1000}), _layer({"app.py": b"1"})
    stream, _ = _docker_save([deps, code])
    with pytest.raises(NeedFullImport):
        docker_archive_to_oci(io.BytesIO(stream), "ferry", set(), tmp_path / "work", tmp_path / "image.tar")


def test_short_docker_names_are_qualified_as_containerd_names_them():
    assert qualified("ferry:latest") == "docker.io/library/ferry:latest"
    assert qualified("ferry") == "docker.io/library/ferry:latest"
    assert qualified("ferry.dev/pause:1") == "ferry.dev/pause:1"
