"""Every way of running executors applies one thread setting, and says how to change it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS") and "TORCH_THREADS" not in k}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, "PYTHONPATH": str(ROOT), **env},
                         capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.strip()


def test_an_executor_applies_the_setting_before_and_after_torch_is_imported():
    code = ("from services.executor.threads import apply_torch_threads\n"
            "apply_torch_threads({n})\nimport torch\nprint(torch.get_num_threads())\n"
            "apply_torch_threads(2)\nprint(torch.get_num_threads())")
    assert _python(code.format(n=1)).split() == ["1", "2"]


def test_the_embedded_platform_applies_its_thread_setting():
    code = ("import asyncio, tempfile, torch\n"
            "from services.embedded import EmbeddedPlatform\n"
            "async def go():\n"
            "    async with EmbeddedPlatform(tempfile.mkdtemp(), torch_threads=1):\n"
            "        print(torch.get_num_threads())\n"
            "asyncio.run(go())")
    assert _python(code).splitlines()[0] == "1"  # torch alone would take one thread per core


def test_flow_run_says_how_many_threads_and_how_to_change_them(tmp_path):
    flow = ROOT / "examples" / "flows" / "noop.yaml"
    out = subprocess.run([sys.executable, "-m", "services.cli", "flow", "run", str(flow), "--torch-threads", "1",
                          "--timeout", "60"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=180)
    assert "1 torch thread(s) each" in out.stderr and "FERRY_EXECUTOR__TORCH_THREADS" in out.stderr, out.stderr


def test_steps_that_move_only_statistics_do_not_import_torch():
    for module in ("services.executor.main", "services.executor.algorithms.data_steps",
                   "services.executor.algorithms.noop", "services.embedded"):
        assert _python(f"import sys, {module}; print('torch' in sys.modules)") == "False", module
