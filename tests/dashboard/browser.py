"""Headless Chromium (Debian's chromium + chromium-driver) through Selenium, for the dashboard tests.

The browser is a real part of these tests: when it is missing, it is installed
(apt-get, as `make test` does on a fresh machine), never skipped.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

CHROMIUM = os.environ.get("FERRY_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FERRY_CHROMEDRIVER", "/usr/bin/chromedriver")


def ensure_chromium() -> None:
    if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists():
        return
    script = Path(__file__).resolve().parents[2] / "shared" / "devtools" / "install_chromium.sh"
    subprocess.run(["bash", str(script)], check=True, timeout=900)


def chromium(width: int = 1400, height: int = 2000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(120)  # generous: shared CI machines can be starved of CPU
    driver.set_script_timeout(120)
    driver.command_executor._client_config.timeout = 600  # each driver command (a click) may crawl too
    return driver


def browser_errors(driver) -> list[str]:
    """The page's console errors (a failing script shows up here, not as a test failure). Chromium
    also logs every HTTP error answer, which the tests provoke on purpose: those are left out."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and "the server responded with a status of 4" not in e["message"]]


def artefact_dir(tmp_path: Path) -> Path:
    """Where a test's screenshots go: $FERRY_TEST_ARTEFACTS/dashboard when CI collects them,
    else the test's own pytest tmp dir (pytest keeps the last three runs' dirs)."""
    root = os.environ.get("FERRY_TEST_ARTEFACTS")
    path = Path(root) / "dashboard" if root else tmp_path / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path
