"""The README's Python examples run verbatim (issue 12 item 7): each ```python block is executed as written.

A block that stops working (a renamed argument, an undefined name, a changed return type) fails here with the
block's number and README line in the traceback, so the first thing a new user copies keeps working.
"""

from __future__ import annotations

import pathlib
import re
import warnings

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]  # the repository root (README.md)

_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _python_blocks() -> list[tuple[int, str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in _BLOCK.finditer(text)]


def test_readme_has_python_examples():
    assert len(_python_blocks()) >= 3  # quick start, tests and scores, SMMD/GCMMD


@pytest.mark.parametrize("line, code", [pytest.param(n, c, id=f"README.md:{n}") for n, c in _python_blocks()])
def test_readme_python_block_runs(line, code):
    import kernelmmd

    # line numbers in tracebacks point into README.md: pad the block with the lines before it
    source = "\n" * (line - 1) + code
    with warnings.catch_warnings():
        warnings.simplefilter("error", kernelmmd.NumericalWarning)  # an example must not show numerical trouble
        exec(compile(source, str(ROOT / "README.md"), "exec"), {"__name__": "__readme__"})
