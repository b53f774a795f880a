"""Shared setup of the interpreter tests of ``kernelmmd.ops.triton.witness`` and ``.derivative_blocks``.

Import it after ``pytest.importorskip("triton")``. Without CUDA the kernels run through the Triton interpreter on CPU
tensors with ``SMALL`` tiles (16 wide, a column split of 2, exact coordinate differences only for d ≤ 2), so that
small shapes cover several row/column tiles, partial tiles, several output-column chunks and the host reduction of
partials; ``small_tiles`` is an autouse fixture: importing it into a test module applies it to every test there.
"""

import importlib

import pytest
import torch

W = importlib.import_module("kernelmmd.ops.triton.witness")
L = importlib.import_module("kernelmmd.ops.triton._launch")  # TILES_OVERRIDE, read by _launch.tiles_for

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
F64 = torch.float64
SMALL = L.Tiles(block_m=16, block_n=16, block_k=16, block_d=16, block_b=16, split=2, direct_max_d=2)


@pytest.fixture(autouse=True)
def small_tiles(monkeypatch):
    """``SMALL`` tiles for the Triton witness and derivative-block ops under the interpreter (CUDA keeps its own)."""
    if not CUDA:
        monkeypatch.setattr(L, "TILES_OVERRIDE", SMALL)
