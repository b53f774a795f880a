"""Triton kernel products and witness gradient (kernelmmd.ops.triton.witness) on the shared backend suite
(tests/backend_suite.py) plus their own tests. See docs/ARCHITECTURE.md, "Tests".

Without CUDA the kernels run through the Triton interpreter on CPU tensors (conftest sets TRITON_INTERPRET=1) with
16-wide tiles, a column split of 2 and exact coordinate differences only for d ≤ 2 (tests/triton_setup.py), so that
small shapes cover several row/column tiles, partial tiles, several output-column chunks (d > 16) and the host
reduction of partials.
GPU tests at the bottom run the compiled kernels and skip cleanly without CUDA.
"""

import pytest
import torch

pytest.importorskip("triton")

import kernelmmd as km  # noqa: E402
from kernelmmd.ops import reference as R  # noqa: E402

from .backend_suite import (  # noqa: E402
    KINDS,
    TWICE,
    KernelGradMvSuite,
    KernelMvSuite,
    assert_close,
    check_kernel_grad_mv,
    check_kernel_mv,
    grid,
    make_kernel,
    points,
    tensor_params,
)
from .triton_setup import CUDA, DEVICE, F64, L, W, small_tiles  # noqa: E402, F401  (small_tiles: autouse fixture)


class _OnCuda:
    """The ops on CUDA with CPU inputs and outputs, so that the shared CPU-built checks run compiled on a GPU."""

    @staticmethod
    def kernel_mv(x, y, v, kernel, block="xy"):
        return W.kernel_mv(x.cuda(), y.cuda(), v.cuda(), kernel, block).cpu()

    @staticmethod
    def kernel_grad_mv(x, y, v, kernel):
        return W.kernel_grad_mv(x.cuda(), y.cuda(), v.cuda(), kernel).cpu()


MOD = _OnCuda if CUDA else W


F32 = torch.float32
CLOSE = dict(kind=["laplacian", "energy"], shape=(24, 17, 20), dtype=[F32, F64], close=True)  # √t kernels' close pairs
ODD = [(1, 1, 1), (1, 5, 3), (33, 17, 1), (18, 40, 20)]


class TestTritonWitness(KernelMvSuite, KernelGradMvSuite):
    """kernel_mv and kernel_grad_mv on the shared suite: fp32 values within 1e-6 of the float64 reference relative to
    Σ_j |k_ij||v_j| (vector and batched v), odd shapes, the block bounds of the bounded RBF, the √t kernels' close
    pairs (d = 20, the tl.dot path: re-formed from exact differences — the expansion's cancellation left errors of
    1e-1 relative in float32 gradients before), and gradients in x, y, v and every tensor kernel parameter (the
    gradients of kernel_grad_mv need g'' and ∂g'/∂θ) against autograd through the reference."""

    ops = MOD
    kernel_mv_cases = (
        grid(kind=list(KINDS), shape=(37, 29, 5), dtype=F32, width=[None, 3], grad=False)
        + grid(**CLOSE)
        + grid(kind="rbf_bounded", shape=(21, 18, 3), dtype=F32, width=2, grad=False, block=["xx", "yy"])
        + [c for s in ODD for c in grid(kind=["rbf", "poly"], shape=s, dtype=F32, width=None if s[0] % 2 else 2,
                                        grad=False)]
        + grid(kind=list(KINDS), shape=(13, 11, 3), dtype=F64, width=2, tensor_param=True)
        + grid(kind="mix_rbf", shape=(21, 19, 20), dtype=F32, tensor_param=True)
    )
    kernel_grad_mv_cases = (
        grid(kind=list(KINDS), shape=(37, 29, 5), dtype=F32, grad=False)
        + grid(**CLOSE, grad=False)
        + grid(kind="mix_rbf", shape=[(1, 1, 1), (17, 33, 1), (5, 3, 40)], dtype=F32, grad=False)
        + grid(kind=[*TWICE, "rbf_bounded"], shape=(13, 11, 18), dtype=F64, tensor_param=True)
    )


def _dev(*ts):
    return [t.cuda() if CUDA else t for t in ts]


def _pts(n, m, d, dtype):
    """points() of the shared suite, on the test device, as leaves that require grad."""
    return [t.detach().to(DEVICE).requires_grad_() for t in points(n, m, d, dtype)]


def _randn(*shape, seed=0, grad=False):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(DEVICE).requires_grad_(grad)


# ------------------------------------------------------------------------------------------------ kernel_mv values


@pytest.mark.parametrize("kind", ["rbf", "mix_rq", "poly"])
def test_large_d(kind, monkeypatch):
    """d = 3000 (several K chunks and output-column chunks) with small n, default interpreter tiles."""
    monkeypatch.setattr(L, "TILES_OVERRIDE", None)
    check_kernel_mv(MOD, kind, 5, 7, 3000, torch.float32, grad=False)
    check_kernel_grad_mv(MOD, kind, 5, 7, 3000, torch.float32, grad=False)


def test_many_columns_in_several_passes():
    """B = 40 columns: three column blocks of 16 (permutation batches) and a 40-term low-rank weight in grad_mv."""
    check_kernel_mv(MOD, "rbf", 19, 23, 4, torch.float32, width=40, grad=False)
    x, y = _pts(19, 23, 4, F64)
    l, r = _randn(19, 40, seed=0), _randn(23, 40, seed=1)  # noqa: E741
    k = make_kernel("rq")
    got = W.grad_mv(x, y, l, r, k)
    want = torch.stack([R.kernel_grad_mv(x[i : i + 1], y, r @ l[i], k)[0] for i in range(19)])
    assert_close(got, want, float(want.abs().max()), 1e-10, "grad_mv B=40")


def test_half_precision_inputs_computed_in_float32():
    x, y = _pts(20, 17, 3, torch.float16)
    v = _randn(17, seed=1)
    k = make_kernel("rbf")
    got = W.kernel_mv(x, y, v, k)
    want = R.kernel_mv(x.detach().double(), y.detach().double(), v.float().double(), k)
    assert got.dtype == F64
    assert_close(got, want, float((k.matrix(x.double(), y.double()).abs() @ v.abs()).max()), 1e-6, "float16")
    gx = W.kernel_grad_mv(x.bfloat16(), y.bfloat16(), v, k)
    assert gx.dtype == F64 and gx.shape == (20, 3)


@pytest.mark.parametrize("precision", ["tf32", "tf32x3"])
def test_tensor_core_modes_run(precision):
    """The tensor-core modes take the same code path; their error can only be measured on a GPU (the interpreter
    multiplies in fp32 whatever the requested precision), so this checks plumbing at a TF32-level tolerance."""
    x, y = _pts(20, 17, 6, torch.float32)
    v = _randn(17, 2, seed=1).float()
    k = make_kernel("rbf")
    got = W.kernel_mv(x, y, v, k, precision=precision)
    want = R.kernel_mv(x.double(), y.double(), v.double(), k)
    assert_close(got, want, float((k.matrix(x.double(), y.double()).abs() @ v.double().abs()).max()), 1e-2, precision)


# ------------------------------------------------------------------------------------------------ kernel_mv gradients


def test_kernel_mv_gradcheck():
    k = make_kernel("rbf", tensor_params=True)
    x, y = _pts(3, 4, 2, F64)
    v = _randn(4, 2, grad=True)
    assert torch.autograd.gradcheck(lambda x, y, v, s: W.kernel_mv(x, y, v, k), (x, y, v, k.sigma), fast_mode=True)


def test_kernel_mv_gradgradcheck():
    k = make_kernel("poly")
    x, y = _pts(2, 3, 2, F64)
    v = _randn(3, grad=True)
    assert torch.autograd.gradgradcheck(lambda x, y, v: W.kernel_mv(x, y, v, k), (x, y, v), fast_mode=True)


@pytest.mark.parametrize("kind", ["rbf", "rq", "poly"])
def test_witness_gradient_penalty_double_backward(kind):
    """MMD-GAN-GP differentiates ‖∇_t η̂(t)‖² again: the double backward of kernel_mv equals the reference's."""
    k = make_kernel(kind)
    s, t = _pts(9, 6, 3, F64)
    w = torch.cat([torch.full((5,), 1 / 5, dtype=F64), torch.full((4,), -1 / 4, dtype=F64)]).to(DEVICE)
    w.requires_grad_()

    def penalty(mv, s, t, w):
        (g,) = torch.autograd.grad(mv(t, s, w, k).sum(), t, create_graph=True)
        return ((g * g).sum(1).sqrt() - 1).pow(2).sum()

    got = torch.autograd.grad(penalty(W.kernel_mv, s, t, w), (s, t, w))
    s2, t2, w2 = (a.detach().clone().requires_grad_() for a in (s, t, w))
    want = torch.autograd.grad(penalty(R.kernel_mv, s2, t2, w2), (s2, t2, w2))
    for name, a, b in zip("stw", got, want):
        assert_close(a, b, float(b.abs().max()), 1e-9, f"penalty d/d{name}")


def test_kernel_mv_parameter_gradient_is_once_differentiable():
    k = make_kernel("rbf", tensor_params=True)
    x, y = _pts(5, 4, 2, F64)
    v = _randn(4)
    (gs,) = torch.autograd.grad(W.kernel_mv(x, y, v, k).sum(), k.sigma, create_graph=True)
    with pytest.raises(RuntimeError, match="not differentiable again"):
        torch.autograd.grad(gs, k.sigma)


# ------------------------------------------------------------------------------------------------ kernel_grad_mv


@pytest.mark.parametrize("kind", ["laplacian", "energy"])
def test_kernel_grad_mv_not_twice_differentiable(kind):
    """laplacian / energy: the v- and parameter-gradients work; point gradients (need g'') raise."""
    k = make_kernel(kind, tensor_params=True)
    x, y = (t.detach() for t in _pts(7, 6, 3, F64))
    v = _randn(6, seed=1, grad=True)
    wt = _randn(7, 3, seed=2)
    wrt = [v, *tensor_params(k)]
    got = torch.autograd.grad((W.kernel_grad_mv(x, y, v, k) * wt).sum(), wrt)
    want = torch.autograd.grad((R.kernel_grad_mv(x, y, v, k) * wt).sum(), wrt)
    for a, b in zip(got, want):
        assert_close(a, b, float(b.abs().max()), 1e-10, f"{kind} grad_mv d/dv, d/dθ")
    xg = x.clone().requires_grad_()
    with pytest.raises(ValueError, match="not twice differentiable"):
        W.kernel_grad_mv(xg, y, v, k).sum().backward()


@pytest.mark.parametrize("kind", ["rbf", "poly"])
def test_grad_mv_gradcheck(kind):
    k = make_kernel(kind, tensor_params=True)
    x, y = _pts(3, 4, 2, F64)
    l, r = _randn(3, 2, seed=0, grad=True), _randn(4, 2, seed=1, grad=True)  # noqa: E741
    ps = tensor_params(k)
    assert torch.autograd.gradcheck(lambda x, y, l, r, *p: W.grad_mv(x, y, l, r, k), (x, y, l, r, *ps),
                                    fast_mode=True)


def test_kernel_grad_mv_is_once_differentiable():
    k = make_kernel("rbf")
    x, y = _pts(5, 4, 2, F64)
    v = _randn(4)
    (gx,) = torch.autograd.grad(W.kernel_grad_mv(x, y, v, k).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="kernel_grad_mv / grad_mv of the triton backend is not differentiable"):
        torch.autograd.grad(gx.sum(), x)


# ------------------------------------------------------------------------------------------------ errors


def test_errors_inputs(monkeypatch):
    x, y = (t.detach() for t in _pts(4, 3, 2, torch.float32))
    v = torch.ones(3, device=DEVICE)
    k = km.RBF(1.0)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        W.kernel_mv(x.tolist(), y, v, k)
    with pytest.raises(TypeError, match="floating-point tensor"):
        W.kernel_mv(x.long(), y.long(), v, k)
    with pytest.raises(ValueError, match=r"x must have shape \(n, d\)"):
        W.kernel_mv(x[0], y, v, k)
    with pytest.raises(ValueError, match=r"y must have shape \(m, 2\)"):
        W.kernel_mv(x, y[:, :1], v, k)
    with pytest.raises(TypeError, match="y has dtype torch.float64 but x has torch.float32"):
        W.kernel_mv(x, y.double(), v, k)
    with pytest.raises(ValueError, match="y is on device meta"):
        W.kernel_mv(x, torch.empty(3, 2, device="meta"), v, k)
    with pytest.raises(ValueError, match=r"v must be a tensor of shape \(m,\) or \(m, B\)"):
        W.kernel_mv(x, y, v[:, None, None], k)
    with pytest.raises(ValueError, match=r"v must have shape \(3,\)"):
        W.kernel_mv(x, y, torch.ones(4, device=DEVICE), k)
    with pytest.raises(TypeError, match="v must be a floating-point tensor"):
        W.kernel_mv(x, y, v.long(), k)
    with pytest.raises(ValueError, match="v is on device meta"):
        W.kernel_mv(x, y, torch.ones(3, device="meta"), k)
    with pytest.raises(ValueError, match="v must have at least one column"):
        W.kernel_mv(x, y, v[:, None][:, :0], k)
    with pytest.raises(ValueError, match=r"v must be a tensor of shape \(m,\) with m = 3"):
        W.kernel_grad_mv(x, y, v[:, None], k)
    with pytest.raises(ValueError, match=r"l must be a tensor of shape \(n, B\)"):
        W.grad_mv(x, y, x[:, 0], v[:, None], k)
    with pytest.raises(TypeError, match="r must be a torch.Tensor"):
        W.grad_mv(x, y, x[:, :1], None, k)
    with pytest.raises(ValueError, match="precision must be one of"):
        W.kernel_mv(x, y, v, k, precision="fp16")
    with pytest.raises(ValueError, match="precision='tf32' applies to float32 inputs"):
        W.kernel_mv(x.double(), y.double(), v, k, precision="tf32")
    with pytest.raises(ValueError, match="block must be 'xx', 'yy' or 'xy'"):
        W.kernel_mv(x, y, v, k, block="yx")
    with pytest.raises(TypeError, match="radial and dot-product kernels"):
        W.kernel_mv(x, y, v, km.DeepKernel(torch.nn.Identity(), "rbf"))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if not CUDA:
        with pytest.raises(ValueError, match="must be a CUDA tensor for the triton backend"):
            W.kernel_mv(x, y, v, k)


# ------------------------------------------------------------------------------------------------ GPU (compiled)


@pytest.mark.skipif(not CUDA, reason="needs CUDA: compiled Triton kernels")
@pytest.mark.parametrize("kind", KINDS)
def test_gpu_kernel_mv_and_grad(kind):
    for (n, m, d) in [(1000, 777, 3), (300, 513, 784)]:
        x, y = points(n, m, d, torch.float32, scale=d**-0.5)
        x, y = x.detach().cuda().requires_grad_(), y.detach().cuda().requires_grad_()
        k = make_kernel(kind)
        v = torch.randn(m, 5, device="cuda")
        got = W.kernel_mv(x, y, v, k)
        want = R.kernel_mv(x.double(), y.double(), v.double(), k)
        scale = float((k.matrix(x.detach().double(), y.detach().double()).abs() @ v.double().abs()).max())
        assert_close(got, want, scale, 1e-6, f"gpu {kind} kernel_mv")
        got = W.kernel_grad_mv(x, y, v[:, 0], k)
        want = R.kernel_grad_mv(x.double(), y.double(), v[:, 0].double(), k)
        assert_close(got, want, float(want.abs().max()), 1e-5, f"gpu {kind} kernel_grad_mv")
