"""The tiled torch backend (kernelmmd.ops.tiled) on the shared backend suite (tests/backend_suite.py) plus its own
tests; tiles are forced tiny so every path crosses tiles. See docs/ARCHITECTURE.md, "Tests"."""

from __future__ import annotations

import pytest
import torch

import kernelmmd as km
from kernelmmd.ops import reference as R
from kernelmmd.ops import tiled

from .backend_suite import KINDS, TWICE, BackendSuite, check_block_stats, check_kernel_mv, grid, make_kernel

SHAPES = [(1, 7, 3), (7, 33, 1), (33, 7, 50)]
DTYPES = [torch.float64, torch.float32]
CLOSE = dict(kind=["laplacian", "energy"], shape=(24, 17, 20), dtype=DTYPES, close=True)  # the √t kernels' close pairs


@pytest.fixture(autouse=True)
def tiles(monkeypatch):
    """Tiny tiles (1 to 14 rows at these sizes): every sum crosses tiles, the symmetric blocks use off-diagonal
    tiles. The default size (one tile here) is covered by ``test_default_tiles``."""
    monkeypatch.setattr(tiled, "TILE_ELEMENTS", 100)


class TestTiled(BackendSuite):
    ops = tiled
    block_stats_cases = (grid(kind=list(KINDS), shape=SHAPES, dtype=DTYPES, variance=[False, True], tensor_param=True)
                         + grid(**CLOSE, variance=[False, True]))
    kernel_mv_cases = (grid(kind=list(KINDS), shape=SHAPES, dtype=DTYPES, width=[None, 3], tensor_param=True)
                       + grid(kind="rbf_bounded", shape=(7, 9, 2), dtype=torch.float64, block=["xx", "yy"],
                              tensor_param=True)
                       + grid(**CLOSE))
    # the gradient of ∇k needs g'' (twice-differentiable kernels only)
    kernel_grad_mv_cases = (grid(kind=list(KINDS), shape=SHAPES, dtype=DTYPES, grad=lambda k: k in TWICE,
                                 tensor_param=True)
                            + grid(**CLOSE, grad=False))
    a_matvec_cases = grid(kind=list(TWICE), shape=[(1, 3), (7, 1), (33, 50)], dtype=DTYPES, tensor_param=True)
    aux_cases = grid(kind=["rbf", "poly"], shape=(5, 3))

    @pytest.mark.parametrize("variance", [False, True], ids=["sums", "variance"])
    def test_default_tiles(self, variance, monkeypatch):
        monkeypatch.setattr(tiled, "TILE_ELEMENTS", 1 << 20)
        check_block_stats(tiled, "rbf", 33, 7, 3, torch.float64, variance, tensor_param=True)
        check_kernel_mv(tiled, "rbf", 33, 7, 3, torch.float64, tensor_param=True)


def test_gradcheck_block_sums(monkeypatch):
    """The autograd Function of the block sums, by finite differences (float64), in both backward modes."""
    monkeypatch.setattr(tiled, "TILE_ELEMENTS", 12)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 2, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 2, generator=g, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(1.1, dtype=torch.float64, requires_grad=True)

    def sums(x, y, s):
        st = tiled.block_stats(x, y, km.RBF(s))
        return st.sxx, st.syy, st.sxy

    def var(x, y, s):
        st = tiled.block_stats(x, y, km.RBF(s), variance=True)
        return st.sxx, st.sxy, st.rxx, st.rxy, st.cxy, st.qxx, st.qxy

    assert torch.autograd.gradcheck(sums, (x, y, s))
    assert torch.autograd.gradcheck(var, (x, y, s))


def test_block_stats_second_derivative_raises():
    """block_stats is once differentiable on this backend: a second derivative is an error, never a silent zero."""
    x = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 2, dtype=torch.float64)
    for variance in (False, True):  # eager gradient / recomputing backward
        (gx,) = torch.autograd.grad(tiled.block_stats(x, y, km.RBF(1.0), variance).sxy, x, create_graph=True)
        assert gx.requires_grad
        with pytest.raises(RuntimeError, match="block_stats is differentiable once"):
            (gx * gx).sum().backward()
        (gx,) = torch.autograd.grad(tiled.block_stats(x, y, km.RBF(1.0), variance).sxy, x, create_graph=True)
        with pytest.raises(RuntimeError, match="block_stats is differentiable once"):
            torch.autograd.grad((gx * gx).sum(), x, allow_unused=True)
    st = tiled.block_stats(x, y, km.RBF(1.0))
    (gx,) = torch.autograd.grad(st.sxy, x)  # without create_graph: a plain tensor
    assert not gx.requires_grad


@pytest.mark.parametrize("op", ["kernel_mv", "kernel_grad_mv", "a_matvec"])
def test_gradgradcheck_row_ops(op, monkeypatch):
    """The checkpointed row-tile ops are differentiable twice (gradient penalties on the witness)."""
    monkeypatch.setattr(tiled, "TILE_ELEMENTS", 10)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 2, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 2, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
    if op == "a_matvec":
        u1 = torch.randn(5, 2, generator=g, dtype=torch.float64, requires_grad=True)
        u0 = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)

        def f(x, u0, u1, s):
            return tiled.a_matvec(x, u0, u1, km.RQ(s))

        args = (x, u0, u1, s)
    else:
        fn = getattr(tiled, op)

        def f(x, y, v, s):
            return fn(x, y, v, km.RBF(s))

        args = (x, y, v, s)
    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)


def test_exact_diagonal_for_sqrt_kernels():
    """Coincident points inside the within-sample blocks contribute exactly nothing (t = 0 is never rounded)."""
    x = torch.randn(9, 3, dtype=torch.float32) * 100.0
    x = torch.cat([x, x[:3]])  # duplicated points: off-diagonal zeros at t = 0
    for kind in ("laplacian", "energy"):
        k = make_kernel(kind)
        got = tiled.block_stats(x, x, k)
        want = R.block_stats(x.double(), x.double(), k)
        assert abs(float(got.dxx - want.dxx)) <= 1e-6 * float(want.dxx.abs() + 1)


def test_energy_kernel_norm_gradients_at_origin():
    """The energy kernel's norm terms have the zero subgradient at the origin on every backend."""
    x = torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    k = km.Energy()
    a = tiled.block_stats(x, y, k)
    b = R.block_stats(x, y, k)
    ga = torch.autograd.grad(a.sxy + a.sxx, [x, y])
    gb = torch.autograd.grad(b.sxy + b.sxx, [x, y])
    for u, w in zip(ga, gb):
        assert torch.allclose(u, w, atol=1e-12)


def test_rejects_deep_kernel():
    with pytest.raises(TypeError, match="block_stats on the tiled backend needs a radial or dot-product kernel"):
        tiled.block_stats(torch.randn(3, 2), torch.randn(3, 2), km.DeepKernel(torch.nn.Identity()))
    with pytest.raises(TypeError, match="kernel_mv on the tiled backend needs a radial or dot-product kernel"):
        tiled.kernel_mv(torch.randn(3, 2), torch.randn(3, 2), torch.randn(3), km.DeepKernel(torch.nn.Identity()))
    with pytest.raises(TypeError, match="kernel_grad_mv on the tiled backend needs a radial or dot-product"):
        tiled.kernel_grad_mv(torch.randn(3, 2), torch.randn(3, 2), torch.randn(3), km.DeepKernel(torch.nn.Identity()))
