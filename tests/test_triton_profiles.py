"""The Triton profile twins (kernelmmd.ops.triton._profiles) equal the kernels.py profiles at every order and parameter
derivative, for every kernel case of the shared table (tests/_cases.py) and the L1 kinds (L1_CASES)."""

import pytest
import torch

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

import kernelmmd as km  # noqa: E402
from kernelmmd.ops.triton._profiles import (  # noqa: E402
    dot_param_grad,
    dot_profile,
    kernel_launch_args,
    l1_param_grad_order,
    l1_profile,
    radial_param_grad,
    radial_profile,
)

from ._cases import KERNEL_CASES, L1_KINDS, case  # noqa: E402


@triton.jit
def _eval(t_ptr, o_ptr, p_ptr, N, KIND: tl.constexpr, R: tl.constexpr, ORDER: tl.constexpr, DOT: tl.constexpr,
          DEGREE: tl.constexpr, PG: tl.constexpr, IDX: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    m = offs < N
    t = tl.load(t_ptr + offs, mask=m, other=0.0)
    if DOT:
        if PG:
            o = dot_param_grad(t, p_ptr, KIND, DEGREE, IDX)
        else:
            o = dot_profile(t, p_ptr, KIND, DEGREE, ORDER)
    else:
        if PG:
            o = radial_param_grad(t, p_ptr, KIND, IDX)
        else:
            o = radial_profile(t, p_ptr, KIND, R, ORDER)
    tl.store(o_ptr + offs, o, mask=m)


# rbf_bounded has the rbf profile (kind_id 0; its bounds clamp t before the profile)
KERNELS = [c.kernel() for c in (*KERNEL_CASES, case("poly2"), case("poly0")) if c.id != "rbf_bounded"]


def _device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def _run(k, t, order, pg=False, idx=0):
    kind, r, deg, p = kernel_launch_args(k, t.device)
    out = torch.empty_like(t)
    _eval[(1,)](t, out, p, t.numel(), kind, r, order, isinstance(k, km.DotKernel), deg, pg, idx, 64)
    return out


@pytest.mark.parametrize("k", KERNELS, ids=lambda k: repr(k))
def test_profile_twins(k):
    t = torch.cat([torch.zeros(1), torch.rand(40, generator=torch.Generator().manual_seed(0)) * 5]).double()
    t = t.to(_device())
    if isinstance(k, km.DotKernel):
        t = t - 2.0
    orders = (0, 1) if k.name in ("laplacian", "energy") else (0, 1, 2, 3)
    for order in orders:
        torch.testing.assert_close(_run(k, t, order), k.profile(t, order), rtol=1e-12, atol=1e-12)
    for i, ref in enumerate(k.param_grads(t)):
        torch.testing.assert_close(_run(k, t, 0, True, i), ref, rtol=1e-12, atol=1e-12)


@triton.jit
def _eval_l1(t_ptr, o_ptr, p_ptr, N, KIND: tl.constexpr, ORDER: tl.constexpr, PG: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    m = offs < N
    t = tl.load(t_ptr + offs, mask=m, other=0.0)
    if PG:
        o = l1_param_grad_order(t, p_ptr, KIND, 0, ORDER)
    else:
        o = l1_profile(t, p_ptr, KIND, ORDER)
    tl.store(o_ptr + offs, o, mask=m)


@pytest.mark.parametrize("kid", L1_KINDS)
def test_l1_profile_twins(kid):
    """g^(o) and ∂g^(o)/∂σ (autograd through kernels.l1 in a tensor σ) for o = 0..3, t = ‖a − b‖₁ ≥ 0."""
    k = case(kid).kernel()
    t = torch.cat([torch.zeros(1), torch.rand(40, generator=torch.Generator().manual_seed(0)) * 8]).double()
    t = t.to(_device())
    kind, _, _, p = kernel_launch_args(k, t.device)
    sig = torch.tensor(float(k.sigma), dtype=torch.float64, requires_grad=True)
    for order in range(4):
        out = torch.empty_like(t)
        _eval_l1[(1,)](t, out, p, t.numel(), kind, order, False, 64)
        torch.testing.assert_close(out, k.profile(t, order), rtol=1e-12, atol=1e-12)
        _eval_l1[(1,)](t, out, p, t.numel(), kind, order, True, 64)
        want = torch.stack([torch.autograd.grad(v, sig, retain_graph=True)[0]
                            for v in type(k)(sig).profile(t.cpu(), order)])
        torch.testing.assert_close(out.cpu(), want, rtol=1e-12, atol=1e-12)
        if order == 0:
            torch.testing.assert_close(out, k.param_grads(t)[0], rtol=1e-12, atol=1e-12)


def test_launch_args_reject_deep_kernel():
    with pytest.raises(TypeError, match=r"radial and dot-product kernels \(and L1 kernels\)"):
        kernel_launch_args(km.DeepKernel(torch.nn.Identity(), "rbf"), "cpu")
