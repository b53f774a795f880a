"""The L1 Laplace kernel k(a, b) = exp(−‖a − b‖₁/σ) (kernelmmd.L1Laplacian, kernel="l1_laplacian"): the kernel
class against an independent float64 numpy reference (explicit |a − b| sums), the L1 median heuristic, the public
estimators, refusals (SMMD, GCMMD, derivative blocks) and every backend's block_stats / kernel_mv / kernel_grad_mv
against the dense reference (the shared checks of tests/backend_suite.py)."""

from __future__ import annotations

import importlib
import importlib.util

import numpy as np
import pytest
import torch

import kernelmmd as km
from kernelmmd.kernels import L1Kernel, L1Laplacian
from kernelmmd.ops import reference as R
from kernelmmd.ops import tiled

from .backend_suite import BlockStatsSuite, KernelGradMvSuite, KernelMvSuite, grid

F64, F32 = torch.float64, torch.float32


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


SIGMA = 1.3  # the case of tests/_cases.py (L1_CASES)


# ----------------------------------------------------------------------------------- independent numpy reference
def l1_np(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a[:, None, :] - b[None, :, :]).sum(-1)  # (n, m)


def kmat_np(a, b, sigma):
    return np.exp(-l1_np(a, b) / sigma)


def mmd2_u_np(x, y, sigma):
    kxx, kyy, kxy = kmat_np(x, x, sigma), kmat_np(y, y, sigma), kmat_np(x, y, sigma)
    n, m = len(x), len(y)
    return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * kxy.mean())


def grad_mv_np(x, y, v, sigma):
    """Σ_j v_j ∇_a k(a, y_j) at a = x_i = Σ_j v_j (−k_ij/σ) sign(x_i − y_j), sign(0) = 0."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    k = kmat_np(x, y, sigma)
    s = np.sign(x[:, None, :] - y[None, :, :])  # (n, m, d)
    return np.einsum("ij,j,ijk->ik", -k / sigma, np.asarray(v, np.float64), s)


def data(n=23, m=19, d=4, dtype=F64, seed=0, shift=0.4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    y = torch.randn(m, d, generator=g, dtype=F64) + shift
    return x.to(dtype), y.to(dtype)


# ------------------------------------------------------------------------------------------------- the kernel
def test_registry_and_exports():
    assert km.KERNELS["l1_laplacian"] is L1Laplacian is km.L1Laplacian
    assert issubclass(L1Laplacian, L1Kernel) and km.L1Kernel is L1Kernel
    assert not issubclass(L1Laplacian, km.RadialKernel)
    k = km.get_kernel("l1_laplacian", sigma=2.0)
    assert isinstance(k, L1Laplacian) and k.sigma == 2.0 and repr(k) == "L1Laplacian(sigma=2.0)"
    assert k.translation_invariant and not k.twice_differentiable
    assert k.params() == {"sigma": 2.0} and k.scalar_params() == [2.0]


@pytest.mark.parametrize("dtype", [F64, F32])
def test_matrix_and_pairwise_vs_numpy(dtype):
    x, y = data(dtype=dtype)
    k = L1Laplacian(SIGMA)
    want = kmat_np(x.double().numpy(), y.double().numpy(), SIGMA)
    rel = 1e-13 if dtype == F64 else 1e-6
    got = k.matrix(x, y)
    assert got.dtype == dtype
    np.testing.assert_allclose(got.double().numpy(), want, rtol=rel, atol=rel)
    got = k.pairwise(x[:19], y)
    np.testing.assert_allclose(got.double().numpy(), np.diag(want[:19]), rtol=rel, atol=rel)
    assert torch.equal(k.matrix(x, x).diagonal(), torch.ones(len(x), dtype=dtype))  # L1 distances: exact 0


def test_profile_and_param_grads():
    k = L1Laplacian(0.7)
    t = torch.tensor([0.0, 0.3, 2.0, 50.0], dtype=F64)
    g = torch.exp(-t / 0.7)
    for o in range(4):
        torch.testing.assert_close(k.profile(t, o), g * (-1 / 0.7) ** o, rtol=1e-14, atol=0)
    torch.testing.assert_close(k.profiles(t, (0, 1, 2)), tuple(g * (-1 / 0.7) ** o for o in range(3)))
    s = torch.tensor(0.7, dtype=F64, requires_grad=True)
    (dg,) = torch.autograd.grad(L1Laplacian(s).profile(t, 0).sum(), s)
    torch.testing.assert_close(dg, k.param_grads(t)[0].sum(), rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match="order must be 0, 1, 2 or 3"):
        k.profile(t, 4)


def test_extreme_sigma_finite():
    """σ far below the distances: g underflows to 0 (no NaN at t = 0, where g = 1), derivatives 0 or finite."""
    t = torch.tensor([0.0, 1.0, 1e30], dtype=F32)
    for s in (1e-40, 1e-300, 1e30):
        k = L1Laplacian(s)
        for o in range(4):
            assert torch.isfinite(k.profile(t, o)).all(), (s, o)
        assert torch.isfinite(k.param_grads(t)[0]).all()
        assert float(k.profile(t, 0)[0]) == 1.0


def test_bad_sigma():
    with pytest.raises(ValueError, match="sigma must be"):
        L1Laplacian(-1.0)
    with pytest.raises(ValueError, match="sigma must be"):
        L1Laplacian("mode")
    with pytest.raises(TypeError, match="sigma"):
        L1Laplacian([1.0])
    with pytest.raises(ValueError, match="must be resolved on data"):
        L1Laplacian("median").matrix(torch.zeros(2, 1), torch.zeros(2, 1))


@pytest.mark.parametrize("rule", ["median", "mean"])
def test_heuristic_on_l1_distances(rule):
    x, y = data()
    z = torch.cat([x, y]).numpy()
    dist = l1_np(z, z)[np.triu_indices(len(z), 1)]
    want = float(np.median(dist) if rule == "median" else dist.mean())
    assert km.bandwidth(x, y, rule, p=1) == pytest.approx(want, rel=1e-12)
    assert L1Laplacian(rule).resolve(x, y).sigma == pytest.approx(want, rel=1e-12)
    # the Euclidean heuristic is a different number
    assert km.bandwidth(x, y, rule) != pytest.approx(want, rel=1e-3)
    got = km.mmd2_unbiased(x, y, kernel="l1_laplacian", sigma=rule)
    assert float(got) == pytest.approx(mmd2_u_np(x.numpy(), y.numpy(), want), rel=1e-10)


def test_bandwidth_p_error():
    with pytest.raises(ValueError, match="p must be 1 .* or 2"):
        km.bandwidth(torch.zeros(3, 2), p=3)


# ----------------------------------------------------------------------------------------- public estimators
@pytest.mark.parametrize("dtype", [F64, F32])
def test_estimators_vs_numpy(dtype):
    x, y = data(dtype=dtype)
    xn, yn = x.double().numpy(), y.double().numpy()
    rel = 1e-11 if dtype == F64 else 2e-5
    got = km.mmd2_unbiased(x, y, kernel="l1_laplacian", sigma=SIGMA, backend="torch")
    assert got.dtype == dtype
    assert float(got) == pytest.approx(mmd2_u_np(xn, yn, SIGMA), rel=rel)
    t = x[:5] + 0.1
    tn = t.double().numpy()
    w = kmat_np(tn, xn, SIGMA).mean(1) - kmat_np(tn, yn, SIGMA).mean(1)
    np.testing.assert_allclose(km.witness(x, y, t, kernel="l1_laplacian", sigma=SIGMA).double(), w, rtol=rel,
                               atol=rel)
    wg = grad_mv_np(tn, np.concatenate([xn, yn]),
                    np.r_[np.full(len(xn), 1 / len(xn)), np.full(len(yn), -1 / len(yn))], SIGMA)
    np.testing.assert_allclose(km.witness_grad(x, y, t, kernel="l1_laplacian", sigma=SIGMA).double(), wg,
                               rtol=rel, atol=rel * np.abs(wg).max())
    np.testing.assert_allclose(km.kernel_matrix(x, y, kernel="l1_laplacian", sigma=SIGMA).double(),
                               kmat_np(xn, yn, SIGMA), rtol=rel, atol=rel)


def test_mmd_test_and_linear():
    x, y = data(n=30, m=30, shift=1.0)
    r = km.mmd_test(x, y, kernel="l1_laplacian", sigma="median", n_permutations=200, seed=0)
    assert r.p_value < 0.05 and isinstance(r.kernel, L1Laplacian)
    assert float(r.statistic) == pytest.approx(mmd2_u_np(x.numpy(), y.numpy(), r.kernel.sigma), rel=1e-10)
    lin = km.mmd2_linear(x, y, kernel="l1_laplacian", sigma=SIGMA)
    xn, yn = x.numpy(), y.numpy()
    h = [np.exp(-np.abs(xn[2 * i] - xn[2 * i + 1]).sum() / SIGMA) + np.exp(-np.abs(yn[2 * i] - yn[2 * i + 1]).sum()
                                                                              / SIGMA)
         - np.exp(-np.abs(xn[2 * i] - yn[2 * i + 1]).sum() / SIGMA)
         - np.exp(-np.abs(xn[2 * i + 1] - yn[2 * i]).sum() / SIGMA) for i in range(15)]
    assert float(lin) == pytest.approx(np.mean(h), rel=1e-10)


def test_gradients_through_estimator():
    """gradcheck of MMD²_u (dense reference) in x, y and σ; coordinates away from ties (the kernel is smooth there)."""
    x, y = data(n=6, m=5, d=3)
    x, y = x.requires_grad_(), y.requires_grad_()
    s = torch.tensor(0.9, dtype=F64, requires_grad=True)
    torch.autograd.gradcheck(lambda a, b, c: km.mmd2_unbiased(a, b, kernel=L1Laplacian(c), backend="torch"),
                             (x, y, s))


def test_tie_subgradient():
    """Coinciding coordinates: the gradient uses sign(0) = 0 (no NaN), on the dense reference and through autograd."""
    x = torch.tensor([[0.0, 1.0], [2.0, 1.0]], dtype=F64, requires_grad=True)
    y = torch.tensor([[0.0, 3.0]], dtype=F64)
    v = torch.ones(1, dtype=F64)
    k = L1Laplacian(1.0)
    got = R.kernel_grad_mv(x, y, v, k)
    np.testing.assert_allclose(got.detach().numpy(), grad_mv_np(x.detach().numpy(), y.numpy(), v.numpy(), 1.0),
                               rtol=1e-14)
    assert got[0, 0] == 0.0
    (g,) = torch.autograd.grad(R.kernel_mv(x, y, v, k).sum(), x)
    torch.testing.assert_close(g, got, rtol=1e-14, atol=0)


def test_refusals():
    x, y = data(n=6, m=6, d=2)
    k = L1Laplacian(1.0)
    for fn in (lambda: km.smmd2(x, y, kernel="l1_laplacian"), lambda: km.gcmmd2(x, y, kernel="l1_laplacian"),
               lambda: km.sigma2_inv("l1_laplacian", x)):
        with pytest.raises(ValueError, match="twice-differentiable.*L1Laplacian"):
            fn()
    with pytest.raises(ValueError, match="twice-differentiable.*L1Laplacian"):
        km.derivative_blocks(x, kernel=k)
    for op in ("a_matvec", "a_diag", "dense_blocks"):
        args = {"a_matvec": (x, x[:, 0], x, k), "a_diag": (x, k), "dense_blocks": (x, k)}[op]
        with pytest.raises(ValueError, match=f"{op} needs a twice-differentiable.*L1Laplacian"):
            getattr(R, op)(*args)


def test_float32_range_promotion():
    """float32 inputs whose L1 distances overflow float32 are computed in float64 (no warning), the squared-distance
    rule would not apply: 1e20 coordinates have L1 distances ~1e20, fine in float32."""
    x, y = data(n=8, m=8, d=2)
    big = km.mmd2_unbiased((x * 1e20).float(), (y * 1e20).float(), kernel="l1_laplacian", sigma=1e20)
    want = mmd2_u_np((x * 1e20).float().double().numpy(), (y * 1e20).float().double().numpy(), 1e20)
    assert big.dtype == F32 and float(big) == pytest.approx(want, rel=1e-5)
    huge = km.mmd2_unbiased((x * 1e37).float(), (y * 1e37).float(), kernel="l1_laplacian", sigma=1e37)
    want = mmd2_u_np((x * 1e37).float().double().numpy(), (y * 1e37).float().double().numpy(), 1e37)
    assert huge.dtype == F32 and float(huge) == pytest.approx(want, rel=1e-5)


# ------------------------------------------------------------------------------------ backends vs the dense reference
# The shared checks of tests/backend_suite.py (every field of block_stats, kernel_mv with vector and batched v,
# kernel_grad_mv; gradients in x, y, v and a tensor σ against autograd through the float64 dense reference, itself
# checked against numpy above). Random points: no coordinate ties (where the L1 kernel is not differentiable).
# float32: k = exp(−t/σ) evaluated in float32 has a relative error of about (t/σ)·eps (the rounding of t, amplified
# by the exponential, as for the dense reference in float32); d = 8 keeps t/σ ≈ 7 like the radial cases' t/(2σ²).
SHAPES = [(1, 7, 3), (7, 33, 1), (33, 7, 8)]


class TestL1Tiled(BlockStatsSuite, KernelMvSuite, KernelGradMvSuite):
    ops = tiled
    block_stats_cases = grid(kind="l1_laplacian", shape=SHAPES, dtype=[F64, F32], variance=[False, True],
                             tensor_param=True)
    kernel_mv_cases = grid(kind="l1_laplacian", shape=SHAPES, dtype=[F64, F32], width=[None, 3], tensor_param=True)
    kernel_grad_mv_cases = grid(kind="l1_laplacian", shape=SHAPES, dtype=[F64, F32], tensor_param=True)

    @pytest.fixture(autouse=True)
    def tiny_tiles(self, monkeypatch):
        """Tiny tiles: every sum crosses tiles, the within-sample blocks use off-diagonal tiles."""
        monkeypatch.setattr(tiled, "TILE_ELEMENTS", 100)

    def test_gradcheck_block_stats(self):
        """gradcheck of the once-differentiable block sums (variance statistics included) in x, y and σ."""
        x, y = data(n=5, m=4, d=3)
        s = torch.tensor(0.8, dtype=F64, requires_grad=True)

        def f(a, b, c):
            st = tiled.block_stats(a, b, L1Laplacian(c), variance=True)
            return st.sxx, st.syy, st.sxy, st.rxx, st.cxy, st.qxy

        torch.autograd.gradcheck(f, (x.requires_grad_(), y.requires_grad_(), s))

    def test_gradgradcheck_row_ops(self):
        """kernel_mv and kernel_grad_mv are differentiable torch code per tile: second order as the reference."""
        x, y = data(n=4, m=5, d=2)
        v = torch.randn(5, dtype=F64, generator=torch.Generator().manual_seed(3), requires_grad=True)
        s = torch.tensor(0.8, dtype=F64, requires_grad=True)
        args = (x.requires_grad_(), y.requires_grad_(), v, s)
        for op in (tiled.kernel_mv, tiled.kernel_grad_mv):
            torch.autograd.gradgradcheck(lambda a, b, w, c, op=op: op(a, b, w, L1Laplacian(c)), args)

    def test_ties_match_reference(self):
        """Coordinates shared between points (sign(0) = 0): block sums' gradient and kernel_grad_mv as the reference."""
        x, y = data(n=9, m=8, d=3)
        x[:4, 0] = 0.5
        y[:3, 0] = 0.5
        x[5] = x[6]  # a whole duplicated point inside X
        k = L1Laplacian(1.1)
        for mod in (tiled, R):
            a, b = x.clone().requires_grad_(), y.clone().requires_grad_()
            st = mod.block_stats(a, b, k, variance=True)
            loss = st.sxx + 2 * st.syy - 3 * st.sxy + st.qxx + (st.rxy * torch.arange(9.0, dtype=F64)).sum()
            g = torch.autograd.grad(loss, (a, b))
            if mod is tiled:
                got = g
            else:
                torch.testing.assert_close(got, g, rtol=1e-12, atol=1e-14)
        v = torch.linspace(-1, 1, 8, dtype=F64)
        torch.testing.assert_close(tiled.kernel_grad_mv(x, y, v, k), R.kernel_grad_mv(x, y, v, k), rtol=1e-12,
                                   atol=1e-14)

    def test_refusals(self):
        x = torch.randn(5, 2, dtype=F64)
        k = L1Laplacian(1.0)
        with pytest.raises(ValueError, match="a_matvec needs a twice-differentiable.*L1Laplacian"):
            tiled.a_matvec(x, x[:, 0], x, k)
        with pytest.raises(ValueError, match="a_column needs a twice-differentiable.*L1Laplacian"):
            tiled.a_column(x, 0, k)


# KeOps compiles one formula per op, dtype, d and gradient variable (~5-10 s each, cached): few cases, d = 3
_keops = importlib.import_module("kernelmmd.ops.keops") if _has("pykeops") else None


@pytest.mark.skipif(_keops is None, reason="pykeops not installed")
class TestL1KeOps(BlockStatsSuite, KernelMvSuite, KernelGradMvSuite):
    ops = _keops
    block_stats_cases = (grid(kind="l1_laplacian", shape=[(7, 33, 3), (33, 7, 3)], dtype=F64, variance=[False, True],
                              tensor_param=True)
                         + grid(kind="l1_laplacian", shape=(33, 7, 3), dtype=F32, variance=[False, True], grad=False))
    kernel_mv_cases = grid(kind="l1_laplacian", shape=[(1, 7, 3), (33, 7, 3)], dtype=F64, tensor_param=True)
    kernel_grad_mv_cases = grid(kind="l1_laplacian", shape=(7, 33, 3), dtype=F64, tensor_param=True)

    def test_ties_match_reference(self):
        """KeOps' Sign(0) = 0: the block sums' gradient with shared coordinates and a duplicated point."""
        x, y = data(n=9, m=8, d=3)
        x[:4, 0] = 0.5
        y[:3, 0] = 0.5
        x[5] = x[6]
        k = L1Laplacian(1.1)
        gs = []
        for mod in (_keops, R):
            a, b = x.clone().requires_grad_(), y.clone().requires_grad_()
            st = mod.block_stats(a, b, k)
            gs.append(torch.autograd.grad(st.sxx + 2 * st.syy - 3 * st.sxy, (a, b)))
        torch.testing.assert_close(gs[0], gs[1], rtol=1e-12, atol=1e-14)
