"""A client pays torch's one-off lazy imports before it joins, not inside its first round."""

from __future__ import annotations

import subprocess
import sys

# A client's first optimizer step, as training does it.
_FIRST_STEP = ("m = torch.nn.Linear(3, 2); opt = torch.optim.SGD(m.parameters(), lr=0.1)\n"
               "opt.zero_grad(); m(torch.ones(4, 3)).sum().backward(); opt.step()\n")


def _fresh_interpreter(code: str) -> str:
    # A fresh interpreter: in this one an earlier test may have imported everything already.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    return out.stdout.strip()


def test_warm_up_leaves_nothing_for_the_first_optimizer_step_to_import():
    out = _fresh_interpreter(
        "import sys, torch\n"
        "from services.executor.ml.training import warm_up_torch\n"
        "warm_up_torch()\n"
        "before = set(sys.modules)\n"
        + _FIRST_STEP +
        "print(sorted(n for n in set(sys.modules) - before if n.startswith('torch._dynamo')))\n")
    assert out == "[]", out


def test_without_it_a_clients_first_optimizer_imports_torch_dynamo():
    # What the warm-up exists for: if torch stops doing this, the warm-up can go.
    out = _fresh_interpreter(
        "import sys, torch\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        + _FIRST_STEP +
        "print('torch._dynamo' in sys.modules)\n")
    assert out == "True", out
