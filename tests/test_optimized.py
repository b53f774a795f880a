"""optimize_kernel / optimized_mmd_test / MMDDKernel (SPEC §14): the criterion and its gradient against float64
references, the split test's level and power, ARD relevance, MMD-D's value, PSD-ness and power, errors.

Monte Carlo tests use fixed seeds and few replicates (a shared 2-core CPU); the rates they check are far apart."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import kernelmmd
from kernelmmd import ARD, RBF, DeepKernel, MMDDKernel

pytestmark = pytest.mark.filterwarnings("ignore::kernelmmd.BackendFallbackWarning")


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny problems: threads only add contention on a shared CPU
    yield
    torch.set_num_threads(before)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def scale_shift(n, d, scale, seed):
    """P = N(0, I_d); Q = N(0, diag(scale², scale², 1, …, 1)): only coordinates 0 and 1 differ."""
    g = _gen(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, d, generator=g, dtype=torch.float64)
    y[:, :2] *= scale
    return x, y


def blobs(n, seed, q):
    """A 3 × 3 grid of Gaussian blobs (Blobs of Liu et al. 2020, our scaling): P isotropic (sd 0.2); Q's blobs have
    correlations from −0.9 to 0.9 — a local difference that a kernel as wide as the grid barely sees."""
    g = _gen(seed)
    c = torch.stack(torch.meshgrid(torch.arange(3.0), torch.arange(3.0), indexing="ij"), -1).reshape(9, 2).double()
    idx = torch.randint(0, 9, (n,), generator=g)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    if q:
        rho = torch.linspace(-0.9, 0.9, 9, dtype=torch.float64)[idx]
        z = torch.stack([z[:, 0], rho * z[:, 0] + (1 - rho**2).sqrt() * z[:, 1]], 1)
    return c[idx] + 0.2 * z


# ----------------------------------------------------------------------------------------- float64 references
def ref_criterion(x, y, kmat, reg=1e-8):
    """J = MMD²_u / √(max(V̂, 0) + reg) from dense float64 kernel matrices, V̂ the exactly unbiased variance."""
    mmd2, var = kernelmmd.mmd2_variance_unbiased(x, y, kmat, backend="torch")
    return mmd2 / math.sqrt(max(var, 0.0) + reg)


def mmdd_dense(phi, a, b, sigma_phi, sigma_q, eps):
    """[(1 − ε) κ(φ(a), φ(b)) + ε] q(a, b), written out in float64."""
    fa, fb = phi(a).double(), phi(b).double()
    kappa = torch.exp(-((fa[:, None] - fb[None]) ** 2).sum(-1) / (2 * sigma_phi**2))
    q = torch.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * sigma_q**2))
    return ((1 - eps) * kappa + eps) * q


def small_net(seed, d_in=2, width=8, d_out=3):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d_in, width), torch.nn.Tanh(), torch.nn.Linear(width, d_out)).double()


# --------------------------------------------------------------------------------------------- the criterion
@pytest.mark.parametrize("backend", ["torch", "tiled"])
def test_criterion_value_and_gradient_match_float64_reference(backend):
    x, y = scale_shift(40, 3, 1.5, seed=0)
    y = y[:33]  # m ≠ n: the unbiased variance needs no equal sizes
    ell0 = torch.tensor([0.8, 1.5, 2.0], dtype=torch.float64)
    lr = 1e-4
    res = kernelmmd.optimize_kernel(x, y, ARD(ell0), steps=1, lr=lr, optimizer="sgd", keep="last", backend=backend)
    assert res.objective[0].item() == pytest.approx(ref_criterion(x, y, ARD(ell0)), rel=1e-10)
    # one SGD step on log ℓ: (log ℓ₁ − log ℓ₀)/lr = ∂J/∂log ℓ; compare with central differences of the reference
    grad = (res.kernel.lengthscales.log() - ell0.log()) / lr
    h = 1e-5
    def j(e):
        return ref_criterion(x, y, ARD(ell0 * torch.exp(e)))

    fd = torch.tensor([(j(h * e) - j(-h * e)) / (2 * h) for e in torch.eye(3, dtype=torch.float64)],
                      dtype=torch.float64)
    torch.testing.assert_close(grad, fd.double(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "tiled"])
def test_mmdd_criterion_from_three_fused_passes_matches_dense_kernel(backend):
    """MMD-D's statistics come from three unit-scale RBF passes; J must equal the dense kernel's J."""
    x, y = blobs(30, 1, False), blobs(26, 2, True)
    k = MMDDKernel(small_net(0), sigma_phi=0.7, sigma_q=0.9, eps=0.2)
    res = kernelmmd.optimize_kernel(x, y, k, steps=0, backend=backend)
    assert res.objective[0].item() == pytest.approx(ref_criterion(x, y, k), rel=1e-9)
    assert res.best_step == 0 and res.objective.shape == (1,)


def test_j_increases_and_user_kernel_not_mutated():
    x, y = scale_shift(100, 5, 1.8, seed=1)
    ell = torch.full((5,), 2.0, dtype=torch.float64, requires_grad=True)
    k = ARD(ell)
    seen = []
    res = kernelmmd.optimize_kernel(x, y, k, steps=40, lr=0.1, callback=lambda s, j: seen.append((s, j)))
    assert res.objective[res.best_step] > res.objective[0] + 0.5
    assert res.objective.shape == res.mmd2.shape == res.variance.shape == (41,)
    assert [s for s, _ in seen] == list(range(41)) and seen[0][1] == pytest.approx(res.objective[0].item())
    assert res.kernel is not k and not res.kernel.lengthscales.requires_grad
    assert torch.equal(ell.detach(), torch.full((5,), 2.0, dtype=torch.float64)) and ell.grad is None
    assert res.initial_kernel.lengthscales.tolist() == [2.0] * 5


def test_deep_kernel_network_copied_not_mutated():
    x, y = blobs(60, 3, False), blobs(60, 4, True)
    net = small_net(1)
    before = copy.deepcopy(net.state_dict())
    res = kernelmmd.optimize_kernel(x, y, DeepKernel(net, RBF(1.0)), steps=5, lr=0.05)
    assert all(torch.equal(before[n], p) for n, p in net.state_dict().items())
    assert res.kernel.phi is not net and res.kernel.top.sigma != 1.0
    assert not any(p.requires_grad for p in res.kernel.phi.parameters())
    assert any(not torch.equal(before[n], p) for n, p in res.kernel.phi.state_dict().items())


def test_names_minibatches_and_keep_last():
    x, y = scale_shift(80, 3, 1.8, seed=2)
    r = kernelmmd.optimize_kernel(x, y, "rbf", steps=3, lr=0.05)
    sigma0 = kernelmmd.bandwidth(x, y)
    assert r.initial_kernel.sigma == pytest.approx(sigma0)  # the median heuristic start
    for name in ("laplacian", "rq", "mix_rbf", "mix_rq"):
        kernelmmd.optimize_kernel(x, y, name, steps=2, lr=0.05)
    a = kernelmmd.optimize_kernel(x, y[:50], "ard", steps=4, lr=0.05, batch_size=16, keep="last", seed=0)
    b = kernelmmd.optimize_kernel(x, y[:50], "ard", steps=4, lr=0.05, batch_size=16, keep="last", seed=0)
    assert a.best_step == 4 and torch.equal(a.objective, b.objective)
    assert a.initial_kernel.lengthscales.tolist() == pytest.approx([kernelmmd.bandwidth(x, y[:50])] * 3)


# ------------------------------------------------------------------------------------------ split test: level
def test_optimized_test_level_under_null():
    """The kernel is learned on the training half only, so the permutation test on the other half is exact."""
    reps, alpha, rejections = 40, 0.1, 0
    for r in range(reps):
        x, y = scale_shift(40, 4, 1.0, seed=1000 + r)
        res = kernelmmd.optimized_mmd_test(x, y, "ard", steps=5, lr=0.1, n_permutations=50, seed=r)
        rejections += res.reject(alpha)
    se = math.sqrt(alpha * (1 - alpha) / reps)
    assert rejections / reps <= alpha + 3 * se


# ------------------------------------------------------------------------------------------ power and relevance
def test_ard_beats_median_heuristic_when_two_of_thirty_coordinates_differ():
    """Variance ×1.8² in coordinates 0, 1 of 30, n = m = 200 (ARD: 100 train / 100 test), α = 0.05, 8 reps.
    Measured (seeds 100…111, 12 reps): ARD 12/12, median heuristic on all 200 points 6/12."""
    reps, ard, med = 8, 0, 0
    for r in range(reps):
        x, y = scale_shift(200, 30, 1.8, seed=100 + r)
        ard += kernelmmd.optimized_mmd_test(x, y, "ard", steps=40, lr=0.1, n_permutations=100, seed=r).reject(0.05)
        med += kernelmmd.mmd_test(x, y, "rbf", sigma="median", n_permutations=100, seed=r).reject(0.05)
    assert ard >= 7 and ard >= med + 3


def test_ard_lengthscales_single_out_the_informative_coordinates():
    x, y = scale_shift(200, 10, 2.0, seed=7)
    res = kernelmmd.optimize_kernel(x, y, "ard", steps=60, lr=0.1)
    assert set(res.kernel.lengthscales.argsort()[:2].tolist()) == {0, 1}


def test_mmdd_beats_median_on_blobs():
    """n = m = 400 (MMD-D: 200 train / 200 test, 30 Adam steps), 3 reps. Measured: MMD-D p = 0.01, 0.02, 0.079;
    the median heuristic (all 400 points) rejects in none at α = 0.05."""
    reps, deep, med = 3, 0, 0
    for r in range(reps):
        x, y = blobs(400, 500 + r, False), blobs(400, 600 + r, True)
        phi = small_net(r, width=16, d_out=8)
        with torch.no_grad():
            sp = kernelmmd.bandwidth(phi(x), phi(y))
        k = MMDDKernel(phi, sigma_phi=sp, sigma_q=0.3, eps=0.5)
        res = kernelmmd.optimized_mmd_test(x, y, k, steps=30, lr=0.1, n_permutations=100, seed=r)
        assert 0 < float(res.kernel.eps) < 1 and isinstance(res.kernel, MMDDKernel)
        assert res.optimization.objective[res.optimization.best_step] > res.optimization.objective[0]
        deep += res.reject(0.1)
        med += kernelmmd.mmd_test(x, y, "rbf", sigma="median", n_permutations=100, seed=r).reject(0.1)
    assert deep == reps and med <= 1


# ------------------------------------------------------------------------------------------------ the MMD-D kernel
@pytest.mark.parametrize("eps", [1e-10, 0.3, 0.99])
def test_mmdd_kernel_matches_dense_formula_and_is_psd(eps):
    phi = small_net(2)
    a, b = blobs(12, 5, False), blobs(9, 6, True)
    k = MMDDKernel(phi, sigma_phi=0.6, sigma_q=1.3, eps=eps)
    torch.testing.assert_close(k.matrix(a, b), mmdd_dense(phi, a, b, 0.6, 1.3, eps), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(k.pairwise(a, b[:1].expand(12, 2)), mmdd_dense(phi, a, b[:1], 0.6, 1.3, eps)[:, 0],
                               rtol=1e-12, atol=1e-14)
    z = torch.cat([a, b])
    assert torch.linalg.eigvalsh(k.matrix(z, z)).min() > -1e-12
    # through the estimators (prepare → features → the dense top kernel)
    ref = mmdd_dense(phi, a, a, 0.6, 1.3, eps)
    kxx = ref.sum() - ref.diagonal().sum()
    kyy, kxy = mmdd_dense(phi, b, b, 0.6, 1.3, eps), mmdd_dense(phi, a, b, 0.6, 1.3, eps)
    want = kxx / (12 * 11) + (kyy.sum() - kyy.diagonal().sum()) / (9 * 8) - 2 * kxy.mean()
    got = kernelmmd.mmd2_unbiased(a, b, k, backend="torch")
    assert got.item() == pytest.approx(want.item(), rel=1e-10)
    assert kernelmmd.mmd_test(a, b, k, n_permutations=20, seed=0, backend="torch").p_value > 0


def test_mmdd_rejects_bad_parameters_and_xor_epsilon():
    phi = small_net(0)
    with pytest.raises(ValueError, match="eps must lie strictly between 0 and 1, got -4"):
        MMDDKernel(phi, eps=float(10 ^ (-10)))  # the DK-for-TST bug: ^ is XOR, 10 ^ -10 == -4
    with pytest.raises(TypeError, match="eps must be a number"):
        MMDDKernel(phi, eps="0.1")
    with pytest.raises(ValueError, match="eps must lie strictly between 0 and 1, got 1.0"):
        MMDDKernel(phi, eps=1.0)
    with pytest.raises(ValueError, match="sigma_phi must be finite and > 0"):
        MMDDKernel(phi, sigma_phi=0.0)
    with pytest.raises(ValueError, match="sigma_q must be finite and > 0"):
        MMDDKernel(phi, sigma_q=-1.0)
    with pytest.raises(TypeError, match="phi must be callable"):
        MMDDKernel(3)
    k = MMDDKernel(phi)
    with pytest.raises(TypeError, match="on the tiled backend needs a radial"):
        kernelmmd.mmd_test(blobs(20, 0, False), blobs(20, 1, True), k, backend="tiled")
    with pytest.raises(TypeError, match="sum of Gaussians"):
        k.top = RBF(1.0)


# ------------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(steps=-1), ValueError, "steps must be an integer >= 0"),
    (dict(steps=2.5), TypeError, "steps must be an integer"),
    (dict(lr=0.0), ValueError, "lr must be a finite number > 0"),
    (dict(reg=-1.0), ValueError, "reg must be a finite number >= 0"),
    (dict(optimizer="lbfgs"), ValueError, "optimizer must be one of"),
    (dict(keep="first"), ValueError, "keep must be one of"),
    (dict(batch_size=3), ValueError, "batch_size must be an integer >= 4"),
    (dict(callback=3), TypeError, "callback must be callable"),
    (dict(kernel="energy"), ValueError, "kernel must be one of"),
    (dict(kernel=kernelmmd.Linear()), TypeError, "kernel must be one of .* got Linear"),
    (dict(kernel=3), TypeError, "kernel must be a kernel name"),
    (dict(kernel=DeepKernel(lambda t: t, "linear")), ValueError, "no trainable parameters"),
])
def test_optimize_kernel_errors(kwargs, exc, match):
    x, y = scale_shift(10, 2, 1.0, seed=0)
    with pytest.raises(exc, match=match):
        kernelmmd.optimize_kernel(x, y, **{"kernel": "rbf", **kwargs})


def test_input_errors():
    x, y = scale_shift(10, 2, 1.0, seed=0)
    with pytest.raises(ValueError, match="y must have at least 4 points"):
        kernelmmd.optimize_kernel(x, y[:3])
    with pytest.raises(ValueError, match="x contains NaN"):
        kernelmmd.optimize_kernel(torch.full_like(x, math.nan), y)
    with pytest.raises(ValueError, match="train_fraction must be a number in"):
        kernelmmd.optimized_mmd_test(x, y, train_fraction=1.5)
    with pytest.raises(ValueError, match="training needs at least 4 per sample"):
        kernelmmd.optimized_mmd_test(x, y, train_fraction=0.3)
    with pytest.raises(ValueError, match="n_permutations must be an integer >= 1"):
        kernelmmd.optimized_mmd_test(x, y, n_permutations=0)


def test_nonfinite_criterion_stops_with_warning():
    x, y = scale_shift(20, 2, 2.0, seed=3)
    with pytest.warns(kernelmmd.NumericalWarning, match="J is nan at step 2 .*stopped there"):
        res = kernelmmd.optimize_kernel(x, y, "rbf", steps=5, lr=100.0, optimizer="sgd", reg=0.0)
    assert res.objective.numel() == 2 and res.best_step == 0
    with pytest.raises(ValueError, match="J is nan for the starting kernel RBF"):
        kernelmmd.optimize_kernel(x, y, RBF(1e-3), steps=2, reg=0.0)
