"""Triton block statistics (kernelmmd.ops.triton.block_stats) against the dense float64 reference, on the kernel
cases of the shared table (tests/_cases.py), with the shared backend suite's close-pair check. See
docs/ARCHITECTURE.md, "Tests".

Without CUDA the kernels run through the Triton interpreter on CPU tensors (conftest sets TRITON_INTERPRET=1), with
16-wide tiles so that small shapes still cover several tiles, partial tiles, the triangular schedule and the
column split. GPU tests at the bottom run the compiled kernels and skip cleanly without CUDA.
"""

import importlib

import pytest
import torch

pytest.importorskip("triton")

import kernelmmd as km  # noqa: E402
from kernelmmd.ops import reference as ref  # noqa: E402

from ._cases import KINDS, NO_PARAMS, case  # noqa: E402
from .backend_suite import BlockStatsSuite, grid, tensor_params  # noqa: E402

bs = importlib.import_module("kernelmmd.ops.triton.block_stats")  # the module (the package re-exports the function)

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
SMALL = bs.LaunchConfig(block_m=16, block_n=16, block_k=16, block_d=16, chunk_d=16, split=1)
FIELDS = ("sxx", "syy", "sxy", "dxx", "dyy", "rxx", "ryy", "rxy", "cxy", "qxx", "qyy", "qxy")

# the kernel cases of the shared table, and the bounded RBF with the repulsive bounds (upper in K_XX)
NAMES = [*KINDS, "rbf_bounded_rep"]


@pytest.fixture(autouse=True)
def small_tiles(monkeypatch):
    if not CUDA:
        monkeypatch.setattr(bs, "launch_config", lambda *a, **k: SMALL)


def _data(n, m, d, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = 0.8 / d**0.5  # t = ‖a − b‖² of order 1 whatever d
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * s
    y = torch.randn(m, d, generator=g, dtype=torch.float64) * s + 0.3 / d**0.5
    return x.to(DEVICE, dtype), y.to(DEVICE, dtype)


def _scales(x, y, k):
    """Scale of each statistic: the same sum over |k| (errors are judged relative to it)."""
    x, y = x.double(), y.double()
    a = {b: k.matrix(u, v, b).abs() for b, u, v in (("xx", x, x), ("yy", y, y), ("xy", x, y))}
    return {
        "sxx": a["xx"].sum(), "syy": a["yy"].sum(), "sxy": a["xy"].sum(),
        "dxx": a["xx"].diagonal().sum(), "dyy": a["yy"].diagonal().sum(),
        "rxx": a["xx"].sum(1).max(), "ryy": a["yy"].sum(1).max(), "rxy": a["xy"].sum(1).max(),
        "cxy": a["xy"].sum(0).max(), "qxx": (a["xx"] ** 2).sum(), "qyy": (a["yy"] ** 2).sum(),
        "qxy": (a["xy"] ** 2).sum(),
    }


def _assert_stats(st, want, scales, rtol, fields=FIELDS):
    for f in fields:
        got, exp = getattr(st, f), getattr(want, f)
        assert got.dtype == torch.float64, f
        assert got.shape == exp.shape, f
        err = float((got - exp).detach().abs().max())
        assert err <= rtol * float(scales[f]) + 1e-300, f"{f}: error {err:.3g} vs scale {float(scales[f]):.3g}"


# ---------------------------------------------------------------------------------------------------------------
# forward
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n,m,d", [(37, 29, 3), (33, 18, 21), (1, 6, 2)], ids=["direct", "dot", "n1"])
def test_forward_float32_matches_reference(name, n, m, d):
    k = case(name).kernel()
    x, y = _data(n, m, d, torch.float32)
    st = bs.block_stats(x, y, k, variance=True)
    want = ref.block_stats(x.double(), y.double(), k, variance=True)
    _assert_stats(st, want, _scales(x, y, k), 1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_forward_float64_matches_reference(name):
    k = case(name).kernel()
    x, y = _data(21, 34, 19)
    st = bs.block_stats(x, y, k, variance=True)
    _assert_stats(st, ref.block_stats(x, y, k, variance=True), _scales(x, y, k), 1e-13)


@pytest.mark.parametrize("name", ["rbf", "rbf_bounded", "energy", "poly"])
def test_triangular_schedule_without_variance(name):
    """variance=False visits only tiles on and above the diagonal of K_XX / K_YY; the sums must not change."""
    k = case(name).kernel()
    x, y = _data(50, 35, 4)
    st = bs.block_stats(x, y, k)
    assert st.rxx is None and st.qxy is None and st.cxy is None
    want = ref.block_stats(x, y, k)
    _assert_stats(st, want, _scales(x, y, k), 1e-13, fields=("sxx", "syy", "sxy", "dxx", "dyy"))


@pytest.mark.parametrize("name", ["rbf", "energy", "poly"])
def test_large_dimension(name, monkeypatch):
    """d = 3000 with a few points: many K chunks and several output column chunks in the backward."""
    if not CUDA:
        monkeypatch.setattr(bs, "launch_config", lambda *a, **k: bs.LaunchConfig(16, 16, 64, 64, 1024, split=1))
    k = case(name).kernel()
    x, y = _data(5, 4, 3000, torch.float32)
    xr, yr = x.double().requires_grad_(), y.double().requires_grad_()
    x, y = x.requires_grad_(), y.requires_grad_()
    st = bs.block_stats(x, y, k, variance=True)
    want = ref.block_stats(xr, yr, k, variance=True)
    _assert_stats(st, want, _scales(x.detach(), y.detach(), k), 1e-6)
    loss = lambda s: s.sxx - 2 * s.sxy + s.syy + 0.1 * s.qxy + (s.rxx * s.rxx).sum()  # noqa: E731
    gx, gy = torch.autograd.grad(loss(st), (x, y))
    ex, ey = torch.autograd.grad(loss(want), (xr, yr))
    for g, e in ((gx, ex), (gy, ey)):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g.double(), e, rtol=0, atol=2e-5 * float(e.abs().max()))


@pytest.mark.parametrize("cfg,d", [(bs.LaunchConfig(16, 16, 16, 16, 16, split=3), 5),
                                   (bs.LaunchConfig(16, 32, 16, 16, 16, split=2), 21)], ids=["reg-acc", "mem-acc"])
def test_column_split(cfg, d, monkeypatch):
    """Programs sweeping only part of the column tiles (split > 1) write partials that reduce to the same result."""
    monkeypatch.setattr(bs, "launch_config", lambda *a, **kw: cfg)
    k = km.RBF(0.9)
    x, y = _data(40, 70, d)
    want = ref.block_stats(x, y, k, variance=True)
    _assert_stats(bs.block_stats(x, y, k, variance=True), want, _scales(x, y, k), 1e-13)
    _assert_stats(bs.block_stats(x, y, k), want, _scales(x, y, k), 1e-13, fields=("sxx", "syy", "sxy"))
    loss = _combination(40, 70)
    for got, exp in zip(_grads(bs, "rq", x, y, loss), _grads(ref, "rq", x, y, loss)):
        torch.testing.assert_close(got, exp, rtol=1e-10, atol=1e-10 * float(exp.abs().max()))


@pytest.mark.parametrize("name", ["rbf", "energy", "laplacian"])
def test_far_from_origin(name):
    """Data far from the origin: t is formed on centred points (the energy kernel's norm terms on the raw ones)."""
    x, y = _data(30, 25, 20)
    x, y = (x + 40.0).float(), (y + 40.0).float()
    k = case(name).kernel()
    xg, yg = x.clone().requires_grad_(), y.clone().requires_grad_()
    xr, yr = x.double().requires_grad_(), y.double().requires_grad_()
    st, want = bs.block_stats(xg, yg, k, variance=True), ref.block_stats(xr, yr, k, variance=True)
    _assert_stats(st, want, _scales(x, y, k), 1e-6)
    g = torch.autograd.grad(st.sxx / 870 + st.syy / 600 - 2 * st.sxy / 750, (xg, yg))
    e = torch.autograd.grad(want.sxx / 870 + want.syy / 600 - 2 * want.sxy / 750, (xr, yr))
    for a, b in zip(g, e):
        torch.testing.assert_close(a.double(), b, rtol=0, atol=2e-5 * float(b.abs().max()))


def test_half_precision_inputs_are_computed_in_float32():
    x, y = _data(20, 17, 6, torch.float16)
    x.requires_grad_()
    k = km.RBF(1.0)
    st = bs.block_stats(x, y, k, variance=True)
    want = ref.block_stats(x.detach().double(), y.double(), k, variance=True)
    _assert_stats(st, want, _scales(x.detach(), y, k), 1e-6)
    (gx,) = torch.autograd.grad(st.sxy, x)
    assert gx.dtype == torch.float16


def test_deterministic():
    x, y = _data(30, 30, 9, torch.float32)
    a = bs.block_stats(x, y, km.MixRBF([0.5, 2.0]), variance=True)
    b = bs.block_stats(x, y, km.MixRBF([0.5, 2.0]), variance=True)
    for f in FIELDS:
        assert torch.equal(getattr(a, f), getattr(b, f)), f


def test_coincident_points_direct_path():
    """Duplicated points (d ≤ 8: exact differences) give t = 0 exactly: laplacian/energy use the zero subgradient."""
    x, y = _data(12, 10, 3)
    x = torch.cat([x, x[:3], torch.zeros(1, 3, dtype=x.dtype, device=x.device)])
    y = torch.cat([y, x[:2]])
    for k in (km.Laplacian(0.8), km.Energy()):
        xa, ya = x.clone().requires_grad_(), y.clone().requires_grad_()
        xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
        st, want = bs.block_stats(xa, ya, k, variance=True), ref.block_stats(xr, yr, k, variance=True)
        _assert_stats(st, want, _scales(x, y, k), 1e-13)
        g = torch.autograd.grad(st.sxx + st.syy - 2 * st.sxy, (xa, ya))
        e = torch.autograd.grad(want.sxx + want.syy - 2 * want.sxy, (xr, yr))
        for a, b in zip(g, e):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


class TestTritonBlockStats(BlockStatsSuite):
    """The shared block_stats check on the √t kernels' close pairs: points within 1e-5 of each other far from the
    origin (d = 20, the tl.dot path) whose t and gradient shares are re-formed from exact differences (before: 4e-6
    relative errors in float32 sums, 1e-1 in float32 gradients, 1e-5 in float64 gradients), with and without the
    variance statistics."""

    ops = bs
    block_stats_cases = grid(kind=["laplacian", "energy"], shape=(24, 17, 20), dtype=[torch.float32, torch.float64],
                             variance=[False, True], close=True)


# ---------------------------------------------------------------------------------------------------------------
# backward
# ---------------------------------------------------------------------------------------------------------------


def _combination(n, m, seed=1):
    g = torch.Generator().manual_seed(seed)
    w = {f: torch.randn((), generator=g, dtype=torch.float64) for f in ("sxx", "syy", "sxy", "dxx", "dyy", "qxx",
                                                                        "qyy", "qxy")}
    w.update(rxx=torch.randn(n, generator=g, dtype=torch.float64), ryy=torch.randn(m, generator=g, dtype=torch.float64),
             rxy=torch.randn(n, generator=g, dtype=torch.float64), cxy=torch.randn(m, generator=g, dtype=torch.float64))
    w = {f: v.to(DEVICE) for f, v in w.items()}
    return lambda st: sum((w[f] * getattr(st, f)).sum() for f in FIELDS)


def _grads(backend, name, x0, y0, loss):
    """Gradients in x, y and each tensor parameter of the kernel."""
    x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
    k = case(name).kernel(tensor_params=True)
    st = backend.block_stats(x, y, k, variance=True)
    return torch.autograd.grad(loss(st), (x, y, *tensor_params(k)), allow_unused=True)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n,m,d", [(23, 18, 3), (20, 31, 18)], ids=["direct", "dot"])
def test_gradients_float64_match_reference(name, n, m, d):
    """∇ of a random combination of every statistic in x, y and the kernel parameters."""
    x, y = _data(n, m, d)
    loss = _combination(n, m)
    got, want = _grads(bs, name, x, y, loss), _grads(ref, name, x, y, loss)
    assert len(got) == len(want) == 2 + len(case(name).kernel(tensor_params=True).scalar_params())
    if name in NO_PARAMS:
        assert len(got) == 2
    for g, e, what in zip(got, want, ("x", "y", "param0", "param1")):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10 * float(e.abs().max()), msg=what)


@pytest.mark.parametrize("name", ["rbf", "mix_rq", "energy", "poly", "rbf_bounded"])
def test_gradients_float32_match_float64_reference(name):
    x, y = _data(29, 26, 12)
    loss = _combination(29, 26)
    k = case(name).kernel(tensor_params=True)
    x32, y32 = x.float().requires_grad_(), y.float().requires_grad_()
    st = bs.block_stats(x32, y32, k, variance=True)
    got = torch.autograd.grad(loss(st), (x32, y32, *tensor_params(k)), allow_unused=True)
    want = _grads(ref, name, x, y, loss)
    for g, e in zip(got, want):
        if e is None:
            continue
        torch.testing.assert_close(g.double(), e, rtol=0, atol=2e-5 * float(e.abs().max()))


def test_gradients_only_where_needed():
    """Only y needs a gradient; the statistics used are a subset (unused outputs reach backward as None)."""
    x, y = _data(19, 22, 5)
    y.requires_grad_()
    k = km.RQ(0.8)
    st = bs.block_stats(x, y, k, variance=True)
    (gy,) = torch.autograd.grad(st.sxy + st.cxy[3], y)
    yr = y.detach().clone().requires_grad_()
    w = ref.block_stats(x, yr, k, variance=True)
    (ey,) = torch.autograd.grad(w.sxy + w.cxy[3], yr)
    torch.testing.assert_close(gy, ey, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["rbf", "mix_rq", "rbf_bounded_rep", "energy", "poly"])
def test_gradcheck_same_block(name):
    """gradcheck of the within-sample Function (one launch per evaluation): S, weighted row sums and Q."""
    a, _ = _data(5, 1, 2, seed=3)
    a.requires_grad_()
    k = case(name).kernel(tensor_params=True)  # its parameters are perturbed in place by gradcheck
    w = torch.linspace(-1, 1, 5, dtype=torch.float64, device=DEVICE)

    def f(a, *ps):
        s, r, q = bs.same_block_stats(a, k, "yy", rows=True)
        return torch.stack([s, (w * r).sum(), q])

    assert torch.autograd.gradcheck(f, (a, *tensor_params(k)), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("name", ["rbf", "rq", "rbf_bounded", "laplacian", "linear"])
def test_gradcheck_cross_block(name):
    """gradcheck of the cross-block Function: S, weighted row and column sums and Q in a, b and the parameter."""
    a, b = _data(4, 3, 2, seed=4)
    a.requires_grad_()
    b.requires_grad_()
    k = case(name).kernel(tensor_params=True)  # its parameters are perturbed in place by gradcheck
    wr = torch.tensor([0.3, -1.0, 0.5, 2.0], dtype=torch.float64, device=DEVICE)
    wc = torch.tensor([1.0, -0.7, 0.2], dtype=torch.float64, device=DEVICE)

    def f(a, b, *ps):
        s, r, c, q = bs.cross_block_stats(a, b, k, rows=True)
        return torch.stack([s, (wr * r).sum() + (wc * c).sum(), q])

    assert torch.autograd.gradcheck(f, (a, b, *tensor_params(k)), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_double_backward_raises():
    """create_graph=True gives a gradient that refuses to be differentiated (never a silent constant)."""
    x, y = _data(8, 7, 3)
    x.requires_grad_()
    p = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    st = bs.block_stats(x, y, km.RBF(p))
    loss = st.sxx - 2 * st.sxy
    gx, gp = torch.autograd.grad(loss, (x, p), create_graph=True)
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(gx.sum(), x)
    with pytest.raises(RuntimeError, match="differentiable once"):
        (loss + gp * gp).backward()
    # without create_graph the gradient is a plain tensor
    (g2,) = torch.autograd.grad(bs.block_stats(x, y, km.RBF(1.0)).sxx, x)
    assert not g2.requires_grad


# ---------------------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(CUDA, reason="CPU tensors are rejected only when they cannot run")
def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x, y = _data(4, 4, 2)
    with pytest.raises(ValueError, match="x must be a CUDA tensor for the triton backend"):
        bs.block_stats(x, y, km.RBF(1.0))


def test_errors():
    x, y = _data(4, 5, 2)
    k = km.RBF(1.0)
    with pytest.raises(ValueError, match="precision must be one of"):
        bs.block_stats(x.float(), y.float(), k, precision="fp16")
    with pytest.raises(ValueError, match="precision='tf32' applies to float32 inputs"):
        bs.block_stats(x, y, k, precision="tf32")
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        bs.block_stats(x.long(), y.long(), k)
    with pytest.raises(ValueError, match=r"x must have shape \(n, d\)"):
        bs.block_stats(x[None], y, k)
    with pytest.raises(ValueError, match="y has 3 features but x has 2"):
        bs.block_stats(x, torch.zeros(5, 3, dtype=x.dtype, device=x.device), k)
    with pytest.raises(TypeError, match="y has dtype torch.float32 but x has torch.float64"):
        bs.block_stats(x, y.float(), k)
    with pytest.raises(TypeError, match="radial and dot-product kernels"):
        bs.block_stats(x, y, km.DeepKernel(torch.nn.Identity(), "rbf"))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        bs.block_stats(x.cpu().numpy(), y, k)


# ---------------------------------------------------------------------------------------------------------------
# GPU (compiled kernels)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not CUDA, reason="needs CUDA (compiled Triton kernels)")
@pytest.mark.parametrize("name", ["rbf", "mix_rq", "rbf_bounded", "laplacian", "energy", "poly"])
@pytest.mark.parametrize("n,m,d", [(1000, 777, 2), (513, 1030, 64), (300, 200, 784)])
def test_gpu_compiled_matches_reference(name, n, m, d):
    torch.backends.cuda.matmul.allow_tf32 = False
    x, y = _data(n, m, d, torch.float32)
    k = case(name).kernel()
    _assert_stats(bs.block_stats(x, y, k, variance=True), ref.block_stats(x.double(), y.double(), k, variance=True),
                  _scales(x, y, k), 1e-6)
    xg, yg = x.clone().requires_grad_(), y.clone().requires_grad_()
    xr, yr = x.double().requires_grad_(), y.double().requires_grad_()
    loss = lambda s: s.sxx / n**2 + s.syy / m**2 - 2 * s.sxy / (n * m) + (s.rxx * s.rxx).sum() / n**3  # noqa: E731
    g = torch.autograd.grad(loss(bs.block_stats(xg, yg, k, variance=True)), (xg, yg))
    e = torch.autograd.grad(loss(ref.block_stats(xr, yr, k, variance=True)), (xr, yr))
    for a, b in zip(g, e):
        torch.testing.assert_close(a.double(), b, rtol=0, atol=1e-5 * float(b.abs().max()))


@pytest.mark.skipif(not CUDA, reason="needs CUDA (tensor-core precision modes)")
@pytest.mark.parametrize("precision,rtol", [("tf32x3", 1e-5), ("tf32", 1e-2)])
def test_gpu_tensor_core_precision(precision, rtol):
    x, y = _data(700, 600, 128, torch.float32)
    k = km.RBF(1.0)
    st = bs.block_stats(x, y, k, variance=True, precision=precision)
    _assert_stats(st, ref.block_stats(x.double(), y.double(), k, variance=True), _scales(x, y, k), rtol)



# ---------------------------------------------------------------------------------------------------------------
# through the estimators (dispatch and the precision keyword)
# ---------------------------------------------------------------------------------------------------------------


def test_estimators_on_the_triton_backend():
    x, y = _data(24, 24, 3, torch.float32)
    for fn in (km.mmd2_unbiased, km.mmd2_biased):
        got, want = fn(x, y, "rbf", sigma=0.7, backend="triton"), fn(x.double(), y.double(), "rbf", sigma=0.7,
                                                                     backend="torch")
        assert abs(float(got) - float(want)) <= 1e-6
    mv, var = km.mmd2_and_variance(x, y, "rq", alpha=0.5, backend="triton")
    ev, evar = km.mmd2_and_variance(x.double(), y.double(), "rq", alpha=0.5, backend="torch")
    assert abs(float(mv) - float(ev)) <= 1e-6 and abs(float(var) - float(evar)) <= 1e-6 * abs(float(evar)) + 1e-9
    # the tensor-core modes are passed through (the interpreter computes them in fp32)
    got = km.mmd2_unbiased(x, y, "rbf", sigma=0.7, backend="triton", precision="tf32x3")
    assert abs(float(got) - float(km.mmd2_unbiased(x.double(), y.double(), "rbf", sigma=0.7))) <= 1e-6


def test_precision_keyword_errors():
    x, y = _data(6, 5, 2)
    with pytest.raises(ValueError, match="needs the triton backend"):
        km.mmd2_unbiased(x, y, backend="torch", precision="tf32")
    with pytest.raises(ValueError, match="precision must be one of"):
        km.kernel_means(x, y, precision="fp8")
