"""Two-sample tests: exactness of the batched permutation statistics, calibration (size at α = 0.05 by Monte Carlo),
power, reproducibility, kernel selection on disjoint data, the unbiased variance estimates, the relative test."""

import math

import numpy as np
import pytest
import torch

import kernelmmd as km
from kernelmmd import _estimator
from kernelmmd.ops.types import BlockStats

from . import reference_np as ref
from ._cases import name_params

ALPHA = 0.05


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Thousands of tiny problems: intra-op threads only add synchronisation cost (and noise on a shared CPU)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _within_3sd(rate, reps, alpha=ALPHA):
    sd = math.sqrt(alpha * (1 - alpha) / reps)
    return abs(rate - alpha) <= 3 * sd, f"rate {rate:.4f} vs {alpha} ± {3 * sd:.4f} (3 binomial sd, {reps} reps)"


def _data(n, d, m=None, seed=0, shift=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    m = n if m is None else m
    return rng.normal(size=(n, d)), rng.normal(size=(m, d)) * scale + shift


# ------------------------------------------------------------------------------------ permutation statistics
KERNELS = name_params("rbf", "laplacian", "energy", "mix_rq", "poly_auto", "linear")


def _documented_splits(seed, N, n, B):
    """The permutations mmd_test documents: permutation b puts the first n entries of torch.randperm(N) in X."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(N, generator=g)[:n].numpy() for _ in range(B)]


@pytest.mark.parametrize("name,params", KERNELS)
@pytest.mark.parametrize("n,m,d", [(7, 9, 3), (5, 5, 1), (12, 4, 17)])
def test_permutation_statistics_match_brute_force(name, params, n, m, d):
    x, y = _data(n, d, m, shift=0.4)
    B = 12
    res = km.mmd_test(torch.from_numpy(x), torch.from_numpy(y), name, n_permutations=B, seed=3, batch_size=5, **params)
    p = {k: v for k, v in params.items() if v is not None}
    np.testing.assert_allclose(res.statistic, ref.mmd2_unbiased(x, y, name, **p), rtol=1e-10, atol=1e-12)
    z = np.concatenate([x, y])
    want = []
    for idx in _documented_splits(3, n + m, n, B):
        mask = np.zeros(n + m, bool)
        mask[idx] = True
        want.append(ref.mmd2_unbiased(z[mask], z[~mask], name, **p))
    np.testing.assert_allclose(res.null_samples.numpy(), want, rtol=1e-9, atol=1e-12)
    assert res.p_value == (1 + np.sum(np.asarray(want) >= res.statistic - 1e-9)) / (1 + B)  # ties count
    assert res.method == "permutation" and res.n_permutations == B and (res.n, res.m) == (n, m)


def test_batch_size_and_seed_reproducibility():
    x, y = (torch.from_numpy(a) for a in _data(15, 2, 11, shift=0.3))
    runs = [km.mmd_test(x, y, sigma=1.0, n_permutations=40, seed=7, batch_size=b) for b in (1, 7, 40, None)]
    for r in runs[1:]:
        torch.testing.assert_close(r.null_samples, runs[0].null_samples, rtol=1e-12, atol=1e-14)
        assert r.p_value == runs[0].p_value
    other = km.mmd_test(x, y, sigma=1.0, n_permutations=40, seed=8)
    assert not torch.equal(other.null_samples, runs[0].null_samples)
    unseeded = km.mmd_test(x, y, sigma=1.0, n_permutations=40)
    assert 0 < unseeded.p_value <= 1


def test_generator_seed_is_consumed():
    x, y = (torch.from_numpy(a) for a in _data(10, 2))
    g = torch.Generator().manual_seed(0)
    a = km.mmd_test(x, y, n_permutations=20, seed=g)
    b = km.mmd_test(x, y, n_permutations=20, seed=g)  # continues the stream
    c = km.mmd_test(x, y, n_permutations=20, seed=0)
    torch.testing.assert_close(a.null_samples, c.null_samples)
    assert not torch.equal(a.null_samples, b.null_samples)


def test_p_value_never_zero_and_reject():
    x, y = (torch.from_numpy(a) for a in _data(30, 2, shift=6.0))
    res = km.mmd_test(x, y, sigma="median", n_permutations=49, seed=0)
    assert res.p_value == 1 / 50  # the smallest attainable, never 0
    assert res.reject(0.05) and not res.reject(0.01)
    assert float((res.null_samples >= res.statistic).sum()) == 0


def test_callback_counts_and_numpy_io():
    x, y = _data(20, 3, 13)
    seen = []
    res = km.mmd_test(x, y, n_permutations=25, batch_size=10, seed=1, callback=seen.append)
    assert seen == [10, 10, 5]
    assert isinstance(res.null_samples, np.ndarray) and res.null_samples.shape == (25,)
    assert isinstance(res.statistic, float) and isinstance(res.p_value, float)
    assert isinstance(res.kernel, km.RBF) and res.kernel.sigma == 1.0


def test_median_bandwidth_is_resolved_and_reported():
    x, y = (torch.from_numpy(a) for a in _data(20, 2, shift=0.5))
    res = km.mmd_test(x, y, "rbf", sigma="median", n_permutations=5, seed=0)
    assert res.kernel.sigma == pytest.approx(km.bandwidth(x, y, "median"))
    res = km.mmd_test(x, y, "laplacian", sigma="mean", n_permutations=5, seed=0)
    assert res.kernel.sigma == pytest.approx(km.bandwidth(x, y, "mean"))


def test_deep_kernel_uses_features():
    torch.manual_seed(0)
    phi = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).double()
    x, y = torch.randn(9, 3, 4, dtype=torch.float64), torch.randn(8, 3, 4, dtype=torch.float64) + 0.3
    res = km.mmd_test(x, y, km.DeepKernel(phi, "rbf", sigma=1.0), n_permutations=10, seed=0)
    with torch.no_grad():
        want = km.mmd2_unbiased(phi(x), phi(y), "rbf", sigma=1.0)
    assert res.statistic == pytest.approx(float(want), rel=1e-10)
    assert isinstance(res.kernel, km.RBF)


def test_permutation_test_size_at_alpha():
    """Size at α = 0.05 over 500 null repetitions (n = m = 20, B = 99, batches of 33): within 3 binomial sd."""
    g = torch.Generator().manual_seed(123)
    reps, rejections = 500, 0
    for i in range(reps):
        x, y = torch.randn(2, 20, 2, generator=g, dtype=torch.float64)
        res = km.mmd_test(x, y, sigma="median", n_permutations=99, seed=i, batch_size=33)
        rejections += res.p_value <= ALPHA
    ok, msg = _within_3sd(rejections / reps, reps)
    assert ok, msg


def test_permutation_test_power():
    g = torch.Generator().manual_seed(5)
    reps, rejections = 60, 0
    for i in range(reps):
        x = torch.randn(30, 2, generator=g, dtype=torch.float64)
        y = torch.randn(30, 2, generator=g, dtype=torch.float64) + torch.tensor([1.2, 0.0], dtype=torch.float64)
        rejections += km.mmd_test(x, y, sigma="median", n_permutations=99, seed=i).p_value <= ALPHA
    assert rejections / reps > 0.9


def test_mmd_test_errors():
    x, y = torch.randn(6, 2), torch.randn(6, 2)
    with pytest.raises(ValueError, match="n_permutations must be an integer >= 1, got 0"):
        km.mmd_test(x, y, n_permutations=0)
    with pytest.raises(TypeError, match="n_permutations must be an integer >= 1, got float"):
        km.mmd_test(x, y, n_permutations=10.0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        km.mmd_test(x, y, batch_size=0)
    with pytest.raises(ValueError, match="seed must be an int >= 0, None or a torch.Generator, got -1"):
        km.mmd_test(x, y, seed=-1)
    with pytest.raises(TypeError, match="seed must be an int >= 0, None or a torch.Generator, got str"):
        km.mmd_test(x, y, seed="0")
    with pytest.raises(TypeError, match="seed must be .* got bool"):
        km.mmd_test(x, y, seed=True)
    with pytest.raises(TypeError, match="callback must be callable"):
        km.mmd_test(x, y, callback=3)
    with pytest.raises(ValueError, match="rbf_bounded clamps distances differently per block"):
        km.mmd_test(x, y, "rbf_bounded")
    with pytest.raises(ValueError, match="x must have at least 2 points"):
        km.mmd_test(x[:1], y)
    with pytest.raises(TypeError, match="kernel 'rbf' takes parameters"):
        km.mmd_test(x, y, n_permutation=10)  # a misspelled option is not swallowed
    with pytest.raises(ValueError, match="backend must be one of"):
        km.mmd_test(x, y, backend="nope")
    res = km.mmd_test(x, y, n_permutations=3, seed=0)
    with pytest.raises(ValueError, match=r"alpha must be a number in \(0, 1\), got 1.5"):
        res.reject(1.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to build a non-CPU generator")
def test_cuda_generator_rejected():
    with pytest.raises(ValueError, match="CPU torch.Generator"):
        km.mmd_test(torch.randn(5, 2), torch.randn(5, 2), seed=torch.Generator(device="cuda"))


# ------------------------------------------------------------------------------------- normal-approximation tests
def test_linear_test_statistic_and_calibration():
    x, y = _data(40, 3, shift=0.2)
    res = km.linear_mmd_test(x, y, sigma=1.1)
    est, var = km.mmd2_linear(x, y, sigma=1.1, return_variance=True)
    assert res.statistic == pytest.approx(ref.mmd2_linear(x, y, "rbf", sigma=1.1), rel=1e-10)
    assert res.statistic == pytest.approx(est) and res.std == pytest.approx(math.sqrt(var))
    assert res.p_value == pytest.approx(0.5 * math.erfc(est / math.sqrt(var) / math.sqrt(2)))
    assert res.method == "linear" and res.null_samples is None
    g = torch.Generator().manual_seed(1)
    reps = 1000
    rate = sum(
        km.linear_mmd_test(torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g), sigma=1.0).p_value
        <= ALPHA
        for _ in range(reps)
    ) / reps
    ok, msg = _within_3sd(rate, reps)
    assert ok, msg


def test_linear_test_power_and_errors():
    x, y = _data(2000, 2, shift=1.0)
    assert km.linear_mmd_test(x, y, sigma=1.0).p_value < 1e-6
    with pytest.raises(ValueError, match="linear_mmd_test needs n == m"):
        km.linear_mmd_test(x[:10], y[:12])
    with pytest.raises(ValueError, match="x must have at least 4 points"):
        km.linear_mmd_test(x[:3], y[:3])
    with pytest.raises(ValueError, match="rbf_bounded"):
        km.linear_mmd_test(x[:8], y[:8], "rbf_bounded")


def test_block_test_statistic_and_size():
    x, y = _data(60, 2, shift=0.3)
    res = km.block_mmd_test(x, y, block_size=10, sigma=1.0)
    est, blocks = km.mmd2_block(x, y, block_size=10, sigma=1.0, return_blocks=True)
    want = np.mean([ref.mmd2_unbiased(x[i : i + 10], y[i : i + 10], "rbf", sigma=1.0) for i in range(0, 60, 10)])
    assert res.statistic == pytest.approx(want, rel=1e-10)
    assert res.std == pytest.approx(np.std(blocks, ddof=1) / math.sqrt(6), rel=1e-10)
    assert res.method == "block" and res.n == 60
    # the B-test's normal approximation is conservative with few blocks (the block null is right-skewed):
    # measured 0.026 at 20 blocks, 0.035 at 40 (1000 reps each). Check the level holds and is not degenerate.
    g = torch.Generator().manual_seed(2)
    reps = 200
    rate = sum(
        km.block_mmd_test(
            torch.randn(160, 2, generator=g), torch.randn(160, 2, generator=g), block_size=8, sigma=1.0
        ).p_value
        <= ALPHA
        for _ in range(reps)
    ) / reps
    assert 0.005 < rate <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / reps), rate


def test_block_test_power_and_errors():
    x, y = _data(400, 2, shift=1.0)
    assert km.block_mmd_test(x, y, block_size=20, sigma=1.0).p_value < 1e-6
    with pytest.raises(ValueError, match=r"block_size must be <= n / 2 = 5 \(at least two blocks\), got 6"):
        km.block_mmd_test(x[:10], y[:10], block_size=6)
    with pytest.raises(ValueError, match="block_mmd_test needs n == m"):
        km.block_mmd_test(x[:10], y[:12], block_size=2)
    with pytest.raises(TypeError, match="block_size must be an integer >= 2"):
        km.block_mmd_test(x, y, block_size=2.5)
    with pytest.raises(ValueError, match="rbf_bounded"):
        km.block_mmd_test(x, y, "rbf_bounded", block_size=10)


# --------------------------------------------------------------------------------------------- kernel selection
def test_select_kernel_criterion():
    x, y = (torch.from_numpy(a) for a in _data(60, 2, scale=1.6))
    cands = [km.RBF(0.05), km.RBF(1.0), km.RBF(30.0), km.RBF("median")]
    sel = km.select_kernel(x, y, cands)
    for i, k in enumerate(sel.kernels):
        mmd2, var = km.mmd2_and_variance(x, y, k)
        assert float(sel.criteria[i]) == pytest.approx(float(mmd2) / math.sqrt(max(float(var), 1e-8)))
    assert sel.kernels[3].sigma == pytest.approx(km.bandwidth(x, y, "median"))
    assert sel.index == int(torch.argmax(sel.criteria)) and sel.kernel is sel.kernels[sel.index]
    assert sel.index in (1, 3)  # far too small or too large bandwidths have no power
    sel_names = km.select_kernel(x, y, ["rbf", "laplacian"])
    assert [type(k) for k in sel_names.kernels] == [km.RBF, km.Laplacian]


def test_select_kernel_errors():
    x, y = torch.randn(10, 2), torch.randn(10, 2)
    with pytest.raises(TypeError, match="candidates must be a sequence of kernels"):
        km.select_kernel(x, y, "rbf")
    with pytest.raises(ValueError, match="candidates must contain at least one kernel"):
        km.select_kernel(x, y, [])
    with pytest.raises(ValueError, match="min_variance must be a finite number >= 0"):
        km.select_kernel(x, y, ["rbf"], min_variance=-1.0)
    with pytest.raises(ValueError, match="select_kernel needs n == m"):
        km.select_kernel(x, y[:8], ["rbf"])


class _Recorder(torch.nn.Module):
    """Identity feature map that records every row it is applied to (to check which points each stage sees)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, a):
        self.seen.append(a.detach().clone())
        return a


def test_selection_and_test_use_disjoint_data():
    n, m = 30, 26
    x = torch.arange(n, dtype=torch.float64)[:, None] * torch.ones(1, 2, dtype=torch.float64)  # row i is (i, i)
    y = 100 + torch.arange(m, dtype=torch.float64)[:, None] * torch.ones(1, 2, dtype=torch.float64)
    rec = _Recorder()
    res = km.selected_mmd_test(x, y, [km.DeepKernel(rec, "rbf", sigma=s) for s in (1.0, 10.0)], n_permutations=9,
                               seed=0, train_fraction=0.4)
    n_tr = int(0.4 * m)
    assert (res.n, res.m) == (n - n_tr, m - n_tr) and res.selection is not None
    # selection: two candidates × (x_tr, y_tr); test: (x_te, y_te)
    train = {float(v) for t in rec.seen[:4] for v in t[:, 0]}
    test = {float(v) for t in rec.seen[4:] for v in t[:, 0]}
    assert not train & test
    assert len(train) == 2 * n_tr and len(test) == n + m - 2 * n_tr
    assert train | test == set(range(n)) | {100.0 + j for j in range(m)}


def test_selected_test_size_and_power():
    cands = [km.RBF(s) for s in (0.3, 1.0, 3.0)]
    g = torch.Generator().manual_seed(11)
    reps, rej = 300, 0
    for i in range(reps):
        x, y = torch.randn(40, 2, generator=g), torch.randn(40, 2, generator=g)
        rej += km.selected_mmd_test(x, y, cands, n_permutations=39, seed=i).p_value <= ALPHA
    ok, msg = _within_3sd(rej / reps, reps)
    assert ok, msg
    x, y = torch.randn(80, 2, generator=g), torch.randn(80, 2, generator=g) * 2.0
    res = km.selected_mmd_test(x, y, cands, n_permutations=99, seed=0)
    assert res.p_value <= 0.02 and res.selection.kernel.sigma in (0.3, 1.0, 3.0)


def test_selected_test_errors():
    x, y = torch.randn(10, 2), torch.randn(10, 2)
    with pytest.raises(ValueError, match=r"train_fraction must be a number in \(0, 1\), got 1.0"):
        km.selected_mmd_test(x, y, ["rbf"], train_fraction=1.0)
    with pytest.raises(ValueError, match=r"train_fraction must be a number in \(0, 1\), got 'a'"):
        km.selected_mmd_test(x, y, ["rbf"], train_fraction="a")
    with pytest.raises(ValueError, match="each part needs at least 2"):
        km.selected_mmd_test(x, y, ["rbf"], train_fraction=0.1)
    with pytest.raises(ValueError, match="x must have at least 4 points"):
        km.selected_mmd_test(x[:3], y, ["rbf"])


# ---------------------------------------------------------------------------------- unbiased variance estimates
def _batched_stats(kxx, kyy, kxy):
    """BlockStats with a leading replicate axis from explicit batched kernel matrices (independent of the ops)."""
    n, m = kxx.shape[-1], kyy.shape[-1]
    kxx = kxx * (1 - torch.eye(n, dtype=kxx.dtype))
    kyy = kyy * (1 - torch.eye(m, dtype=kyy.dtype))
    return BlockStats(
        n=n, m=m, sxx=kxx.sum((-1, -2)), syy=kyy.sum((-1, -2)), sxy=kxy.sum((-1, -2)), dxx=None, dyy=None,
        rxx=kxx.sum(-1), ryy=kyy.sum(-1), rxy=kxy.sum(-1), cxy=kxy.sum(-2),
        qxx=(kxx**2).sum((-1, -2)), qyy=(kyy**2).sum((-1, -2)), qxy=(kxy**2).sum((-1, -2)),
    )


def _rbf(a, b, sigma=1.0):
    return torch.exp(-torch.cdist(a, b) ** 2 / (2 * sigma**2))


def _poly(a, b):
    return (a @ b.transpose(-1, -2) / a.shape[-1] + 1.0) ** 3


@pytest.mark.parametrize("kfun", [_rbf, _poly], ids=["rbf", "poly"])
@pytest.mark.parametrize("n,m,shift", [(6, 6, 0.0), (5, 9, 0.7), (12, 7, 0.3)])
def test_unbiased_variance_matches_monte_carlo(kfun, n, m, shift):
    """E[V̂] = Var(MMD²_u) at every sample size, also n ≠ m and under H0 (20 000 replicates)."""
    R = 20000
    g = torch.Generator().manual_seed(n * 100 + m)
    x = torch.randn(R, n, 2, generator=g, dtype=torch.float64)
    y = torch.randn(R, m, 2, generator=g, dtype=torch.float64) * 1.2 + shift
    st = _batched_stats(kfun(x, x), kfun(y, y), kfun(x, y))
    est = st.sxx / (n * (n - 1)) + st.syy / (m * (m - 1)) - 2 * st.sxy / (n * m)
    v = _estimator.mmd2_u_variance(st)
    mc = float(est.var())
    se = float(v.std()) / math.sqrt(R) + mc * math.sqrt(2 / R)  # sampling error of both sides
    assert abs(float(v.mean()) - mc) < 4 * se, (float(v.mean()), mc, se)


def test_unbiased_variance_public_function():
    x, y = _data(9, 3, 13, shift=0.4)
    mmd2, var = km.mmd2_variance_unbiased(x, y, "rbf", sigma=1.5)
    xt, yt = torch.from_numpy(x)[None], torch.from_numpy(y)[None]
    st = _batched_stats(_rbf(xt, xt, 1.5), _rbf(yt, yt, 1.5), _rbf(xt, yt, 1.5))
    assert var == pytest.approx(float(_estimator.mmd2_u_variance(st)[0]), rel=1e-10)
    assert mmd2 == pytest.approx(ref.mmd2_unbiased(x, y, "rbf", sigma=1.5), rel=1e-10)
    with pytest.raises(ValueError, match="y must have at least 4 points"):
        km.mmd2_variance_unbiased(x, y[:3])


def test_h1_variance_bias_is_what_spec_documents():
    """The SPEC §3 H1 estimator (mmd2_and_variance) underestimates at small m; ours does not (m = 12)."""
    R, m = 20000, 12
    g = torch.Generator().manual_seed(0)
    x = torch.randn(R, m, 2, generator=g, dtype=torch.float64)
    y = torch.randn(R, m, 2, generator=g, dtype=torch.float64) + 0.5
    st = _batched_stats(_rbf(x, x), _rbf(y, y), _rbf(x, y))
    est = st.sxx / (m * (m - 1)) + st.syy / (m * (m - 1)) - 2 * st.sxy / (m * m)
    mc = float(est.var())
    ratio_unbiased = float(_estimator.mmd2_u_variance(st).mean()) / mc
    assert abs(ratio_unbiased - 1) < 0.05
    from kernelmmd._estimator import mmd2_variance_h1 as _variance_h1

    def one(sxx, syy, sxy, rxx, ryy, rxy, cxy, qxx, qyy, qxy):
        return _variance_h1(BlockStats(m, m, sxx, syy, sxy, None, None, rxx, ryy, rxy, cxy, qxx, qyy, qxy))

    h1 = torch.vmap(one)(st.sxx, st.syy, st.sxy, st.rxx, st.ryy, st.rxy, st.cxy, st.qxx, st.qyy, st.qxy)
    assert float(h1.mean()) / mc < 0.8  # SPEC: ≈ 0.67× at m = 12


# ------------------------------------------------------------------------------------------------ relative test
@pytest.mark.parametrize("kfun", [_rbf, _poly], ids=["rbf", "poly"])
@pytest.mark.parametrize("n,m,M,sy,sz", [(6, 6, 6, 0.5, 0.5), (4, 8, 5, 0.2, 0.9), (10, 5, 12, 0.0, 0.0)])
def test_relative_variance_matches_monte_carlo(kfun, n, m, M, sy, sz):
    R = 20000
    g = torch.Generator().manual_seed(n + 10 * m + 100 * M)
    x = torch.randn(R, n, 2, generator=g, dtype=torch.float64)
    y = torch.randn(R, m, 2, generator=g, dtype=torch.float64) + sy
    z = torch.randn(R, M, 2, generator=g, dtype=torch.float64) * 1.3 + sz
    a = _batched_stats(kfun(x, x), kfun(y, y), kfun(x, y))
    b = _batched_stats(kfun(x, x), kfun(z, z), kfun(x, z))
    d = (a.sxx / (n * (n - 1)) + a.syy / (m * (m - 1)) - 2 * a.sxy / (n * m)) - (
        b.sxx / (n * (n - 1)) + b.syy / (M * (M - 1)) - 2 * b.sxy / (n * M)
    )
    v = _estimator.relative_variance(a, b)
    mc = float(d.var())
    se = float(v.std()) / math.sqrt(R) + mc * math.sqrt(2 / R)
    assert abs(float(v.mean()) - mc) < 4 * se, (float(v.mean()), mc, se)


def test_relative_statistic_vs_numpy():
    x, y = _data(15, 4, 12, shift=0.2)
    _, z = _data(15, 4, 9, seed=1, shift=0.8)
    res = km.relative_mmd_test(x, y, z)  # default: KID's cubic kernel
    want_xy = ref.mmd2_unbiased(x, y, "poly", degree=3, coef0=1.0)
    want_xz = ref.mmd2_unbiased(x, z, "poly", degree=3, coef0=1.0)
    assert res.mmd2_xy == pytest.approx(want_xy, rel=1e-10) and res.mmd2_xz == pytest.approx(want_xz, rel=1e-10)
    assert res.statistic == pytest.approx(want_xy - want_xz, rel=1e-9, abs=1e-12)
    assert res.kernel.gamma == pytest.approx(0.25) and res.kernel.degree == 3
    assert res.std == pytest.approx(math.sqrt(max(res.variance, 1e-10)))
    assert res.p_value == pytest.approx(0.5 * math.erfc(-res.statistic / res.std / math.sqrt(2)))


def test_relative_test_calibrated_under_null():
    """H0 boundary MMD(P, Q_Y) = MMD(P, Q_Z) with Q_Y = Q_Z ≠ P: size at α = 0.05 over 600 reps (KID kernel)."""
    g = torch.Generator().manual_seed(3)
    reps, rej = 600, 0
    for _ in range(reps):
        x = torch.randn(50, 4, generator=g, dtype=torch.float64)
        y = torch.randn(50, 4, generator=g, dtype=torch.float64) + 0.5
        z = torch.randn(50, 4, generator=g, dtype=torch.float64) + 0.5
        rej += km.relative_mmd_test(x, y, z).reject(ALPHA)
    ok, msg = _within_3sd(rej / reps, reps)
    assert ok, msg


def test_relative_test_power_and_direction():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(300, 8, generator=g)
    y, z = torch.randn(300, 8, generator=g) + 0.1, torch.randn(300, 8, generator=g) + 0.6
    assert km.relative_mmd_test(x, y, z).p_value < 1e-3  # y is closer
    assert km.relative_mmd_test(x, z, y).p_value > 0.999  # z is farther
    floored = km.relative_mmd_test(x, y, z, min_variance=1e3)
    assert floored.std == pytest.approx(math.sqrt(1e3)) and floored.p_value > 0.4


def test_relative_test_errors():
    x, y, z = torch.randn(10, 3), torch.randn(10, 3), torch.randn(10, 3)
    with pytest.raises(ValueError, match="z must have at least 4 points for the relative test's variance, got 3"):
        km.relative_mmd_test(x, y, z[:3])
    with pytest.raises(ValueError, match="x must have at least 2 points"):
        km.relative_mmd_test(x[:1], y, z)
    with pytest.raises(ValueError, match="min_variance must be a finite number >= 0"):
        km.relative_mmd_test(x, y, z, min_variance=-1.0)
    with pytest.raises(ValueError, match="z has feature shape"):
        km.relative_mmd_test(x, y, torch.randn(10, 4))
    with pytest.raises(ValueError, match="rbf_bounded"):
        km.relative_mmd_test(x, y, z, "rbf_bounded")
    res = km.relative_mmd_test(x, y, z)
    with pytest.raises(ValueError, match=r"alpha must be a number in \(0, 1\)"):
        res.reject(0.0)


def test_relative_test_zero_variance_edge():
    """A constant kernel has Var d̂ = 0 exactly; with no floor the normal approximation is undefined: the test cannot
    decide (p = NaN, one NumericalWarning; tests/test_reliability_tests.py), never p = 0 from d̂ / 0."""
    x, y, z = torch.randn(6, 2, dtype=torch.float64), torch.randn(7, 2, dtype=torch.float64), torch.randn(5, 2)
    with pytest.warns(km.NumericalWarning, match="min_variance = 0; pass min_variance > 0"):
        res = km.relative_mmd_test(x, y, z.double(), "poly", degree=0, min_variance=0.0)
    assert res.variance == 0.0 and res.std == 0.0 and res.statistic == 0.0 and math.isnan(res.p_value)
    assert not res.reject(0.5)


@pytest.mark.parametrize(
    "backend", ["tiled", pytest.param("keops", marks=pytest.mark.slow), "triton"]  # keops: one formula compile
)
def test_permutation_test_on_fused_backends(backend):
    """The batched quadratic forms go through kernel_mv of the selected backend; every backend gives the same test."""
    import importlib

    from kernelmmd import ops

    if backend not in ops.BACKENDS or not ops.available(backend):
        pytest.skip(f"backend {backend!r} is not installed")
    if not hasattr(importlib.import_module(ops._MODULES[backend]), "kernel_mv"):
        pytest.skip(f"backend {backend!r} does not provide kernel_mv yet")
    x, y = (torch.from_numpy(a).float() for a in _data(24, 5, 17, shift=0.3))
    want = km.mmd_test(x, y, sigma=1.5, n_permutations=12, seed=4, backend="torch")
    got = km.mmd_test(x, y, sigma=1.5, n_permutations=12, seed=4, backend=backend)
    assert got.statistic == pytest.approx(want.statistic, rel=1e-4, abs=1e-6)
    torch.testing.assert_close(got.null_samples, want.null_samples, rtol=1e-4, atol=1e-6)
    assert got.p_value == want.p_value
