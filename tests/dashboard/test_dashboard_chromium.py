"""The dashboard in a real headless Chromium, against a running flow on the embedded platform.

Opens the page, watches the DAG colour in and the training curves grow, suspends
and resumes with the page's buttons, sees the API's refusals, and ends with every
step green. Training is held open until the test has clicked suspend (min_round_s), so the
test does not depend on the machine's speed. Screenshots are saved as test artefacts: under the test's pytest tmp dir, or
$FERRY_TEST_ARTEFACTS/dashboard when that is set (the path is printed; `pytest -s` shows it).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from selenium.common.exceptions import TimeoutException as SeleniumTimeout
from selenium.webdriver.common.by import By

from services.demo import prepare_parties
from services.splitter.core.flow_document import parse_flow_document
from tests.dashboard.browser import artefact_dir, browser_errors, chromium
from tests.dashboard.live import LivePlatform

ROOT = Path(__file__).resolve().parents[2]
# Deterministic, not long: the aggregator holds every round but the last open for min_round_s
# (HOLD_S, the param's maximum) and only a suspend or cancel ends a hold early. However quiet or
# loaded the machine, training is still open when the browser has drawn round 1 and clicks suspend;
# after the resume the last round runs at once (it is never held) and the flow finishes. Waits are
# long: a shared machine can be 10x slower than CI.
ROUNDS = 2
HOLD_S = 600.0
SLOW = 900
GREEN = "rgb(46,125,50)"
ORANGE = "rgb(245,124,0)"


def _until(driver, script: str, what: str, timeout_s: float = 120, *args):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = driver.execute_script(script, *args)
        except SeleniumTimeout:  # a starved machine: the page's thread was busy; ask again
            continue
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last value {last!r}; console: {browser_errors(driver)}")


_POINTS = """
const ui = window.ferryDashboard, group = ui.charts.get(arguments[0]);
if (!group) return 0;
const sets = group.charts.loss.data.datasets.filter(d => d.label.startsWith('global'));
return sets.length ? Math.max(...sets.map(d => d.data.length)) : 0;"""
_GROWN = _POINTS.replace("return sets.length ?", "const n = sets.length ?") + "\nreturn n > arguments[1] ? n : 0;"
_STEP_STATUSES = """
const cy = window.ferryDashboard.cy;
return cy ? cy.nodes("[kind='step']").map(n => [n.data('label').split(' ')[0], n.data('status'),
                                               n.style('background-color').replace(/ /g, '')]) : [];"""
_PARTY_STATUSES = """
const cy = window.ferryDashboard.cy;
return cy ? cy.nodes("[kind='party']").map(n => [n.id(), n.data('status'), n.data('attempt'),
                                                n.style('background-color').replace(/ /g, '')]) : [];"""


def _click(driver, verb: str) -> tuple[int, str]:
    driver.execute_script("window.ferryDashboard.lastAction = null")
    driver.find_element(By.ID, verb).click()
    action = _until(driver, "return window.ferryDashboard.lastAction", f"the answer to {verb}", SLOW)
    return action["status"], action["text"]


def test_dashboard_shows_a_live_flow_and_drives_it(tmp_path):
    shots = artefact_dir(tmp_path)
    print(f"\ndashboard screenshots: {shots}")
    prepare_parties(tmp_path)
    text = (ROOT / "examples" / "flows" / "demo_breast_cancer.yaml").read_text()
    text = text[:text.index("  - name: baseline")]  # the demo without its centralized baseline: 4 steps
    flow = parse_flow_document(
        text
        .replace("      rounds: 20\n", f"      rounds: {ROUNDS}\n      min_round_s: {HOLD_S}\n", 1),
        default_flow_id="x")
    driver = chromium()
    try:
        with LivePlatform(tmp_path) as live:
            driver.get(f"{live.url}/dashboard#/flows/{flow.flow_id}")
            live.call(live.platform.submit(flow))
            # The flow list and the graph fill in from the stream: 4 steps, 15 party nodes.
            _until(driver, "return document.querySelector(`#flows tr[data-flow='${arguments[0]}']`)",
                   "the flow in the list", SLOW, flow.flow_id)
            _until(driver, "return window.ferryDashboard.cy && window.ferryDashboard.cy.nodes().length >= 19",
                   "the flow's graph", SLOW)
            train = _until(driver, """const d = window.ferryDashboard.detail;
                const t = d && d.tasks.find(t => t.step === 'train'); return t && t.task_id;""", "the train step")

            # A command the state does not allow is refused with the API's own answer.
            status, text = _click(driver, "resume")
            assert status == 409 and "cannot resume" in text, text

            # Round 1 on the curve while training is held open; the steps before it are green.
            first = _until(driver, _POINTS, "the global loss curve", SLOW, train)
            steps = {name: (status, colour) for name, status, colour in driver.execute_script(_STEP_STATUSES)}
            assert steps["train"][0] == "RUNNING", steps
            assert steps["validate"] == steps["standardise"] == ("SUCCEEDED", GREEN), steps
            driver.save_screenshot(str(shots / "1-training.png"))

            clicked = time.monotonic()
            status, text = _click(driver, "suspend")
            assert status == 202, text
            _until(driver, "return document.getElementById('flow-status').dataset.status === 'SUSPENDED'",
                   "the flow to show SUSPENDED", SLOW)
            # The training parties and the not yet started evaluate step all hold, in orange.
            held = [p for p in driver.execute_script(_PARTY_STATUSES) if p[1] != "SUCCEEDED"]
            assert len(held) == 4 + 3 and all(status == "SUSPENDED" and colour == ORANGE
                                              for _, status, _, colour in held), held
            suspended_at = driver.execute_script(_POINTS, train)
            assert suspended_at == first == 1
            driver.save_screenshot(str(shots / "2-suspended.png"))

            status, text = _click(driver, "resume")
            assert status == 202, text
            grown = _until(driver, _GROWN, "the curve to grow after the resume", SLOW, train, suspended_at)
            assert grown > suspended_at
            _until(driver, "return document.getElementById('flow-status').dataset.status === 'SUCCEEDED'",
                   "the flow to succeed", SLOW)
            step_nodes = driver.execute_script(_STEP_STATUSES)
            assert len(step_nodes) == 4
            assert all(status == "SUCCEEDED" and colour == GREEN for _, status, colour in step_nodes), step_nodes
            assert all(p[1] == "SUCCEEDED" and p[3] == GREEN for p in driver.execute_script(_PARTY_STATUSES))
            # The suspend ended round 1's hold and the last round was not held: no wait ran out.
            assert time.monotonic() - clicked < HOLD_S
            # Every round is on the curve, and the history tells why the flow paused.
            assert driver.execute_script(_POINTS, train) == ROUNDS > suspended_at
            history = driver.find_element(By.ID, "history").text
            assert "suspend requested" in history and "resume requested" in history and "TaskCommand" in history
            accuracy = driver.execute_script("""const g = window.ferryDashboard.charts.get(arguments[0]);
                return g.charts.accuracy.data.datasets.map(d => [d.label, d.data.length]);""", train)
            assert len(accuracy) == 4 and all(n >= ROUNDS - 1 for _, n in accuracy), accuracy  # global + 3 hospitals
            driver.execute_script("window.scrollTo(0, 0)")
            driver.save_screenshot(str(shots / "3-succeeded.png"))
            status, text = _click(driver, "cancel")
            assert status == 409 and "SUCCEEDED" in text, text

            # The same answers as the API, for a flow nobody knows.
            driver.get(f"{live.url}/dashboard#/flows/no-such-flow")
            _until(driver, "return document.getElementById('flow-reason').textContent.includes('knows no such flow')",
                   "the unknown flow notice", 30)
            assert driver.execute_script("return document.querySelectorAll('#members tbody tr').length "
                                         "+ (window.ferryDashboard.cy ? 1 : 0)") == 0  # nothing of flow x lingers
            status, text = _click(driver, "suspend")
            api = httpx.post(f"{live.url}/flows/no-such-flow/suspend", timeout=5)
            assert status == api.status_code == 404 and api.json()["detail"] in text
            driver.save_screenshot(str(shots / "4-unknown-flow.png"))
            assert browser_errors(driver) == []
    finally:
        driver.quit()
