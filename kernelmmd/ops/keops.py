r"""KeOps backend (``"keops"``): every op as a pykeops ``LazyTensor`` reduction (CPU and GPU), O(n + m) memory.

The kernel is written symbolically from the same profiles as every other backend (:mod:`kernelmmd.kernels`
evaluates LazyTensors): for a radial kernel ``t = (a_i - b_j).sqdist`` (difference-based, so exact: t = 0 at
coincident points), for an L1 kernel ``t = (a_i - b_j).abs().sum()`` (its derivative KeOps' ``Sign``, 0 at ties),
the block bounds of bounded kernels become ``max(t, lo) = relu(t - lo) + lo`` and ``min(t, hi) = hi - relu(hi - t)``
(whose derivative, KeOps' ``Step``, is the indicator 1[lo ≤ t ≤ hi], the same one-sided convention as
``torch.clamp``), the energy kernel's norms ‖a_i‖ + ‖b_j‖ enter as i- and j-variables,
and a dot-product kernel reads ``u = <a_i, b_j>``. Python-float kernel parameters become KeOps runtime parameters,
so one compiled formula serves every bandwidth; tensor parameters are differentiated by pykeops' autograd.

Precision: float32 inputs are reduced with ``dtype_acc="float64"`` (each row's reduction accumulates in float64;
KeOps then returns it in float32), rows are combined in float64 by torch; float64 inputs are computed in float64.
The within-sample sums drop the diagonal exactly: k(a_i, a_i) is evaluated by ``kernel.pairwise`` (t = 0 exactly,
differentiable) and subtracted from the full row sums.

Differentiation: pykeops differentiates a reduction symbolically, and the gradient is again a KeOps reduction,
so every op is differentiable to any order in x, y, v and tensor kernel parameters (tested: first order for every
op and kernel, second order for :func:`kernel_mv` and :func:`block_stats`).

Compiled formulas go to the folder named by the environment variable ``KERNELMMD_KEOPS_CACHE`` when it is set
(read once, when this module is first imported, before any compilation). Importing this module raises
``ImportError`` when pykeops is missing; the dispatch layer (:mod:`kernelmmd.ops`) turns that into a clear message.
"""

from __future__ import annotations

import copy
import math
import os

import pykeops  # ImportError here is reported by kernelmmd.ops (explicit request: error; auto: one warning)
import torch

if os.environ.get("KERNELMMD_KEOPS_CACHE"):
    pykeops.set_build_folder(os.environ["KERNELMMD_KEOPS_CACHE"])
pykeops.set_verbose(False)

from pykeops.torch import LazyTensor  # noqa: E402

from ..kernels import DotKernel, Kernel, L1Kernel, RadialKernel  # noqa: E402
from ._shared import energy_norm_mv, row_norms, unit_rows  # noqa: E402
from .reference import a_column, a_diag, dense_blocks, require_twice  # noqa: E402  (O(M d), or dense by design)
from .types import BlockStats  # noqa: E402

__all__ = ["block_stats", "kernel_mv", "kernel_grad_mv", "a_matvec", "a_diag", "a_column", "dense_blocks"]


def _opts(dtype: torch.dtype) -> dict:
    """Reduction options: float64 accumulation for float32 inputs."""
    return {"dtype_acc": "float64"} if dtype == torch.float32 else {}


def _map_params(kernel: Kernel, fn) -> Kernel:
    """A shallow copy of the kernel with ``fn`` applied to each tensor parameter (also inside lists)."""
    if not any(isinstance(p, torch.Tensor) for p in kernel.scalar_params()):
        return kernel
    k = copy.copy(kernel)
    for name, val in vars(kernel).items():
        if isinstance(val, torch.Tensor):
            setattr(k, name, fn(val))
        elif isinstance(val, list) and any(isinstance(v, torch.Tensor) for v in val):
            setattr(k, name, [fn(v) if isinstance(v, torch.Tensor) else v for v in val])
    return k


def _kernels(kernel: Kernel, dtype: torch.dtype) -> tuple[Kernel, Kernel]:
    """(torch kernel with parameters in the compute dtype, symbolic kernel whose tensor parameters are KeOps
    parameters). KeOps needs one dtype per formula; a tensor parameter enters the formula once, as one KeOps
    variable, so its gradient is one reduction (python-float parameters are runtime constants)."""
    kt = _map_params(kernel, lambda p: p.to(dtype))
    return kt, _map_params(kt, lambda p: LazyTensor(p.reshape(1)))


def _check_kernel(kernel: Kernel, op: str) -> None:
    if not isinstance(kernel, (RadialKernel, DotKernel, L1Kernel)):
        raise TypeError(f"{op} on the keops backend needs a radial or dot-product kernel (or an L1 kernel), "
                        f"got {kernel!r}")


def _clamp(t, lo: float, hi: float):
    """clamp(t, lo, hi) on a LazyTensor with the derivative 1[lo ≤ t ≤ hi]."""
    if lo > 0:
        t = (t - lo).relu() + lo
    if hi < math.inf:
        t = hi - (hi - t).relu()
    return t


def _indicator(t, lo: float, hi: float):
    """1[lo ≤ t ≤ hi] on a LazyTensor (``None`` when there are no bounds)."""
    ind = None
    if lo > 0:
        ind = (t - lo).step()
    if hi < math.inf:
        up = (hi - t).step()
        ind = up if ind is None else ind * up
    return ind


def _i(a: torch.Tensor):
    """An i-indexed KeOps variable from an (n, D) tensor (``axis`` given, so n = 1 stays an i-variable)."""
    return LazyTensor(a.contiguous(), axis=0)


def _j(b: torch.Tensor):
    """A j-indexed KeOps variable from an (m, D) tensor."""
    return LazyTensor(b.contiguous(), axis=1)


def _vars(a: torch.Tensor, b: torch.Tensor):
    return _i(a), _j(b)  # (n, 1, d), (1, m, d)


def _k(kernel: Kernel, a: torch.Tensor, b: torch.Tensor, block: str, norms: bool = True):
    """Symbolic kernel matrix k(a_i, b_j), a LazyTensor of shape (n, m); ``norms=False`` leaves out the energy
    kernel's ‖a_i‖ + ‖b_j‖ (the caller adds them in torch)."""
    A, B = _vars(a, b)
    if isinstance(kernel, L1Kernel):  # t = Σ_k |a_ik − b_jk| (KeOps: Abs' = Sign, Sign(0) = 0)
        return kernel.profiles((A - B).abs().sum(-1), (0,))[0]
    if isinstance(kernel, RadialKernel):
        lo, hi = kernel.block_bounds(block)
        k = kernel.profiles(_clamp(A.sqdist(B), lo, hi), (0,))[0]
        if norms and getattr(kernel, "norm_terms", False):  # energy: ‖a_i‖ + ‖b_j‖ − ‖a_i − b_j‖
            k = k + _i(row_norms(a)[:, None]) + _j(row_norms(b)[:, None])
        return k
    return kernel.profiles(A | B, (0,))[0]


def _rowsum(formula, dtype) -> torch.Tensor:
    return formula.sum(dim=1, **_opts(dtype)).double()  # (n, D) float64


def _mv(kernel, a, b, v, block):
    """Σ_j k(a_i, b_j) v_j for v of shape (m, B): float64 (n, B). The one formula behind kernel_mv and the plain
    block sums (with v = 1), so the two share their compiled KeOps code. The energy kernel's norm terms are O(n + m)
    and added in torch: ‖a_i‖ Σ_j v_j + Σ_j ‖b_j‖ v_j."""
    out = _rowsum(_k(kernel, a, b, block, norms=False) * _j(v), a.dtype)
    if getattr(kernel, "norm_terms", False):
        out = out + energy_norm_mv(a, b, v)
    return out


def _ones(a):
    return torch.ones(a.shape[0], 1, dtype=a.dtype, device=a.device)


def _sym(kt, kernel, a, block, variance):
    """Statistics of a within-sample block with the diagonal removed: (S, Q, r). ``kt``: the torch kernel."""
    diag = kt.pairwise(a, a, block).double()  # (n,) k(a_i, a_i), t = 0 exactly
    if not variance:
        return _mv(kernel, a, a, _ones(a), block).sum() - diag.sum(), None, None
    k = _k(kernel, a, a, block)
    rq = _rowsum(k.concat(k * k), a.dtype)  # (n, 2): row sums of K and of K∘K
    r = rq[:, 0] - diag
    return r.sum(), rq[:, 1].sum() - (diag * diag).sum(), r


def block_stats(x: torch.Tensor, y: torch.Tensor, kernel: Kernel, variance: bool = False) -> BlockStats:
    """Block sums of K_XX, K_YY, K_XY (diagonals excluded exactly) and, with ``variance``, row/column sums and
    sums of squared entries (SPEC §3): float64, O(n + m) memory. Differentiable to any order."""
    _check_kernel(kernel, "block_stats")
    kt, k = _kernels(kernel, x.dtype)
    sxx, qxx, rxx = _sym(kt, k, x, "xx", variance)
    syy, qyy, ryy = _sym(kt, k, y, "yy", variance)
    st = BlockStats(
        n=x.shape[0], m=y.shape[0], sxx=sxx, syy=syy, sxy=None, dxx=kt.pairwise(x, x, "xx").double().sum(),
        dyy=kt.pairwise(y, y, "yy").double().sum(),
    )
    if not variance:
        st.sxy = _mv(k, x, y, _ones(y), "xy").sum()
        return st
    kxy = _k(k, x, y, "xy")
    rq = _rowsum(kxy.concat(kxy * kxy), x.dtype)  # (n, 2)
    st.rxy, st.sxy, st.qxy = rq[:, 0], rq[:, 0].sum(), rq[:, 1].sum()
    st.cxy = _mv(k, y, x, _ones(x), "xy")[:, 0]  # (m,) column sums = row sums of k(y, x) (k is symmetric)
    st.rxx, st.ryy, st.qxx, st.qyy = rxx, ryy, qxx, qyy
    return st


def kernel_mv(x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, kernel: Kernel, block: str = "xy") -> torch.Tensor:
    """K(x, y) @ v for v of shape (m,) or (m, B); float64 result of shape (n,) or (n, B).

    ``v`` is cast to the compute dtype of x (KeOps uses one dtype per formula)."""
    _check_kernel(kernel, "kernel_mv")
    k = _kernels(kernel, x.dtype)[1]
    vv = v.to(x.dtype)
    out = _mv(k, x, y, vv[:, None] if vv.ndim == 1 else vv, block)  # (n, B)
    return out[:, 0] if vv.ndim == 1 else out


def kernel_grad_mv(x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, kernel: Kernel) -> torch.Tensor:
    r""":math:`\sum_j v_j \nabla_a k(a, y_j)|_{a = x_i}`, shape (n, d), float64; v of shape (m,)."""
    _check_kernel(kernel, "kernel_grad_mv")
    k = _kernels(kernel, x.dtype)[1]
    vv = v.to(x.dtype)
    A, B = _vars(x, y)
    V = _j(vv[:, None])  # (1, m, 1)
    if isinstance(k, RadialKernel):
        lo, hi = k.block_bounds("xy")
        t = A.sqdist(B)
        gp = k.profile(_clamp(t, lo, hi), 1)
        ind = _indicator(t, lo, hi)
        if ind is not None:
            gp = gp * ind
        out = 2.0 * _rowsum(gp * V * (A - B), x.dtype)  # Σ_j 2 g'(t_ij) v_j (x_i − y_j)
        if getattr(k, "norm_terms", False):  # energy: + Σ_j v_j x_i / ‖x_i‖
            out = out + unit_rows(x.double()) * v.double().sum()
        return out
    if isinstance(k, L1Kernel):  # Σ_j g'(t_ij) v_j sign(x_i − y_j), t = ‖x_i − y_j‖₁
        diff = A - B
        return _rowsum(k.profile(diff.abs().sum(-1), 1) * V * diff.sign(), x.dtype)
    return _rowsum(k.profile(A | B, 1) * V * B, x.dtype)  # Σ_j h'(u_ij) v_j y_j


def a_matvec(z: torch.Tensor, u0: torch.Tensor, u1: torch.Tensor, kernel: Kernel) -> tuple[torch.Tensor, torch.Tensor]:
    r"""A·u for A = [[K, Gᵀ], [G, H]] over Z (SPEC §2), u = [u0 (M,); u1 (M, d)]: one reduction with output
    (K u0 + Gᵀ u1, G u0 + H u1) of shape (M, 1 + d), returned as ((M,), (M, d)) in the input dtype.

    Radial, with Δ = z_l − z_l': row l sums g u0_l' − 2g' Δ·u1_l' and 2g' Δ u0_l' − 2g' u1_l' − 4g'' Δ (Δ·u1_l').
    Dot, with u = z_l·z_l': h u0_l' + h' z_l·u1_l' and h' u0_l' z_l' + h' u1_l' + h'' (z_l·u1_l') z_l'.
    """
    require_twice(kernel, "a_matvec")
    k = _kernels(kernel, z.dtype)[1]
    Zi, Zj = _vars(z, z)
    U0 = _j(u0.to(z.dtype)[:, None])  # (1, M, 1)
    U1 = _j(u1.to(z.dtype))  # (1, M, d)
    if isinstance(k, RadialKernel):
        delta = Zi - Zj
        g0, g1, g2 = k.profiles((delta * delta).sum(-1), (0, 1, 2))
        du = (delta * U1).sum(-1)  # Δ·u1_l'
        top = g0 * U0 - 2.0 * g1 * du
        bottom = 2.0 * g1 * (delta * U0 - U1) - 4.0 * g2 * du * delta
    else:
        h0, h1, h2 = k.profiles(Zi | Zj, (0, 1, 2))
        zu = (Zi * U1).sum(-1)  # z_l·u1_l'
        top = h0 * U0 + h1 * zu
        bottom = h1 * (U0 * Zj + U1) + h2 * zu * Zj
    out = _rowsum(top.concat(bottom), z.dtype)  # (M, 1 + d)
    return out[:, 0].to(z.dtype), out[:, 1:].to(z.dtype)
