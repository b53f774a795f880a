"""Synthetic two-sample problems and Monte Carlo helpers for the tests of MMDAgg / MMD-FUSE (tests/test_aggregated.py,
tests/test_fuse.py) and the study script examples/aggregated_power.py.

* :func:`blobs` — Blobs (Gretton et al. 2012; Liu et al. ICML 2020, §5): a 3 × 3 grid of Gaussians 10 apart; P has
  unit covariances, Q the same centres with covariance [[1, ρ], [ρ, 1]], ρ = (ε − 1)/(ε + 1) (eigenvalue ratio ε = 6).
  The difference lives at the scale of one blob, far below the median distance: the median heuristic misses it.
* :func:`hdgm` — HDGM (Liu et al. 2020): an equal mixture of N(0, I_d) and N(0.5·1, I_d) against the same mixture
  whose first two coordinates are correlated +0.5 in the first component and −0.5 in the second.
* :func:`perturbed_uniform` — MMDAgg's perturbed uniform densities (Schrab et al., JMLR 2023, §5.5) in d = 1: U[0, 1]
  against f(x) = 1 + c·P⁻¹ Σ_{ν=1..P} θ_ν G(P x − ν), θ_ν = ±1, G the smooth bump of that section (c = 2.7);
  rejection sampling. The perturbation's scale 1/P is far below the median distance.
* :func:`null_pair` — two samples of one distribution (for the level).

Each takes sizes and a numpy ``Generator`` and returns float64 arrays (n, d), (m, d). ``POWER_CASES`` are the settings
of the power tests (n = m = 100): Blobs with ε = 30 (Liu et al. use 6, which needs n ≈ 300 for the same effect) and the
perturbed uniform with P = 4 bumps of amplitude c = 10 (the largest keeping f ≥ 0 is e·P ≈ 10.9).
"""

import functools
import math

import numpy as np
import pytest
import torch


def blobs(n, m, rng, eps=6.0, grid=3, spacing=10.0):
    rho = (eps - 1.0) / (eps + 1.0)
    chol = np.linalg.cholesky(np.array([[1.0, rho], [rho, 1.0]]))

    def draw(k, cov_chol):
        centres = spacing * rng.integers(0, grid, size=(k, 2))
        return centres + rng.standard_normal((k, 2)) @ cov_chol.T

    return draw(n, np.eye(2)), draw(m, chol)


def hdgm(n, m, rng, d=10):
    def draw(k, corr):
        comp = rng.integers(0, 2, size=k)
        z = rng.standard_normal((k, d))
        if corr:  # the first two coordinates correlated ±0.5: z₂ ← ρ z₁ + √(1 − ρ²) z₂, ρ = ±0.5 by component
            rho = np.where(comp == 0, 0.5, -0.5)
            z[:, 1] = rho * z[:, 0] + np.sqrt(1.0 - rho**2) * z[:, 1]
        return z + 0.5 * comp[:, None]

    return draw(n, False), draw(m, True)


def null_pair(n, m, rng, d=2):
    return rng.standard_normal((n, d)), rng.standard_normal((m, d))


def _bump(t):
    """G(t) of Schrab et al. 2023: exp(−1/(1 − (4t + 3)²)) on (−1, −½), −exp(−1/(1 − (4t + 1)²)) on (−½, 0)."""
    out = np.zeros_like(t)
    a = (t > -1) & (t < -0.5)
    b = (t >= -0.5) & (t < 0)
    out[a] = np.exp(-1.0 / (1.0 - (4 * t[a] + 3) ** 2))
    out[b] = -np.exp(-1.0 / (1.0 - (4 * t[b] + 1) ** 2))
    return out


def perturbed_uniform(n, m, rng, perturbations=3, c=2.7):
    theta = rng.choice([-1.0, 1.0], size=perturbations)
    amp = c / perturbations

    def density(u):
        return 1.0 + amp * sum(th * _bump(perturbations * u - v) for v, th in zip(range(1, perturbations + 1), theta))

    top = 1.0 + amp * np.exp(-1.0)
    out = np.empty(0)
    while out.size < m:
        u = rng.random(4 * m)
        out = np.concatenate([out, u[rng.random(4 * m) * top < density(u)]])
    return rng.random((n, 1)), out[:m, None]


POWER_CASES = {
    "blobs": functools.partial(blobs, eps=30.0),
    "perturbed_uniform": functools.partial(perturbed_uniform, perturbations=4, c=10.0),
}


def gaussian_pair(n, m, d=2, shift=0.0, seed=0):
    """x ~ N(0, I_d) (n points) and y ~ N(shift, I_d) (m points), numpy float64, from ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((m, d)) + shift


def rejection_rate(test, gen, n, m, reps, seed):
    """Fraction of ``reps`` problems ``gen(n, m, rng)`` on which ``test(x, y, repetition)`` is True."""
    rng = np.random.default_rng(seed)
    return float(np.mean([test(*gen(n, m, rng), r) for r in range(reps)]))


def level_bound(alpha, reps):
    """α plus three binomial standard errors of a rejection rate over ``reps`` repetitions."""
    return alpha + 3.0 * math.sqrt(alpha * (1 - alpha) / reps)


def lp_distances(a, b, p):
    """‖a_i − b_j‖_p for p = 1, 2 (numpy float64, dense): the references' distances."""
    diff = a[:, None, :] - b[None, :, :]
    return np.abs(diff).sum(-1) if p == 1 else np.sqrt((diff**2).sum(-1))


@pytest.fixture
def one_thread():
    """Thousands of tiny tests: one intra-op thread is ~10-40× faster than two on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def power_and_median_power(test, case, n=100, reps=30, permutations=150, seed=7):
    """Rejection rates of ``test(x, y, repetition)`` and of the median-heuristic ``mmd_test`` (``permutations``
    permutations, level 0.05) on the same ``reps`` draws of ``POWER_CASES[case]`` at n = m."""
    import kernelmmd as km

    gen = POWER_CASES[case]
    median = lambda x, y, r: km.mmd_test(x, y, sigma="median", n_permutations=permutations, seed=r).reject(0.05)  # noqa: E731
    return (rejection_rate(test, gen, n, n, reps, seed), rejection_rate(median, gen, n, n, reps, seed))


def torch_and_backend(test, backend, x, y, **kw):
    """``(test on backend="torch", test on backend)`` with the same arguments; skips when ``backend`` is missing."""
    from kernelmmd import ops

    if not ops.available(backend):
        pytest.skip(f"backend {backend!r} is not installed")
    return test(x, y, backend="torch", **kw), test(x, y, backend=backend, **kw)


def resamples_match_torch(test, backend, x, y, atol, **kw):
    """:func:`torch_and_backend`, then the backend's ``statistics`` and ``null_samples`` equal torch's (rtol 1e-4,
    ``atol``). Returns ``(torch result, backend result)``."""
    want, got = torch_and_backend(test, backend, x, y, **kw)
    torch.testing.assert_close(got.statistics, want.statistics, rtol=1e-4, atol=atol)
    torch.testing.assert_close(got.null_samples, want.null_samples, rtol=1e-4, atol=atol)
    return want, got


def poison_null(monkeypatch, module, name, index, value):
    """Patch ``module.name`` (a function returning ``(statistics, scale, null)``) so that ``null[index] = value``:
    a resampled statistic that is not finite, for the cannot-decide tests."""
    real = getattr(module, name)

    def poisoned(*args):
        stat, scale, null = real(*args)
        null[index] = value
        return stat, scale, null

    monkeypatch.setattr(module, name, poisoned)
