"""KID (subsets: against torchmetrics and a numpy reference; exact: all pairs) and FID (numpy/scipy reference and
closed forms for Gaussians)."""

import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

import kernelmmd as km

from . import reference_np as ref


def _feats(n, m, d, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(n, d, generator=g, dtype=torch.float64)
    fake = torch.rand(m, d, generator=g, dtype=torch.float64) * 1.1 + 0.05
    return real.to(dtype), fake.to(dtype)


def _torchmetrics_kid(real, fake, subsets, subset_size, seed, **kw):
    kid_mod = pytest.importorskip("torchmetrics.image.kid")  # test-only dependency (the `dev` extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "will save all extracted features in buffer"
        metric = kid_mod.KernelInceptionDistance(
            feature=torch.nn.Identity(), subsets=subsets, subset_size=subset_size, **kw
        )
    metric.update(real, real=True)
    metric.update(fake, real=False)
    torch.manual_seed(seed)
    mean, std = metric.compute()
    return float(mean), float(std)


@pytest.mark.parametrize("n,m,d,subsets,size", [(120, 90, 16, 6, 50), (64, 64, 5, 3, 64), (40, 70, 33, 4, 2)])
def test_kid_subsets_match_torchmetrics(n, m, d, subsets, size):
    real, fake = _feats(n, m, d)
    want_mean, want_std = _torchmetrics_kid(real, fake, subsets, size, seed=11)
    mean, std = km.kid(real, fake, subsets=subsets, subset_size=size, seed=11)
    assert mean == pytest.approx(want_mean, rel=1e-6, abs=1e-12)
    assert std == pytest.approx(want_std, rel=1e-6, abs=1e-12)


def test_kid_kernel_parameters_match_torchmetrics():
    real, fake = _feats(80, 60, 7, seed=1)
    want = _torchmetrics_kid(real, fake, 5, 40, seed=2, degree=2, gamma=0.3, coef=0.5)
    got = km.kid(real, fake, subsets=5, subset_size=40, degree=2, gamma=0.3, coef0=0.5, seed=2)
    assert tuple(got) == pytest.approx(want, rel=1e-6)


def test_kid_subset_values_vs_numpy_reference():
    real, fake = _feats(50, 45, 6, seed=2)
    res = km.kid(real.numpy(), fake.numpy(), subsets=4, subset_size=20, seed=5)
    g = torch.Generator().manual_seed(5)  # the documented draw: randperm(n)[:size] for real, then for fake
    want = []
    for _ in range(4):
        ir = torch.randperm(50, generator=g)[:20].numpy()
        jf = torch.randperm(45, generator=g)[:20].numpy()
        want.append(ref.mmd2_unbiased(real.numpy()[ir], fake.numpy()[jf], "poly", degree=3, coef0=1.0))
    np.testing.assert_allclose(res.values.numpy(), want, rtol=1e-10)
    assert res.mean == pytest.approx(np.mean(want), rel=1e-10)
    assert res.std == pytest.approx(np.std(want), rel=1e-10)  # population std (ddof = 0), as torchmetrics
    assert res.variance is None and res.kernel.gamma == pytest.approx(1 / 6)


def test_kid_float32_features_accumulate_in_float64():
    real, fake = _feats(200, 150, 64, seed=3)
    res32 = km.kid(real.float(), fake.float(), subsets=3, subset_size=100, seed=0)
    res64 = km.kid(real, fake, subsets=3, subset_size=100, seed=0)
    np.testing.assert_allclose(res32.values.numpy(), res64.values.numpy(), rtol=2e-4)


_SMALL_BLOCKS = {"_GRAM_ROWS": 7, "_PRODUCT_ENTRIES": 60, "_KERNEL_ROWS": 3}  # many blocks on tiny inputs


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-13), (torch.float32, 2e-6)])
@pytest.mark.parametrize("blocks", ["default", "small"])
@pytest.mark.parametrize("path", ["subsets", "gram"])
@pytest.mark.parametrize(
    "n,m,d,subsets,size",
    [(57, 43, 9, 5, 31), (33, 33, 1, 4, 33), (20, 90, 17, 7, 19), (6, 5, 3, 3, 2), (129, 257, 33, 3, 128)],
)
def test_kid_subset_path_equals_block_stats(monkeypatch, dtype, tol, blocks, path, n, m, d, subsets, size):
    """kid(backend="auto") over subsets — per subset pair (upper-triangle products, syrk on the CPU) or from one pass
    over the whole Gram matrices — gives the per-subset values of the dense block statistics in float64: odd sizes,
    subsets as large as a sample, subsets · size > n (overlapping draws), many row / column blocks per product."""
    if blocks == "small":
        for name, value in _SMALL_BLOCKS.items():
            monkeypatch.setattr(km.scores, name, value)
    monkeypatch.setattr(km.scores, "_gram_pays", lambda *a: path == "gram")
    real, fake = _feats(n, m, d, seed=n + d)
    got = km.kid(real.to(dtype), fake.to(dtype), subsets=subsets, subset_size=size, seed=3)
    want = km.kid(real, fake, subsets=subsets, subset_size=size, seed=3, backend="torch")  # float64 dense
    scale = float(km.Poly(3, 1 / d, 1.0).matrix(real, fake).abs().max())  # kernel values: MMD² is their difference
    assert got.values.dtype == torch.float64 and got.values.shape == (subsets,)
    np.testing.assert_allclose(got.values.numpy(), want.values.numpy(), rtol=0, atol=tol * scale)
    if dtype == torch.float64:  # the same kernel values, summed in another order
        dense = km.kid(real, fake, subsets=subsets, subset_size=size, seed=3, backend="tiled")
        np.testing.assert_allclose(got.values.numpy(), dense.values.numpy(), rtol=0, atol=tol * scale)


@pytest.mark.parametrize("path", ["subsets", "gram"])
def test_kid_subset_path_kernel_parameters(monkeypatch, path):
    monkeypatch.setattr(km.scores, "_gram_pays", lambda *a: path == "gram")
    real, fake = _feats(40, 50, 6, seed=8)
    kw = dict(subsets=4, subset_size=25, degree=2, gamma=0.3, coef0=-0.5, seed=1)
    got, want = km.kid(real, fake, **kw), km.kid(real, fake, backend="torch", **kw)
    np.testing.assert_allclose(got.values.numpy(), want.values.numpy(), rtol=1e-12, atol=1e-14)


def test_kid_gram_pass_rule():
    """The whole-Gram pass when it takes fewer multiply-adds: the papers' 100 subsets of 1000 at d = 2048 from
    5 000 points each, not from 10 000; a few small subsets of a large sample never."""
    assert km.scores._gram_pays(5000, 5000, 2048, 100, 1000)
    assert not km.scores._gram_pays(10000, 10000, 2048, 100, 1000)
    assert not km.scores._gram_pays(50000, 50000, 2048, 100, 1000)
    assert km.scores._gram_pays(2000, 2000, 64, 100, 1000)
    assert not km.scores._gram_pays(2000, 2000, 64, 3, 100)
    assert not km.scores._gram_pays(5000, 5000, 2048, 10000, 1000)  # 800 MiB of indicator columns


def test_kid_exact_all_pairs():
    real, fake = _feats(37, 29, 9, seed=4)
    res = km.kid(real, fake, subsets=None)
    want = ref.mmd2_unbiased(real.numpy(), fake.numpy(), "poly", degree=3, coef0=1.0)
    assert res.mean == pytest.approx(want, rel=1e-10)
    mmd2, var = km.mmd2_variance_unbiased(real, fake, km.Poly(3, 1 / 9, 1.0))
    assert res.variance == pytest.approx(var, rel=1e-10) and res.std == pytest.approx(math.sqrt(var), rel=1e-10)
    assert res.values is None
    mean, std = res
    assert (mean, std) == (res.mean, res.std)


def test_kid_exact_std_is_the_spread_of_the_estimate():
    """Exact KID's std estimates the sampling spread of the all-pairs estimate (Monte Carlo over data sets)."""
    g = torch.Generator().manual_seed(6)
    vals, stds = [], []
    for _ in range(300):
        real = torch.rand(40, 4, generator=g, dtype=torch.float64)
        fake = torch.rand(40, 4, generator=g, dtype=torch.float64) + 0.2
        r = km.kid(real, fake, subsets=None)
        vals.append(r.mean)
        stds.append(r.variance)
    assert np.mean(stds) == pytest.approx(np.var(vals, ddof=1), rel=0.2)


def test_kid_agrees_with_subsets_in_expectation():
    real, fake = _feats(300, 300, 8, seed=7)
    exact = km.kid(real, fake, subsets=None)
    sub = km.kid(real, fake, subsets=50, subset_size=100, seed=0)
    assert abs(sub.mean - exact.mean) < 4 * sub.std / math.sqrt(50) + 4 * exact.std


def test_kid_errors():
    real, fake = _feats(10, 8, 3)
    with pytest.raises(ValueError, match="subsets must be an integer >= 1, got 0"):
        km.kid(real, fake, subsets=0)
    with pytest.raises(TypeError, match="subsets must be an integer >= 1, got float"):
        km.kid(real, fake, subsets=2.0)
    with pytest.raises(ValueError, match=r"subset_size must be <= the number of real \(n=10\) and fake \(m=8\)"):
        km.kid(real, fake, subset_size=9)
    with pytest.raises(ValueError, match="subset_size must be an integer >= 2, got 1"):
        km.kid(real, fake, subset_size=1)
    with pytest.raises(ValueError, match="the exact KID needs at least 4 real and 4 fake points, got n=10, m=3"):
        km.kid(real, fake[:3], subsets=None)
    with pytest.raises(ValueError, match="degree must be an integer >= 0"):
        km.kid(real, fake, subset_size=4, degree=-1)
    with pytest.raises(ValueError, match="gamma must be a finite number > 0"):
        km.kid(real, fake, subset_size=4, gamma=-1.0)
    with pytest.raises(ValueError, match="fake_feats has feature shape"):
        km.kid(real, torch.rand(8, 4, dtype=torch.float64), subset_size=4)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        km.kid(real, fake, subset_size=4, seed=-3)


# ------------------------------------------------------------------------------------------------------------ FID
def _fid_numpy(a, b):
    """The pytorch-fid formula: scipy sqrtm of Σ₁Σ₂ (real part)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("n,m,d", [(300, 200, 5), (500, 500, 32), (50, 80, 3)])
def test_fid_matches_numpy_reference(n, m, d):
    rng = np.random.default_rng(d)
    a = rng.normal(size=(n, d))
    b = rng.normal(size=(m, d)) @ rng.normal(size=(d, d)) * 0.5 + 0.3
    want = _fid_numpy(a, b)
    assert km.fid(a, b) == pytest.approx(want, rel=1e-8)
    assert km.fid(torch.from_numpy(a).float(), torch.from_numpy(b).float()) == pytest.approx(want, rel=1e-5)


def test_frechet_distance_closed_forms():
    # commuting (diagonal) covariances: ‖μ₁ − μ₂‖² + Σ (√a_i − √b_i)²
    a, b = torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64), torch.tensor([9.0, 1.0, 0.25], dtype=torch.float64)
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    want = 1.0 + 4.0 + ((a.sqrt() - b.sqrt()) ** 2).sum()
    assert km.frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(float(want), rel=1e-12)
    # a rotation of the same covariance: only the means count
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    c = q @ torch.diag(a) @ q.T
    assert km.frechet_distance(mu1, c, mu1, c) == pytest.approx(0.0, abs=1e-10)
    # 1-D: (μ₁ − μ₂)² + (σ₁ − σ₂)²
    assert km.frechet_distance(torch.zeros(1), torch.eye(1) * 4, torch.ones(1), torch.eye(1)) == pytest.approx(2.0)
    # singular (rank-deficient) covariances stay finite and exact: N(0, diag(1, 0)) vs N(0, diag(0, 1))
    got = km.frechet_distance(torch.zeros(2), torch.diag(torch.tensor([1.0, 0.0])), torch.zeros(2),
                              torch.diag(torch.tensor([0.0, 1.0])))
    assert got == pytest.approx(2.0, abs=1e-12)


def test_fid_converges_to_gaussian_closed_form():
    rng = np.random.default_rng(0)
    d = 3
    s1, s2 = np.diag([1.0, 2.0, 0.5]), np.diag([0.5, 0.5, 3.0])
    mu = np.array([0.5, 0.0, -0.5])
    a = rng.normal(size=(40000, d)) @ np.sqrt(s1)
    b = rng.normal(size=(40000, d)) @ np.sqrt(s2) + mu
    want = (mu**2).sum() + ((np.sqrt(np.diag(s1)) - np.sqrt(np.diag(s2))) ** 2).sum()
    assert km.fid(a, b) == pytest.approx(want, rel=0.03)
    assert km.fid(a, a) == pytest.approx(0.0, abs=1e-9)


def test_fid_errors():
    a = torch.randn(10, 3)
    with pytest.raises(ValueError, match="real_feats must have at least 2 points"):
        km.fid(a[:1], a)
    with pytest.raises(ValueError, match="fake_feats has feature shape"):
        km.fid(a, torch.randn(10, 4))
    with pytest.raises(TypeError, match="real_feats must be a torch.Tensor or a numpy.ndarray"):
        km.fid([[1.0]], a)
    mu, cov = torch.zeros(3), torch.eye(3)
    with pytest.raises(TypeError, match="mu1 must be a torch.Tensor, got list"):
        km.frechet_distance([0.0], cov, mu, cov)
    with pytest.raises(ValueError, match=r"cov1 must have 2 dimension\(s\), got shape \(3,\)"):
        km.frechet_distance(mu, mu, mu, cov)
    with pytest.raises(ValueError, match=r"cov2 must have shape \(3, 3\) to match mu2, got \(2, 2\)"):
        km.frechet_distance(mu, cov, mu, torch.eye(2))
    with pytest.raises(ValueError, match="mu1 contains NaN or Inf"):
        km.frechet_distance(torch.tensor([0.0, float("nan"), 0.0]), cov, mu, cov)
    with pytest.raises(ValueError, match="mu1 and mu2 must have the same shape"):
        km.frechet_distance(mu, cov, torch.zeros(2), torch.eye(2))
