"""ARD kernels (kernelmmd.ARD): k(a, b) = g(Σ_i (a_i − b_i)²/ℓ_i²) with g the radial base's profile at unit scale,
implemented as the feature map x/ℓ under the base kernel, so every backend runs the base unchanged."""

import importlib.util
import math

import pytest
import torch

import kernelmmd as km

F64 = torch.float64
HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS_KEOPS = importlib.util.find_spec("pykeops") is not None
BACKENDS = ["torch", "tiled", pytest.param("triton", marks=pytest.mark.skipif(not HAS_TRITON, reason="no triton"))]
ELL = [0.7, 1.9, 1.2]

# base name, its parameters, g(t) at unit scale (float64)
BASES = {
    "rbf": ({}, lambda t: (-t / 2).exp()),
    "rq": ({"alpha": 0.7}, lambda t: (1 + t / 1.4) ** -0.7),
    "laplacian": ({}, lambda t: (-t.sqrt()).exp()),
    "mix_rbf": ({"sigmas": (0.5, 2.0)}, lambda t: (-t / 0.5).exp() + (-t / 8.0).exp()),
    "mix_rq": ({"alphas": (0.5, 2.0)}, lambda t: (1 + t) ** -0.5 + (1 + t / 4) ** -2.0),
}


def _data(n=20, m=17, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=F64), torch.randn(m, d, generator=g, dtype=F64) * 1.3 + 0.4


def _gram(a, b, ell, g):
    t = (((a[:, None, :] - b[None, :, :]) / torch.as_tensor(ell, dtype=F64)) ** 2).sum(-1)
    return g(t)


def _mmd2_u(x, y, ell, g):
    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = _gram(x, x, ell, g), _gram(y, y, ell, g), _gram(x, y, ell, g)
    return ((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
            - 2 * kxy.mean())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("base", sorted(BASES))
def test_value_matches_formula(base, backend):
    params, g = BASES[base]
    x, y = _data()
    got = km.mmd2_unbiased(x, y, km.ARD(ELL, base, **params), backend=backend)
    want = _mmd2_u(x, y, ELL, g)
    assert got.dtype == F64
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-13)


@pytest.mark.skipif(not HAS_KEOPS, reason="no pykeops")
def test_value_keops():
    x, y = _data(d=3)
    got = km.mmd2_unbiased(x, y, km.ARD(ELL, "rbf"), backend="keops")
    torch.testing.assert_close(got, _mmd2_u(x, y, ELL, BASES["rbf"][1]), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("base", ["rbf", "laplacian"])
def test_equal_lengthscales_are_the_base_kernel(base, backend):
    x, y = _data()
    s = 1.3
    got = km.mmd2_unbiased(x, y, km.ARD([s] * 3, base), backend=backend)
    want = km.mmd2_unbiased(x, y, base, sigma=s, backend=backend)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    got = km.mmd2_unbiased(x, y, km.ARD(s, base), backend=backend)  # a scalar is broadcast
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    # and the witness (one weighted kernel sum) likewise
    w1 = km.witness(x, y, x[:5], km.ARD([s] * 3, base), backend=backend)
    w0 = km.witness(x, y, x[:5], base, sigma=s, backend=backend)
    torch.testing.assert_close(w1, w0, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("backend", ["torch", "tiled"])
@pytest.mark.parametrize("base", ["rbf", "rq"])
def test_gradcheck_lengthscales(base, backend):
    x, y = _data(n=8, m=7, d=2)
    params = BASES[base][0]
    ell = torch.tensor([0.8, 1.7], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e: km.mmd2_unbiased(x, y, km.ARD(e, base, **params), backend=backend),
                                    (ell,))


@pytest.mark.parametrize("backend", ["torch", "tiled"])
def test_witness_grad_chain_rule(backend):
    x, y = _data()
    t = torch.randn(6, 3, dtype=F64, generator=torch.Generator().manual_seed(3))
    got = km.witness_grad(x, y, t, km.ARD(ELL, "rbf"), backend=backend)
    ell = torch.tensor(ELL, dtype=F64)
    s = torch.cat([x, y])
    w = torch.cat([torch.full((20,), 1 / 20, dtype=F64), torch.full((17,), -1 / 17, dtype=F64)])
    k = _gram(t, s, ELL, BASES["rbf"][1])  # (6, 37)
    want = -(k[:, :, None] * w[None, :, None] * (t[:, None, :] - s[None, :, :])).sum(1) / ell**2
    assert got.shape == t.shape
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-14)


def test_float32_result_dtype():
    x, y = (a.float() for a in _data())
    ell = torch.tensor(ELL, requires_grad=True)
    v = km.mmd2_unbiased(x, y, km.ARD(ell, "rbf"))
    assert v.dtype == torch.float32
    v.backward()
    assert ell.grad is not None and ell.grad.dtype == torch.float32 and torch.isfinite(ell.grad).all()
    assert km.witness_grad(x, y, x[:4], km.ARD(ELL, "rq")).dtype == torch.float32
    assert km.mmd2_unbiased(x.half(), y.half(), km.ARD(ELL)).dtype == torch.float32


@pytest.mark.parametrize(
    ("ell", "match"),
    [
        ([1.0, -2.0], r"lengthscales must be finite and > 0, got \[1.0, -2.0\]"),
        ([1.0, math.nan], r"lengthscales must be finite and > 0, got \[1.0, nan\]"),
        (0.0, r"lengthscales must be finite and > 0, got \[0.0\]"),
        (torch.tensor([1.0, math.inf]), r"lengthscales must be finite and > 0, got \[1.0, inf\]"),
        ([], r"lengthscales must contain at least one value"),
        (torch.ones(2, 2), r"lengthscales must be a number or a 1-D sequence, got a tensor of shape \(2, 2\)"),
    ],
)
def test_bad_lengthscales(ell, match):
    with pytest.raises(ValueError, match=match):
        km.ARD(ell)


def test_bad_arguments():
    x, y = _data(d=3)
    with pytest.raises(ValueError, match=r"lengthscales has 2 values \[1.0, 2.0\] but the inputs have d = 3"):
        km.mmd2_unbiased(x, y, km.ARD([1.0, 2.0]))
    with pytest.raises(TypeError, match=r"lengthscales must be numbers > 0, got \['a'\]"):
        km.ARD(["a"])
    with pytest.raises(TypeError, match="takes no sigma: the lengthscales replace it"):
        km.ARD([1.0, 2.0], "rbf", sigma=2.0)
    with pytest.raises(ValueError, match="ARD base must be one of"):
        km.ARD([1.0], "poly")
    with pytest.raises(TypeError, match="ARD base must be one of"):
        km.ARD([1.0], km.RBFBounded())


def test_tests_and_scaled_estimators_accept_it():
    x, y = _data(n=16, m=16, d=3)
    res = km.mmd_test(x, y, km.ARD(ELL, "rbf"), n_permutations=50, seed=0)
    assert 0 < res.p_value <= 1
    torch.testing.assert_close(res.statistic, _mmd2_u(x, y, ELL, BASES["rbf"][1]).item(), rtol=1e-10, atol=1e-13)
    s = 1.3  # equal lengthscales: the input-space rbf path and the feature-map path agree
    torch.testing.assert_close(km.smmd2(x, y, km.ARD([s] * 3)), km.smmd2(x, y, "rbf", sigma=s), rtol=1e-10, atol=0)
    torch.testing.assert_close(km.gcmmd2(x, y, km.ARD([s] * 3)), km.gcmmd2(x, y, "rbf", sigma=s), rtol=1e-8, atol=0)


def test_selection_keeps_the_ard_kernel():
    """select_kernel / selected_mmd_test return the chosen ARD as an ARD (not a bare DeepKernel), values unchanged."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 3, generator=g, dtype=torch.float64)
    y = torch.randn(60, 3, generator=g, dtype=torch.float64)
    y[:, 0] += 1.0
    cands = [km.ARD([1.0, 2.0, 3.0]), km.ARD([0.7, 5.0, 5.0], base="rq", alpha=2.0)]
    sel = km.select_kernel(x, y, cands)
    assert all(isinstance(k, km.ARD) and repr(k).startswith("ARD(") for k in sel.kernels)
    for i, k in enumerate(cands):
        assert float(sel.mmd2[i]) == pytest.approx(float(km.mmd2_unbiased(x, y, k)), rel=1e-12)
    res = km.selected_mmd_test(x, y, cands, n_permutations=50, seed=0)
    assert isinstance(res.selection.kernel, km.ARD)
