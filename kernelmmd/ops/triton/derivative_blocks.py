r"""Fused products with the derivative blocks of GCMMD (SPEC §2, §6): A·u, diag(A), columns of A.

Over Z = {z_l} (M × d) the matrix A = [[K, Gᵀ], [G, H]] (size M(1+d)) has entries
K_{l,l'} = k(z_l, z_l'), G_{(l,i),l'} = ∂_i k(z_l, z_l') (first argument), H_{(l,i),(l',j)} = ∂_i ∂_{j+d} k(z_l, z_l')
((l, i) ↦ l·d + i, as in :mod:`kernelmmd.ops.reference`). It is never formed: ``a_matvec`` returns
(K u0 + Gᵀ u1, G u0 + H u1) in one row-tiled O(M² d) pass with O(M d) memory. With Δ = z_l − z_l', t = ‖Δ‖²,
s_l' = z_l'·u1_l', C_ll' = z_l·u1_l' (one more ``tl.dot``):

* radial kernels, k = g(t):
  (K u0 + Gᵀ u1)_l = Σ_l' [g u0_l' + 2g'(s_l' − C_ll')],
  (G u0 + H u1)_l = z_l Σ_l' (2p − 4w) + Σ_l' (4w − 2p) z_l' − 2 Σ_l' g' u1_l',
  with p = g' u0_l', w = g''(C_ll' − s_l');
* dot kernels, k = h(u), u = z_lᵀz_l':
  (K u0 + Gᵀ u1)_l = Σ_l' [h u0_l' + h' C_ll'],  (G u0 + H u1)_l = Σ_l' (h' u0_l' + h'' C_ll') z_l' + Σ_l' h' u1_l'.

**Gradients.** A is symmetric, so ∂(αᵀA u)/∂u = A α: the u-gradient is ``a_matvec`` again (differentiable). The
z-gradient — the one the GCMMD envelope gradient needs — follows from writing L = Σ_{l,l'} F(z_l, z_l') with
F(x, y) = [α_l; β_l]ᵀ A(x, y) [μ_l'; ν_l'] (α, β the upstream gradients, μ, ν = u0, u1). Symmetry of k gives
F_{αβ,μν}(z_l', z_l) = F_{μν,αβ}(z_l, z_l'), so ∂L/∂z_l = Σ_l' [D_{αβ,μν} + D_{μν,αβ}](z_l, z_l') with D = ∂_x F.
For radial kernels (d_ν = Δ·ν, d_β = Δ·β, b = β·ν):

.. math::
    D = Δ\,[2αμ g' − 4α g'' d_ν + 4μ g'' d_β − 4 g'' b − 8 g''' d_β d_ν] + ν\,[−2α g' − 4 g'' d_β]
        + β\,[2μ g' − 4 g'' d_ν]

and for dot kernels (x·ν, β·y, β·ν):
D = y [αμ h' + α h'' x·ν + μ h'' β·y + h'' β·ν + h''' (β·y)(x·ν)] + ν [α h' + h'' β·y]. One row pass computes
seven pairwise products (zzᵀ, z u1ᵀ, β zᵀ, β u1ᵀ, z βᵀ, u1 zᵀ, u1 βᵀ) per tile with ``tl.dot`` and three output
products. The kernel-parameter gradient Σ_{l,l'} ∂F/∂θ uses ∂g/∂θ, ∂g'/∂θ, ∂g''/∂θ (one more pass, on request).

The z-gradient and the parameter gradient are once-differentiable (they would need g''''): differentiating them
again raises ``RuntimeError``; the u-gradient can be differentiated again. Only twice-differentiable kernels (rbf,
mix_rbf, rq, mix_rq, linear, poly) are accepted.

``a_diag`` and ``a_column`` are O(M d) row passes (no pairwise work): a column reads one point and every row.
Their backward recomputes the same O(M d) formulas with torch (:mod:`kernelmmd.ops.reference`) and is
once-differentiable. Precision, dtypes and the float64 outputs are as in :mod:`.witness`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...kernels import Kernel
from .. import reference
from .._shared import refuse
from . import _launch as L
from . import _tiles as T
from ._launch import Spec
from ._profiles import MIX_RBF, MIX_RQ, POLY, RBF, RQ, is_radial

__all__ = ["a_matvec", "a_diag", "a_column", "AOT_SPECS"]


# ---------------------------------------------------------------------------------------------------------------
# Kernels (tile helpers: :mod:`._tiles`)
# ---------------------------------------------------------------------------------------------------------------


@triton.jit
def _amv_kernel(
    z_ptr, nz_ptr, u0_ptr, u1_ptr, s_ptr, p_ptr,  # inputs: z (M, d), ‖z‖², u0 (M,), u1 (M, d), s = z·u1 (M,)
    top_ptr, bot_ptr,  # output partials: (split, M) and (split, M, d), float64
    M, d, tiles_per_split,
    KIND: tl.constexpr, R: tl.constexpr, DEGREE: tl.constexpr, DIRECT: tl.constexpr, PRECISION: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr,
):
    """A·u over this program's rows, output columns [pid_d·BD, (pid_d+1)·BD) and column tiles of its split."""
    RADIAL: tl.constexpr = is_radial(KIND)
    rows, dcols, pid_s = T.grid_tile(BM, BD)
    acc = tl.zeros((BM, BD), dtype=tl.float64)
    rsum = tl.zeros((BM,), dtype=tl.float64)
    top = tl.zeros((BM,), dtype=tl.float64)
    j_lo, j_hi = T.split_range(pid_s, tiles_per_split, M, BN)
    for jt in range(j_lo, j_hi):
        cols, arg = T.column_tile(jt, z_ptr, z_ptr, nz_ptr, nz_ptr, rows, M, M, d, KIND, DIRECT, PRECISION, BM, BN, BK)
        cmask = cols < M
        x = T.dot_tile(z_ptr, u1_ptr, rows, cols, M, M, d, DIRECT, PRECISION, BM, BN, BK)  # C_ll' = z_l · u1_l'
        u0 = T.load_vec(u0_ptr, cols, M)[None, :]
        g0 = T.profile_tile(arg, p_ptr, KIND, R, DEGREE, 0)
        g1 = T.profile_tile(arg, p_ptr, KIND, R, DEGREE, 1)
        g2 = T.profile_tile(arg, p_ptr, KIND, R, DEGREE, 2)
        zt = T.load_rows(z_ptr, cols, dcols, M, d)  # (BN, BD)
        ut = T.load_rows(u1_ptr, cols, dcols, M, d)
        if RADIAL:
            s = T.load_vec(s_ptr, cols, M)[None, :]
            tc = g0 * u0 + 2.0 * g1 * (s - x)
            cz = 4.0 * g2 * (x - s) - 2.0 * g1 * u0
            cz = tl.where(cmask[None, :], cz, 0.0)
            rsum -= tl.sum(cz, 1).to(tl.float64)
            part = tl.dot(cz, zt, input_precision=PRECISION)
            part = tl.dot(-2.0 * tl.where(cmask[None, :], g1, 0.0), ut, part, input_precision=PRECISION)
        else:
            tc = g0 * u0 + g1 * x
            cz = tl.where(cmask[None, :], g1 * u0 + g2 * x, 0.0)
            part = tl.dot(cz, zt, input_precision=PRECISION)
            part = tl.dot(tl.where(cmask[None, :], g1, 0.0), ut, part, input_precision=PRECISION)
        top += tl.sum(tl.where(cmask[None, :], tc, 0.0), 1).to(tl.float64)
        acc += part.to(tl.float64)
    out = acc
    if RADIAL:
        out += T.scaled_rows(z_ptr, rows, dcols, M, d, rsum)
    T.store_rows(bot_ptr + pid_s.to(tl.int64) * M * d, rows, dcols, M, d, out)
    tl.store(top_ptr + pid_s * M + rows, top, mask=(rows < M) & (tl.program_id(1) == 0))  # one output chunk writes it


@triton.jit
def _amv_bwd_kernel(
    z_ptr, nz_ptr, u0_ptr, u1_ptr, a_ptr, b_ptr, szu_ptr, szb_ptr, p_ptr,  # inputs (a, b: upstream gradients)
    out_ptr,  # PG: (tiles_i * split, RP) float64 parameter partials; else (split, M, d) float64 z-gradient partials
    M, d, tiles_per_split,
    KIND: tl.constexpr, R: tl.constexpr, DEGREE: tl.constexpr, PG: tl.constexpr, NP: tl.constexpr,
    DIRECT: tl.constexpr, PRECISION: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr, RP: tl.constexpr,
):
    """∂/∂z_l (PG = False) or ∂/∂θ (PG = True) of L = aᵀ(K u0 + Gᵀ u1) + Σ_l b_l·(G u0 + H u1)_l.

    szu = z·u1 and szb = z·b row-wise (on the same centred z). See the module docstring for the formulas.
    """
    RADIAL: tl.constexpr = is_radial(KIND)
    rows, dcols, pid_s = T.grid_tile(BM, BD)
    rmask = rows < M
    a_i = T.load_vec(a_ptr, rows, M)[:, None]
    u0_i = T.load_vec(u0_ptr, rows, M)[:, None]
    szu_i = T.load_vec(szu_ptr, rows, M)[:, None]
    szb_i = T.load_vec(szb_ptr, rows, M)[:, None]
    acc = tl.zeros((BM, BD), dtype=tl.float64)
    r_e = tl.zeros((BM,), dtype=tl.float64)  # Σ E   (coefficient of Δ)
    r_b = tl.zeros((BM,), dtype=tl.float64)  # Σ c3  (coefficient of b_l)
    r_u = tl.zeros((BM,), dtype=tl.float64)  # Σ c3' (coefficient of u1_l)
    ridx = tl.arange(0, RP)
    pvec = tl.zeros((RP,), dtype=tl.float64)
    j_lo, j_hi = T.split_range(pid_s, tiles_per_split, M, BN)
    for jt in range(j_lo, j_hi):
        cols = jt * BN + tl.arange(0, BN)
        valid = rmask[:, None] & (cols < M)[None, :]
        arg = T.pair_arg_tile(z_ptr, z_ptr, nz_ptr, nz_ptr, rows, cols, M, M, d, KIND, DIRECT, PRECISION,
                              BM, BN, BK)
        x_zu = T.dot_tile(z_ptr, u1_ptr, rows, cols, M, M, d, DIRECT, PRECISION, BM, BN, BK)  # z_l · u1_l'
        x_bz = T.dot_tile(b_ptr, z_ptr, rows, cols, M, M, d, DIRECT, PRECISION, BM, BN, BK)  # b_l · z_l'
        x_bu = T.dot_tile(b_ptr, u1_ptr, rows, cols, M, M, d, DIRECT, PRECISION, BM, BN, BK)  # b_l · u1_l'
        a_j = T.load_vec(a_ptr, cols, M)[None, :]
        u0_j = T.load_vec(u0_ptr, cols, M)[None, :]
        if PG:
            # F = αμ k + (terms in k') + (terms in k''): coefficients c0, c1, c2 of ∂k/∂θ, ∂k'/∂θ, ∂k''/∂θ
            c0 = a_i * u0_j
            if RADIAL:
                szu_j = T.load_vec(szu_ptr, cols, M)[None, :]
                dn = x_zu - szu_j
                db = szb_i - x_bz
                c1 = -2.0 * a_i * dn + 2.0 * u0_j * db - 2.0 * x_bu
                c2 = -4.0 * db * dn
            else:
                c1 = a_i * x_zu + u0_j * x_bz + x_bu
                c2 = x_bz * x_zu
            c0 = tl.where(valid, c0, 0.0)
            c1 = tl.where(valid, c1, 0.0)
            c2 = tl.where(valid, c2, 0.0)
            for r in tl.static_range(NP):
                dk = c0 * T.param_profile_tile(arg, p_ptr, KIND, DEGREE, r, 0)
                dk += c1 * T.param_profile_tile(arg, p_ptr, KIND, DEGREE, r, 1)
                dk += c2 * T.param_profile_tile(arg, p_ptr, KIND, DEGREE, r, 2)
                pvec = T.add_param_sum(pvec, ridx, r, dk)
        else:
            x_zb = T.dot_tile(z_ptr, b_ptr, rows, cols, M, M, d, DIRECT, PRECISION, BM, BN, BK)  # z_l · b_l'
            x_uz = T.dot_tile(u1_ptr, z_ptr, rows, cols, M, M, d, DIRECT, PRECISION, BM, BN, BK)  # u1_l · z_l'
            x_ub = T.dot_tile(u1_ptr, b_ptr, rows, cols, M, M, d, DIRECT, PRECISION, BM, BN, BK)  # u1_l · b_l'
            g1 = T.profile_tile(arg, p_ptr, KIND, R, DEGREE, 1)
            g2 = T.profile_tile(arg, p_ptr, KIND, R, DEGREE, 2)
            g3 = T.profile_tile(arg, p_ptr, KIND, R, DEGREE, 3)
            if RADIAL:
                szu_j = T.load_vec(szu_ptr, cols, M)[None, :]
                szb_j = T.load_vec(szb_ptr, cols, M)[None, :]
                # D(α = a_l, β = b_l; μ = u0_l', ν = u1_l')
                dn = x_zu - szu_j
                db = szb_i - x_bz
                e = 2.0 * a_i * u0_j * g1 - 4.0 * a_i * g2 * dn + 4.0 * u0_j * g2 * db - 4.0 * g2 * x_bu \
                    - 8.0 * g3 * db * dn
                c_u = -2.0 * a_i * g1 - 4.0 * g2 * db  # × u1_l'
                c_b = 2.0 * u0_j * g1 - 4.0 * g2 * dn  # × b_l
                # D(α = u0_l, β = u1_l; μ = a_l', ν = b_l')
                dn2 = x_zb - szb_j
                db2 = szu_i - x_uz
                e += 2.0 * u0_i * a_j * g1 - 4.0 * u0_i * g2 * dn2 + 4.0 * a_j * g2 * db2 - 4.0 * g2 * x_ub \
                    - 8.0 * g3 * db2 * dn2
                c_bj = -2.0 * u0_i * g1 - 4.0 * g2 * db2  # × b_l'
                c_ui = 2.0 * a_j * g1 - 4.0 * g2 * dn2  # × u1_l
                e = tl.where(valid, e, 0.0)
                r_e += tl.sum(e, 1).to(tl.float64)
                r_b += tl.sum(tl.where(valid, c_b, 0.0), 1).to(tl.float64)
                r_u += tl.sum(tl.where(valid, c_ui, 0.0), 1).to(tl.float64)
                e = -e
            else:
                e = a_i * u0_j * g1 + a_i * g2 * x_zu + u0_j * g2 * x_bz + g2 * x_bu + g3 * x_bz * x_zu
                e += u0_i * a_j * g1 + u0_i * g2 * x_zb + a_j * g2 * x_uz + g2 * x_ub + g3 * x_uz * x_zb
                c_u = a_i * g1 + g2 * x_bz
                c_bj = u0_i * g1 + g2 * x_uz
                e = tl.where(valid, e, 0.0)
            c_u = tl.where(valid, c_u, 0.0)
            c_bj = tl.where(valid, c_bj, 0.0)
            part = tl.dot(e, T.load_rows(z_ptr, cols, dcols, M, d), input_precision=PRECISION)
            part = tl.dot(c_u, T.load_rows(u1_ptr, cols, dcols, M, d), part, input_precision=PRECISION)
            part = tl.dot(c_bj, T.load_rows(b_ptr, cols, dcols, M, d), part, input_precision=PRECISION)
            acc += part.to(tl.float64)
    if PG:
        tl.store(out_ptr + (tl.program_id(0) * tl.num_programs(2) + pid_s) * RP + ridx, pvec)
    else:
        out = acc
        if RADIAL:
            out += T.scaled_rows(z_ptr, rows, dcols, M, d, r_e)
            out += T.scaled_rows(b_ptr, rows, dcols, M, d, r_b)
            out += T.scaled_rows(u1_ptr, rows, dcols, M, d, r_u)
        T.store_rows(out_ptr + pid_s.to(tl.int64) * M * d, rows, dcols, M, d, out)


@triton.jit
def _adiag_kernel(
    z_ptr, p_ptr, top_ptr, bot_ptr, M, d,
    KIND: tl.constexpr, R: tl.constexpr, DEGREE: tl.constexpr, BM: tl.constexpr, BD: tl.constexpr,
):
    """diag K (M,) and diag H (M, d): radial g(0), −2g'(0); dot h(‖z‖²), h'(‖z‖²) + h''(‖z‖²) z_i²."""
    RADIAL: tl.constexpr = is_radial(KIND)
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    arg = tl.zeros((BM,), dtype=z_ptr.dtype.element_ty)  # t = 0 (radial), u = ‖z_l‖² (dot)
    if not RADIAL:
        for k0 in range(0, d, BD):
            zt = T.load_rows(z_ptr, rows, k0 + tl.arange(0, BD), M, d)
            arg += tl.sum(zt * zt, 1)
    k0v = T.profile_tile(arg, p_ptr, KIND, R, DEGREE, 0)
    k1v = T.profile_tile(arg, p_ptr, KIND, R, DEGREE, 1)
    k2v = T.profile_tile(arg, p_ptr, KIND, R, DEGREE, 2)
    tl.store(top_ptr + rows, k0v.to(tl.float64), mask=rows < M)
    for k0 in range(0, d, BD):
        dcols = k0 + tl.arange(0, BD)
        if RADIAL:
            out = tl.zeros((BM, BD), dtype=tl.float64) + (-2.0 * k1v).to(tl.float64)[:, None]
        else:
            zt = T.load_rows(z_ptr, rows, dcols, M, d)
            out = (k1v[:, None] + k2v[:, None] * zt * zt).to(tl.float64)
        T.store_rows(bot_ptr, rows, dcols, M, d, out)


@triton.jit
def _acol_kernel(
    z_ptr, p_ptr, top_ptr, bot_ptr, M, d, point_off, j,
    KIND: tl.constexpr, R: tl.constexpr, DEGREE: tl.constexpr, FIRST: tl.constexpr,
    BM: tl.constexpr, BD: tl.constexpr,
):
    """Column of A for the point c = z[l'] (``point_off`` = l'·d). FIRST (index < M): (k(z_l, c), ∇_1 k(z_l, c));
    otherwise the column (l', j) of [Gᵀ; H]. Radial t is summed from exact differences."""
    RADIAL: tl.constexpr = is_radial(KIND)
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    rmask = rows < M
    cp = z_ptr + point_off
    arg = tl.zeros((BM,), dtype=z_ptr.dtype.element_ty)
    for k0 in range(0, d, BD):
        dcols = k0 + tl.arange(0, BD)
        zt = T.load_rows(z_ptr, rows, dcols, M, d)
        cv = T.load_vec(cp, dcols, d)[None, :]
        if RADIAL:
            diff = tl.where((dcols < d)[None, :], zt - cv, 0.0)
            arg += tl.sum(diff * diff, 1)
        else:
            arg += tl.sum(zt * cv, 1)
    k0v = T.profile_tile(arg, p_ptr, KIND, R, DEGREE, 0)
    k1v = T.profile_tile(arg, p_ptr, KIND, R, DEGREE, 1)
    k2v = T.profile_tile(arg, p_ptr, KIND, R, DEGREE, 2)
    zj = tl.load(z_ptr + rows.to(tl.int64) * d + j, mask=rmask, other=0.0)  # z_l j
    cj = tl.load(cp + j)  # c_j
    if FIRST:
        top = k0v
    elif RADIAL:
        top = 2.0 * k1v * (cj - zj)  # Gᵀ[l, (l', j)] = 2 g' (z_l' − z_l)_j
    else:
        top = k1v * zj  # h' z_l j
    tl.store(top_ptr + rows, top.to(tl.float64), mask=rmask)
    for k0 in range(0, d, BD):
        dcols = k0 + tl.arange(0, BD)
        zt = T.load_rows(z_ptr, rows, dcols, M, d)
        cv = T.load_vec(cp, dcols, d)[None, :]
        eye = (dcols == j)[None, :]
        if FIRST:
            if RADIAL:
                out = 2.0 * k1v[:, None] * (zt - cv)
            else:
                out = k1v[:, None] * cv + tl.zeros_like(zt)
        elif RADIAL:  # H[(l,i),(l',j)] = −2 g' δ_ij − 4 g'' Δ_i Δ_j, Δ = z_l' − z_l
            out = -4.0 * k2v[:, None] * (cv - zt) * (cj - zj)[:, None] + tl.where(eye, -2.0 * k1v[:, None], 0.0)
        else:  # h'' c_i z_l j + h' δ_ij
            out = k2v[:, None] * cv * zj[:, None] + tl.where(eye, k1v[:, None], 0.0)
        T.store_rows(bot_ptr, rows, dcols, M, d, out.to(tl.float64))


# ---------------------------------------------------------------------------------------------------------------
# Host launchers (shared checks, tiles and grids: :mod:`._launch`)
# ---------------------------------------------------------------------------------------------------------------


def _geometry(zc: torch.Tensor, spec: Spec, heavy: bool):
    M, d = zc.shape
    tiles = L.tiles_for(zc.device, spec.dtype, d, heavy, spec.precision)
    return M, d, tiles, L.tile_width(d, tiles.block_k), L.tile_width(d, tiles.block_d), d <= tiles.direct_max_d


def amv_launch(z, u0, u1, spec: Spec) -> tuple[torch.Tensor, torch.Tensor]:
    """(K u0 + Gᵀ u1 (M,), G u0 + H u1 (M, d)), float64."""
    zc, nz = L.prepare(spec, z)
    M, d, tiles, bk, bd, direct = _geometry(zc, spec, False)
    u0f, u1f = L.flat(u0, spec.dtype), L.flat(u1, spec.dtype)
    s = (zc * u1f).sum(1)
    tiles_d = triton.cdiv(d, bd)
    tiles_i, split, per = L.row_grid(tiles, M, M, tiles_d, zc.device)
    top, bot = L.partials(split, M, device=zc.device), L.partials(split, M, d, device=zc.device)
    _amv_kernel[(tiles_i, tiles_d, split)](
        zc, nz, u0f, u1f, s, spec.params, top, bot,
        M, d, per,
        **L.kind_constexprs(spec), DIRECT=direct, PRECISION=spec.precision,
        BM=tiles.block_m, BN=tiles.block_n, BK=bk, BD=bd,
        **L.launch_opts(tiles),
    )
    return L.reduce_partials(top), L.reduce_partials(bot)


def amv_bwd_launch(z, u0, u1, a, b, spec: Spec, params: bool) -> torch.Tensor:
    """z-gradient (M, d) or, with ``params``, the (n_params,) kernel-parameter gradient of aᵀtop + ⟨b, bottom⟩."""
    zc, nz = L.prepare(spec, z)
    M, d, tiles, bk, bd, direct = _geometry(zc, spec, True)
    u0f, u1f, af, bf = (L.flat(t, spec.dtype) for t in (u0, u1, a, b))
    szu, szb = (zc * u1f).sum(1), (zc * bf).sum(1)
    rp = L.pow2(max(1, spec.n_params))
    tiles_d = 1 if params else triton.cdiv(d, bd)
    tiles_i, split, per = L.row_grid(tiles, M, M, tiles_d, zc.device)
    out = L.partials(tiles_i * split, rp, device=zc.device) if params else L.partials(split, M, d, device=zc.device)
    _amv_bwd_kernel[(tiles_i, tiles_d, split)](
        zc, nz, u0f, u1f, af, bf, szu, szb, spec.params, out,
        M, d, per,
        **L.kind_constexprs(spec), PG=params, NP=spec.n_params, DIRECT=direct,
        PRECISION=spec.precision, BM=tiles.block_m, BN=tiles.block_n, BK=bk, BD=bd, RP=rp,
        **L.launch_opts(tiles),
    )
    if params:
        return out.sum(0)[: spec.n_params]
    return L.reduce_partials(out)


def _row_pass(fn, zf: torch.Tensor, spec: Spec, scalars: tuple, flags: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch an O(M d) row pass ``fn(z, p, top, bottom, M, d, *scalars, KIND, R, DEGREE, **flags, BM, BD)`` over
    the row tiles of z (``flags``: its own constexprs, by name); returns its float64 outputs (top (M,), bottom
    (M, d))."""
    M, d = zf.shape
    tiles = L.tiles_for(zf.device, spec.dtype, d, False, spec.precision)
    top = torch.empty(M, dtype=torch.float64, device=zf.device)
    bot = torch.empty(M, d, dtype=torch.float64, device=zf.device)
    fn[(triton.cdiv(M, tiles.block_m),)](
        zf, spec.params, top, bot, M, d, *scalars, **L.kind_constexprs(spec), **flags,
        BM=tiles.block_m, BD=L.tile_width(d, tiles.block_d),
        num_warps=tiles.num_warps,
    )
    return top, bot


def adiag_launch(z, spec: Spec) -> tuple[torch.Tensor, torch.Tensor]:
    return _row_pass(_adiag_kernel, L.flat(z, spec.dtype), spec, (), {})


def acol_launch(z, index: int, spec: Spec) -> tuple[torch.Tensor, torch.Tensor]:
    M, d = z.shape
    first = index < M
    point, j = (index, 0) if first else divmod(index - M, d)
    return _row_pass(_acol_kernel, L.flat(z, spec.dtype), spec, (point * d, j), {"FIRST": first})


# ---------------------------------------------------------------------------------------------------------------
# Autograd Functions
# ---------------------------------------------------------------------------------------------------------------


def _amv_bwd(z, u0, u1, ga, gb, spec: Spec, want_z: bool, needs, params) -> list:
    """[z-gradient, *parameter gradients] of a_matvec (None where not wanted); a further differentiation raises
    (it would need the fourth profile derivative; :func:`.._shared.refuse`)."""
    with torch.no_grad():
        gz = amv_bwd_launch(z, u0, u1, ga, gb, spec, False).to(z.dtype) if want_z else None
        pg = amv_bwd_launch(z, u0, u1, ga, gb, spec, True) if any(needs) else None
        pgs = L.param_grads(pg, spec.param_index, params, needs)
    return refuse(L.second_order_message("the z- and parameter-gradient of a_matvec", "g''''"), [gz, *pgs],
                  (z, u0, u1, ga, gb, *params))


class _AMatvec(torch.autograd.Function):
    """(K u0 + Gᵀ u1, G u0 + H u1) over z; float64 (M,), (M, d)."""

    @staticmethod
    def forward(ctx, z, u0, u1, spec, *params):
        ctx.save_for_backward(z, u0, u1, *params)
        ctx.spec = spec
        ctx.set_materialize_grads(False)
        return amv_launch(z, u0, u1, spec)

    @staticmethod
    def backward(ctx, ga, gb):
        z, u0, u1, *params = ctx.saved_tensors
        spec = ctx.spec
        need = ctx.needs_input_grad
        if ga is None and gb is None:
            return (None,) * (4 + len(params))
        ga = torch.zeros(z.shape[0], dtype=torch.float64, device=z.device) if ga is None else ga
        gb = torch.zeros(z.shape, dtype=torch.float64, device=z.device) if gb is None else gb
        gu0 = gu1 = gz = None
        pgs = [None] * len(params)
        if need[1] or need[2]:  # A is symmetric: ∂(gᵀ A u)/∂u = A g
            gu0, gu1 = _AMatvec.apply(z, ga, gb, spec, *params)
            gu0 = gu0.to(u0.dtype) if need[1] else None
            gu1 = gu1.to(u1.dtype) if need[2] else None
        if need[0] or any(need[4:]):
            gz, *pgs = _amv_bwd(z, u0, u1, ga, gb, spec, need[0], need[4:], params)
        return (gz, gu0, gu1, None, *pgs)


class _ARowPass(torch.autograd.Function):
    """diag(A) (index None) or one column of A through the Triton row pass; backward by the O(M d) torch formulas
    (once-differentiable)."""

    @staticmethod
    def forward(ctx, z, index, spec, kernel, *params):
        ctx.save_for_backward(z, *params)
        ctx.kernel, ctx.index = kernel, index
        return adiag_launch(z, spec) if index is None else acol_launch(z, index, spec)

    @staticmethod
    def backward(ctx, gt, gb):
        z, *params = ctx.saved_tensors
        grads = _diag_column_vjp(z, gt, gb, ctx.kernel, ctx.index, params)
        return (grads[0], None, None, None, *grads[1:])


def _diag_column_vjp(z, gt, gb, kernel, index, params) -> list:
    """[z-gradient, *parameter gradients] of diag(A) (index None) or a column of A, by autograd through the
    reference; a further differentiation raises (:func:`.._shared.refuse`)."""
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        top, bot = reference.a_diag(zz, kernel) if index is None else reference.a_column(zz, index, kernel)
        wrt = [zz] + [p for p in params if p.requires_grad]
        outs = [top, bot]
        gs = [gt, gb]
        keep = [i for i, o in enumerate(outs) if o.requires_grad and gs[i] is not None]
        if not keep:
            grads = [None] * len(wrt)
        else:
            grads = torch.autograd.grad([outs[i] for i in keep], wrt,
                                        [gs[i].detach().to(outs[i].dtype) for i in keep], allow_unused=True)
    it = iter(grads[1:])
    pgs = [next(it) if p.requires_grad else None for p in params]
    gz = grads[0] if grads[0] is not None else torch.zeros_like(z)
    return refuse(L.second_order_message("the gradient of a_diag / a_column", "g''''"), [gz, *pgs],
                  (z, gt, gb, *params))


# ---------------------------------------------------------------------------------------------------------------
# Functional aliases
# ---------------------------------------------------------------------------------------------------------------


def _check_z(z: torch.Tensor, kernel: Kernel, precision: str, what: str) -> Spec:
    dtype = L.compute_dtype("z", z, precision)
    L.check_points("z", z, "M")
    spec = L.make_spec(kernel, "xx", dtype, z.device, precision)
    if not getattr(kernel, "twice_differentiable", False) or spec.sqrt_distance:
        raise ValueError(
            f"{what} needs a twice-differentiable radial or dot-product kernel "
            f"(rbf, mix_rbf, rq, mix_rq, linear, poly), got {kernel!r}"
        )
    return spec


def a_matvec(z: torch.Tensor, u0: torch.Tensor, u1: torch.Tensor, kernel: Kernel,
             precision: str = "ieee") -> tuple[torch.Tensor, torch.Tensor]:
    r"""A·u for A = [[K, Gᵀ], [G, H]] over Z and u = [u0; u1], fused, without forming A (SPEC §2).

    .. math::
        (Au)_{\text{top}} = K u_0 + G^\top u_1, \qquad (Au)_{\text{bottom}} = G u_0 + H u_1

    O(M² d) time, O(M d) memory; one pass for the value, one for the z-gradient.

    Args:
        z: (M, d) points on a CUDA device (CPU under the Triton interpreter). u0: (M,), u1: (M, d) (any float dtype).
        kernel: resolved twice-differentiable radial or dot-product kernel.
        precision: ``"ieee"`` (default), ``"tf32"`` or ``"tf32x3"`` (float32 only).

    Returns:
        (top (M,), bottom (M, d)), float64. Differentiable in z, u0, u1 and tensor kernel parameters; the u-gradient
        (A·g again) can be differentiated further, the z- and parameter-gradients cannot (``RuntimeError``).

    Raises:
        ValueError: z not on CUDA outside the interpreter, bad shapes, unknown precision, a kernel that is not twice
        differentiable (laplacian, energy, rbf_bounded). TypeError: non-float dtypes, unsupported kernel.

    Example:
        >>> top, bottom = a_matvec(z.cuda(), u0.cuda(), u1.cuda(), kernelmmd.RBF(1.0))  # doctest: +SKIP
    """
    spec = _check_z(z, kernel, precision, "a_matvec")
    L.check_like("u0", u0, "z", z, (z.shape[0],))
    L.check_like("u1", u1, "z", z, tuple(z.shape))
    return _AMatvec.apply(z, u0, u1, spec, *L.tensor_params(kernel, spec))


def a_diag(z: torch.Tensor, kernel: Kernel, precision: str = "ieee") -> tuple[torch.Tensor, torch.Tensor]:
    r"""Diagonal of A: (K_ll (M,), H_(l,i),(l,i) (M, d)), float64, O(M d).

    Radial kernels: g(0) and −2g'(0); dot kernels: h(‖z_l‖²) and h'(‖z_l‖²) + h''(‖z_l‖²) z_li².

    Args:
        z: (M, d). kernel: twice-differentiable radial or dot-product kernel. precision: accepted for a uniform
        signature (no products are formed).

    Returns:
        (top (M,), bottom (M, d)) float64; differentiable once in z and tensor kernel parameters.

    Raises:
        ValueError / TypeError: as :func:`a_matvec`.

    Example:
        >>> k_diag, h_diag = a_diag(z.cuda(), kernelmmd.RBF(1.0))  # doctest: +SKIP
    """
    spec = _check_z(z, kernel, precision, "a_diag")
    return _ARowPass.apply(z, None, spec, kernel, *L.tensor_params(kernel, spec))


def a_column(z: torch.Tensor, index: int, kernel: Kernel,
             precision: str = "ieee") -> tuple[torch.Tensor, torch.Tensor]:
    r"""Column ``index`` of A (0 ≤ index < M(1+d)) as (top (M,), bottom (M, d)), float64, O(M d).

    index < M: column l' = index of [K; G]: (k(z_l, z_l'), ∇_1 k(z_l, z_l')). Otherwise (l', j) = divmod(index − M, d):
    column (l', j) of [Gᵀ; H].

    Args:
        z: (M, d). index: int. kernel, precision: as :func:`a_diag`.

    Returns:
        (top (M,), bottom (M, d)) float64; differentiable once in z and tensor kernel parameters.

    Raises:
        ValueError: index out of range, and as :func:`a_matvec`. TypeError: index not an int, and as
        :func:`a_matvec`.

    Example:
        >>> top, bottom = a_column(z.cuda(), 3, kernelmmd.RBF(1.0))  # doctest: +SKIP
    """
    spec = _check_z(z, kernel, precision, "a_column")
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"index must be an int, got {type(index).__name__} {index!r}")
    M, d = z.shape
    if not 0 <= index < M * (1 + d):
        raise ValueError(f"index must be in [0, {M * (1 + d)}), got {index}")
    return _ARowPass.apply(z, index, spec, kernel, *L.tensor_params(kernel, spec))


# ---------------------------------------------------------------------------------------------------------------
# Ahead-of-time compilation specs (tests/test_triton_aot.py compiles each for sm_90)
# ---------------------------------------------------------------------------------------------------------------


def _aot(name, fn, const, dt, precision="ieee", f64=("top_ptr", "bot_ptr")):
    return L.aot_spec(name, fn, const, dt=dt, f64=f64, tensor_cores=precision != "ieee")


def _aot_amv(name, kind, *, r=1, degree=0, direct=False, precision="ieee", dt="fp32", bk=16, bd=64):
    const = dict(KIND=kind, R=r, DEGREE=degree, DIRECT=direct, PRECISION=precision, BM=64, BN=32, BK=bk, BD=bd)
    return _aot(name, _amv_kernel, const, dt, precision)


def _aot_bwd(name, kind, *, r=1, degree=0, pg=False, n_params=1, direct=False, precision="ieee", dt="fp32", bk=16,
             bd=32):
    const = dict(KIND=kind, R=r, DEGREE=degree, PG=pg, NP=n_params, DIRECT=direct, PRECISION=precision,
                 BM=32, BN=32, BK=bk, BD=bd, RP=L.pow2(max(1, n_params)))
    return _aot(name, _amv_bwd_kernel, const, dt, precision, f64=("out_ptr",))


def _aot_row(name, fn, kind, *, r=1, degree=0, first=None, dt="fp32"):
    flags = {} if first is None else {"FIRST": first}
    return _aot(name, fn, dict(KIND=kind, R=r, DEGREE=degree, **flags, BM=64, BD=64), dt)


AOT_SPECS = [  # one representative per kernel and path: ieee, tf32, tf32x3, fp64, parameter gradients
    _aot_amv("amv_rbf", RBF),
    _aot_amv("amv_rq_tf32x3", RQ, precision="tf32x3", bd=32),
    _aot_amv("amv_poly_tf32", POLY, r=2, degree=3, precision="tf32"),
    _aot_amv("amv_rbf_fp64", RBF, dt="fp64", bk=16),
    _aot_bwd("amv_bwd_rbf", RBF),
    _aot_bwd("amv_bwd_poly_tf32x3", POLY, r=2, degree=3, n_params=2, precision="tf32x3"),
    _aot_bwd("amv_bwd_mix_rq_tf32", MIX_RQ, r=5, n_params=5, precision="tf32"),
    _aot_bwd("amv_bwd_mix_rbf_params", MIX_RBF, r=5, n_params=5, pg=True),
    _aot_row("adiag_rbf", _adiag_kernel, RBF),
    _aot_row("adiag_poly", _adiag_kernel, POLY, r=2, degree=3),
    _aot_row("acol_rq_first", _acol_kernel, RQ, first=True),
    _aot_row("acol_poly", _acol_kernel, POLY, r=2, degree=3, first=False),
]
