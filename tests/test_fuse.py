"""MMD-FUSE (kernelmmd/two_sample/fuse.py): against an independent dense numpy float64 transcription of the authors'
``mmdfuse.py`` (same permutations: statistic, per-kernel M̂_λ, null, p-value), on every backend, level and power by Monte
Carlo, the cannot-decide rule and the argument checks."""

import math

import numpy as np
import pytest
import torch

import kernelmmd as km
from kernelmmd.two_sample import fuse
from kernelmmd.two_sample.permutation import indicators

from ._alternatives import (
    POWER_CASES,
    gaussian_pair,
    level_bound,
    lp_distances,
    null_pair,
    one_thread,  # noqa: F401  (fixture)
    poison_null,
    power_and_median_power,
    rejection_rate,
    resamples_match_torch,
)


def ref_bandwidths(z, p, count):
    d = lp_distances(z, z, p)[np.triu_indices(len(z))]
    d = d + (d == 0) * np.median(d)
    dd = np.sort(d)
    return np.linspace(dd[int(np.floor(len(dd) * 0.05))] / 2, dd[int(np.floor(len(dd) * 0.95))] * 2, count)


def ref_kernel(dist, family, lam):
    """mmdfuse's kernels: gaussian exp(−d²/(2λ²)), laplace exp(−√2·d₁/λ)."""
    return np.exp(-((dist / lam) ** 2) / 2) if family == "gaussian" else np.exp(-dist * np.sqrt(2) / lam)


def ref_mmdfuse(x, y, families, count, e, t=1.0, grids=None):
    """mmdfuse.py densely; ``e`` (N, B): 0/1 masks of the x-sample per permutation, the observed split appended last;
    ``grids``: the bandwidths per family (default: the reference's grid on the pooled sample)."""
    n, m = len(x), len(y)
    z = np.concatenate([x, y])
    e = np.concatenate([e, np.r_[np.ones(n), np.zeros(m)][:, None]], 1)
    v10 = e if n >= m else 1.0 - e  # the larger sample plays the reference's X
    v01 = -(1.0 - v10)
    v11 = v10 + v01
    big, small = max(n, m), min(n, m)
    rows, lams = [], []
    for i, f in enumerate(families):
        dist = lp_distances(z, z, 1 if f == "laplace" else 2)
        lam = ref_bandwidths(z, 1 if f == "laplace" else 2, count) if grids is None else grids[i]
        lams.append(lam)
        for b in lam:
            K = ref_kernel(dist, f, b)
            np.fill_diagonal(K, 0.0)
            std = np.sqrt(np.sum(K**2))
            rows.append((np.sum(v10 * (K @ v10), 0) * (small - big + 1) * (small - 1) / (big * (big - 1))
                         + np.sum(v01 * (K @ v01), 0) * (big - small + 1) / big
                         + np.sum(v11 * (K @ v11), 0) * (small - 1) / big) / std * np.sqrt(small * (small - 1)))
    M = t * np.array(rows)
    top = M.max(0)
    stats = top + np.log(np.mean(np.exp(M - top), 0))  # logsumexp with b = 1/|Λ|
    return dict(statistic=stats[-1], null=stats[:-1], statistics=np.array(rows)[:, -1],
                p_value=np.mean(stats >= stats[-1]), bandwidths=np.concatenate(lams))


@pytest.mark.parametrize("n, m, shift", [(30, 30, 0.0), (30, 30, 0.6), (25, 40, 0.4), (41, 19, 0.4)])
def test_mmdfuse_matches_reference(n, m, shift):
    x, y = gaussian_pair(n, m, d=3, shift=shift, seed=n + m)
    B = 150
    res = km.mmdfuse_test(x, y, n_permutations=B, n_bandwidths=5, seed=8, backend="torch")
    e = indicators(n + m, n, B, torch.Generator().manual_seed(8)).numpy()  # the same splits (one batch)
    ref = ref_mmdfuse(x, y, ["laplace", "gaussian"], 5, e)
    np.testing.assert_allclose(res.bandwidths, ref["bandwidths"], rtol=1e-12)
    np.testing.assert_allclose(res.statistics, ref["statistics"], rtol=1e-9)
    assert res.statistic == pytest.approx(ref["statistic"], rel=1e-10)
    np.testing.assert_allclose(res.null_samples, ref["null"], rtol=1e-9, atol=1e-12)
    assert res.p_value == ref["p_value"] and res.reject == (ref["p_value"] <= 0.05)
    assert res.reject_at(0.5) == (ref["p_value"] <= 0.5)
    assert res.families == ("laplace",) * 5 + ("gaussian",) * 5 and res.n_permutations == B


def test_mmdfuse_kernels_and_lambda_multiplier():
    """Our kernels: RBF(σ = λ), L1Laplacian(σ = λ/√2); t scales every M̂_λ inside the soft maximum."""
    x, y = gaussian_pair(20, 26, shift=0.5, seed=1)
    res = km.mmdfuse_test(x, y, kernels="gaussian", n_bandwidths=3, n_permutations=40, lambda_multiplier=0.3, seed=2)
    e = indicators(46, 20, 40, torch.Generator().manual_seed(2)).numpy()
    ref = ref_mmdfuse(x, y, ["gaussian"], 3, e, t=0.3)
    assert res.statistic == pytest.approx(ref["statistic"], rel=1e-10) and res.p_value == ref["p_value"]
    assert [k.sigma for k in res.kernels] == pytest.approx(list(res.bandwidths), rel=1e-14)
    lap = km.mmdfuse_test(x, y, kernels=("laplace",), n_bandwidths=2, n_permutations=5, seed=0)
    assert [k.sigma for k in lap.kernels] == pytest.approx(list(lap.bandwidths / math.sqrt(2)), rel=1e-14)
    assert isinstance(res.statistics, np.ndarray) and res.lambda_multiplier == 0.3


def test_mmdfuse_p_value_counts_the_observed_statistic():
    x, y = gaussian_pair(30, 30, shift=3.0, seed=2)
    res = km.mmdfuse_test(torch.from_numpy(x), torch.from_numpy(y), n_permutations=49, seed=0)
    assert res.p_value == 1 / 50 and res.reject and isinstance(res.null_samples, torch.Tensor)
    text = repr(res)
    assert text.startswith("MMDFuseResult(reject H0 at alpha=0.05; FUSE=") and "p=0.02" in text and "B=49" in text


def test_mmdfuse_subsampled_grid_above_max_points(monkeypatch):
    """Above MAX_POINTS pooled points the grid uses a uniformly random subset drawn from the test's generator."""
    monkeypatch.setattr(fuse, "MAX_POINTS", 30)
    x, y = gaussian_pair(25, 20, shift=0.3, seed=3)
    res = km.mmdfuse_test(x, y, kernels="gaussian", n_bandwidths=4, n_permutations=10, seed=6)
    g = torch.Generator().manual_seed(6)
    sub = np.concatenate([x, y])[torch.randperm(45, generator=g)[:30].numpy()]
    np.testing.assert_allclose(res.bandwidths, ref_bandwidths(sub, 2, 4), rtol=1e-12)
    e = indicators(45, 25, 10, g).numpy()  # the permutations follow the subset draw on the same generator
    ref = ref_mmdfuse(x, y, ["gaussian"], 4, e, grids=[ref_bandwidths(sub, 2, 4)])
    np.testing.assert_allclose(res.null_samples, ref["null"], rtol=1e-9)
    assert res.p_value == ref["p_value"]


@pytest.mark.parametrize("backend", ["tiled", pytest.param("keops", marks=pytest.mark.slow), "triton"])
def test_mmdfuse_every_backend_same_statistics(backend):
    x, y = (torch.from_numpy(a).float() for a in gaussian_pair(22, 27, d=3, shift=0.3, seed=5))
    want, got = resamples_match_torch(km.mmdfuse_test, backend, x, y, 1e-5, n_permutations=15, n_bandwidths=3, seed=1)
    assert got.p_value == want.p_value


@pytest.mark.parametrize("n, m", [(20, 20), (30, 20)])
@pytest.mark.usefixtures("one_thread")
def test_mmdfuse_level(n, m):
    """Rejection rate under H0 ≤ α + 3 binomial standard errors (200 repetitions, B = 100)."""
    reps = 200
    rate = rejection_rate(lambda x, y, r: km.mmdfuse_test(x, y, n_permutations=100, seed=r, backend="torch").reject,
                          null_pair, n, m, reps, seed=10 + n + m)
    assert rate <= level_bound(0.05, reps)


@pytest.mark.parametrize("case", sorted(POWER_CASES))
@pytest.mark.usefixtures("one_thread")
def test_mmdfuse_more_powerful_than_median_heuristic(case):
    """Blobs and perturbed uniform (tests/_alternatives.py), n = m = 100, 30 repetitions, B = 150."""
    rate, median = power_and_median_power(lambda x, y, r: km.mmdfuse_test(x, y, n_permutations=150, seed=r).reject,
                                          case)
    assert rate > median + 0.2, (rate, median)


def test_nonfinite_statistics_cannot_decide(monkeypatch):
    poison_null(monkeypatch, fuse, "split_statistics", (2, 5), math.inf)
    x, y = gaussian_pair(12, 15, shift=4.0)
    with pytest.warns(km.NumericalWarning, match="mmdfuse_test: cannot decide: 1 of the 20 permuted FUSE statistics"):
        res = km.mmdfuse_test(x, y, n_permutations=20, seed=0)
    assert math.isnan(res.p_value) and res.reject is False and not res.reject_at(0.9)
    assert "cannot decide" in repr(res)


def test_overflowing_kernels_cannot_decide():
    x, y = (v * 1e200 for v in gaussian_pair(10, 12))
    with pytest.warns(km.NumericalWarning, match="mmdfuse_test: cannot decide: the statistic FUSE is nan"):
        res = km.mmdfuse_test(x, y, n_permutations=20, seed=0)
    assert math.isnan(res.p_value) and res.reject is False and np.isfinite(res.bandwidths).all()


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(alpha=0.0), ValueError, r"alpha must be a number in \(0, 1\), got 0.0"),
    (dict(kernels=("rbf",)), ValueError, r"kernels must contain names from \['laplace', 'gaussian'\], got 'rbf'"),
    (dict(kernels=42), ValueError, "kernels must be a non-empty sequence"),
    (dict(n_bandwidths=1), ValueError, "n_bandwidths"),
    (dict(n_permutations=0), ValueError, "n_permutations"),
    (dict(lambda_multiplier=0.0), ValueError, "lambda_multiplier"),
    (dict(seed="x"), TypeError, "seed must be an int >= 0"),
    (dict(batch_size=-2), ValueError, "batch_size"),
    (dict(callback="no"), TypeError, "callback must be callable"),
    (dict(backend="cuda"), ValueError, "backend must be one of"),
])
def test_mmdfuse_bad_arguments(kwargs, exc, match):
    x, y = gaussian_pair(10, 11)
    with pytest.raises(exc, match=match):
        km.mmdfuse_test(x, y, **{"n_permutations": 5, **kwargs})


def test_mmdfuse_bad_samples():
    x, y = gaussian_pair(10, 11)
    with pytest.raises(ValueError, match="y"):
        km.mmdfuse_test(x, y[:, :1])
    with pytest.raises(ValueError, match="x"):
        km.mmdfuse_test(x[:1], y)
    with pytest.raises(ValueError, match=r"alpha must be a number in \(0, 1\)"):
        km.mmdfuse_test(x, y, n_permutations=5, seed=0).reject_at(1.0)
