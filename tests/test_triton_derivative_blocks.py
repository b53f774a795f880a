"""Triton derivative-block products (kernelmmd.ops.triton.derivative_blocks) on the shared backend suite
(tests/backend_suite.py) plus their own tests against the dense float64 reference. See docs/ARCHITECTURE.md, "Tests".

A·u, diag(A) and columns of A for A = [[K, Gᵀ], [G, H]] (SPEC §2), their gradients in z, u0, u1 and the kernel
parameters (the z-gradient drives the GCMMD envelope gradient), and the Triton twins of the parameter derivatives of
g', g'' (h', h'') that the parameter gradients use. Without CUDA the kernels run through the Triton interpreter with
16-wide tiles and a column split of 2; GPU tests at the bottom skip cleanly without CUDA.
"""

import importlib

import pytest
import torch

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

import kernelmmd as km  # noqa: E402
from kernelmmd.ops import reference as R  # noqa: E402
from kernelmmd.ops.triton._profiles import (  # noqa: E402
    dot_param_grad_order,
    kernel_launch_args,
    radial_param_grad_order,
)

from ._cases import cases  # noqa: E402
from .backend_suite import TWICE, AMatvecSuite, AuxSuite, assert_close, grid, make_kernel, tensor_params  # noqa: E402
from .triton_setup import CUDA, DEVICE, F64, L, small_tiles  # noqa: E402, F401  (small_tiles: autouse fixture)

DB = importlib.import_module("kernelmmd.ops.triton.derivative_blocks")


def _zu(M, d, dtype=F64, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(M, d, generator=g, dtype=F64) * scale
    u0 = torch.randn(M, generator=g, dtype=F64)
    u1 = torch.randn(M, d, generator=g, dtype=F64)
    return [t.to(DEVICE, dtype) for t in (z, u0, u1)]


def _scales(z, u0, u1, k):
    """Scales of the two outputs: max over entries of the sums of |terms| (a bound on |A|·|u|, never forms A)."""
    z, u0, u1 = z.double().cpu(), u0.double().cpu().abs(), u1.double().cpu().abs()
    if isinstance(k, km.RadialKernel):
        delta = (z[:, None, :] - z[None, :, :]).abs()  # (M, M, d)
        t = R.sqdist(z, z)
        g0, g1, g2 = (k.profile(t, o).abs() for o in (0, 1, 2))
        du = (delta * u1[None]).sum(2)  # Σ_j |Δ_j| |u1_l'j|
        top = g0 @ u0 + 2 * (g1 * du).sum(1)
        bot = (2 * g1[..., None] * delta * u0[None, :, None] + 2 * g1[..., None] * u1[None]
               + 4 * (g2 * du)[..., None] * delta).sum(1)
    else:
        u = z @ z.T
        h0, h1, h2 = (k.profile(u, o).abs() for o in (0, 1, 2))
        zu = z.abs() @ u1.T  # Σ_j |z_lj| |u1_l'j|
        top = h0 @ u0 + (h1 * zu).sum(1)
        bot = (h1 * u0[None]) @ z.abs() + h1 @ u1 + (h2 * zu) @ z.abs()
    return float(top.max()), float(bot.max())


def _check_values(kind, M, d, dtype=torch.float32):
    """float64 outputs within 1e-6 (fp32) of the reference relative to the scale of the sums (|terms| summed).

    Points are drawn with ‖z_l − z_l'‖² of order 2: fp32 rounding of t alone perturbs g^(k)(t) by about
    ε·t/(2σ²) relative, so at t/(2σ²) ≫ 10 no fp32 implementation reaches 1e-6 (the inputs' conditioning)."""
    k = make_kernel(kind)
    z, u0, u1 = _zu(M, d, dtype, scale=d**-0.5)
    top, bot = DB.a_matvec(z, u0, u1, k)
    assert top.dtype == bot.dtype == F64 and top.shape == (M,) and bot.shape == (M, d)
    want_top, want_bot = R.a_matvec(z.double().cpu(), u0.double().cpu(), u1.double().cpu(), k)
    scale_top, scale_bot = _scales(z, u0, u1, k)
    rel = 1e-10 if dtype == F64 else 1e-6
    assert_close(top.cpu(), want_top, scale_top, rel, f"{kind} a_matvec top")
    assert_close(bot.cpu(), want_bot, scale_bot, rel, f"{kind} a_matvec bottom")


class _OnCuda:
    """The ops on CUDA with CPU inputs and outputs, so that the shared CPU-built checks run compiled on a GPU."""

    @staticmethod
    def a_matvec(z, u0, u1, kernel):
        return tuple(o.cpu() for o in DB.a_matvec(z.cuda(), u0.cuda(), u1.cuda(), kernel))

    @staticmethod
    def a_diag(z, kernel):
        return tuple(o.cpu() for o in DB.a_diag(z.cuda(), kernel))

    @staticmethod
    def a_column(z, index, kernel):
        return tuple(o.cpu() for o in DB.a_column(z.cuda(), index, kernel))


MOD = _OnCuda if CUDA else DB


class TestTritonDerivativeBlocks(AMatvecSuite, AuxSuite):
    """a_matvec's gradients in z (needs g'''), u0, u1 and every tensor kernel parameter against autograd through
    the reference (d = 20: several output-column chunks), a_diag and a_column, on the shared suite."""

    ops = MOD
    a_matvec_cases = (grid(kind=list(TWICE), shape=(13, 3), dtype=F64, tensor_param=True)
                      + grid(kind=["rbf", "mix_rq", "poly"], shape=(19, 20), dtype=F64, tensor_param=True))
    aux_cases = grid(kind=list(TWICE), shape=(13, 4))


# ------------------------------------------------------------------------------------------------ a_matvec values


@pytest.mark.parametrize("kind", TWICE)
def test_a_matvec_float32_matches_reference(kind):
    _check_values(kind, 21, 5)


@pytest.mark.parametrize("M,d", [(1, 1), (17, 1), (9, 2), (6, 37)])
@pytest.mark.parametrize("kind", ["rbf", "poly"])
def test_a_matvec_odd_shapes(kind, M, d):
    _check_values(kind, M, d)


@pytest.mark.parametrize("kind", ["rq", "linear"])
def test_a_matvec_large_d(kind, monkeypatch):
    """d = 3000 with small M, default interpreter tiles (several K and output-column chunks)."""
    monkeypatch.setattr(L, "TILES_OVERRIDE", None)
    _check_values(kind, 4, 3000)


def test_a_matvec_half_precision_inputs():
    k = make_kernel("rbf")
    z, u0, u1 = _zu(11, 3, torch.bfloat16)
    top, bot = DB.a_matvec(z, u0, u1, k)
    want_top, want_bot = R.a_matvec(z.double().cpu(), u0.double().cpu(), u1.double().cpu(), k)
    assert top.dtype == F64
    assert_close(top.cpu(), want_top, float(want_top.abs().max()) + 1, 1e-5, "bfloat16 top")
    assert_close(bot.cpu(), want_bot, float(want_bot.abs().max()) + 1, 1e-5, "bfloat16 bottom")


@pytest.mark.parametrize("precision", ["tf32", "tf32x3"])
def test_a_matvec_tensor_core_modes_run(precision):
    """Plumbing only: the interpreter multiplies in fp32 whatever the precision (GPU error measured elsewhere)."""
    k = make_kernel("rq")
    z, u0, u1 = _zu(13, 6, torch.float32)
    top, bot = DB.a_matvec(z, u0, u1, k, precision=precision)
    want_top, want_bot = R.a_matvec(z.double().cpu(), u0.double().cpu(), u1.double().cpu(), k)
    assert_close(bot.cpu(), want_bot, float(want_bot.abs().max()), 1e-2, precision)


# ------------------------------------------------------------------------------------------------ a_matvec gradients


@pytest.mark.parametrize("kind", ["rbf", "rq", "poly"])
def test_envelope_gradient_in_z(kind):
    """GCMMD envelope: ∂/∂z of w*ᵀ A(z) w* with w* held fixed (the same vector on both sides)."""
    k = make_kernel(kind)
    z, w0, w1 = _zu(15, 4, F64, seed=3)
    z1 = z.clone().requires_grad_()
    top, bot = DB.a_matvec(z1, w0, w1, k)
    (got,) = torch.autograd.grad((w0 * top).sum() + (w1 * bot).sum(), z1)
    z2 = z.cpu().clone().requires_grad_()
    top, bot = R.a_matvec(z2, w0.cpu(), w1.cpu(), k)
    (want,) = torch.autograd.grad((w0.cpu() * top).sum() + (w1.cpu() * bot).sum(), z2)
    assert_close(got.cpu(), want, float(want.abs().max()), 1e-10, f"{kind} envelope d/dz")


def test_a_matvec_float32_z_gradient():
    k = make_kernel("mix_rbf")
    z, u0, u1 = _zu(14, 3, torch.float32, seed=4)
    z1 = z.clone().requires_grad_()
    top, bot = DB.a_matvec(z1, u0, u1, k)
    (got,) = torch.autograd.grad((u0.double() * top).sum() + (u1.double() * bot).sum(), z1)
    assert got.dtype == torch.float32
    z2 = z.double().cpu().requires_grad_()
    top, bot = R.a_matvec(z2, u0.double().cpu(), u1.double().cpu(), k)
    (want,) = torch.autograd.grad((u0.double().cpu() * top).sum() + (u1.double().cpu() * bot).sum(), z2)
    assert_close(got.cpu(), want, float(want.abs().max()), 1e-5, "float32 d/dz")


@pytest.mark.parametrize("kind", ["rbf", "poly"])
def test_a_matvec_gradcheck(kind):
    k = make_kernel(kind, tensor_params=True)
    z, u0, u1 = (t.requires_grad_() for t in _zu(4, 2, F64, seed=1))
    ps = tensor_params(k)
    assert torch.autograd.gradcheck(lambda z, u0, u1, *p: DB.a_matvec(z, u0, u1, k), (z, u0, u1, *ps),
                                    fast_mode=True)


def test_a_matvec_double_backward():
    """The u-gradient (A·g again) is differentiable; differentiating the z-gradient again raises."""
    k = make_kernel("rbf")
    z, u0, u1 = _zu(4, 2, F64, seed=2)
    u0.requires_grad_()
    u1.requires_grad_()
    assert torch.autograd.gradgradcheck(lambda u0, u1: DB.a_matvec(z, u0, u1, k), (u0, u1), fast_mode=True)
    zg = z.clone().requires_grad_()
    top, bot = DB.a_matvec(zg, u0, u1, k)
    (gz,) = torch.autograd.grad(top.sum() + bot.sum(), zg, create_graph=True)
    with pytest.raises(RuntimeError, match="not differentiable again"):
        torch.autograd.grad(gz.sum(), zg)


# ------------------------------------------------------------------------------------------------ diag and columns


@pytest.mark.parametrize("kind", TWICE)
def test_a_column_float32_inputs(kind):
    z = _zu(7, 3, torch.float32)[0]
    k = make_kernel(kind)
    for idx in (0, 6, 7, 7 + 3 * 4 + 1):
        for a, b in zip(DB.a_column(z, idx, k), R.a_column(z.double().cpu(), idx, k)):
            assert a.dtype == F64
            assert_close(a.cpu(), b, float(b.abs().max()) + 1e-3, 1e-6, f"float32 a_column {idx}")


@pytest.mark.parametrize("kind", ["rq", "poly"])
def test_a_diag_and_column_gradients(kind):
    k = make_kernel(kind, tensor_params=True)
    ps = tensor_params(k)
    z = _zu(6, 3, F64, seed=5)[0]
    g = torch.Generator().manual_seed(6)
    wt, wb = torch.randn(6, generator=g, dtype=F64), torch.randn(6, 3, generator=g, dtype=F64)
    for fn, ref in ((DB.a_diag, R.a_diag), (lambda z, k: DB.a_column(z, 8, k), lambda z, k: R.a_column(z, 8, k)),
                    (lambda z, k: DB.a_column(z, 2, k), lambda z, k: R.a_column(z, 2, k))):
        z1 = z.clone().requires_grad_()
        t, b = fn(z1, k)
        got = torch.autograd.grad((t * wt).sum() + (b * wb).sum(), [z1, *ps], allow_unused=True)
        z2 = z.cpu().clone().requires_grad_()
        t, b = ref(z2, k)
        want = torch.autograd.grad((t * wt).sum() + (b * wb).sum(), [z2, *ps], allow_unused=True)
        for a, c in zip(got, want):
            c = torch.zeros_like(a) if c is None else c
            assert_close(a.cpu(), c, float(c.abs().max()) + 1e-3, 1e-10, f"{kind} diag/column gradient")
    z1 = z.clone().requires_grad_()
    (gz,) = torch.autograd.grad(DB.a_column(z1, 8, k)[1].sum(), z1, create_graph=True)
    with pytest.raises(RuntimeError, match="a_diag / a_column of the triton backend is not differentiable again"):
        torch.autograd.grad(gz.sum(), z1)


# ------------------------------------------------------------------------------------------------ parameter twins


@triton.jit
def _param_eval(t_ptr, o_ptr, p_ptr, N, KIND: tl.constexpr, DOT: tl.constexpr, DEGREE: tl.constexpr,
                IDX: tl.constexpr, ORDER: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    m = offs < N
    t = tl.load(t_ptr + offs, mask=m, other=0.0)
    if DOT:
        o = dot_param_grad_order(t, p_ptr, KIND, DEGREE, IDX, ORDER)
    else:
        o = radial_param_grad_order(t, p_ptr, KIND, IDX, ORDER)
    tl.store(o_ptr + offs, o, mask=m)


@pytest.mark.parametrize("kcase", cases("rbf", "mix_rbf", "rq", "mix_rq", "laplacian", "poly", "poly2", "poly1"))
def test_param_grad_order_twins(kcase):
    """∂g^(k)/∂θ (∂h^(k)/∂θ) of _profiles equal autograd through kernels.py's profile(t, k) in each parameter."""
    name, k = kcase.id, kcase.kernel(tensor_params=True)
    dot = isinstance(k, km.DotKernel)
    t = torch.cat([torch.zeros(1), torch.rand(30, generator=torch.Generator().manual_seed(0)) * 5]).double()
    t = t - 2.0 if dot else t
    kind, _, degree, p = kernel_launch_args(k, DEVICE)
    td = t.to(DEVICE)
    params = k.scalar_params()
    for order in ((0, 1) if name == "laplacian" else (0, 1, 2, 3)):
        for i, q in enumerate(params):
            want = torch.stack([torch.autograd.grad(k.profile(t[j : j + 1], order).sum(), q, allow_unused=True)[0]
                                if k.profile(t[j : j + 1], order).requires_grad else torch.zeros((), dtype=F64)
                                for j in range(len(t))]).reshape(-1)
            want = torch.nan_to_num(want, nan=0.0)
            if name == "laplacian":
                want[0] = 0.0  # t = 0: zero subgradient convention
            out = torch.empty_like(td)
            _param_eval[(1,)](td, out, p, len(t), kind, dot, degree, i, order, 32)
            torch.testing.assert_close(out.cpu(), want, rtol=1e-11, atol=1e-11)


# ------------------------------------------------------------------------------------------------ errors


def test_errors():
    z, u0, u1 = _zu(5, 2, torch.float32)
    for k in (km.Laplacian(1.0), km.Energy(), km.RBFBounded(1.0)):
        with pytest.raises(ValueError, match="needs a twice-differentiable radial or dot-product kernel"):
            DB.a_matvec(z, u0, u1, k)
    with pytest.raises(ValueError, match="a_diag needs a twice-differentiable"):
        DB.a_diag(z, km.Energy())
    k = km.RBF(1.0)
    with pytest.raises(TypeError, match="radial and dot-product kernels"):
        DB.a_matvec(z, u0, u1, km.DeepKernel(torch.nn.Identity(), "rbf"))
    with pytest.raises(ValueError, match=r"z must have shape \(M, d\)"):
        DB.a_matvec(z[0], u0, u1, k)
    with pytest.raises(TypeError, match="z must be a torch.Tensor"):
        DB.a_diag(z.tolist(), k)
    with pytest.raises(ValueError, match=r"u0 must have shape \(5,\)"):
        DB.a_matvec(z, u0[:4], u1, k)
    with pytest.raises(ValueError, match=r"u1 must have shape \(5, 2\)"):
        DB.a_matvec(z, u0, u1.T, k)
    with pytest.raises(ValueError, match=r"index must be in \[0, 15\)"):
        DB.a_column(z, 15, k)
    with pytest.raises(TypeError, match="index must be an int"):
        DB.a_column(z, 1.0, k)
    with pytest.raises(ValueError, match="precision must be one of"):
        DB.a_diag(z, k, precision="bf16")


# ------------------------------------------------------------------------------------------------ GPU (compiled)


@pytest.mark.skipif(not CUDA, reason="needs CUDA: compiled Triton kernels")
@pytest.mark.parametrize("kind", TWICE)
def test_gpu_a_matvec(kind):
    for M, d in [(300, 3), (130, 784)]:
        _check_values(kind, M, d)
