"""The L1 Laplace kernel k(a, b) = exp(−‖a − b‖₁/σ) (kernelmmd.L1Laplacian, kernel="l1_laplacian"): the kernel
class against an independent float64 numpy reference (explicit |a − b| sums), the L1 median heuristic, the public
estimators, refusals (SMMD, GCMMD, derivative blocks) and every backend's block_stats / kernel_mv / kernel_grad_mv
against the dense reference (the shared checks of tests/backend_suite.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import kernelmmd as km
from kernelmmd.kernels import L1Kernel, L1Laplacian
from kernelmmd.ops import reference as R

F64, F32 = torch.float64, torch.float32
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
