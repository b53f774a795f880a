"""float32 extremes are exact or warned (kernelmmd._range, issue 12 item 2).

Data of magnitude 1e±20, bandwidths of 1e±20 and huge offsets with a small spread leave float32's range in the
squared distances or the kernel profile. Every public function then computes in float64 and returns float32, on every
backend; where float64 cannot hold the values either, one NumericalWarning names the scale. References are
independent of the code path under test: the RBF family and the √t kernels are scale invariant (MMD² of data x·s
with bandwidth σ·s equals MMD² of x with σ; the energy distance scales by s), so a float64 computation on the
unscaled data is the reference. KeOps runs only float64, d = 3 formulas (the ones tests/test_keops.py compiles);
triton runs through the interpreter on CPU with small inputs.
"""

import importlib.util
import warnings

import pytest
import torch

import kernelmmd as km
from kernelmmd import NumericalWarning, _range

F32, F64 = torch.float32, torch.float64


def _backends():
    out = [pytest.param("torch"), pytest.param("tiled")]
    for name, mod in (("keops", "pykeops"), ("triton", "triton")):
        marks = [] if importlib.util.find_spec(mod) else [pytest.mark.skip(reason=f"{mod} not installed")]
        out.append(pytest.param(name, marks=marks))
    return out


BACKENDS = _backends()


@pytest.fixture(autouse=True)
def _no_numerical_warnings():
    """Every test here is exact unless it asks for the warning with pytest.warns."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", NumericalWarning)
        yield


def _data(n=16, m=13, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=F64), torch.randn(m, d, generator=g, dtype=F64) + 0.7


# (kernel at scale s, kernel at scale 1, how the statistic scales with s)
CASES = {
    "rbf_median": (lambda s: km.RBF("median"), lambda: km.RBF("median"), 0),
    "rbf": (lambda s: km.RBF(2.0 * s), lambda: km.RBF(2.0), 0),
    "mix_rbf": (lambda s: km.MixRBF([s, 3.0 * s]), lambda: km.MixRBF([1.0, 3.0]), 0),
    "laplacian": (lambda s: km.Laplacian(1.5 * s), lambda: km.Laplacian(1.5), 0),
    "energy": (lambda s: km.Energy(), lambda: km.Energy(), 1),
}


def _ref_value_grad(fn, x0, y0, kref, power, s):
    """float64 statistic and its x-gradient on the unscaled data, mapped to scale s."""
    xr = x0.clone().requires_grad_(True)
    v = fn(xr, y0, kref)
    (g,) = torch.autograd.grad(v, xr)
    return v.detach() * s**power, g * s ** (power - 1)


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [1e20, 1e-20])
@pytest.mark.parametrize("case", list(CASES))
def test_mmd2_unbiased_extremes(backend, scale, case):
    if backend in ("keops", "triton") and case not in ("rbf_median", "energy"):
        pytest.skip("keops / triton: two kernels (the rest share the promotion code path)")
    kf, kref, power = CASES[case]
    x0, y0 = _data()
    x, y = (x0 * scale).float(), (y0 * scale).float()
    fn = lambda a, b, k: km.mmd2_unbiased(a, b, k, backend=backend)  # noqa: E731
    ref, ref_g = _ref_value_grad(lambda a, b, k: km.mmd2_unbiased(a, b, k, backend="torch"), x0, y0, kref(), power,
                                 scale)
    xr = x.clone().requires_grad_(True)
    v = fn(xr, y, kf(scale))
    (g,) = torch.autograd.grad(v, xr)
    assert v.dtype == F32 and g.dtype == F32
    assert _rel(v, ref) < 1e-5
    assert _rel(g, ref_g) < 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_witness_and_grad_extremes(backend):
    x0, y0 = _data()
    t0 = x0[:5] + 0.1
    for scale in (1e20, 1e-20):
        x, y, t = (x0 * scale).float(), (y0 * scale).float(), (t0 * scale).float()
        w = km.witness(x, y, t, km.RBF(2.0 * scale), backend=backend)
        wg = km.witness_grad(x, y, t, km.RBF(2.0 * scale), backend=backend)
        assert w.dtype == F32 and wg.dtype == F32
        assert _rel(w, km.witness(x0, y0, t0, km.RBF(2.0), backend="torch")) < 1e-5
        assert _rel(wg, km.witness_grad(x0, y0, t0, km.RBF(2.0), backend="torch") / scale) < 1e-4


@pytest.mark.parametrize("backend", ["torch", "tiled"])
@pytest.mark.parametrize("scale", [1e20, 1e-20])
def test_other_estimators_extremes(backend, scale):
    x0, y0 = _data(16, 16)
    x, y = (x0 * scale).float(), (y0 * scale).float()
    k, k1 = km.RBF(2.0 * scale), km.RBF(2.0)
    pairs = [
        (km.mmd2_biased(x, y, k, backend=backend), km.mmd2_biased(x0, y0, k1)),
        (km.mmd2_block(x, y, k, block_size=8, backend=backend), km.mmd2_block(x0, y0, k1, block_size=8)),
        (km.mmd2_linear(x, y, k), km.mmd2_linear(x0, y0, k1)),
        (torch.stack(km.kernel_means(x, y, k, backend=backend)), torch.stack(km.kernel_means(x0, y0, k1))),
        (torch.stack(km.mmd2_and_variance(x, y, k, backend=backend)), torch.stack(km.mmd2_and_variance(x0, y0, k1))),
        (km.kernel_matrix(x, y, k), km.kernel_matrix(x0, y0, k1)),
    ]
    for got, ref in pairs:
        assert got.dtype == F32
        assert _rel(got, ref) < 1e-5


def test_mixed_offset_small_spread():
    """A huge offset with a small spread: 1e20 + N(0, 1e15²); exact for the float32 values as given."""
    x0, y0 = _data()
    x, y = (x0 * 1e15 + 1e20).float(), (y0 * 1e15 + 1e20).float()
    xs, ys = (x.double() - 1e20) / 1e15, (y.double() - 1e20) / 1e15  # exactly the given values, rescaled
    for backend in ("torch", "tiled"):
        v = km.mmd2_unbiased(x, y, km.RBF(2e15), backend=backend)
        assert v.dtype == F32 and _rel(v, km.mmd2_unbiased(xs, ys, km.RBF(2.0))) < 1e-5
        v = km.mmd2_unbiased(x, y, "energy", backend=backend)
        assert _rel(v, km.mmd2_unbiased(xs, ys, "energy") * 1e15) < 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_tiny_and_huge_bandwidth(backend):
    """σ = 1e-20: K = I for distinct points (c = −1/(2σ²) overflows float32; 0·inf at t = 0 was NaN), but even
    float64 cannot resolve squared distances at the scale 2σ² = 2e-40 (points coinciding across sets got k = 0:
    kernel_matrix(x, x.clone()) had a zero diagonal), so every call warns. σ = 1e20: MMD² ≈ 0, no warning."""
    x, y = (t.float() for t in _data())
    n, m = x.shape[0], y.shape[0]
    xr = x.clone().requires_grad_(True)
    tiny = pytest.warns(NumericalWarning, match=r"RBF\(sigma=1e-20\).*bandwidth is too small")
    with tiny:
        v = km.mmd2_unbiased(xr, y, sigma=1e-20, backend=backend)
    (g,) = torch.autograd.grad(v, xr)
    assert float(v) == 0.0 and bool((g == 0).all())
    with tiny:
        vb = km.mmd2_biased(x, y, sigma=1e-20, backend=backend)
    assert abs(float(vb) - (1 / n + 1 / m)) < 1e-6
    with tiny:
        km.witness(x, y, x[:4], sigma=1e-20, backend=backend)
    assert float(km.mmd2_unbiased(x, y, sigma=1e20, backend=backend)).__abs__() < 1e-30
    if backend == "torch":
        with tiny:
            assert torch.equal(km.kernel_matrix(x, kernel="rbf", sigma=1e-20), torch.eye(n))
        with tiny:
            res = km.mmd_test(x, y, sigma=1e-20, n_permutations=19, seed=0)
        assert res.statistic == 0.0


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_mmd_test_and_kid_extremes(backend):
    x0, y0 = _data(24, 24)
    x, y = (x0 * 1e20).float(), (y0 * 1e20).float()
    res = km.mmd_test(x, y, sigma=2e20, n_permutations=49, seed=0, backend=backend)
    ref = km.mmd_test(x0, y0, sigma=2.0, n_permutations=49, seed=0)
    assert abs(res.statistic - ref.statistic) < 1e-6 * abs(ref.statistic) and res.p_value == ref.p_value
    # KID's cubic kernel is not scale invariant: the reference is the same float32 data in float64 (exact there)
    xk, yk = (x0.abs() * 1e15).float(), (y0.abs() * 1e15).float()
    got = km.kid(xk, yk, subsets=None, backend=backend)
    want = km.kid(xk.double(), yk.double(), subsets=None, backend="torch")
    assert abs(got.mean - want.mean) <= 1e-6 * abs(want.mean)


def test_sigma_small_gradients_tiny_data():
    """Data 1e-20, σ = median: gradients of order 1e20 in float32."""
    x0, y0 = _data()
    xr = (x0 * 1e-20).float().requires_grad_(True)
    v = km.mmd2_unbiased(xr, (y0 * 1e-20).float(), sigma="median")
    (g,) = torch.autograd.grad(v, xr)
    ref, ref_g = _ref_value_grad(lambda a, b, k: km.mmd2_unbiased(a, b, k), x0, y0, km.RBF("median"), 0, 1e-20)
    assert _rel(v, ref) < 1e-5 and _rel(g, ref_g) < 1e-4


def test_blocks_smmd_gcmmd_extremes():
    """Derivative blocks / SMMD / GCMMD need g'' too: σ = 2e-15 (c² overflows float32) is computed in float64."""
    s = 1e-15
    z0 = _data(6, 2)[0]
    z = (z0 * s).float()
    K, G, H = km.derivative_blocks(z, "rbf", sigma=2 * s)
    K1, G1, H1 = km.derivative_blocks(z0, "rbf", sigma=2.0)
    assert K.dtype == F32 and _rel(K, K1) < 1e-5 and _rel(G, G1 / s) < 1e-5 and _rel(H, H1 / s**2) < 1e-5
    u0, u1 = torch.randn(6, dtype=F32), torch.randn(6, 3, dtype=F32)
    top, bottom = km.a_matvec(z, u0, u1, "rbf", sigma=2 * s, backend="torch")
    rt, rb = km.a_matvec(z0, u0.double(), u1.double() / s, "rbf", sigma=2.0, backend="torch")
    assert _rel(top, rt) < 1e-5 and _rel(bottom, rb / s) < 1e-5
    x0, y0 = _data(12, 12)
    x, y = (x0 * s).float(), (y0 * s).float()
    for fn in (
        lambda a, b: km.smmd2(a, b, "rbf", sigma=2 * s),
        lambda a, b: km.gcmmd2(a, b, kernel="rbf", sigma=2 * s),
    ):
        got, want = fn(x, y), fn(x.double(), y.double())
        assert got.dtype == F32 and torch.isfinite(got) and _rel(got, want) < 1e-5


def test_deep_kernel_and_loss_extremes():
    """Feature maps with outputs of 1e20 / 1e-20: witness_grad (deep), smmd_loss."""
    x0, y0 = (t.float() for t in _data(10, 10, d=4))
    lin = torch.nn.Linear(4, 2).double().float()
    for s in (1e20, 1e-20):
        deep = km.DeepKernel(lambda a, s=s: lin(a) * s, km.RBF(1.5 * s))
        got = km.witness_grad(x0, y0, x0[:3], deep)
        want = km.witness_grad(x0, y0, x0[:3], km.DeepKernel(lin, km.RBF(1.5)))
        assert got.dtype == F32 and _rel(got, want.double()) < 1e-4
    crit = torch.nn.Linear(4, 1)
    loss = km.smmd_loss(lambda a: crit(a) * 1e-20, x0, y0, sigma=1e-20, scale=0.0)
    ref = km.smmd_loss(crit, x0, y0, sigma=1.0, scale=0.0)
    (gw,) = torch.autograd.grad(loss, crit.weight)
    assert loss.dtype == F32 and _rel(loss, ref.double()) < 1e-5 and bool(torch.isfinite(gw).all())


# ------------------------------------------------------------------------------------------------ warnings
def test_float64_overflow_warns_once():
    x0, y0 = _data()
    with pytest.warns(NumericalWarning, match=r"inputs of magnitude \d\.\de\+200 \(d = 3\): squared distances") as rec:
        km.mmd2_unbiased(x0 * 1e200, y0 * 1e200, sigma=1.0)
    assert sum(issubclass(r.category, NumericalWarning) for r in rec) == 1
    with pytest.warns(NumericalWarning, match=r"RBF\(sigma=1e-200\)"):
        km.mmd2_unbiased(x0, y0, sigma=1e-200)


@pytest.mark.parametrize("kernel", ["linear", "poly"])
def test_result_overflowing_float32_warns(kernel):
    """Linear / cubic MMD² of data 1e20 is ~1e40 / 1e120: computed in float64, it does not fit float32."""
    x0, y0 = _data()
    with pytest.warns(NumericalWarning, match="does not fit float32.*pass float64 inputs"):
        v = km.mmd2_unbiased((x0 * 1e20).float(), (y0 * 1e20).float(), kernel)
    assert torch.isinf(v)
    v64 = km.mmd2_unbiased(x0 * 1e20, y0 * 1e20, kernel)  # float64 inputs: exact, no warning
    assert torch.isfinite(v64)


def test_kernel_profiles_never_nan():
    for dt, s in ((F32, 1e-20), (F64, 1e-20), (F64, 1e-200), (F32, 1e20)):
        t = torch.tensor([0.0, 1e-30, 1.0, 1e30], dtype=dt)
        for k in (km.RBF(s), km.MixRBF([s, 1.0]), km.RBFBounded(s), km.RBF(torch.tensor(s, dtype=dt))):
            vals = k.profiles(t, (0, 1, 2, 3))
            assert all(not bool(torch.isnan(v).any()) for v in vals), (k, dt)
            assert float(vals[0][0]) == (2.0 if isinstance(k, km.MixRBF) else 1.0)
            if not isinstance(k, km.RBFBounded):
                assert not bool(torch.isnan(torch.stack(k.param_grads(t))).any())
    with pytest.warns(NumericalWarning, match="derivative of order 1 overflow float64"):  # g'(0) = −5e399
        k = km.kernel_matrix(torch.randn(5, 2, dtype=F64), sigma=1e-200)
    assert torch.equal(k, torch.eye(5, dtype=F64))


# ------------------------------------------------------------------------------------------------ normal range
def test_normal_range_stays_float32_and_unchanged():
    """Typical float32 data (N(0, 1), MNIST-like pixels, Inception-like features) is not promoted, warns nothing,
    and gives bitwise the result of the float32 block statistics."""
    g = torch.Generator().manual_seed(1)
    sets = [
        (torch.randn(40, 16, generator=g), torch.randn(40, 16, generator=g), km.RBF("median")),
        (torch.rand(30, 784, generator=g), torch.rand(30, 784, generator=g), km.MixRBF([1.0, 4.0, 16.0])),
        (torch.rand(20, 2048, generator=g) * 8, torch.rand(20, 2048, generator=g) * 8, km.Poly(3)),
        (torch.randn(50, 1, generator=g) * 1e-3, torch.randn(50, 1, generator=g), km.RQ(0.5)),
        (torch.randn(30, 3, generator=g) * 1e6, torch.randn(30, 3, generator=g) * 1e6, km.Laplacian("median")),
    ]
    for x, y, k in sets:
        for backend in ("torch", "tiled"):
            p = km.mmd.prepare([("x", x), ("y", y)], k, {})
            assert p.tensors[0].dtype == F32 and not p.plan.promoted
            st = km.mmd.block_stats(x, y, p.kernel, backend=backend)
            assert torch.equal(km.mmd2_unbiased(x, y, k, backend=backend), km._estimator.mmd2_u(st).float())


def test_half_inputs_give_float32():
    x, y = (t.half() for t in _data(8, 8))
    z = x.bfloat16()
    u0, u1 = torch.randn(8), torch.randn(8, 3)
    outs = [
        km.mmd2_unbiased(x, y), km.mmd2_biased(x, y), km.mmd2_linear(x, y), km.witness(x, y, x),
        km.witness_grad(x, y, x), km.kernel_matrix(x), *km.kernel_means(x, y), km.sigma2_inv("rbf", z),
        km.smmd2(x, y), km.gcmmd2(x, y, kernel="rbf"), *km.a_matvec(z, u0, u1), *km.derivative_blocks(z),
    ]
    assert all(o.dtype == F32 for o in outs), [o.dtype for o in outs]


def test_plan_rule():
    x = torch.zeros(4, 3)
    k = km.RBF(1.0)
    assert _range.plan((x,), k, 1.0).dtype == F32
    assert _range.plan((x,), km.RBF(1e19), 1e19).dtype == F64  # 4·3·1e38·16 overflows float32
    assert _range.plan((x,), k, 1e-19).dtype == F64  # 3e-38 < tiny·2²⁴: subnormal distances
    with pytest.warns(NumericalWarning, match="bandwidth is too small"):  # float64 cannot resolve t ~ 2σ² either
        assert _range.plan((x,), km.RBF(1e-19), 1.0).dtype == F64  # c² overflows? g' = c = 5e37 · 16 > max
    # 2·eps32·S = 7e-7 vs 2σ² = 2e-6: float32 cannot resolve distances at the kernel's scale (a witness at the
    # samples was 21% off on the tiled backend), float64 can
    assert _range.plan((x,), km.RBF(1e-3), 1.0).dtype == F64
    assert _range.plan((x,), km.RBF(1e-1), 1.0).dtype == F32
    assert _range.plan((x.double(),), km.RBF(1e19), 1e19).dtype == F64


# ------------------------------------------------------------------------------------------------ QA regressions
def test_bandwidth_below_the_distance_resolution_is_promoted_or_warned():
    """Points coinciding across sets have t = 0 only up to the expansion's rounding, ~eps·S: σ = 1e-3 on unit float32
    data gave a witness at the samples 21% off on the tiled backend (computed in float64 now, exact); σ = 1e-20 gave
    kernel_matrix(x, x.clone()) a zero diagonal and a wrong MMD²(x, x.clone()) in float64 too (now warned)."""
    x, y = (t.float() for t in _data(8, 8, seed=3))
    for backend in ("torch", "tiled"):
        w = km.witness(x, y, x, sigma=1e-3, backend=backend)
        assert w.dtype == F32 and torch.allclose(w, torch.full((8,), 1 / 8)), (backend, w)
        assert torch.equal(km.kernel_matrix(x, x.clone(), sigma=1e-3, backend=backend), torch.eye(8))
        for xx in (x, x.double()):
            with pytest.warns(NumericalWarning, match=r"RBF\(sigma=1e-20\).*bandwidth is too small"):
                km.kernel_matrix(xx, xx.clone(), sigma=1e-20, backend=backend)
        with pytest.warns(NumericalWarning, match=r"magnitude .*e\+20.*RQ\(alpha=1.0\).*bandwidth is too small"):
            km.witness(x.double() * 1e20, y.double() * 1e20, x.double() * 1e20, "rq", alpha=1.0, backend=backend)


def test_half_precision_critics_give_float32():
    """A half-precision feature map / critic: witness_grad (deep) and jacobian_sqnorm returned float16/bfloat16."""
    for dt in (torch.float16, torch.bfloat16):
        lin = torch.nn.Linear(3, 2).to(dt)
        x, y = (t.to(dt) for t in _data(6, 6))
        deep = km.DeepKernel(lin, "rbf", sigma=1.0)
        assert km.witness_grad(x, y, x[:2], deep).dtype == F32
        assert km.jacobian_sqnorm(lin, x).dtype == F32
