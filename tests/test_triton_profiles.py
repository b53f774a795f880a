"""The Triton profile twins (kernelmmd.ops.triton._profiles) equal the kernels.py profiles at every order and parameter
derivative, for every kernel case of the shared table (tests/_cases.py)."""

import pytest
import torch

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

import kernelmmd as km  # noqa: E402
from kernelmmd.ops.triton._profiles import (  # noqa: E402
    dot_param_grad,
    dot_profile,
    kernel_launch_args,
    radial_param_grad,
    radial_profile,
)

from ._cases import KERNEL_CASES, case  # noqa: E402


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


def test_launch_args_reject_deep_kernel():
    with pytest.raises(TypeError, match="radial and dot-product kernels"):
        kernel_launch_args(km.DeepKernel(torch.nn.Identity(), "rbf"), "cpu")
