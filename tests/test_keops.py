"""The KeOps backend (kernelmmd.ops.keops) on the shared backend suite (tests/backend_suite.py) plus its own tests
(CPU; the same code runs on GPU). See docs/ARCHITECTURE.md, "Tests".

KeOps compiles one C++ module per formula, per reduction variable of each gradient, per feature dimension and per
dtype (about 5-10 s each on 2 cores), so the cases below are chosen to cover every code path with few formulas:

* the Gaussian kernel with a tensor bandwidth, float64, d = 3: every op, every output and the gradient in every
  input (x, y, v, u0, u1, the bandwidth) — odd shapes (1, 7, 33 points) reuse the same formulas;
* every other kernel kind: its symbolic profile on LazyTensors (values of the block sums); the kinds whose KeOps
  derivative is specific (√t kernels: KeOps' Rsqrt(0) = 0; bounded RBF: relu clamps, both bounds) also the gradient;
* the dot-product code paths of kernel_grad_mv and a_matvec (poly), with gradients;
* float32 (float64 accumulation) to 1e-6 relative to the kernel sums, and d = 1, 50;
* second order: gradgradcheck of kernel_mv (the op gradient penalties differentiate twice).

The tiled backend (tests/test_tiled.py) runs the full kernel × op × dtype matrix against the same reference.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("pykeops")

import kernelmmd as km  # noqa: E402
from kernelmmd.ops import keops, tiled  # noqa: E402
from kernelmmd.ops import reference as R  # noqa: E402

from .backend_suite import BackendSuite, grid, make_kernel, points  # noqa: E402

F64, F32 = torch.float64, torch.float32
SHAPES = [(1, 7, 3), (7, 33, 3), (33, 7, 3)]


class TestKeOps(BackendSuite):
    ops = keops
    block_stats_cases = (
        grid(kind="rbf", shape=SHAPES, dtype=F64, variance=[False, True], tensor_param=True)
        + grid(kind=["mix_rbf", "rq", "mix_rq", "linear", "poly"], shape=(7, 33, 3), dtype=F64, grad=False)
        + grid(kind="rbf", shape=(33, 7, 3), dtype=F32, variance=False)  # float32: float64 accumulation
        + grid(kind="rbf", shape=(33, 7, 3), dtype=F32, variance=True, grad=False)
        + grid(kind="rbf", shape=[(7, 33, 1), (7, 33, 50)], dtype=F64, grad=False)  # feature dimensions
        # √t kernels' close pairs: KeOps forms t from differences, so they are as exact as any other pair
        + grid(kind=["laplacian", "energy"], shape=(24, 17, 20), dtype=F32, close=True)
    )
    kernel_mv_cases = (grid(kind="rbf", shape=SHAPES, dtype=F64, tensor_param=True)
                       + grid(kind="rbf", shape=(7, 33, 3), dtype=F64, width=4, grad=False))
    kernel_grad_mv_cases = (grid(kind="rbf", shape=SHAPES, dtype=F64, tensor_param=True)
                            + grid(kind="poly", shape=(7, 9, 3), dtype=F64, grad=False))  # dot-product path
    a_matvec_cases = (grid(kind="rbf", shape=[(1, 3), (7, 3), (33, 3)], dtype=F64, tensor_param=True)
                      + grid(kind="poly", shape=(9, 3), dtype=F64, wrt=("z",)))
    aux_cases = grid(kind="rbf", shape=(5, 3))


@pytest.mark.parametrize("kind", ["laplacian", "energy", "rbf_bounded"])
def test_block_sums_keops_specific_derivatives(kind):
    """√t kernels (zero subgradient at t = 0 through KeOps' Rsqrt(0) = 0, with duplicated points) and the bounded
    RBF (relu clamps with the one-sided derivative of torch.clamp; lower bound in K_XX, upper in K_XY): the block
    sums and their gradient in x."""
    kernel = make_kernel(kind)
    x, y = points(6, 5, 3, F64)
    y = y.detach()
    xd = torch.cat([x.detach(), x.detach()[:2]]).requires_grad_()  # coincident points: t = 0 off the diagonal
    got = keops.block_stats(xd, y, kernel)
    want = R.block_stats(xd, y, kernel)
    for f in ("sxx", "syy", "sxy", "dxx", "dyy"):
        torch.testing.assert_close(getattr(got, f), getattr(want, f), rtol=1e-10, atol=1e-10)
    ga = torch.autograd.grad(got.sxx - 2 * got.sxy, xd)[0]
    gw = torch.autograd.grad(want.sxx - 2 * want.sxy, xd)[0]
    torch.testing.assert_close(ga, gw, rtol=1e-9, atol=1e-9)


def test_float32_large_sum_is_exact():
    """n = m = 3000 in float32: every block sum within 1e-6 of the float64 truth (float32 accumulation of 9e6
    terms would lose ~1e-4)."""
    x, y = points(3000, 3000, 3, F32)
    x, y = x.detach(), y.detach()
    k = km.RBF(1.3)
    got = keops.block_stats(x, y, k)
    want = tiled.block_stats(x.double(), y.double(), k)
    for f in ("sxx", "syy", "sxy"):
        assert abs(float(getattr(got, f) - getattr(want, f))) <= 1e-6 * float(getattr(want, f)), f


def test_kernel_mv_twice_differentiable():
    """Second derivatives through pykeops' symbolic autograd (gradient penalties on the witness)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, generator=g, dtype=F64, requires_grad=True)
    y = torch.randn(4, 3, generator=g, dtype=F64)
    v = torch.randn(4, 1, generator=g, dtype=F64)
    k = km.RBF(torch.tensor(1.3, dtype=F64))  # the symbolic form of test_block_stats_rbf: its formulas are reused

    def f(x):
        return keops.kernel_mv(x, y, v, k)

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


def test_rejects_deep_kernel():
    deep = km.DeepKernel(torch.nn.Identity())
    with pytest.raises(TypeError, match="block_stats on the keops backend needs a radial or dot-product kernel"):
        keops.block_stats(torch.randn(3, 2), torch.randn(3, 2), deep)
    with pytest.raises(TypeError, match="kernel_mv on the keops backend needs a radial or dot-product kernel"):
        keops.kernel_mv(torch.randn(3, 2), torch.randn(3, 2), torch.randn(3), deep)
    with pytest.raises(TypeError, match="kernel_grad_mv on the keops backend needs a radial or dot-product"):
        keops.kernel_grad_mv(torch.randn(3, 2), torch.randn(3, 2), torch.randn(3), deep)
    with pytest.raises(ValueError, match="a_matvec needs a twice-differentiable"):
        keops.a_matvec(torch.randn(3, 2), torch.randn(3), torch.randn(3, 2), km.Laplacian())


def test_estimator_through_keops_backend():
    """The public estimators accept backend='keops' and agree with the dense backend."""
    x, y = points(20, 15, 3, F64)
    a = km.mmd2_unbiased(x, y, kernel="rbf", sigma=1.3, backend="keops")
    b = km.mmd2_unbiased(x, y, kernel="rbf", sigma=1.3, backend="torch")
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
