"""Deploy files stay in step with the code: settings they set exist, registries they ship parse."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from services.scheduler.adapters.node_registry import parse_node_registry
from shared.settings import FerrySettings

ROOT = Path(__file__).resolve().parents[2]


def _documents():
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")) + [ROOT / "docker-compose.yml"]:
        for doc in yaml.safe_load_all(path.read_text()):
            yield path, doc


def _setting_exists(name: str) -> bool:
    parts = name.removeprefix("FERRY_").lower().split("__")
    node = FerrySettings.model_fields
    for i, part in enumerate(parts):
        if part not in node:
            return False
        annotation = node[part].annotation
        if i < len(parts) - 1:
            node = getattr(annotation, "model_fields", {})
    return True


def test_every_ferry_variable_in_deploy_files_is_a_real_setting():
    text = "\n".join(p.read_text() for p in (ROOT / "deploy" / "k8s").glob("*.yaml"))
    text += (ROOT / "docker-compose.yml").read_text()
    names = set(re.findall(r"\b(FERRY_[A-Z_]+)\b", text))
    assert names
    assert sorted(n for n in names if not _setting_exists(n)) == []


def test_the_shipped_node_registry_parses():
    configmaps = [d for _, d in _documents() if d and d.get("kind") == "ConfigMap"
                  and "nodes.yaml" in d.get("data", {})]
    assert configmaps
    registry = parse_node_registry(yaml.safe_load(configmaps[0]["data"]["nodes.yaml"]), "deploy/k8s/10-config.yaml",
                                   "ferry")
    assert registry.node_for("hospital-a").namespace == "ferry-hospital-a"


def test_every_service_has_probes_and_a_scrape_annotation():
    kinds = {}
    for path, doc in _documents():
        if doc and doc.get("kind") in ("Deployment", "Service") and path.name.startswith("30-"):
            kinds.setdefault(doc["kind"], []).append(doc)
    assert len(kinds["Deployment"]) == len(kinds["Service"]) == 3
    for deployment in kinds["Deployment"]:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    for service in kinds["Service"]:
        assert service["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
