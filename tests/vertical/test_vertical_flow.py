"""Vertical federated learning through the platform (embedded: splitter, scheduler, monitor and
inline executors over the in-process bus): PSI -> hetero LR -> prediction, the thesis's test,
suspend/resume mid-training, and the splitter's checks of roles and parameters.

Encrypted runs here use 512-bit Paillier keys (with insecure: true): they test the protocol's
logic, which does not depend on the key size; the default and the bench use 2048 bits.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml
from structlog.testing import capture_logs

from services.embedded import EmbeddedPlatform
from services.executor.algorithms import vertical_psi
from services.executor.artifacts import ArtifactStore
from services.executor.data.importers import Table, put_table
from services.executor.data.schema import Schema
from services.executor.data import open_dataset
from services.executor.vertical import lr
from services.executor.vertical.split import ARBITER, GUEST, HOST, prepare_vertical_parties
from services.scheduler.adapters.launchers import party_dirs
from services.splitter.core.decide import Accepted, decide
from services.splitter.core.flow_document import parse_flow_document
from services.splitter.core.validation import FlowLimits, validate_flow
from shared.algorithms import AlgorithmRegistry

ROOT = Path(__file__).resolve().parents[2]
FLOW = ROOT / "examples" / "flows" / "vertical_breast_cancer.yaml"
TEST_KEY = {"key_bits": 512, "insecure": True}  # protocol logic only; see the module docstring


@pytest.fixture(scope="module")
def registry():
    return AlgorithmRegistry.from_entry_points()


def _doc(**train) -> dict:
    doc = copy.deepcopy(yaml.safe_load(FLOW.read_text()))
    doc["steps"][1]["params"].update(train)
    return doc


async def _run(work: Path, doc: dict, flow_id: str, timeout_s: float = 240) -> dict:
    flow = parse_flow_document(doc, default_flow_id=flow_id)
    async with EmbeddedPlatform(work) as platform:
        await platform.submit(flow)
        view = await platform.wait_for(flow.flow_id, timeout_s=timeout_s)
    assert view["status"] == "SUCCEEDED", view
    return view


def _metrics(view: dict, step: str, party: str) -> dict:
    task = next(t for t in view["tasks"] if t["step"] == step)
    return next(a for a in task["algorithm_tasks"] if a["party"] == party)["metrics"]


def _aligned(work: Path, flow_id: str, party: str):
    rows = ArtifactStore(party_dirs(work, party)["artifacts"], flow_id).load("psi-align")[0]["rows"]
    with open_dataset(party_dirs(work, party)["data"], "breast_cancer_v") as data:
        ids = np.array(data.reader.take("id", rows))
        x = np.array(data.reader.take("x", rows), np.float64)
        y = np.array(data.reader.take("y", rows)) if data.schema.label else None
    return ids, x, y


def _joined(work: Path, flow_id: str):
    g_ids, x_g, y = _aligned(work, flow_id, GUEST)
    h_ids, x_h, _ = _aligned(work, flow_id, HOST)
    assert (g_ids == h_ids).all()
    return g_ids, x_g, x_h, y


def _model(work: Path, flow_id: str, party: str) -> np.ndarray:
    return ArtifactStore(party_dirs(work, party)["artifacts"], flow_id).load("hetero-lr-train")[0]["w"]


def _taylor_sgd(xs: list[np.ndarray], y: np.ndarray, epochs: int, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The protocol's training in the clear on the joined table: xs[0] the guest's columns, then hosts'.
    Returns (weights in party order, joined inputs with the guest's intercept, held-out positions)."""
    p = yaml.safe_load(FLOW.read_text())["steps"][1]["params"]
    train, test = lr.split_positions(len(y), 0.2, p["seed"])
    parts = [lr.Standardiser.fit(a[train]).apply(a) for a in xs]
    x = np.concatenate([lr.with_intercept(parts[0]), *parts[1:]], axis=1)
    w = np.zeros(x.shape[1])
    for epoch in range(epochs):
        rate = lr.learning_rate(p["lr_schedule"], p["lr"], p["lr_decay"], epoch)
        for pos in lr.batch_positions(len(train), batch, p["seed"], epoch):
            rows = train[pos]
            grad, _ = lr.taylor_reference(x[rows], lr.labels_pm(y[rows], "t"), w)
            penalty = p["alpha"] * w
            penalty[parts[0].shape[1]] = 0.0  # not on the intercept
            w = w - rate * (grad / len(rows) + penalty)
    return w, x, test


# -- the splitter ---------------------------------------------------------------------------------

def test_the_splitter_accepts_the_example_and_plans_each_role(registry):
    flow = parse_flow_document(yaml.safe_load(FLOW.read_text()), default_flow_id="v-plan")
    assert validate_flow(flow, registry, None, FlowLimits()) == []
    outcome = decide(flow, registry, None, FlowLimits(), now_ms=0)
    assert isinstance(outcome, Accepted), outcome
    planned = {t.step: sorted((a.party, a.role, a.data_ref) for a in t.algorithm_tasks) for t in outcome.tasks}
    assert planned["align"] == [(GUEST, "guest", "breast_cancer_v"), (HOST, "host", "breast_cancer_v")]
    assert planned["train"] == [(ARBITER, "arbiter", ""), (GUEST, "guest", "breast_cancer_v"),
                                (HOST, "host", "breast_cancer_v")]


def test_the_splitter_names_weak_privacy_and_bad_roles(registry):
    weak = parse_flow_document(_doc(encryption="none", key_bits=1024), default_flow_id="v-weak")
    errors = {e.path: e.reason for e in validate_flow(weak, registry, None, FlowLimits())}
    assert "steps[1].params.encryption" in errors and "insecure: true" in errors["steps[1].params.encryption"]
    assert "steps[1].params.key_bits" in errors and "1024-bit" in errors["steps[1].params.key_bits"]
    assert validate_flow(parse_flow_document(_doc(encryption="none", key_bits=1024, insecure=True),
                                             default_flow_id="v-dev"), registry, None, FlowLimits()) == []
    doc = _doc(lr_schedule="cosine", epochs=0)
    doc["steps"][1]["parties"]["guest"] = [GUEST, "bank"]
    doc["parties"]["bank"] = {"data": "x"}
    doc["steps"][0]["params"]["colour"] = "red"
    errors = {e.path: e.reason for e in validate_flow(parse_flow_document(doc, default_flow_id="v-bad"),
                                                      registry, None, FlowLimits())}
    assert "must be one of" in errors["steps[1].params.lr_schedule"]
    assert "must be >= 1" in errors["steps[1].params.epochs"]
    assert "unknown parameter" in errors["steps[0].params.colour"]
    assert errors["steps[1].parties.guest"] == "ferry.hetero_lr allows at most 1 party as 'guest', got 2"


# -- end to end -------------------------------------------------------------------------------------

async def test_psi_then_encrypted_training_equals_taylor_sgd_on_the_joined_table(tmp_path):
    split = prepare_vertical_parties(tmp_path)
    epochs, batch = 3, 128
    view = await _run(tmp_path, _doc(epochs=epochs, batch_size=batch, tol=0.0, **TEST_KEY), "v-enc")

    # PSI: exactly the ids both hold, in the same order at both parties.
    ids, x_g, x_h, y = _joined(tmp_path, "v-enc")
    assert set(ids.tolist()) == set(split.rows[GUEST].tolist()) & set(split.rows[HOST].tolist())
    assert _metrics(view, "align", GUEST)["shared"] == _metrics(view, "align", HOST)["shared"] == len(ids)

    # The same training in the clear, on the joined table: what the protocol must compute.
    w, x, test = _taylor_sgd([x_g, x_h], y, epochs, batch)
    w_guest, w_host = _model(tmp_path, "v-enc", GUEST), _model(tmp_path, "v-enc", HOST)
    np.testing.assert_allclose(np.concatenate([w_guest, w_host]), w, atol=1e-6)

    # Model parts stay with their owners; the arbiter keeps none.
    assert w_guest.shape == (16,) and w_host.shape == (15,)
    assert not (party_dirs(tmp_path, ARBITER)["artifacts"] / "v-enc").exists() or not list(
        (party_dirs(tmp_path, ARBITER)["artifacts"] / "v-enc").glob("hetero-lr-*"))
    guest = _metrics(view, "train", GUEST)
    expected = lr.scores(lr.sigmoid(x[test] @ w), y[test])["accuracy"]
    assert guest["test_accuracy"] == pytest.approx(expected) and guest["test_n"] == len(test)
    assert guest["epochs"] == epochs and guest["bytes_sent"] > 0

    # Prediction is a step too: the guest holds the scores of every aligned row.
    predicted = ArtifactStore(party_dirs(tmp_path, GUEST)["artifacts"], "v-enc").load("predictions-predict")[0]
    np.testing.assert_allclose(predicted["proba"], lr.sigmoid(x @ w), atol=1e-6)
    assert not list((party_dirs(tmp_path, HOST)["artifacts"] / "v-enc").glob("predictions-*"))


async def test_psi_streams_large_sets_in_many_messages_and_finds_exactly_the_shared_ids(tmp_path, monkeypatch):
    """Sets far larger than one message: each side's points go out in many messages (shrunk here
    to 128 points so a thousand ids need ten or more), are re-blinded batch by batch as they arrive,
    and both parties end with exactly the shared ids at the same positions."""
    monkeypatch.setattr(vertical_psi, "POINTS_PER_MESSAGE", 128)
    monkeypatch.setattr(vertical_psi, "SLICE", 500)
    rng = np.random.default_rng(7)
    ids = {GUEST: rng.permutation(np.arange(0, 1200)), HOST: rng.permutation(np.arange(400, 2000))}
    for party, column in ids.items():
        columns = {"id": column.astype(np.int64), "v": np.zeros(len(column), np.float32)}
        put_table(party_dirs(tmp_path, party)["data"], "ids", Table(columns, Schema.infer(columns, features=("v",)), {}))
    doc = {"flow": "psi-many", "parties": {GUEST: {"data": "ids"}, HOST: {"data": "ids"}},
           "steps": [{"name": "align", "algorithm": "ferry.psi", "version": "2",
                      "parties": {"guest": GUEST, "host": [HOST]}}]}
    with capture_logs() as logs:
        await _run(tmp_path, doc, "psi-many")
    aligned = {p: ids[p][ArtifactStore(party_dirs(tmp_path, p)["artifacts"], "psi-many").load("psi-align")[0]["rows"]]
               for p in ids}
    assert sorted(aligned[GUEST].tolist()) == list(range(400, 1200))
    assert aligned[GUEST].tolist() == aligned[HOST].tolist()
    assert not [e for e in logs if e.get("event") == "round.message_rejected"]


async def test_two_hosts_train_with_the_guest_and_predict(tmp_path):
    """Guest (label + 10 features) and two hosts (10 features each); the loss's cross terms
    between hosts come from the hosts, the weights equal Taylor-SGD on the joined table."""
    from services.executor.data.importers import load_source, put_table
    from services.executor.vertical.split import party_table, split_table

    table = load_source("sklearn:breast_cancer")
    x_all = np.asarray(table.columns["X"], np.float64)
    hosts = ("lab", "imaging")
    split = split_table(x_all, np.asarray(table.columns["y"]), {GUEST: range(10), hosts[0]: range(10, 20),
                                                               hosts[1]: range(20, 30)}, keep_fraction=0.95, seed=3)
    for party in split.columns:
        put_table(party_dirs(tmp_path, party)["data"], "breast_cancer_v", party_table(split, party, label=party == GUEST))
    doc = _doc(epochs=1, batch_size=256, tol=0.0, **TEST_KEY)
    doc["parties"][hosts[1]] = {"data": "breast_cancer_v"}
    for step in doc["steps"]:
        step["parties"]["host"] = list(hosts)
    view = await _run(tmp_path, doc, "v-2h", timeout_s=400)

    aligned = {p: _aligned(tmp_path, "v-2h", p) for p in (GUEST, *hosts)}
    ids = aligned[GUEST][0]
    assert all((aligned[h][0] == ids).all() for h in hosts)
    assert set(ids.tolist()) == set.intersection(*(set(split.rows[p].tolist()) for p in split.columns))
    w, x, test = _taylor_sgd([aligned[GUEST][1], aligned[hosts[0]][1], aligned[hosts[1]][1]], aligned[GUEST][2], 1, 256)
    got = np.concatenate([_model(tmp_path, "v-2h", p) for p in (GUEST, *hosts)])
    np.testing.assert_allclose(got, w, atol=1e-6)
    assert _metrics(view, "train", "coordinator")["train_loss"] > 0
    predicted = ArtifactStore(party_dirs(tmp_path, GUEST)["artifacts"], "v-2h").load("predictions-predict")[0]
    np.testing.assert_allclose(predicted["proba"], lr.sigmoid(x @ w), atol=1e-6)


async def test_vertical_training_matches_centralized_training_on_the_joined_table(tmp_path):
    """The thesis's test, vertically: same rows, same held-out set, accuracy not significantly different."""
    from sklearn.linear_model import LogisticRegression

    from bench._common import mcnemar_exact_p

    prepare_vertical_parties(tmp_path)
    view = await _run(tmp_path, _doc(encryption="none", insecure=True), "v-thesis")
    ids, x_g, x_h, y = _joined(tmp_path, "v-thesis")
    train, test = lr.split_positions(len(ids), 0.2, 7)
    x = np.concatenate([x_g, x_h], axis=1)
    standardiser = lr.Standardiser.fit(x[train])
    central = LogisticRegression(max_iter=5000).fit(standardiser.apply(x[train]), y[train])
    central_right = central.predict(standardiser.apply(x[test])) == y[test]
    predicted = ArtifactStore(party_dirs(tmp_path, GUEST)["artifacts"], "v-thesis").load("predictions-predict")[0]
    vertical_right = predicted["label"][test] == y[test]
    assert vertical_right.mean() == pytest.approx(_metrics(view, "train", GUEST)["test_accuracy"])
    assert central_right.mean() > 0.9
    assert abs(vertical_right.mean() - central_right.mean()) <= 0.03
    b, c = int((vertical_right & ~central_right).sum()), int((~vertical_right & central_right).sum())
    assert mcnemar_exact_p(b, c) > 0.05
    assert _metrics(view, "train", GUEST)["epochs"] < 30  # the convergence check stopped it


async def test_suspend_mid_training_then_resume_ends_with_the_uninterrupted_model(tmp_path, registry):
    """run_task per party, as the inline runner calls it: every party is stopped mid-training
    (each at its own point), restarted, and continues from its checkpoints."""
    from services.executor.main import dev_trust, run_task
    from shared import topics
    from shared.bus.memory import InMemoryBus
    from shared.clock import SystemClock
    from shared.errors import Suspended

    prepare_vertical_parties(tmp_path, aligned=True)
    doc = _doc(encryption="none", insecure=True, epochs=12, tol=0.0, batch_size=32)
    doc["steps"] = [doc["steps"][1]]
    del doc["steps"][0]["depends_on"], doc["steps"][0]["params"]["align_with"]  # pre-aligned: no PSI
    outcome = decide(parse_flow_document(doc, default_flow_id="v-resume"), registry, None, FlowLimits(), now_ms=0)
    specs = {a.party: a for a in outcome.tasks[0].algorithm_tasks}
    bus = InMemoryBus()
    await bus.ensure_topics(topics.CATALOGUE)

    def start(party, stop, attempt=1, root=tmp_path):
        spec = dataclasses.replace(specs[party], attempt=attempt)
        return asyncio.create_task(run_task(spec, party_dirs(root, party), stop, bus=bus, clock=SystemClock(),
                                            registry=registry, trust=lambda: dev_trust(tmp_path / "keys", spec)))

    async def guest_done(epochs: int) -> None:
        from services.executor.checkpoints import FileCheckpointStore

        store = FileCheckpointStore(party_dirs(tmp_path, GUEST)["checkpoints"], specs[GUEST].algo_task_id)
        while (latest := store.load_latest()) is None or latest.meta["done"] < epochs:
            await asyncio.sleep(0.01)

    with capture_logs() as logs:
        stops = {p: asyncio.Event() for p in specs}
        first = [start(p, stops[p]) for p in specs]
        await asyncio.wait_for(guest_done(3), 900)
        for stop in stops.values():
            stop.set()
        assert await asyncio.wait_for(asyncio.gather(*first), 300) == [Suspended.exit_code] * 3
        resumed = [start(p, asyncio.Event(), attempt=2) for p in specs]
        assert await asyncio.wait_for(asyncio.gather(*resumed), 900) == [0] * 3
    starts = {e["party"]: e["start_epoch"] for e in logs if e["event"] == "hetero_lr.resumed"}
    # The guest had finished 3 epochs; the host may have been stopped before saving its 3rd: then
    # all resume at epoch 2 and the guest steps back to its previous weights.
    assert set(starts) == {GUEST, HOST} and len(set(starts.values())) == 1 and 2 <= starts[GUEST] < 12, starts

    # The uninterrupted run, on a copy of the data, gives the same model parts bit for bit.
    reference = tmp_path / "reference"
    prepare_vertical_parties(reference, aligned=True)
    ref = [start(p, asyncio.Event(), root=reference) for p in specs]
    assert await asyncio.wait_for(asyncio.gather(*ref), 900) == [0] * 3
    for party in (GUEST, HOST):
        assert _model(tmp_path, "v-resume", party).tobytes() == _model(reference, "v-resume", party).tobytes()
