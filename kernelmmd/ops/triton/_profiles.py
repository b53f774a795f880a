"""Triton twins of the kernel profiles of :mod:`kernelmmd.kernels` (the one place kernel formulas live).

A kernel reaches a Triton kernel as ``KIND`` (its ``kind_id``, a constexpr), ``R`` (number of mixture components,
constexpr) and a pointer to its scalar parameters in :meth:`Kernel.scalar_params` order (loaded per program).
``tests/test_triton_profiles.py`` checks every profile, order and parameter derivative against ``kernels.py``.

Radial kinds (argument t = ‖a − b‖² ≥ 0): :data:`RBF`, :data:`MIX_RBF` (σ_r), :data:`RQ`, :data:`MIX_RQ` (α_r),
:data:`LAPLACIAN`, :data:`ENERGY` (radial part −√t only; the caller adds ‖a‖ + ‖b‖). Dot kinds (argument u = aᵀb, from
:data:`FIRST_DOT_KIND` on): :data:`LINEAR`, :data:`POLY` (γ, c; the degree is the constexpr ``DEGREE``). L1 kinds
(argument t = ‖a − b‖₁, from :data:`FIRST_L1_KIND` on): :data:`L1_LAPLACIAN` (σ). How the kinds fold at compile time
and how kernels derive their flags from them: docs/ARCHITECTURE.md, section "Ops".
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ... import kernels as _kernels
from ...kernels import DotKernel, Kernel, L1Kernel, RadialKernel

# kernel kinds (``kind_id`` of the kernels.py classes), constexpr so that comparisons fold when a kernel compiles
RBF = tl.constexpr(_kernels.RBF.kind_id)  # also RBF-B (the bounds are applied to t before the profile)
MIX_RBF = tl.constexpr(_kernels.MixRBF.kind_id)
RQ = tl.constexpr(_kernels.RQ.kind_id)
MIX_RQ = tl.constexpr(_kernels.MixRQ.kind_id)
LAPLACIAN = tl.constexpr(_kernels.Laplacian.kind_id)
ENERGY = tl.constexpr(_kernels.Energy.kind_id)
LINEAR = tl.constexpr(_kernels.Linear.kind_id)
POLY = tl.constexpr(_kernels.Poly.kind_id)
L1_LAPLACIAN = tl.constexpr(_kernels.L1Laplacian.kind_id)
FIRST_DOT_KIND = tl.constexpr(10)  # kinds below are radial (argument t), from here on dot products (argument u)
FIRST_L1_KIND = tl.constexpr(20)  # from here on L1 kinds (argument t = ‖a − b‖₁)



def kernel_launch_args(kernel: Kernel, device) -> tuple[int, int, int, torch.Tensor]:
    """(KIND, R, DEGREE, params) for a launch: params is a float64 tensor of the scalar parameters (detached)."""
    if not isinstance(kernel, (RadialKernel, DotKernel, L1Kernel)) or kernel.kind_id < 0:
        raise TypeError(f"the triton backend supports radial and dot-product kernels (and L1 kernels), got {kernel!r}")
    vals = [float(p.detach()) if isinstance(p, torch.Tensor) else float(p) for p in kernel.scalar_params()]
    if not vals:
        vals = [0.0]
    degree = int(getattr(kernel, "degree", 0))
    return kernel.kind_id, len(vals), degree, torch.tensor(vals, dtype=torch.float64, device=device)


@triton.jit
def is_radial(KIND: tl.constexpr):
    """Whether KIND is a radial kind (argument t = ‖a − b‖²); constexpr: assign it to a ``tl.constexpr``."""
    return KIND < FIRST_DOT_KIND


@triton.jit
def is_l1(KIND: tl.constexpr):
    """Whether KIND is an L1 kind (argument t = ‖a − b‖₁, gradient g'(t) sign(a − b)); constexpr."""
    return KIND >= FIRST_L1_KIND


@triton.jit
def is_sqrt(KIND: tl.constexpr):
    """Whether KIND is a √t kind (laplacian, energy: g' ∝ t^{-1/2}, close pairs re-formed from differences)."""
    return (KIND == LAPLACIAN) or (KIND == ENERGY)


@triton.jit
def _limit(v):
    """v clamped to ± the largest finite value of its dtype (kernels._gauss_coef / _coef_pow): a huge 1/(2 s^2)
    then gives g(0) = 1 and 0 where the Gaussian underflows, never 0 * inf = NaN. The constant matches the dtype so
    that float32 code stays float32 (a float64-only constant would promote it)."""
    if v.dtype == tl.float64:
        out = tl.minimum(tl.maximum(v, -1.7976931348623157e308), 1.7976931348623157e308)
    else:
        out = tl.minimum(tl.maximum(v, -3.4028234663852886e38), 3.4028234663852886e38)
    return out


@triton.jit
def _rq_term(t, a, ORDER: tl.constexpr):
    # g^{(k)}(t) = coef_k u^{-a-k},  u = 1 + t / (2a),  coef_{k+1} = coef_k * (-(a + k)) / (2a)
    u = 1.0 + t * (0.5 / a)
    coef = 1.0
    for k in tl.static_range(ORDER):
        coef = coef * (-(a + k)) / (2.0 * a)
    return tl.exp(tl.log(u) * (-(a + ORDER))) * coef


@triton.jit
def radial_profile(t, p_ptr, KIND: tl.constexpr, R: tl.constexpr, ORDER: tl.constexpr):
    """g^{(ORDER)}(t), elementwise; ``t`` ≥ 0 (clamped by the caller)."""
    if KIND == RBF or KIND == MIX_RBF:  # sum_r exp(-t / (2 s_r^2)) * c_r^ORDER
        out = tl.zeros_like(t)
        for r in tl.static_range(R):
            s = tl.load(p_ptr + r)
            c = _limit(-0.5 / (s * s))  # c and c^ORDER limited: no 0 * inf at t = 0 or where exp underflows
            w = 1.0
            for _k in tl.static_range(ORDER):
                w = w * c
            if ORDER > 0:
                w = _limit(w)
            out += tl.exp(t * c) * w
    elif KIND == RQ or KIND == MIX_RQ:
        out = tl.zeros_like(t)
        for r in tl.static_range(R):
            a = tl.load(p_ptr + r)
            out += _rq_term(t, a, ORDER)
    elif KIND == LAPLACIAN:  # laplacian exp(-sqrt t / s); g' = -g / (2 s sqrt t), 0 at t = 0
        s = tl.load(p_ptr)
        rt = tl.sqrt(t)
        g = tl.exp(-rt / s)
        if ORDER == 0:
            out = g
        else:
            out = tl.where(t > 0, -g / (2.0 * s * tl.where(t > 0, rt, 1.0)), 0.0)
    else:  # ENERGY: radial part -sqrt t; g' = -1 / (2 sqrt t), 0 at t = 0
        rt = tl.sqrt(t)
        if ORDER == 0:
            out = -rt
        else:
            out = tl.where(t > 0, -0.5 / tl.where(t > 0, rt, 1.0), 0.0)
    return out


@triton.jit
def radial_param_grad(t, p_ptr, KIND: tl.constexpr, IDX: tl.constexpr):
    """∂g/∂θ_IDX (t) for the IDX-th scalar parameter, elementwise."""
    th = tl.load(p_ptr + IDX)
    if KIND == RBF or KIND == MIX_RBF:  # d/ds exp(-t/(2 s^2)) = exp(c t) (-2 c t) / s: 0 at t = 0, where exp underflows
        ct = t * _limit(-0.5 / (th * th))
        e = tl.exp(ct)
        out = tl.where((e > 0) & (ct < 0), e * ct * (-2.0 / th), 0.0)
    elif KIND == RQ or KIND == MIX_RQ:  # d/da u^{-a} = g (t / (2 a u) - log u)
        u = 1.0 + t * (0.5 / th)
        lu = tl.log(u)
        out = tl.exp(lu * (-th)) * (t * (0.5 / th) / u - lu)
    elif KIND == LAPLACIAN:  # d/ds exp(-sqrt t / s) = g sqrt t / s^2
        rt = tl.sqrt(t)
        out = tl.exp(-rt / th) * rt / (th * th)
    else:
        out = tl.zeros_like(t)
    return out


@triton.jit
def l1_profile(t, p_ptr, KIND: tl.constexpr, ORDER: tl.constexpr):
    """g^{(ORDER)}(t) of an L1 kind, elementwise; t = ‖a − b‖₁ ≥ 0. L1_LAPLACIAN: exp(c t) c^ORDER with c = −1/σ
    (c and c^ORDER limited as in kernels.l1: a huge 1/σ gives g(0) = 1 and 0 elsewhere, never 0 * inf)."""
    s = tl.load(p_ptr)
    c = _limit(-1.0 / s)
    w = 1.0
    for _k in tl.static_range(ORDER):
        w = w * c
    if ORDER > 0:
        w = _limit(w)
    return tl.exp(t * c) * w


@triton.jit
def l1_param_grad_order(t, p_ptr, KIND: tl.constexpr, IDX: tl.constexpr, ORDER: tl.constexpr):
    """∂g^{(ORDER)}/∂σ (t) of an L1 kind: for c^k e^{ct} with c = −1/σ, dc/dσ = 1/σ², it is
    (k c^{k−1} + c^k t) e^{ct} / σ² (0 where e^{ct} underflows)."""
    th = tl.load(p_ptr + IDX)
    c = -1.0 / th
    ck = 1.0  # c^k
    dk = 0.0  # k c^{k-1}
    for _k in tl.static_range(ORDER):
        dk = dk * c + ck
        ck = ck * c
    e = tl.exp(t * c)
    return tl.where(e > 0, e * ((dk + ck * t) / (th * th)), 0.0)


@triton.jit
def _ipow(b, E: tl.constexpr):
    out = tl.full(b.shape, 1.0, b.dtype)
    for _k in tl.static_range(E):
        out = out * b
    return out


@triton.jit
def dot_profile(u, p_ptr, KIND: tl.constexpr, DEGREE: tl.constexpr, ORDER: tl.constexpr):
    """h^{(ORDER)}(u), elementwise."""
    if KIND == LINEAR:
        if ORDER == 0:
            out = u
        elif ORDER == 1:
            out = tl.full(u.shape, 1.0, u.dtype)
        else:
            out = tl.zeros_like(u)
    else:  # poly (g u + c)^p
        gam = tl.load(p_ptr)
        c0 = tl.load(p_ptr + 1)
        if ORDER > DEGREE:
            out = tl.zeros_like(u)
        else:
            coef = 1.0
            for k in tl.static_range(ORDER):
                coef = coef * (DEGREE - k) * gam
            out = _ipow(u * gam + c0, DEGREE - ORDER) * coef
    return out


@triton.jit
def dot_param_grad(u, p_ptr, KIND: tl.constexpr, DEGREE: tl.constexpr, IDX: tl.constexpr):
    """∂h/∂γ (IDX = 0) or ∂h/∂c (IDX = 1) for poly; 0 for linear."""
    if KIND == LINEAR or DEGREE == 0:
        out = tl.zeros_like(u)
    else:
        gam = tl.load(p_ptr)
        c0 = tl.load(p_ptr + 1)
        d = _ipow(u * gam + c0, DEGREE - 1) * DEGREE
        if IDX == 0:
            out = d * u
        else:
            out = d
    return out


@triton.jit
def radial_param_grad_order(t, p_ptr, KIND: tl.constexpr, IDX: tl.constexpr, ORDER: tl.constexpr):
    """∂g^{(ORDER)}/∂θ_IDX (t), elementwise: the parameter derivative of the ORDER-th profile derivative.

    ORDER = 0 equals :func:`radial_param_grad`. Needed by backward passes of ops built on g' and g'' (witness
    gradient, derivative blocks). Twin of autograd through ``kernel.profile(t, ORDER)`` in its tensor parameters.
    """
    th = tl.load(p_ptr + IDX)
    if KIND == RBF or KIND == MIX_RBF:  # component c^k e^{ct}, c = -1/(2 s^2), dc/ds = 1/s^3
        c = -0.5 / (th * th)
        ck = 1.0  # c^k
        dk = 0.0  # d(c^k)/dc = k c^{k-1}
        for _k in tl.static_range(ORDER):
            dk = dk * c + ck
            ck = ck * c
        e = tl.exp(t * c)
        out = tl.where(e > 0, e * ((dk + ck * t) / (th * th * th)), 0.0)  # 0, not 0 * inf, where e underflows
    elif KIND == RQ or KIND == MIX_RQ:  # g^{(k)} [sum_{i<k} (1/(a+i) - 1/a) - log u + (a+k) t / (2 a^2 u)]
        u = 1.0 + t * (0.5 / th)
        lu = tl.log(u)
        coef = 1.0
        sfac = 0.0
        for i in tl.static_range(ORDER):
            coef = coef * (-(th + i)) / (2.0 * th)
            sfac = sfac + 1.0 / (th + i) - 1.0 / th
        g = tl.exp(lu * (-(th + ORDER))) * coef
        out = g * (sfac - lu + (th + ORDER) * t * (0.5 / (th * th)) / u)
    elif KIND == LAPLACIAN:  # order 0 g sqrt(t) / s^2; order 1 -e^{-r/s} (1/(2 s^3) - 1/(2 s^2 r)), 0 at t = 0
        rt = tl.sqrt(t)
        e = tl.exp(-rt / th)
        if ORDER == 0:
            out = e * rt / (th * th)
        else:
            rr = tl.where(t > 0, rt, 1.0)
            out = tl.where(t > 0, -e * (0.5 / (th * th * th) - 0.5 / (th * th * rr)), 0.0)
    else:
        out = tl.zeros_like(t)
    return out


@triton.jit
def dot_param_grad_order(u, p_ptr, KIND: tl.constexpr, DEGREE: tl.constexpr, IDX: tl.constexpr,
                         ORDER: tl.constexpr):
    """∂h^{(ORDER)}/∂γ (IDX = 0) or ∂h^{(ORDER)}/∂c (IDX = 1) for poly (0 for linear), elementwise.

    With b = γu + c and P_k = p!/(p-k)!: h^{(k)} = P_k γ^k b^{p-k}, so
    ∂/∂γ = P_k (k γ^{k-1} b^{p-k} + (p-k) γ^k b^{p-k-1} u) and ∂/∂c = P_k (p-k) γ^k b^{p-k-1}.
    """
    if KIND == LINEAR or ORDER > DEGREE or DEGREE == 0:
        out = tl.zeros_like(u)
    else:
        gam = tl.load(p_ptr)
        c0 = tl.load(p_ptr + 1)
        b = u * gam + c0
        pk = 1.0
        gk = 1.0  # γ^k
        dgk = 0.0  # k γ^{k-1}
        for k in tl.static_range(ORDER):
            pk = pk * (DEGREE - k)
            dgk = dgk * gam + gk
            gk = gk * gam
        if ORDER == DEGREE:  # h^{(p)} = P_p γ^p: no c dependence
            if IDX == 0:
                out = tl.zeros_like(u) + pk * dgk
            else:
                out = tl.zeros_like(u)
        else:
            low = _ipow(b, DEGREE - ORDER - 1)  # b^{p-k-1}
            if IDX == 0:
                out = pk * (dgk * low * b + (DEGREE - ORDER) * gk * low * u)
            else:
                out = pk * (DEGREE - ORDER) * gk * low
    return out
