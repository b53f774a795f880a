"""The L1 Laplace kernel k(a, b) = exp(−‖a − b‖₁/σ) (kernelmmd.L1Laplacian, kernel="l1_laplacian"): the kernel
class against an independent float64 numpy reference (explicit |a − b| sums), the L1 median heuristic, the public
estimators, refusals (SMMD, GCMMD, derivative blocks) and every backend's block_stats / kernel_mv / kernel_grad_mv
against the dense reference (the shared checks of tests/backend_suite.py)."""

from __future__ import annotations

import importlib
import importlib.util
import warnings

import numpy as np
import pytest
import torch

import kernelmmd as km
from kernelmmd import _range
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


def tied_data(n, m):
    """``data(n, m, d=3)`` with ties (sign(0) = 0 in the gradients): coordinate 0 is 0.5 for the first 4 points of x
    and 3 of y, and x[5] is a whole duplicate of x[6]."""
    x, y = data(n=n, m=m, d=3)
    x[:4, 0] = 0.5
    y[:3, 0] = 0.5
    x[5] = x[6]
    return x, y


def block_sums_grad(mod, x, y, kernel, variance=False):
    """The gradient in (x, y) of a mix of ``mod.block_stats``' block sums (with ``variance`` also qxx and the rxy
    row sums, weighted 0..n − 1)."""
    a, b = x.clone().requires_grad_(), y.clone().requires_grad_()
    st = mod.block_stats(a, b, kernel, variance=variance)
    loss = st.sxx + 2 * st.syy - 3 * st.sxy
    if variance:
        loss = loss + st.qxx + (st.rxy * torch.arange(float(x.shape[0]), dtype=F64)).sum()
    return torch.autograd.grad(loss, (a, b))


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


def test_public_api_tiled_matches_dense():
    """Through prepare and the dispatch table: backend="tiled" (and "auto" above the dense threshold) as "torch"."""
    x, y = data(n=40, m=40, d=3, dtype=F32)
    want = km.mmd2_and_variance(x, y, kernel="l1_laplacian", sigma="median", backend="torch")
    for backend in ("tiled", km.Auto(dense_max_pairs=0)):
        got = km.mmd2_and_variance(x, y, kernel="l1_laplacian", sigma="median", backend=backend)
        for g, w in zip(got, want):
            assert g.dtype == F32 and float(g) == pytest.approx(float(w), rel=1e-5)
    r1 = km.mmd_test(x, y, kernel="l1_laplacian", n_permutations=50, seed=1, backend="torch")
    r2 = km.mmd_test(x, y, kernel="l1_laplacian", n_permutations=50, seed=1, backend="tiled")
    assert r1.p_value == r2.p_value


def test_deep_kernel_on_l1_top():
    """DeepKernel(φ, "l1_laplacian"): the L1 kernel on features, MMD² and the witness gradient through φ."""
    lin = torch.nn.Linear(3, 2).double()
    x, y = data(n=7, m=6, d=3)
    k = km.DeepKernel(lin, "l1_laplacian", sigma=SIGMA)
    with torch.no_grad():
        fx, fy = lin(x).numpy(), lin(y).numpy()
    got = km.mmd2_unbiased(x, y, kernel=k)
    assert float(got.detach()) == pytest.approx(mmd2_u_np(fx, fy, SIGMA), rel=1e-11)
    t = x[:2].clone().requires_grad_()
    w = km.witness(x, y, t, kernel=k)
    (want,) = torch.autograd.grad(w.sum(), t)
    torch.testing.assert_close(km.witness_grad(x, y, t.detach(), kernel=k), want, rtol=1e-10, atol=1e-12)


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
    """The compute dtype follows the L1 distances (S = d·max|x|), not squared distances: 1e20 coordinates stay in
    float32 (their squares would overflow it, L1 distances ~1e20 do not); at 1e37 the L1 distances leave float32's
    range and the call computes in float64, returns float32, exact and without a warning."""
    x, y = data(n=8, m=8, d=2)
    assert _range.plan([(x * 1e20).float()], L1Laplacian(1e20)).dtype == F32
    assert _range.plan([(x * 1e37).float()], L1Laplacian(1e37)).dtype == F64
    big = km.mmd2_unbiased((x * 1e20).float(), (y * 1e20).float(), kernel="l1_laplacian", sigma=1e20)
    want = mmd2_u_np((x * 1e20).float().double().numpy(), (y * 1e20).float().double().numpy(), 1e20)
    assert big.dtype == F32 and float(big) == pytest.approx(want, rel=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
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
        x, y = tied_data(9, 8)
        k = L1Laplacian(1.1)
        torch.testing.assert_close(block_sums_grad(tiled, x, y, k, variance=True),
                                   block_sums_grad(R, x, y, k, variance=True), rtol=1e-12, atol=1e-14)
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
        x, y = tied_data(9, 8)
        k = L1Laplacian(1.1)
        torch.testing.assert_close(block_sums_grad(_keops, x, y, k), block_sums_grad(R, x, y, k), rtol=1e-12,
                                   atol=1e-14)


# Triton: the compiled kernels on CUDA, else the interpreter on CPU tensors (conftest sets TRITON_INTERPRET=1) with
# 16-wide tiles, so that these shapes cross row and column tiles, partial tiles, the triangular schedule of the
# within-sample sums, the column split (witness ops) and several output-column chunks (d = 20 > 16).
_triton = importlib.import_module("kernelmmd.ops.triton") if _has("triton") else None
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


def _dev(*ts):
    return tuple(t.to(DEVICE) for t in ts)


class _TritonOps:
    """The Triton ops with CPU inputs and outputs (moved to CUDA when there is one), for the shared CPU checks."""

    @staticmethod
    def block_stats(x, y, kernel, variance=False):
        st = _triton.block_stats(*_dev(x, y), kernel, variance)
        for f in vars(st):
            v = getattr(st, f)
            if isinstance(v, torch.Tensor):
                setattr(st, f, v.cpu())
        return st

    @staticmethod
    def kernel_mv(x, y, v, kernel, block="xy"):
        return _triton.kernel_mv(*_dev(x, y, v), kernel, block).cpu()

    @staticmethod
    def kernel_grad_mv(x, y, v, kernel):
        return _triton.kernel_grad_mv(*_dev(x, y, v), kernel).cpu()


SMALL_SHAPES = [(1, 6, 2), (37, 29, 3)]
#: d = 20 (several 16-wide output-column chunks) with σ = 4: t/σ ≈ 5, float32 kernel values carry (t/σ)·eps relative
#: error. The interpreter loops over d in Python: one float32 case per op at this size.
WIDE = dict(kind="l1_laplacian_wide", shape=(18, 20, 20), dtype=F32)


@pytest.mark.skipif(_triton is None, reason="triton not installed")
class TestL1Triton(BlockStatsSuite, KernelMvSuite, KernelGradMvSuite):
    ops = _TritonOps
    block_stats_cases = (grid(kind="l1_laplacian", shape=SMALL_SHAPES, dtype=F64, variance=[False, True],
                              tensor_param=True)
                         + grid(kind="l1_laplacian", shape=SMALL_SHAPES, dtype=F32, variance=True, tensor_param=True)
                         + grid(**WIDE, variance=True, tensor_param=True))
    kernel_mv_cases = (grid(kind="l1_laplacian", shape=SMALL_SHAPES, dtype=F64, width=[None, 3], tensor_param=True)
                       + grid(kind="l1_laplacian", shape=SMALL_SHAPES, dtype=F32, tensor_param=True)
                       + grid(**WIDE, width=3, tensor_param=True))
    # the gradient of kernel_grad_mv in its points would need g'' (refused, below); in v and σ: a test below
    kernel_grad_mv_cases = (grid(kind="l1_laplacian", shape=SMALL_SHAPES, dtype=[F64, F32], grad=False)
                            + grid(**WIDE, grad=False))

    @pytest.fixture(autouse=True)
    def small_tiles(self, monkeypatch):
        if not CUDA:
            setup = importlib.import_module("tests.triton_setup")
            bs = importlib.import_module("kernelmmd.ops.triton.block_stats")
            monkeypatch.setattr(setup.L, "TILES_OVERRIDE", setup.SMALL)
            small = bs.LaunchConfig(block_m=16, block_n=16, block_k=16, block_d=16, chunk_d=16, split=1)
            monkeypatch.setattr(bs, "launch_config", lambda *a, **k: small)

    def test_kernel_grad_mv_grads_in_v_and_sigma(self):
        """kernel_grad_mv's gradient in v and σ (Γ·sign directional products, ∂g'/∂σ) against the reference."""
        x, y = data(n=18, m=37, d=3)
        v = torch.linspace(-1.0, 1.0, 37, dtype=F64, requires_grad=True)
        s = torch.tensor(1.1, dtype=F64, requires_grad=True)
        gam = torch.randn(18, 3, dtype=F64, generator=torch.Generator().manual_seed(4))
        got = torch.autograd.grad((_TritonOps.kernel_grad_mv(x, y, v, L1Laplacian(s)) * gam).sum(), (v, s))
        want = torch.autograd.grad((R.kernel_grad_mv(x, y, v, L1Laplacian(s)) * gam).sum(), (v, s))
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)

    def test_ties_match_reference(self):
        """sign(0) = 0 in the fused gradients: shared coordinates and a duplicated point."""
        x, y = tied_data(19, 18)
        k = L1Laplacian(1.1)
        v = torch.linspace(-1, 1, 18, dtype=F64)
        gs = [(*block_sums_grad(mod, x, y, k, variance=True), mod.kernel_grad_mv(x, y, v, k))
              for mod in (_TritonOps, R)]
        for g, w in zip(*gs):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)

    def test_refused_derivatives(self):
        """Derivatives the Triton kernels do not implement raise clear errors, never a silent wrong gradient."""
        x, y = data(n=5, m=4, d=2)
        x, y = _dev(x.requires_grad_(), y)
        k = L1Laplacian(1.0)
        v = torch.ones(4, dtype=F64, device=DEVICE)
        out = _triton.kernel_grad_mv(x, y, v, k)
        with pytest.raises(ValueError, match="needs the second derivative.*l1_laplacian"):
            out.sum().backward()
        st = _triton.block_stats(x, y, k)
        (g,) = torch.autograd.grad(st.sxy, x, create_graph=True)
        with pytest.raises(RuntimeError, match="differentiable once"):
            g.sum().backward()
        for op, args in (("a_matvec", (x.detach(), x[:, 0].detach(), x.detach())), ("a_diag", (x.detach(),))):
            with pytest.raises(ValueError, match=f"{op} needs a twice-differentiable.*L1Laplacian"):
                getattr(_triton, op)(*args, k)
