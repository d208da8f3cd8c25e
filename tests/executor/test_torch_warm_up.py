"""A client pays torch's one-off lazy imports before it joins, not inside its first round."""

from __future__ import annotations

import subprocess
import sys


def test_warm_up_leaves_nothing_for_the_first_optimizer_step_to_import():
    # A fresh interpreter: in this one an earlier test may have imported everything already.
    code = (
        "import sys, torch\n"
        "from services.executor.ml.training import warm_up_torch\n"
        "warm_up_torch()\n"
        "before = set(sys.modules)\n"
        "m = torch.nn.Linear(3, 2); opt = torch.optim.SGD(m.parameters(), lr=0.1)\n"
        "opt.zero_grad(); m(torch.ones(4, 3)).sum().backward(); opt.step()\n"
        "print(sorted(n for n in set(sys.modules) - before if n.startswith('torch._dynamo')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_without_it_a_clients_first_optimizer_imports_torch_dynamo():
    # What the warm-up exists for: if torch stops doing this, the warm-up can go.
    code = (
        "import sys, torch\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "m = torch.nn.Linear(3, 2); opt = torch.optim.SGD(m.parameters(), lr=0.1)\n"
        "opt.zero_grad(); m(torch.ones(4, 3)).sum().backward(); opt.step()\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    assert out.stdout.strip() == "True", out.stdout
