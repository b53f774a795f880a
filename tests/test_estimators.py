"""Every estimator of the dense torch backend against the independent float64 numpy reference, for every kernel
case of the shared table (tests/_cases.py)."""

import numpy as np
import pytest
import torch

import kernelmmd as km

from . import reference_np as ref
from ._cases import KINDS, name_params

KERNELS = name_params(*KINDS, "poly_auto")  # poly_auto: γ = 1/d resolved on the data
SHAPES = [(7, 1), (33, 3), (7, 50)]


def _data(n, d, m=None, seed=0, shift=0.5):
    rng = np.random.default_rng(seed)
    m = n if m is None else m
    return rng.normal(size=(n, d)), rng.normal(size=(m, d)) * 1.2 + shift


def _np_params(name, p):
    return {k: v for k, v in p.items() if v is not None}


@pytest.mark.parametrize("name,params", KERNELS)
@pytest.mark.parametrize("n,d", SHAPES)
def test_unbiased_biased_vs_numpy(name, params, n, d):
    x, y = _data(n, d, m=n + 4)
    p = _np_params(name, params)
    got_u = km.mmd2_unbiased(torch.from_numpy(x), torch.from_numpy(y), name, **params)
    got_b = km.mmd2_biased(torch.from_numpy(x), torch.from_numpy(y), name, **params)
    assert got_u.dtype == torch.float64
    np.testing.assert_allclose(float(got_u), ref.mmd2_unbiased(x, y, name, **p), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(float(got_b), ref.mmd2_biased(x, y, name, **p), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,params", KERNELS)
def test_single_point_biased_and_witness(name, params):
    x, y = _data(1, 3, m=1)
    p = _np_params(name, params)
    np.testing.assert_allclose(km.mmd2_biased(x, y, name, **params), ref.mmd2_biased(x, y, name, **p), rtol=1e-10)
    t = np.random.default_rng(3).normal(size=(1, 3))
    if name != "rbf_bounded":  # the bounded kernel is a loss device; its witness is not defined by SPEC
        np.testing.assert_allclose(km.witness(x, y, t, name, **params), ref.witness(x, y, t, name, **p), rtol=1e-10)


@pytest.mark.parametrize("name,params", KERNELS)
@pytest.mark.parametrize("n,d", SHAPES)
def test_linear_and_block_vs_numpy(name, params, n, d):
    x, y = _data(n + 1, d)  # even after dropping one
    p = _np_params(name, params)
    got = km.mmd2_linear(x[:n - 1], y[:n - 1], name, **params)
    np.testing.assert_allclose(got, ref.mmd2_linear(x[:n - 1], y[:n - 1], name, **p), rtol=1e-10, atol=1e-12)
    bs = max(2, n // 3)
    nb = (n + 1) // bs
    with pytest.warns(km.NumericalWarning, match="ignored") if (n + 1) % bs else _no_warning():
        got_b, blocks = km.mmd2_block(x, y, name, block_size=bs, return_blocks=True, **params)
    want = [ref.mmd2_unbiased(x[b * bs:(b + 1) * bs], y[b * bs:(b + 1) * bs], name, **p) for b in range(nb)]
    np.testing.assert_allclose(blocks, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got_b, np.mean(want), rtol=1e-10, atol=1e-12)


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


@pytest.mark.parametrize("name,params", KERNELS)
@pytest.mark.parametrize("n,d", [(7, 1), (33, 3), (12, 50)])
def test_variance_vs_numpy(name, params, n, d):
    x, y = _data(n, d)
    p = _np_params(name, params)
    mmd2, var = km.mmd2_and_variance(x, y, name, **params)
    np.testing.assert_allclose(mmd2, ref.mmd2_unbiased(x, y, name, **p), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(var, ref.variance_h1(x, y, name, **p), rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize("name,params", name_params(*KINDS, "poly_auto", exclude=("rbf_bounded",)))
@pytest.mark.parametrize("n,d", SHAPES)
def test_witness_and_gradient_vs_numpy(name, params, n, d):
    x, y = _data(n, d, m=n + 2)
    t = np.random.default_rng(1).normal(size=(5, d)) * 0.7
    p = _np_params(name, params)
    want = ref.witness(x, y, t, name, **p)
    np.testing.assert_allclose(km.witness(x, y, t, name, **params), want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        km.witness_grad(x, y, t, name, **params), ref.witness_grad(x, y, t, name, **p), rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize("backend", ["torch", "tiled"])
@pytest.mark.parametrize("d", [1, 3, 20])
@pytest.mark.parametrize("name", ["laplacian", "energy"])
def test_witness_gradient_of_sqrt_kernels_at_close_points(name, d, backend):
    """Query points 1e-7 from samples, far from the origin: ∇η̂ of the √t kernels to float64 rounding, checked against
    the explicit per-pair gradient −(t − x_j)/‖t − x_j‖ · (e^{−r/σ}/σ or 1) (+ t/‖t‖ for the energy kernel). The
    expansion t Σ p − Σ p x_j of the smooth kernels cancels here (g' ∝ r^{-1}): it was 1e-9 relative off."""
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(13, d)) + 5.0, rng.normal(size=(11, d)) + 5.3
    t = np.concatenate([x[:4] + 1e-7 * rng.normal(size=(4, d)), y[:2] + 1e-7 * rng.normal(size=(2, d))])
    sigma = 0.8

    def grad_k(q, pts):  # Σ_j ∇_q k(q, p_j) / len(pts)
        diff = q[None, :] - pts  # (n, d)
        r = np.sqrt((diff * diff).sum(1))[:, None]
        unit = np.where(r > 0, diff / np.where(r > 0, r, 1.0), 0.0)
        if name == "laplacian":
            return (-np.exp(-r / sigma) / sigma * unit).mean(0)
        return (q / np.sqrt(q @ q) - unit).mean(0)

    want = np.stack([grad_k(q, x) - grad_k(q, y) for q in t])
    params = {"sigma": sigma} if name == "laplacian" else {}
    got = km.witness_grad(x, y, t, name, backend=backend, **params)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("name,params", KERNELS)
def test_kernel_matrix_and_means(name, params):
    x, y = _data(7, 3, m=5)
    p = _np_params(name, params)
    want = ref.kmat(name, x, y, **p)
    np.testing.assert_allclose(km.kernel_matrix(x, y, name, **params), want, rtol=1e-10, atol=1e-12)
    kxx, kyy, kxy = km.kernel_means(x, y, name, **params)
    np.testing.assert_allclose(kxx + kyy - 2 * kxy, ref.mmd2_unbiased(x, y, name, **p), rtol=1e-10, atol=1e-12)
    vxx, vyy, vxy = km.kernel_means(x, y, name, unbiased=False, **params)
    np.testing.assert_allclose(vxx + vyy - 2 * vxy, ref.mmd2_biased(x, y, name, **p), rtol=1e-10, atol=1e-12)


def test_kernel_matrix_single_argument_is_symmetric():
    x = np.random.default_rng(0).normal(size=(6, 2))
    k = km.kernel_matrix(x, kernel="rbf", sigma=1.0)
    np.testing.assert_allclose(k, k.T)
    np.testing.assert_allclose(np.diag(k), 1.0)


def test_numpy_in_float_out_and_tensor_in_tensor_out():
    x, y = _data(10, 2)
    out = km.mmd2_unbiased(x, y)
    assert isinstance(out, float)
    out_t = km.mmd2_unbiased(torch.from_numpy(x), torch.from_numpy(y))
    assert isinstance(out_t, torch.Tensor) and out_t.ndim == 0
    w = km.witness(x, y, x[:3])
    assert isinstance(w, np.ndarray) and w.shape == (3,)


def test_one_dimensional_input_is_points_in_r1():
    x, y = _data(9, 1)
    a = km.mmd2_unbiased(x[:, 0], y[:, 0], "rbf", sigma=1.0)
    b = km.mmd2_unbiased(x, y, "rbf", sigma=1.0)
    assert a == pytest.approx(b, rel=1e-14)


def test_median_heuristic_matches_numpy():
    x, y = _data(20, 3)
    z = np.concatenate([x, y])
    d = np.sqrt(ref.sqd(z, z))[np.triu_indices(len(z), 1)]
    sigma = float(np.median(d))
    assert km.bandwidth(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(sigma, rel=1e-12)
    np.testing.assert_allclose(
        km.mmd2_unbiased(x, y, "rbf", sigma="median"), ref.mmd2_unbiased(x, y, "rbf", sigma=sigma), rtol=1e-10
    )
    mean = float(np.mean(d))
    assert km.bandwidth(torch.from_numpy(x), torch.from_numpy(y), rule="mean") == pytest.approx(mean, rel=1e-12)


def test_deep_kernel_equals_kernel_on_features():
    torch.manual_seed(0)
    phi = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4)).double()
    x, y = torch.randn(8, 3, 2, 2, dtype=torch.float64), torch.randn(6, 3, 2, 2, dtype=torch.float64)
    k = km.DeepKernel(phi, "rbf", sigma=1.5)
    with torch.no_grad():
        fx, fy = phi(x), phi(y)
        want = km.mmd2_unbiased(fx, fy, "rbf", sigma=1.5)
        assert float(km.mmd2_unbiased(x, y, k)) == pytest.approx(float(want), rel=1e-12)
        np.testing.assert_allclose(k.matrix(x, y).numpy(), km.kernel_matrix(fx, fy, "rbf", sigma=1.5).numpy())


def test_float32_sums_are_accumulated_in_float64():
    # MMD² is a small difference of large sums: with n = 3000 near-identical points, float32 accumulation of
    # 9·10⁶ terms near 1 would lose it entirely; float64 accumulation keeps it.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 2, generator=g) * 0.01
    y = x + 1e-3
    got = km.mmd2_unbiased(x, y, "rbf", sigma=10.0)
    want = km.mmd2_unbiased(x.double(), y.double(), "rbf", sigma=10.0)
    assert got.dtype == torch.float32
    assert abs(float(got) - float(want)) <= 1e-6 * 1.0  # relative to the kernel-sum scale (k ≈ 1)


def test_half_precision_inputs_are_computed_in_float32():
    x, y = torch.randn(10, 3), torch.randn(12, 3)
    for dt in (torch.float16, torch.bfloat16):
        got = km.mmd2_unbiased(x.to(dt), y.to(dt))
        assert got.dtype == torch.float32
        want = km.mmd2_unbiased(x.to(dt).float(), y.to(dt).float())
        assert float(got) == pytest.approx(float(want), rel=1e-6)


def test_unequal_sample_sizes():
    x, y = _data(5, 2, m=11)
    np.testing.assert_allclose(km.mmd2_unbiased(x, y), ref.mmd2_unbiased(x, y, "rbf"), rtol=1e-10)
    np.testing.assert_allclose(km.mmd2_biased(x, y), ref.mmd2_biased(x, y, "rbf"), rtol=1e-10)
