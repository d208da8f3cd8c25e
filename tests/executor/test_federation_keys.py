"""`ferry keys` and identity loading: keys pinned by default, clear errors naming the file and the party."""

from __future__ import annotations

import os
import stat

import pytest
import yaml

from services.cli import main as ferry
from services.executor.federation.identity import (KeyRegistryError, ensure_dev_keys, load_registry, load_trust,
                                                   parse_registry)
from services.executor.main import dev_trust
from shared.events import AlgorithmTaskSpec, Peer


def test_generate_registry_validate_round_trip(tmp_path, capsys):
    for party in ("hospital-a", "coordinator"):
        assert ferry(["keys", "generate", party, "--out", str(tmp_path / f"{party}.key")]) == 0
    out = capsys.readouterr().out.split("\n")
    printed = dict(line.split() for line in out if line)
    assert stat.S_IMODE(os.stat(tmp_path / "hospital-a.key").st_mode) == 0o600
    assert ferry(["keys", "public", str(tmp_path / "coordinator.key")]) == 0
    assert capsys.readouterr().out.strip() == printed["coordinator"]
    registry = tmp_path / "keys.yaml"
    assert ferry(["keys", "registry", "--out", str(registry), f"hospital-a={printed['hospital-a']}",
                  f"coordinator={tmp_path / 'coordinator.key'}"]) == 0
    assert {p: k.hex() for p, k in load_registry(registry).keys.items()} == printed
    assert ferry(["keys", "validate", str(registry), "--key", str(tmp_path / "hospital-a.key")]) == 0
    # a key file that is not the pinned one, and a party the node registry places without a key
    assert ferry(["keys", "validate", str(registry), "--key", str(tmp_path / "coordinator.key"),
                  "--party", "hospital-a"]) == 2
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text(yaml.safe_dump({"parties": {p: {"namespace": "ferry", "node_selector": {"x": "y"}}
                                                 for p in ("hospital-a", "coordinator", "hospital-b")}}))
    assert ferry(["keys", "validate", str(registry), "--nodes", str(nodes)]) == 2
    assert "hospital-b is placed" in capsys.readouterr().err
    assert ferry(["keys", "generate", "hospital-a", "--out", str(tmp_path / "hospital-a.key")]) == 2  # never overwritten


def test_configmap_output_holds_a_valid_registry(tmp_path, capsys):
    assert ferry(["keys", "registry", "--configmap", "ferry-keys", "--namespace", "fl", "a=" + "ab" * 32]) == 0
    cm = yaml.safe_load(capsys.readouterr().out)
    assert cm["kind"] == "ConfigMap" and cm["metadata"] == {"name": "ferry-keys", "namespace": "fl"}
    assert parse_registry(yaml.safe_load(cm["data"]["keys.yaml"]), "cm").keys == {"a": bytes.fromhex("ab" * 32)}


@pytest.mark.parametrize("document, field", [
    ({"parties": {"a": {"ed25519": "xyz"}}}, "parties.a.ed25519"),
    ({"parties": {"a": {"ed25519": "ab" * 32, "rsa": 1}}}, "parties.a"),
    ({"parties": {"a": {"ed25519": "ab" * 32}, "b": {"ed25519": "ab" * 32}}}, "the same key as a"),
    ({"party": {}}, "expected a mapping")])
def test_bad_registries_name_the_field(document, field):
    with pytest.raises(KeyRegistryError, match=field):
        parse_registry(document, "keys.yaml")


def test_executors_need_a_registry_unless_insecure_is_asked_for(tmp_path):
    with pytest.raises(KeyRegistryError, match="FERRY_FEDERATION__KEY_REGISTRY"):
        load_trust("a", None, None, insecure=False)
    assert load_trust("a", None, None, insecure=True).insecure
    template, registry = ensure_dev_keys(tmp_path, ["a", "b"])
    trust = load_trust("a", template, registry, insecure=False)
    assert not trust.insecure and trust.registry.key_for("a") == trust.identity.public
    with pytest.raises(KeyRegistryError, match=r"parties \['zed'\] have no key"):
        trust.check_peers(["a", "b", "zed"])
    wrong = load_trust("a", tmp_path / "b.key", registry, insecure=False)
    with pytest.raises(KeyRegistryError, match="does not match its entry"):
        wrong.check_peers(["a", "b"])


def test_dev_keys_are_made_once_per_party_and_added_to_the_registry(tmp_path):
    spec = AlgorithmTaskSpec("t.a", "t", "f", "train", "ferry.fedavg", "1", {}, "a", "client",
                             (Peer("a", "client"), Peer("agg", "aggregator")))
    first = dev_trust(tmp_path, spec)
    again = dev_trust(tmp_path, spec)
    assert first.identity.public == again.identity.public
    other = dev_trust(tmp_path, AlgorithmTaskSpec("u.c", "u", "f", "x", "x", "1", {}, "c", "client", ()))
    assert set(load_registry(tmp_path / "registry.yaml").keys) == {"a", "agg", "c"}
    assert other.registry.key_for("a") == first.identity.public
