"""Statistical and structural properties: Monte Carlo unbiasedness, variance, closed forms, symmetries."""

import math
import random

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import kernelmmd as km

from . import reference_np as ref


def test_unbiasedness_monte_carlo_against_closed_form():
    # N(0, I) vs N(mu, 1.5^2 I) in R^2, rbf sigma = 1: E[MMD²_u] equals the population MMD² (closed form).
    d, sigma, s1, s2, mu = 2, 1.0, 1.0, 1.5, np.array([0.5, 0.0])
    truth = ref.gaussian_mmd2_rbf(sigma, d, s1, s2, np.zeros(d), mu)
    g = torch.Generator().manual_seed(0)
    reps, n, m = 3000, 12, 9
    x = torch.randn(reps, n, d, dtype=torch.float64, generator=g) * s1
    y = torch.randn(reps, m, d, dtype=torch.float64, generator=g) * s2 + torch.from_numpy(mu)
    u = torch.stack([km.mmd2_unbiased(x[r], y[r], "rbf", sigma=sigma) for r in range(reps)])
    b = torch.stack([km.mmd2_biased(x[r], y[r], "rbf", sigma=sigma) for r in range(reps)])
    se = float(u.std()) / math.sqrt(reps)
    assert abs(float(u.mean()) - truth) < 4 * se
    # the V-statistic is biased upwards by (1 - E k(x,x'))/n + (1 - E k(y,y'))/m: far outside the noise
    assert float(b.mean()) - truth > 10 * se
    # the block and linear estimators are unbiased too
    lin = torch.stack([km.mmd2_linear(x[r, :9], y[r], "rbf", sigma=sigma) for r in range(reps)])
    assert abs(float(lin.mean()) - truth) < 4 * float(lin.std()) / math.sqrt(reps)


def test_variance_estimator_against_monte_carlo():
    # SPEC §3: the Sutherland et al. estimator is slightly biased downwards at small m (≈0.93× at m = 200);
    # its mean must lie within 15% of the Monte Carlo variance of MMD²_u at m = 200.
    g = torch.Generator().manual_seed(1)
    reps, m, d = 1500, 200, 2
    vals, vars_ = [], []
    for _ in range(reps):
        x = torch.randn(m, d, dtype=torch.float64, generator=g)
        y = torch.randn(m, d, dtype=torch.float64, generator=g) + torch.tensor([0.6, 0.0], dtype=torch.float64)
        v, s2 = km.mmd2_and_variance(x, y, "rbf", sigma=1.0)
        vals.append(float(v))
        vars_.append(float(s2))
    mc = np.var(vals, ddof=1)
    ratio = np.mean(vars_) / mc
    assert 0.85 < ratio < 1.15, ratio


@pytest.mark.parametrize("psi,theta", [(1.0, 0.5), (2.0, 1.5), (0.3, -2.0)])
def test_diracgan_closed_form(psi, theta):
    # P = δ0, Q = δθ, φ(x) = ψx, Gaussian K (σ = 1): MMD² = 2 (1 − exp(−ψ²θ²/2))   (seed 001, Example 1)
    th = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    k = km.DeepKernel(lambda v: psi * v, "rbf", sigma=1.0)
    x = torch.zeros(4, 1, dtype=torch.float64)
    y = th * torch.ones(3, 1, dtype=torch.float64)
    want = 2 * (1 - math.exp(-(psi**2) * theta**2 / 2))
    for f in (km.mmd2_biased, km.mmd2_unbiased):
        v = f(x, y, k)
        assert float(v.detach()) == pytest.approx(want, rel=1e-12)
    (g,) = torch.autograd.grad(km.mmd2_biased(x, y, k), th)
    assert float(g) == pytest.approx(2 * psi**2 * theta * math.exp(-(psi**2) * theta**2 / 2), rel=1e-10)


points = arrays(np.float64, st.tuples(st.integers(2, 9), st.just(3)), elements=st.floats(-3, 3))


@settings(max_examples=40, deadline=None)
@given(points, points, st.sampled_from(["rbf", "rq", "laplacian", "energy", "poly"]), st.randoms())
# found by hypothesis: √t kernels at nearly coincident points (t from ‖x‖² + ‖y‖² − 2xᵀy lost 1e-17 to cancellation,
# √ made it 1e-10 in the statistic; dense distances for √t kernels are now coordinate differences)
@example(np.full((2, 3), 1e-10), np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), "laplacian", random.Random(0))
@example(np.full((2, 3), 1e-10), np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), "energy", random.Random(0))
def test_symmetry_and_permutation_invariance(x, y, name, rnd):
    a = km.mmd2_unbiased(x, y, name)
    assert a == pytest.approx(km.mmd2_unbiased(y, x, name), rel=1e-9, abs=1e-11)
    px, py = list(range(len(x))), list(range(len(y)))
    rnd.shuffle(px)
    rnd.shuffle(py)
    assert a == pytest.approx(km.mmd2_unbiased(x[px], y[py], name), rel=1e-9, abs=1e-11)
    b = km.mmd2_biased(x, y, name)
    assert b == pytest.approx(km.mmd2_biased(x[px], y[py], name), rel=1e-9, abs=1e-11)
    if name != "poly":
        assert b >= -1e-12  # ‖η̂‖² ≥ 0 for positive-definite kernels


@settings(max_examples=25, deadline=None)
@given(points)
def test_identical_samples_give_zero_biased_mmd(x):
    assert km.mmd2_biased(x, x, "rbf") == pytest.approx(0.0, abs=1e-12)
    w = km.witness(x, x, x, "rbf")
    np.testing.assert_allclose(w, 0.0, atol=1e-12)
