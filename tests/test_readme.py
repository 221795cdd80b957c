"""The README's example "Checking a modified equation on your own network" runs as printed and
shows what it says: the order-1 GD flow matches the iterates at O(η²)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Checking a modified equation on your own network"


def test_own_network_example_runs_and_shows_the_slope():
    text = README.read_text()
    body = text[text.index(SECTION) :]
    code = re.search(r"```python\n(.*?)```", body, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README example", "exec"), {})
    printed = out.getvalue()
    slope = float(re.search(r"slope (\S+)", printed).group(1))
    assert abs(slope - 2) < 0.3, printed
    assert "tensor" in printed
