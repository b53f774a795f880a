"""MMDAgg and MMDAggInc (kernelmmd/two_sample/aggregated.py): against an independent dense numpy float64 transcription
of the authors' algorithm (same resamples, same decision), on every backend, level and power by Monte Carlo, the
cannot-decide rule and the argument checks."""

import math

import numpy as np
import pytest
import torch

import kernelmmd as km
from kernelmmd.two_sample import aggregated as agg
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

F64 = torch.float64


# ------------------------------------------------------------------------------- numpy reference (the authors')
def ref_kernel(dist, family, lam):
    """mmdagg's kernels: laplace exp(−d₁/λ), gaussian exp(−d₂²/λ²)."""
    return np.exp(-dist / lam) if family == "laplace" else np.exp(-((dist / lam) ** 2))


def ref_bandwidths(x, y, p, count):
    d = lp_distances(x[:500], y[:500], p).reshape(-1)
    if d.min() < 0.1:
        lo = max(np.sort(d)[int(np.floor(len(d) * 0.05))], 0.1)
    else:
        lo = d.min()
    lo, hi = lo / 2, max(d.max(), 0.3) * 2
    return np.array([(hi / lo) ** (i / (count - 1)) * lo for i in range(count)])


def ref_weights(count, kind):
    i = np.arange(1, count + 1)
    if kind == "uniform":
        return np.full(count, 1.0 / count)
    if kind == "decreasing":
        return 1.0 / (i * np.sum(1.0 / i))
    if kind == "increasing":
        return 1.0 / ((count + 1 - i) * np.sum(1.0 / i))
    c = np.abs((count + 1) / 2 - i) + (1.0 if count % 2 else 0.5)
    return 1.0 / (c * np.sum(1.0 / c))


def ref_aggregate(M, B1, weights, alpha, steps=50):
    """M: (Λ, B1 + B2 + 1) with the observed statistic in column B1 (as mmdagg/np.py lays them out)."""
    obs, m1, m2 = M[:, B1], np.sort(M[:, : B1 + 1]), M[:, B1 + 1 :]

    def q(u):
        return np.array([m1[i, int(np.ceil((B1 + 1) * (1 - u * weights[i]))) - 1] for i in range(len(weights))])

    lo, hi = 0.0, np.min(1 / weights)
    for _ in range(steps):
        u = (hi + lo) / 2
        if np.sum(np.max(m2 - q(u)[:, None], 0) > 0) / m2.shape[1] <= alpha:
            lo = u
        else:
            hi = u
    quant = q(lo)
    p = np.mean(m1 - obs[:, None] >= 0, 1)
    return dict(u=lo, quantiles=quant, p_values=p, rejects=obs > quant, statistics=obs)


def ref_collection(x, y, families, count, kind):
    lams = [ref_bandwidths(x, y, 1 if f == "laplace" else 2, count) for f in families]
    w = np.concatenate([ref_weights(count, kind) / len(families)] * len(families))
    return lams, w


def ref_mmdagg(x, y, families, count, kind, alpha, B1, columns, wild):
    """Dense transcription of mmdagg/np.py; ``columns`` (N, B1 + B2): the resamples (signs ε (n, ·) or 0/1 x-masks)."""
    n, m = len(x), len(y)
    z = np.concatenate([x, y])
    lams, w = ref_collection(x, y, families, count, kind)
    rows = []
    for f, lam in zip(families, lams):
        dist = lp_distances(z, z, 1 if f == "laplace" else 2)
        for b in lam:
            K = ref_kernel(dist, f, b)
            if wild:  # zero the diagonals of all four blocks; R = [ε; −ε], observed ε = 1 in column B1
                for blk in (K[:n, :n], K[n:, n:], K[:n, n:], K[n:, :n]):
                    np.fill_diagonal(blk, 0.0)
                eps = np.insert(columns, B1, 1.0, axis=1)
                R = np.concatenate([eps, -eps])
                rows.append(np.sum(R * (K @ R), 0) / (n * (n - 1)))
            else:
                np.fill_diagonal(K, 0.0)
                e = np.insert(columns, B1, np.r_[np.ones(n), np.zeros(m)], axis=1)
                v10, v01 = e, -(1.0 - e)
                v11 = v10 + v01
                rows.append(np.sum(v10 * (K @ v10), 0) * (m - n + 1) / (n * m * (n - 1))
                            + np.sum(v01 * (K @ v01), 0) * (n - m + 1) / (n * m * (m - 1))
                            + np.sum(v11 * (K @ v11), 0) / (n * m))
    out = ref_aggregate(np.array(rows), B1, w, alpha)
    out["bandwidths"] = np.concatenate(lams)
    return out


def ref_mmdagginc(x, y, count, kind, alpha, B1, eps, R):
    """agginc/np.py for the Gaussian exp(−d²/λ²): pairs (i, i + r), r = 1..R; wild bootstrap."""
    N = min(len(x), len(y))
    (lam,), w = ref_collection(x, y, ["gaussian"], count, kind)  # on the first ≤ 500 points of X and Y, then
    x, y = x[:N], y[:N]  # N pairs (x_i, y_i)
    ii = np.concatenate([np.arange(N - r) for r in range(1, R + 1)])
    jj = np.concatenate([np.arange(r, N) for r in range(1, R + 1)])
    sq = lambda a, b: ((a - b) ** 2).sum(1)  # noqa: E731
    h = np.stack([np.exp(-sq(x[ii], x[jj]) / b**2) - np.exp(-sq(x[ii], y[jj]) / b**2)
                  - np.exp(-sq(y[ii], x[jj]) / b**2) + np.exp(-sq(y[ii], y[jj]) / b**2) for b in lam])
    e = np.insert(eps, B1, 1.0, axis=1)
    M = h @ (e[ii] * e[jj]) / len(ii)
    out = ref_aggregate(M, B1, w, alpha)
    out["bandwidths"], out["pairs"] = lam, len(ii)
    return out


def _check_against(res, ref):
    np.testing.assert_allclose(res.bandwidths, ref["bandwidths"], rtol=1e-12)
    np.testing.assert_allclose(res.statistics, ref["statistics"], rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(res.quantiles, ref["quantiles"], rtol=1e-9, atol=1e-14)
    assert res.u == pytest.approx(ref["u"], rel=1e-12)
    np.testing.assert_array_equal(res.p_values, ref["p_values"])
    np.testing.assert_array_equal(res.rejects, ref["rejects"])
    assert res.reject == bool(ref["rejects"].any())


# ------------------------------------------------------------------------------------------ reference agreement
@pytest.mark.parametrize("kind", ["uniform", "increasing", "decreasing", "centred"])
@pytest.mark.parametrize("count", [2, 5, 10])
def test_weights_match_reference(kind, count):
    w = agg.agg_weights(count, kind)
    np.testing.assert_allclose(w, ref_weights(count, kind), rtol=1e-14)
    assert sum(w) == pytest.approx(1.0, rel=1e-14)


@pytest.mark.parametrize("shift", [0.0, 1.0])
@pytest.mark.parametrize("weights", ["uniform", "centred"])
def test_mmdagg_wild_bootstrap_matches_reference(shift, weights):
    x, y = gaussian_pair(40, 40, d=3, shift=shift)
    B1, B2 = 399, 120  # small B1 leave no room for the correction over 12 kernels (u = 0: the test cannot reject)
    res = km.mmdagg_test(x, y, n_permutations=B1, n_correction=B2, weights=weights, n_bandwidths=6, seed=3,
                         backend="torch")
    eps = agg._signs(40, B1 + B2, torch.Generator().manual_seed(3)).numpy()  # the same draws (one batch)
    ref = ref_mmdagg(x, y, ["laplace", "gaussian"], 6, weights, 0.05, B1, eps, wild=True)
    _check_against(res, ref)
    assert res.method == "wild bootstrap" and res.reject == (shift > 0)
    assert res.null_samples.shape == (12, B1 + B2) and isinstance(res.statistics, np.ndarray)
    assert res.reject_at(0.05) == res.reject


@pytest.mark.parametrize("n, m", [(30, 45), (41, 17)])
def test_mmdagg_permutations_match_reference(n, m):
    x, y = gaussian_pair(n, m, d=2, shift=0.5, seed=n)
    B1, B2 = 80, 90
    res = km.mmdagg_test(x, y, n_permutations=B1, n_correction=B2, n_bandwidths=4, seed=5, backend="torch")
    e = indicators(n + m, n, B1 + B2, torch.Generator().manual_seed(5)).numpy()
    ref = ref_mmdagg(x, y, ["laplace", "gaussian"], 4, "uniform", 0.05, B1, e, wild=False)
    _check_against(res, ref)
    assert res.method == "permutation"
    # the permutation statistic is MMD²_u with our kernel σ = λ/√2 for the gaussian family
    k = res.kernels[5]
    assert res.families[5] == "gaussian" and k.sigma == pytest.approx(res.bandwidths[5] / math.sqrt(2), rel=1e-14)
    assert res.statistics[5] == pytest.approx(float(km.mmd2_unbiased(x, y, k)), rel=1e-10)


def test_mmdagg_forced_permutations_with_equal_sizes_and_other_alpha():
    x, y = gaussian_pair(25, 25, shift=0.6, seed=9)
    res = km.mmdagg_test(x, y, alpha=0.1, kernels="gaussian", resampling="permutation", n_permutations=60,
                         n_correction=70, n_bandwidths=3, seed=1, backend="torch")
    e = indicators(50, 25, 130, torch.Generator().manual_seed(1)).numpy()
    _check_against(res, ref_mmdagg(x, y, ["gaussian"], 3, "uniform", 0.1, 60, e, wild=False))
    assert res.families == ("gaussian",) * 3 and np.allclose(res.weights, 1 / 3)


@pytest.mark.parametrize("R, n, m", [(1, 30, 30), (7, 40, 33), (200, 25, 25)])
def test_mmdagginc_matches_reference(R, n, m):
    x, y = gaussian_pair(n, m, d=2, shift=0.5, seed=R)
    B1, B2 = 70, 80
    res = km.mmdagginc_test(x, y, R=R, n_permutations=B1, n_correction=B2, n_bandwidths=5, seed=2)
    N = min(n, m)
    eps = agg._signs(N, B1 + B2, torch.Generator().manual_seed(2)).numpy()
    ref = ref_mmdagginc(x, y, 5, "uniform", 0.05, B1, eps, min(R, N - 1))
    _check_against(res, ref)
    assert res.pairs == ref["pairs"] and res.n == res.m == N


def test_mmdagginc_complete_equals_wild_mmdagg_statistic():
    """R = N − 1 is the complete U-statistic: the mean of h over i < j, i.e. MMDAgg's wild-bootstrap statistic."""
    x, y = gaussian_pair(20, 20, shift=0.3, seed=4)
    inc = km.mmdagginc_test(x, y, R=19, kernels=("laplace", "gaussian"), n_permutations=20, n_correction=20, seed=0)
    full = km.mmdagg_test(x, y, n_permutations=20, n_correction=20, seed=0, backend="torch")
    np.testing.assert_allclose(inc.statistics, full.statistics, rtol=1e-10)
    assert inc.pairs == 20 * 19 // 2


def test_batches_and_devices_do_not_change_the_result():
    x, y = gaussian_pair(30, 30, shift=0.3, seed=2)
    one = km.mmdagg_test(x, y, n_permutations=50, n_correction=50, seed=7, backend="torch")
    calls = []
    many = km.mmdagg_test(x, y, n_permutations=50, n_correction=50, seed=7, backend="torch", batch_size=13,
                          callback=calls.append)
    np.testing.assert_allclose(many.null_samples, one.null_samples, rtol=1e-9, atol=1e-15)  # matmul blocking only
    assert many.u == one.u and many.reject == one.reject and sum(calls) == 100 and max(calls) == 13


# ------------------------------------------------------------------------------------------------------ backends
@pytest.mark.parametrize("backend", ["tiled", pytest.param("keops", marks=pytest.mark.slow), "triton"])
@pytest.mark.parametrize("resampling", ["wild bootstrap", "permutation"])
def test_mmdagg_every_backend_same_statistics(backend, resampling):
    x, y = (torch.from_numpy(a).float() for a in gaussian_pair(24, 24, d=3, shift=0.3, seed=11))
    want, got = resamples_match_torch(km.mmdagg_test, backend, x, y, 1e-6, n_permutations=20, n_correction=20,
                                      n_bandwidths=3, seed=4, resampling=resampling)
    assert got.reject == want.reject


# ----------------------------------------------------------------------------------- level and power (Monte Carlo)
@pytest.mark.parametrize("n, m", [(20, 20), (20, 30)])
@pytest.mark.usefixtures("one_thread")
def test_mmdagg_level(n, m):
    """Rejection rate under H0 ≤ α + 3 binomial standard errors (200 repetitions, B1 = B2 = 100)."""
    reps = 200
    rate = rejection_rate(
        lambda x, y, r: km.mmdagg_test(x, y, n_permutations=100, n_correction=100, seed=r, backend="torch").reject,
        null_pair, n, m, reps, seed=n + m)
    assert rate <= level_bound(0.05, reps)


@pytest.mark.parametrize("n, m", [(30, 30), (30, 45)])
@pytest.mark.usefixtures("one_thread")
def test_mmdagginc_level(n, m):
    """MMDAggInc uses the first min(n, m) points of each sample as pairs; 200 repetitions, B1 = B2 = 100, R = 5."""
    reps = 200
    rate = rejection_rate(
        lambda x, y, r: km.mmdagginc_test(x, y, R=5, n_permutations=100, n_correction=100, seed=r).reject,
        null_pair, n, m, reps, seed=n + m)
    assert rate <= level_bound(0.05, reps)


@pytest.mark.parametrize("case", sorted(POWER_CASES))
@pytest.mark.usefixtures("one_thread")
def test_mmdagg_more_powerful_than_median_heuristic(case):
    """Blobs and perturbed uniform (tests/_alternatives.py), n = m = 100, 30 repetitions, B1 = B2 = 150."""
    rate, median = power_and_median_power(
        lambda x, y, r: km.mmdagg_test(x, y, n_permutations=150, n_correction=150, seed=r).reject, case)
    assert rate > median + 0.2, (rate, median)


# ------------------------------------------------------------------------------------------ cannot decide, errors
def test_nonfinite_statistics_cannot_decide(monkeypatch):
    x, y = gaussian_pair(12, 12, shift=5.0)
    poison_null(monkeypatch, agg, "_wild_statistics", (0, 3), math.nan)
    with pytest.warns(km.NumericalWarning, match="mmdagg_test: cannot decide: 1 of the .* resampled"):
        res = km.mmdagg_test(x, y, n_permutations=20, n_correction=20, seed=0)
    assert res.reject is False and math.isnan(res.u) and np.isnan(res.p_values).all()
    assert not res.reject_at(0.5) and "cannot decide" in repr(res)


@pytest.mark.parametrize("test", [km.mmdagg_test, km.mmdagginc_test])
def test_overflowing_kernels_cannot_decide(test):
    """Data at 1e200: the bandwidth grids stay finite (distances of scaled points), the kernel values do not."""
    x, y = (v * 1e200 for v in gaussian_pair(10, 10))
    with pytest.warns(km.NumericalWarning, match=r"cannot decide: the statistic for RBF\(sigma=.*\) is nan"):
        res = test(x, y, kernels="gaussian", n_permutations=20, n_correction=20, seed=0)
    assert res.reject is False and math.isnan(res.u) and np.isnan(res.p_values).all()
    assert np.isfinite(res.bandwidths).all()


def test_result_repr_and_rejected_by():
    x, y = gaussian_pair(40, 40, shift=1.0, seed=3)
    res = km.mmdagg_test(torch.from_numpy(x), torch.from_numpy(y), n_permutations=300, n_correction=60, seed=0)
    assert res.reject and res.rejected_by and all(f in ("laplace", "gaussian") for f, _ in res.rejected_by)
    text = repr(res)
    assert text.startswith("MMDAggResult(reject H0 at alpha=0.05; wild bootstrap, n=40, m=40")
    assert f"rejected by: {len(res.rejected_by)} of 20" in text
    assert isinstance(res.statistics, torch.Tensor) and res.statistics.dtype == F64
    assert repr(res.kernels[0]).startswith("L1Laplacian(") and repr(res.kernels[10]).startswith("RBF(")


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(alpha=1.5), ValueError, r"alpha must be a number in \(0, 1\), got 1.5"),
    (dict(kernels=("gaussian", "imq")), ValueError, r"kernels must contain names from \['laplace', 'gaussian'\]"),
    (dict(kernels=()), ValueError, "kernels must be a non-empty sequence"),
    (dict(kernels=("gaussian", "gaussian")), ValueError, "kernels must not repeat a name"),
    (dict(n_bandwidths=1), ValueError, "n_bandwidths"),
    (dict(weights="flat"), ValueError, "weights"),
    (dict(n_permutations=0), ValueError, "n_permutations"),
    (dict(n_correction=2.5), TypeError, "n_correction"),
    (dict(resampling="bootstrap"), ValueError, "resampling"),
    (dict(seed=-1), ValueError, "seed must be an int >= 0"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(callback=3), TypeError, "callback must be callable"),
    (dict(backend="gpu"), ValueError, "backend must be one of"),
])
def test_mmdagg_bad_arguments(kwargs, exc, match):
    x, y = gaussian_pair(10, 10)
    with pytest.raises(exc, match=match):
        km.mmdagg_test(x, y, n_permutations=kwargs.pop("n_permutations", 5), n_correction=5, **kwargs)


def test_mmdagg_bad_samples_and_wild_with_unequal_sizes():
    x, y = gaussian_pair(10, 12)
    with pytest.raises(ValueError, match=r"resampling='wild bootstrap' pairs x_i with y_i and needs n = m, got n = 10"):
        km.mmdagg_test(x, y, resampling="wild bootstrap")
    with pytest.raises(ValueError, match="y"):
        km.mmdagg_test(x, y[:1])
    with pytest.raises(ValueError, match="x"):
        km.mmdagg_test(np.full((5, 2), np.nan), y)
    with pytest.raises(ValueError, match="R"):
        km.mmdagginc_test(x, y, R=0)
    with pytest.raises(ValueError, match="x and y: the L2 distances between the samples overflow float64"):
        km.mmdagg_test(np.full((10, 2), 1.5e308), np.full((10, 2), -1.5e308), kernels="gaussian")
    with pytest.raises(ValueError, match=r"alpha must be a number in \(0, 1\)"):
        km.mmdagg_test(x, x, n_permutations=5, n_correction=5, seed=0).reject_at(0.0)
