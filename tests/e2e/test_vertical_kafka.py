"""Vertical federated learning on a real Kafka broker: splitter, scheduler (local runner: each
party's executor an OS process) and monitor as processes (tests/e2e/platform.py), every round
message of PSI and hetero LR through the broker, suspend and resume through the monitor's API.

Encrypted training here uses 512-bit Paillier keys (insecure: true): the test is about the
platform carrying the protocol, not the key size; the default and the bench use 2048 bits.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import yaml

from services.executor.vertical.split import ARBITER, GUEST, HOST, prepare_vertical_parties
from tests.e2e.platform import Platform, new_flow_id, platform_fixture

FLOW = Path(__file__).resolve().parents[2] / "examples" / "flows" / "vertical_breast_cancer.yaml"


platform = platform_fixture("vertical-e2e")


def _doc(**train) -> dict:
    doc = copy.deepcopy(yaml.safe_load(FLOW.read_text()))
    doc["steps"][1]["params"].update(train)
    return doc


def _algo(platform: Platform, flow_id: str, step: str, party: str) -> dict:
    task = platform.task(f"{flow_id}.{step}")
    return next((a for a in task["algorithm_tasks"] if a["party"] == party), {}) if task else {}


def _weights(work_dir: Path, flow_id: str, party: str) -> np.ndarray:
    with np.load(work_dir / "parties" / party / "artifacts" / flow_id / "hetero-lr-train.npz") as npz:
        return npz["w"]


def test_psi_encrypted_training_and_prediction_over_kafka(platform, work_dir):
    prepare_vertical_parties(work_dir)
    flow_id = new_flow_id("vertical")
    platform.submit(_doc(epochs=2, batch_size=128, tol=0.0, key_bits=512, insecure=True), flow_id)
    view = platform.wait_flow(flow_id, timeout_s=300)
    assert view["status"] == "SUCCEEDED", (view, platform.logs())
    assert [t["status"] for t in view["tasks"]] == ["SUCCEEDED"] * 3
    align = {p: _algo(platform, flow_id, "align", p)["metrics"] for p in (GUEST, HOST)}
    assert align[GUEST]["shared"] == align[HOST]["shared"] > 450
    guest = _algo(platform, flow_id, "train", GUEST)["metrics"]
    assert guest["epochs"] == 2 and guest["test_accuracy"] > 0.85
    assert _algo(platform, flow_id, "train", ARBITER)["metrics"]["test_accuracy"] == guest["test_accuracy"]
    assert _weights(work_dir, flow_id, GUEST).shape == (16,) and _weights(work_dir, flow_id, HOST).shape == (15,)
    assert not list((work_dir / "parties" / ARBITER).rglob("hetero-lr-*"))
    assert _algo(platform, flow_id, "predict", GUEST)["metrics"]["rows"] == align[GUEST]["shared"]
    platform.wait_executors_gone(flow_id)


def test_suspend_and_resume_mid_training_over_kafka_ends_with_the_uninterrupted_model(platform, work_dir):
    prepare_vertical_parties(work_dir, aligned=True)
    doc = _doc(encryption="none", insecure=True, epochs=40, tol=0.0, timeout_s=60.0)
    doc["steps"] = [doc["steps"][1]]
    del doc["steps"][0]["depends_on"], doc["steps"][0]["params"]["align_with"]  # pre-aligned: no PSI
    reference, resumed = new_flow_id("vlr-ref"), new_flow_id("vlr-sr")
    platform.submit(doc, reference)
    platform.submit(doc, resumed)

    at = platform.wait_until(lambda: _algo(platform, resumed, "train", GUEST).get("round", 0) >= 3 and
                             _algo(platform, resumed, "train", GUEST)["round"], "the guest's epoch 3",
                             timeout_s=180, every_s=0.1)
    assert at < 40, "training ended before it could be suspended; raise the epochs"
    platform.command("suspend", resumed)
    view = platform.wait_flow(resumed, ("SUSPENDED", "SUCCEEDED", "FAILED", "CANCELLED"), timeout_s=90)
    assert view["status"] == "SUSPENDED", (view, platform.logs())
    platform.wait_until(lambda: not platform.executors(resumed), "the suspended executors to exit", timeout_s=30)
    time.sleep(1)
    assert not platform.executors(resumed) and platform.flow(resumed)["status"] == "SUSPENDED"

    platform.command("resume", resumed)
    view = platform.wait_flow(resumed, timeout_s=300)
    assert view["status"] == "SUCCEEDED", (view, platform.logs())
    resumes = [json.loads(line) for path in (work_dir / "logs").glob(f"*{resumed.lower()}*guest*.log")
               for line in path.read_text().splitlines() if '"hetero_lr.resumed"' in line]
    # the guest had finished 3 epochs; a host stopped before its 3rd checkpoint makes all resume at 2
    assert len(resumes) == 1 and 2 <= resumes[0]["start_epoch"] < 40, resumes

    view = platform.wait_flow(reference, timeout_s=300)
    assert view["status"] == "SUCCEEDED", (view, platform.logs())
    for party in (GUEST, HOST):
        assert _weights(work_dir, resumed, party).tobytes() == _weights(work_dir, reference, party).tobytes(), party
    platform.wait_executors_gone()
