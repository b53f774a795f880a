"""The KeOps backend against the dense reference (CPU; the same code runs on GPU).

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

from .backend_suite import (  # noqa: E402
    check_a_matvec,
    check_aux,
    check_block_stats,
    check_kernel_grad_mv,
    check_kernel_mv,
    make_kernel,
    points,
)

F64, F32 = torch.float64, torch.float32
SHAPES = [(1, 7, 3), (7, 33, 3), (33, 7, 3)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("variance", [False, True], ids=["sums", "variance"])
def test_block_stats_rbf(shape, variance):
    check_block_stats(keops, "rbf", *shape, F64, variance, tensor_param=True)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_kernel_mv_rbf(shape):
    check_kernel_mv(keops, "rbf", *shape, F64, tensor_param=True)


def test_kernel_mv_matrix_rbf():
    check_kernel_mv(keops, "rbf", 7, 33, 3, F64, width=4, grad=False)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_kernel_grad_mv_rbf(shape):
    check_kernel_grad_mv(keops, "rbf", *shape, F64, tensor_param=True)


@pytest.mark.parametrize("M", [1, 7, 33])
def test_a_matvec_rbf(M):
    check_a_matvec(keops, "rbf", M, 3, F64, tensor_param=True)


def test_a_matvec_and_grad_mv_dot_kernel():
    check_a_matvec(keops, "poly", 9, 3, F64, wrt=("z",))
    check_kernel_grad_mv(keops, "poly", 7, 9, 3, F64, grad=False)


@pytest.mark.parametrize("kind", ["mix_rbf", "rq", "mix_rq", "linear", "poly"])
def test_block_sums_every_profile(kind):
    check_block_stats(keops, kind, 7, 33, 3, F64, variance=False, grad=False)


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


@pytest.mark.parametrize("variance", [False, True], ids=["sums", "variance"])
def test_float32_accumulates_in_float64(variance):
    check_block_stats(keops, "rbf", 33, 7, 3, F32, variance, grad=not variance)


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


@pytest.mark.parametrize("d", [1, 50])
def test_feature_dimensions(d):
    check_block_stats(keops, "rbf", 7, 33, d, F64, variance=False, grad=False)


def test_a_diag_and_column():
    check_aux(keops, "rbf", 5, 3)


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


@pytest.mark.parametrize("kind", ["laplacian", "energy"])
def test_close_pairs_of_sqrt_kernels(kind):
    """Points within 1e-5 of each other far from the origin: KeOps forms t from differences, so the √t kernels'
    close pairs are as exact as any other (the fused backends' shared check)."""
    check_block_stats(keops, kind, 24, 17, 20, F32, variance=False, close=True)
