r"""Dense torch backend ("torch"): the reference twin of every op.

Materialises kernel matrices (n × m) in the input dtype and forms every sum in float64. Differentiable to any
order through autograd (in the inputs and in tensor-valued kernel parameters). This is the ground truth the fused
backends are tested against, and the fastest choice for small problems.

Derivative blocks over Z (SPEC §2), with (l, i) ↦ l·d + i:

    K[l, l']             = k(z_l, z_l')
    G[(l, i), l']        = ∂_i k(z_l, z_l')            (derivative in the first argument)
    H[(l, i), (l', j)]   = ∂_i ∂_{j+d} k(z_l, z_l')    (first argument i, second argument j)

:func:`dense_blocks` materialises them (tests, small problems); :func:`a_matvec` computes A·u in O(M² d) time
without them.
"""

from __future__ import annotations

import torch

from ..kernels import DotKernel, Kernel, L1Kernel, RadialKernel, sqdist
from ..kernels.l1 import l1dist, sign_mv
from ._shared import centres, pooled_mean, unit_rows
from .types import BlockStats

__all__ = [
    "block_stats",
    "kernel_mv",
    "kernel_grad_mv",
    "dense_blocks",
    "a_matvec",
    "a_diag",
    "a_column",
]


def block_stats(x: torch.Tensor, y: torch.Tensor, kernel: Kernel, variance: bool = False) -> BlockStats:
    """Block sums of K_XX, K_YY, K_XY (with and without diagonals) and, if ``variance``, row/column sums and
    sums of squared entries (SPEC §3). All statistics are float64; the within-sample sums without diagonal are the
    float64 totals minus the float64 traces (no off-diagonal copy of the n × n blocks)."""
    kxx = kernel.matrix(x, x, "xx").double()  # (n, n)
    kyy = kernel.matrix(y, y, "yy").double()  # (m, m)
    kxy = kernel.matrix(x, y, "xy").double()  # (n, m)
    exx, eyy = torch.diagonal(kxx), torch.diagonal(kyy)  # (n,), (m,)
    dxx, dyy = exx.sum(), eyy.sum()
    st = BlockStats(
        n=x.shape[0], m=y.shape[0], sxx=kxx.sum() - dxx, syy=kyy.sum() - dyy, sxy=kxy.sum(), dxx=dxx, dyy=dyy
    )
    if variance:
        st.rxx, st.ryy = kxx.sum(1) - exx, kyy.sum(1) - eyy
        st.rxy, st.cxy = kxy.sum(1), kxy.sum(0)
        st.qxx = (kxx * kxx).sum() - (exx * exx).sum()
        st.qyy = (kyy * kyy).sum() - (eyy * eyy).sum()
        st.qxy = (kxy * kxy).sum()
    return st


def kernel_mv(x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, kernel: Kernel, block: str = "xy") -> torch.Tensor:
    """K(x, y) @ v for v of shape (m,) or (m, B); float64 result of shape (n,) or (n, B)."""
    return kernel.matrix(x, y, block).double() @ v.double()


#: numbers per chunk of explicit pair differences (√t kernels' gradient products): 32 MiB of float64
_CHUNK = 1 << 22


def kernel_grad_mv(x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, kernel: Kernel) -> torch.Tensor:
    r"""Gradient in the first argument: :math:`\sum_j v_j \nabla_a k(a, y_j)|_{a = x_i}`, shape (n, d), float64."""
    v = v.double()
    xd, yd = x.double(), y.double()
    if isinstance(kernel, RadialKernel):
        t = sqdist(x, y, exact=kernel.sqrt_distance).double()  # (n, m)
        lo, hi = kernel.block_bounds("xy")
        gp = kernel.profile(t.clamp(lo, hi), 1)
        if lo > 0 or hi < float("inf"):
            gp = gp * ((t >= lo) & (t <= hi))  # the clamp's derivative
        p = gp * v[None, :]  # (n, m)
        if kernel.sqrt_distance:  # g' ∝ t^{-1/2}: x_i Σ p − Σ p y_j would cancel at close pairs; sum p (x_i − y_j)
            rows = max(1, _CHUNK // max(1, y.shape[0] * x.shape[1]))  # (rows, m, d) differences at a time
            out = torch.cat([2.0 * (p[r : r + rows, :, None] * (xd[r : r + rows, None, :] - yd[None])).sum(1)
                             for r in range(0, x.shape[0], rows)]) if x.shape[0] else torch.zeros_like(xd)
        else:
            out = 2.0 * (xd * p.sum(1, keepdim=True) - p @ yd)  # (n, d)
        if getattr(kernel, "norm_terms", False):  # energy: + Σ_j v_j x_i / ‖x_i‖
            out = out + unit_rows(xd) * v.sum()
        return out
    if isinstance(kernel, DotKernel):
        hp = kernel.profile(xd @ yd.T, 1)  # (n, m)
        return (hp * v[None, :]) @ yd
    if isinstance(kernel, L1Kernel):  # ∇_a g(‖a − b‖₁) = g'(t) sign(a − b), sign(0) = 0
        p = kernel.profile(l1dist(x, y), 1).double() * v[None, :]  # (n, m)
        return sign_mv(xd, yd, p)
    raise TypeError(f"kernel_grad_mv needs a radial or dot-product kernel (or an L1 kernel), got {kernel!r}")


def require_twice(kernel: Kernel, what: str) -> None:
    """ValueError unless ``kernel`` is a twice-differentiable radial or dot kernel (the derivative-block ops; shared
    by the tiled and KeOps backends)."""
    if not kernel.twice_differentiable or not isinstance(kernel, (RadialKernel, DotKernel)):
        raise ValueError(
            f"{what} needs a twice-differentiable radial or dot-product kernel "
            f"(rbf, mix_rbf, rq, mix_rq, linear, poly), got {kernel!r}"
        )


def dense_blocks(z: torch.Tensor, kernel: Kernel) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Materialised K (M, M), G (M d, M), H (M d, M d) over Z (SPEC §2). Reference and small M·d only."""
    require_twice(kernel, "dense_blocks")
    M, d = z.shape
    if isinstance(kernel, RadialKernel):
        t = sqdist(z, z)
        g0, g1, g2 = kernel.profile(t, 0), kernel.profile(t, 1), kernel.profile(t, 2)  # (M, M)
        delta = z[:, None, :] - z[None, :, :]  # (M, M, d)
        G = (2.0 * g1[:, :, None] * delta).permute(0, 2, 1).reshape(M * d, M)
        eye = torch.eye(d, dtype=z.dtype, device=z.device)
        H = -2.0 * g1[:, :, None, None] * eye - 4.0 * g2[:, :, None, None] * delta[:, :, :, None] * delta[:, :, None, :]
        H = H.permute(0, 2, 1, 3).reshape(M * d, M * d)  # (l, i, l', j)
        return g0, G, H
    u = z @ z.T
    h0, h1, h2 = kernel.profile(u, 0), kernel.profile(u, 1), kernel.profile(u, 2)
    G = (h1[:, :, None] * z[None, :, :]).permute(0, 2, 1).reshape(M * d, M)  # h'(u_ll') z_l'i
    eye = torch.eye(d, dtype=z.dtype, device=z.device)
    # H[(l,i),(l',j)] = h'(u) δ_ij + h''(u) z_l'i z_lj
    H = h1[:, :, None, None] * eye + h2[:, :, None, None] * z[None, :, :, None] * z[:, None, None, :]
    H = H.permute(0, 2, 1, 3).reshape(M * d, M * d)
    return h0, G, H


def a_matvec(z: torch.Tensor, u0: torch.Tensor, u1: torch.Tensor, kernel: Kernel) -> tuple[torch.Tensor, torch.Tensor]:
    r"""A·u for A = [[K, Gᵀ], [G, H]] over Z and u = [u0 (M,); u1 (M, d)], without materialising A.

    Returns (K u0 + Gᵀ u1  of shape (M,),  G u0 + H u1  of shape (M, d)). O(M² d) time, O(M² + M d) memory.
    """
    require_twice(kernel, "a_matvec")
    zc = z - pooled_mean(z) if centres(kernel) else z  # (M, d); the centre is detached
    s = (zc * u1).sum(1)  # (M,)  z_l · u1_l
    c = zc @ u1.T  # (M, M)  C[l, l'] = z_l · u1_l'
    if isinstance(kernel, RadialKernel):
        t = sqdist(zc, zc)
        g0, g1, g2 = kernel.profile(t, 0), kernel.profile(t, 1), kernel.profile(t, 2)  # (M, M)
        p = g1 * u0[None, :]
        gu0 = 2.0 * (zc * p.sum(1, keepdim=True) - p @ zc)  # G u0
        gtu1 = 2.0 * (g1 @ s - (zc * (g1 @ u1)).sum(1))  # Gᵀ u1
        wc = g2 * c  # (M, M)
        hu1 = -2.0 * (g1 @ u1) - 4.0 * (
            zc * wc.sum(1, keepdim=True) - zc * (g2 @ s)[:, None] - wc @ zc + g2 @ (s[:, None] * zc)
        )
        return g0 @ u0 + gtu1, gu0 + hu1
    uu = z @ z.T
    h0, h1, h2 = kernel.profile(uu, 0), kernel.profile(uu, 1), kernel.profile(uu, 2)
    gu0 = (h1 * u0[None, :]) @ z
    gtu1 = (h1 * c).sum(1)
    hu1 = h1 @ u1 + (h2 * c) @ z
    return h0 @ u0 + gtu1, gu0 + hu1


def a_diag(z: torch.Tensor, kernel: Kernel) -> tuple[torch.Tensor, torch.Tensor]:
    """Diagonal of A: (K_ll of shape (M,), H_(l,i),(l,i) of shape (M, d)). O(M d)."""
    require_twice(kernel, "a_diag")
    M, d = z.shape
    if isinstance(kernel, RadialKernel):
        zero = torch.zeros(M, dtype=z.dtype, device=z.device)
        return kernel.profile(zero, 0), (-2.0 * kernel.profile(zero, 1))[:, None].expand(M, d).contiguous()
    n2 = (z * z).sum(1)
    return kernel.profile(n2, 0), kernel.profile(n2, 1)[:, None] + kernel.profile(n2, 2)[:, None] * z * z


def a_column(z: torch.Tensor, index: int, kernel: Kernel) -> tuple[torch.Tensor, torch.Tensor]:
    """Column ``index`` of A (0 ≤ index < M(1+d)) as (top part (M,), bottom part (M, d)). O(M d)."""
    require_twice(kernel, "a_column")
    M, d = z.shape
    if not 0 <= index < M * (1 + d):
        raise ValueError(f"index must be in [0, {M * (1 + d)}), got {index}")
    if index < M:  # column l' of [K; G]: k(z_l, z_l'), ∂_i k(z_l, z_l')
        b = z[index]
        if isinstance(kernel, RadialKernel):
            delta = z - b  # (M, d)
            t = (delta * delta).sum(1)
            return kernel.profile(t, 0), 2.0 * kernel.profile(t, 1)[:, None] * delta
        u = z @ b
        return kernel.profile(u, 0), kernel.profile(u, 1)[:, None] * b[None, :]
    lp, j = divmod(index - M, d)  # column (l', j) of [Gᵀ; H]
    a = z[lp]
    if isinstance(kernel, RadialKernel):
        delta = a[None, :] - z  # Δ = z_l' − z_l, (M, d); Gᵀ[l, (l',j)] = G[(l',j), l] = 2 g'(t) Δ_j
        t = (delta * delta).sum(1)
        g1, g2 = kernel.profile(t, 1), kernel.profile(t, 2)
        top = 2.0 * g1 * delta[:, j]
        # H[(l,i),(l',j)] = −2 g' δ_ij − 4 g'' (z_l − z_l')_i (z_l − z_l')_j
        bottom = -4.0 * g2[:, None] * delta * delta[:, j : j + 1]
        bottom[:, j] = bottom[:, j] - 2.0 * g1
        return top, bottom
    u = z @ a  # u_l = z_l · z_l'
    h1, h2 = kernel.profile(u, 1), kernel.profile(u, 2)
    top = h1 * z[:, j]  # G[(l',j), l] = h'(u) z_l j
    bottom = h2[:, None] * a[None, :] * z[:, j : j + 1]  # h'' z_l'i z_lj
    bottom[:, j] = bottom[:, j] + h1
    return top, bottom
