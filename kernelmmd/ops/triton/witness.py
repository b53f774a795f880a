r"""Fused kernel–matrix products (witness η̂, batched permutation statistics K·E) and the witness gradient ∇η̂.

Two ops (SPEC §4, §13), each a row-tiled pass that never holds the n × m kernel matrix:

.. math::
    \texttt{kernel\_mv}:\quad o_{ib} = \sum_j k(x_i, y_j)\, v_{jb}
    \qquad\qquad
    \texttt{kernel\_grad\_mv}:\quad g_i = \sum_j v_j\, \nabla_a k(a, y_j)\big|_{a = x_i}

The witness is ``kernel_mv(t, [x; y], [1/n; −1/m])`` and its gradient the same call of ``kernel_grad_mv``; B
permutations of a two-sample test are one ``kernel_mv`` with a (N, B) matrix E of ±weights (B columns per pass).

**Tiling.** A program owns BLOCK_M rows, one chunk of output columns (B for ``kernel_mv``, d for the gradient) and a
contiguous range of column tiles of y (``split`` > 1 only to fill the GPU when n is small). Per tile: the pair
argument (t = ‖x‖² + ‖y‖² − 2xᵀy on centred data with ``tl.dot``, clamped at 0, or exact coordinate differences
when d ≤ 8; u = xᵀy for dot kernels, via :func:`._tiles.pair_arg_tile`; for the √t kernels, uncentred, with close
pairs re-formed from differences and their gradient shares summed by :func:`._tiles.sub_close_pair_grad` — see
:mod:`.block_stats`), the profile from :mod:`._profiles`,
then one product with ``tl.dot`` — P·V for ``kernel_mv``, P·Y for the gradient (the flash-attention structure
exp(QKᵀ)·V without the normalisation). Tiles are summed in fp32 and accumulated across tiles in float64; each
program writes its own partial, the host reduces partials with ``torch.sum`` (deterministic, no float atomics).
For d > BLOCK_D the gradient's output columns are split over a grid axis and each program recomputes t: cost
(1 + d / BLOCK_D) / 2 times the forward's.

**Gradients** (w.r.t. x, y, v and every tensor kernel parameter). With upstream G (n, B) and W = G Vᵀ:

* ∂/∂v = K(y, x)·G — ``kernel_mv`` again (rows and columns swapped, same block bounds);
* ∂/∂x_i = Σ_j W_ij ∇_1 k(x_i, y_j) — the generalised gradient product
  :math:`\mathrm{grad\_mv}(x, y; L, R)_i = \sum_j (L_i \cdot R_j)\, \nabla_1 k(x_i, y_j)` with L = G, R = V;
  ∂/∂y the same with the roles of x, y and of L, R swapped;
* ∂/∂θ = Σ_ij W_ij ∂k_ij/∂θ.

``kernel_grad_mv`` is grad_mv with L = 1, R = v. The backward of grad_mv (upstream Γ (n, d); radial kernels
k = g(t), s_i = Γ_i·x_i, C_ij = Γ_i·y_j, r_ij = W_ij g''(t_ij)(s_i − C_ij)) is

.. math::
    \nabla_{x_i} = 2\Gamma_i \sum_j W_{ij} g'_{ij} + 4\Big(x_i \sum_j r_{ij} - \sum_j r_{ij} y_j\Big),\qquad
    \nabla_{y_j} = 4\Big(y_j \sum_i r_{ij} - \sum_i r_{ij} x_i\Big) - 2 \sum_i W_{ij} g'_{ij} \Gamma_i,

∂/∂L and ∂/∂R are kernel-matrix products with Q_ij = 2g'_ij (s_i − C_ij), and ∂/∂θ = Σ W_ij 2 ∂g'_ij/∂θ (s_i − C_ij);
for dot kernels (k = h(u)): ∇_{x_i} = Σ_j W_ij h''_ij C_ij y_j, ∇_{y_j} = Σ_i W_ij (h''_ij C_ij x_i + h'_ij Γ_i),
Q_ij = h'_ij C_ij. All are the same row pass with one more ``tl.dot`` for C.

**Double backward.** ``kernel_mv``'s backward is built from differentiable ``kernel_mv`` / grad_mv calls, so
``kernel_mv`` can be differentiated twice in x, y and v (MMD-GAN-GP's gradient penalty differentiates the witness
gradient); its kernel-parameter gradient is once-differentiable. grad_mv (hence ``kernel_grad_mv``) is
once-differentiable: a further differentiation raises ``RuntimeError`` (also through ``torch.autograd.grad``).
Gradients in x, y of grad_mv need g'': the laplacian, energy and l1_laplacian kernels raise ``ValueError`` there (also
when x or y merely requires grad while only v's gradient is asked for: detach them).

**L1 kernels** (t = ‖a − b‖₁, summed coordinate by coordinate: no ``tl.dot``, no centring): ``kernel_mv`` as above;
grad_mv adds Σ_j p_ij sign(a_ik − b_jk) column by column into the program's float64 output rows
(:func:`._tiles.add_sign_pair_grad`, sign(0) = 0); the directional products of the backward are Γ·sign(a − b)
(:func:`._tiles.l1_direction_tile`).

**Precision.** ``precision="ieee"`` (default): fp32 products, exact to fp32 rounding; ``"tf32"``: tensor cores for
every product (about 10 mantissa bits in the inputs; t loses accuracy for nearby points); ``"tf32x3"``: split
precision on tensor cores, close to fp32. The error of the tensor-core modes can only be measured on a GPU (the
interpreter computes in numpy fp32/fp64). float16/bfloat16 inputs are computed in fp32, float64 inputs in float64
(``precision`` must then be ``"ieee"``). Outputs are float64.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ...kernels import Kernel
from .._shared import PRECISIONS, energy_norm_mv, refuse, unit_rows
from . import _launch as L
from . import _tiles as T
from ._launch import Spec, Tiles
from ._profiles import L1_LAPLACIAN, LAPLACIAN, MIX_RBF, MIX_RQ, POLY, RBF, RQ, is_l1, is_radial, is_sqrt

__all__ = ["kernel_mv", "kernel_grad_mv", "grad_mv", "Tiles", "PRECISIONS", "AOT_SPECS"]


# ---------------------------------------------------------------------------------------------------------------
# Kernels (tile helpers: :mod:`._tiles`)
# ---------------------------------------------------------------------------------------------------------------


@triton.jit
def _mv_kernel(
    a_ptr, b_ptr, na_ptr, nb_ptr, v_ptr, aux_ptr, s_ptr, p_ptr, lohi_ptr,  # inputs
    out_ptr,  # output partials (split, n, nv) float64
    n, m, d, nv, tiles_per_split,
    KIND: tl.constexpr, R: tl.constexpr, DEGREE: tl.constexpr, MODE: tl.constexpr, VEC: tl.constexpr,
    CLAMP_LO: tl.constexpr, CLAMP_HI: tl.constexpr, DIRECT: tl.constexpr, PRECISION: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BB: tl.constexpr,
):
    """o_ib = Σ_j q_ij v_jb over the column tiles of this program's split.

    MODE 0: q = k(a_i, b_j) (radial part only for the energy kernel). MODE 1 (row aux Γ, s_i = Γ_i·a_i) and MODE 2
    (column aux Γ, s_j = Γ_j·b_j): q = Γ·∇_1 k — radial 2g'(t)(s − X), dot h'(u) X, with X = Γ_i·b_j (MODE 1) or
    a_i·Γ_j (MODE 2). VEC: nv = 1, the product is a row reduction instead of ``tl.dot``.
    """
    rows, bcols, pid_s = T.grid_tile(BM, BB)
    lo, hi = T.load_bounds(lohi_ptr)
    if VEC:
        acc = tl.zeros((BM,), dtype=tl.float64)
    else:
        acc = tl.zeros((BM, BB), dtype=tl.float64)
    s_row = T.row_scalars(s_ptr, rows, n, MODE == 1)
    j_lo, j_hi = T.split_range(pid_s, tiles_per_split, m, BN)
    for jt in range(j_lo, j_hi):
        cols, arg = T.column_tile(jt, a_ptr, b_ptr, na_ptr, nb_ptr, rows, n, m, d, KIND, DIRECT, PRECISION, BM, BN, BK)
        if MODE == 0:
            q = T.kernel_tile(arg, p_ptr, lo, hi, KIND, R, DEGREE, 0, CLAMP_LO, CLAMP_HI)
        else:
            g1 = T.kernel_tile(arg, p_ptr, lo, hi, KIND, R, DEGREE, 1, CLAMP_LO, CLAMP_HI)
            q = T.directional_tile(g1, a_ptr, b_ptr, aux_ptr, s_ptr, s_row, rows, cols, n, m, d, KIND, MODE == 1,
                                   DIRECT, PRECISION, BM, BN, BK)
        q = tl.where((cols < m)[None, :], q, 0.0)
        if VEC:
            acc += tl.sum(q * T.load_vec(v_ptr, cols, m)[None, :], 1).to(tl.float64)
        else:
            vt = T.load_rows(v_ptr, cols, bcols, m, nv)  # (BN, BB)
            acc += tl.dot(q, vt, input_precision=PRECISION).to(tl.float64)
    base = out_ptr + pid_s.to(tl.int64) * n * nv
    if VEC:
        tl.store(base + rows, acc, mask=rows < n)
    else:
        T.store_rows(base, rows, bcols, n, nv, acc)


@triton.jit
def _grad_kernel(
    a_ptr, b_ptr, na_ptr, nb_ptr, l_ptr, r_ptr, p_ptr, lohi_ptr,  # inputs
    out_ptr,  # output partials (split, n, d) float64
    n, m, d, nb, tiles_per_split,
    KIND: tl.constexpr, R: tl.constexpr, DEGREE: tl.constexpr, VEC: tl.constexpr,
    CLAMP_LO: tl.constexpr, CLAMP_HI: tl.constexpr, DIRECT: tl.constexpr, PRECISION: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr, BB: tl.constexpr,
):
    """grad_mv: o_i = Σ_j W_ij ∇_1 k(a_i, b_j), W = L Rᵀ; radial 2(a_i Σ_j p_ij − Σ_j p_ij b_j) with p = W g'(t),
    dot Σ_j W_ij h'(u_ij) b_j, L1 Σ_j p_ij sign(a_i − b_j) (added column by column into out's rows). This program
    writes output columns [pid_d·BD, (pid_d+1)·BD)."""
    RADIAL: tl.constexpr = is_radial(KIND)
    SQRT: tl.constexpr = is_sqrt(KIND)
    L1: tl.constexpr = is_l1(KIND)
    rows, dcols, pid_s = T.grid_tile(BM, BD)
    lo, hi = T.load_bounds(lohi_ptr)
    acc = tl.zeros((BM, BD), dtype=tl.float64)
    psum = tl.zeros((BM,), dtype=tl.float64)
    j_lo, j_hi = T.split_range(pid_s, tiles_per_split, m, BN)
    out_base = out_ptr + pid_s.to(tl.int64) * n * d  # this split's (n, d) slab
    corrected = j_lo > j_hi  # (false) √t kernels: out's rows hold −Σ p (a − b) over close pairs
    k0 = tl.program_id(1) * BD
    k1 = tl.minimum(k0 + BD, d)
    if L1:
        T.zero_rows(out_base, rows, n, d, k0, k1, BM, BD)
        tl.debug_barrier()
    for jt in range(j_lo, j_hi):
        cols, arg = T.column_tile(jt, a_ptr, b_ptr, na_ptr, nb_ptr, rows, n, m, d, KIND, DIRECT, PRECISION, BM, BN, BK)
        w = T.lowrank_tile(l_ptr, r_ptr, rows, cols, n, m, nb, VEC, PRECISION, BM, BN, BB)
        p = w * T.kernel_tile(arg, p_ptr, lo, hi, KIND, R, DEGREE, 1, CLAMP_LO, CLAMP_HI)
        p = tl.where((cols < m)[None, :], p, 0.0)
        if L1:
            T.add_sign_pair_grad(out_base, p, a_ptr, b_ptr, rows, cols, n, m, d, k0, k1)
            tl.debug_barrier()
        else:
            bt = T.load_rows(b_ptr, cols, dcols, m, d)  # (BN, BD)
            if SQRT:  # close pairs of √t kernels: −Σ p (a − b) from differences, into out's rows
                close = T.close_pairs(arg, na_ptr, nb_ptr, rows, cols, n, m)
                if T.any_pair(close):
                    T.sub_close_pair_grad(out_base, tl.where(close, p, 0.0), a_ptr, b_ptr, rows, cols, n, m, d, k0,
                                          k1, corrected)
                    tl.debug_barrier()
                    corrected = jt >= j_lo  # (true)
                p = tl.where(close, 0.0, p)
            acc += tl.dot(p, bt, input_precision=PRECISION).to(tl.float64)
            if RADIAL:
                psum += tl.sum(p, 1).to(tl.float64)
    if not L1:  # (L1: out's rows already hold the result)
        if SQRT:
            omask = (rows < n)[:, None] & (dcols < d)[None, :]
            acc += tl.load(out_base + rows.to(tl.int64)[:, None] * d + dcols[None, :], mask=omask & corrected,
                           other=0.0)
        if RADIAL:
            out = 2.0 * (T.scaled_rows(a_ptr, rows, dcols, n, d, psum) - acc)
        else:
            out = acc
        T.store_rows(out_base, rows, dcols, n, d, out)


@triton.jit
def _grad2_kernel(
    a_ptr, b_ptr, na_ptr, nb_ptr, aux_ptr, s_ptr, l_ptr, r_ptr, p_ptr, lohi_ptr,  # inputs
    out_ptr,  # output partials (split, n, d) float64
    n, m, d, nb, tiles_per_split,
    KIND: tl.constexpr, R: tl.constexpr, DEGREE: tl.constexpr, XV: tl.constexpr, VEC: tl.constexpr,
    CLAMP_LO: tl.constexpr, CLAMP_HI: tl.constexpr, DIRECT: tl.constexpr, PRECISION: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr, BB: tl.constexpr,
):
    """Backward of grad_mv in its first argument (XV: rows a = x, row aux Γ) or its second (rows a = y, column
    aux Γ over b = x). W_ij = L_i·R_j with L the row factor. See the module docstring for the formulas."""
    RADIAL: tl.constexpr = is_radial(KIND)
    rows, dcols, pid_s = T.grid_tile(BM, BD)
    lo, hi = T.load_bounds(lohi_ptr)
    acc = tl.zeros((BM, BD), dtype=tl.float64)
    rsum = tl.zeros((BM,), dtype=tl.float64)  # Σ_j r_ij
    gsum = tl.zeros((BM,), dtype=tl.float64)  # Σ_j W_ij g'_ij (XV)
    s_row = T.row_scalars(s_ptr, rows, n, XV)
    j_lo, j_hi = T.split_range(pid_s, tiles_per_split, m, BN)
    for jt in range(j_lo, j_hi):
        cols, arg = T.column_tile(jt, a_ptr, b_ptr, na_ptr, nb_ptr, rows, n, m, d, KIND, DIRECT, PRECISION, BM, BN, BK)
        x, sv = T.direction_tile(a_ptr, b_ptr, aux_ptr, s_ptr, s_row, rows, cols, n, m, d, XV, DIRECT, PRECISION,
                               BM, BN, BK)
        w = T.lowrank_tile(l_ptr, r_ptr, rows, cols, n, m, nb, VEC, PRECISION, BM, BN, BB)
        w = tl.where((cols < m)[None, :], w, 0.0)
        g1 = w * T.kernel_tile(arg, p_ptr, lo, hi, KIND, R, DEGREE, 1, CLAMP_LO, CLAMP_HI)
        g2 = w * T.kernel_tile(arg, p_ptr, lo, hi, KIND, R, DEGREE, 2, CLAMP_LO, CLAMP_HI)
        bt = T.load_rows(b_ptr, cols, dcols, m, d)  # (BN, BD)
        if RADIAL:
            rr = g2 * (sv - x)
            rsum += tl.sum(rr, 1).to(tl.float64)
            part = tl.dot(-4.0 * rr, bt, input_precision=PRECISION)
            if XV:
                gsum += tl.sum(g1, 1).to(tl.float64)
            else:
                part = tl.dot(-2.0 * g1, T.load_rows(aux_ptr, cols, dcols, m, d), part, input_precision=PRECISION)
        else:
            part = tl.dot(g2 * x, bt, input_precision=PRECISION)
            if not XV:
                part = tl.dot(g1, T.load_rows(aux_ptr, cols, dcols, m, d), part, input_precision=PRECISION)
        acc += part.to(tl.float64)
    out = acc
    if RADIAL:
        out += 4.0 * T.scaled_rows(a_ptr, rows, dcols, n, d, rsum)
        if XV:
            out += 2.0 * T.scaled_rows(aux_ptr, rows, dcols, n, d, gsum)
    T.store_rows(out_ptr + pid_s.to(tl.int64) * n * d, rows, dcols, n, d, out)


@triton.jit
def _param_kernel(
    a_ptr, b_ptr, na_ptr, nb_ptr, aux_ptr, s_ptr, l_ptr, r_ptr, p_ptr, lohi_ptr,  # inputs
    out_ptr,  # output partials (tiles_i * split, RP) float64
    n, m, d, nb, tiles_per_split,
    KIND: tl.constexpr, R: tl.constexpr, DEGREE: tl.constexpr, NP: tl.constexpr, MODE: tl.constexpr,
    VEC: tl.constexpr, CLAMP_LO: tl.constexpr, CLAMP_HI: tl.constexpr, DIRECT: tl.constexpr,
    PRECISION: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BB: tl.constexpr,
    RP: tl.constexpr,
):
    """Kernel-parameter gradients Σ_ij c_ij ∂k^(o)_ij/∂θ_r with W = L Rᵀ: MODE 0 (kernel_mv) c = W, o = 0;
    MODE 1 (grad_mv, row aux Γ, s_i = Γ_i·a_i) c = W·2(s_i − Γ_i·b_j), o = 1 (dot kernels c = W·Γ_i·b_j)."""
    pid_i = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_i * BM + tl.arange(0, BM)
    rmask = rows < n
    lo, hi = T.load_bounds(lohi_ptr)
    ridx = tl.arange(0, RP)
    pvec = tl.zeros((RP,), dtype=tl.float64)
    s_row = T.row_scalars(s_ptr, rows, n, MODE == 1)
    j_lo, j_hi = T.split_range(pid_s, tiles_per_split, m, BN)
    for jt in range(j_lo, j_hi):
        cols, arg = T.column_tile(jt, a_ptr, b_ptr, na_ptr, nb_ptr, rows, n, m, d, KIND, DIRECT, PRECISION, BM, BN, BK)
        c = T.lowrank_tile(l_ptr, r_ptr, rows, cols, n, m, nb, VEC, PRECISION, BM, BN, BB)
        if MODE == 1:
            c = T.directional_tile(c, a_ptr, b_ptr, aux_ptr, s_ptr, s_row, rows, cols, n, m, d, KIND, True, DIRECT,
                                 PRECISION, BM, BN, BK)
        c = tl.where(rmask[:, None] & (cols < m)[None, :], c, 0.0)
        for r in tl.static_range(NP):
            dk = T.param_grad_tile(arg, p_ptr, lo, hi, KIND, DEGREE, r, MODE, CLAMP_LO, CLAMP_HI)
            pvec = T.add_param_sum(pvec, ridx, r, c * dk)
    tl.store(out_ptr + (pid_i * tl.num_programs(1) + pid_s) * RP + ridx, pvec)


# ---------------------------------------------------------------------------------------------------------------
# Host launchers (shared checks, tiles and grids: :mod:`._launch`)
# ---------------------------------------------------------------------------------------------------------------

class _Pair(NamedTuple):
    """A row pass over K(a, b): a, b and ‖a‖², ‖b‖² as :func:`._launch.prepare` gives them, sizes, tiles."""

    a: torch.Tensor
    b: torch.Tensor
    na: torch.Tensor
    nb: torch.Tensor
    n: int
    m: int
    d: int
    tiles: Tiles
    bk: int  # BK
    direct: bool  # DIRECT


def _pair(a, b, spec: Spec) -> _Pair:
    a, b, na, nb = L.prepare(spec, a, b)
    (n, d), m = a.shape, b.shape[0]
    tiles = L.tiles_for(a.device, spec.dtype, d, False, spec.precision)
    return _Pair(a, b, na, nb, n, m, d, tiles, L.tile_width(d, tiles.block_k), d <= tiles.direct_max_d)


def _directions(aux, rows: torch.Tensor, spec: Spec):
    """(Γ, s): the directions in the compute dtype and s = Γ·rows row-wise (s_i = Γ_i · a_i or s_j = Γ_j · b_j)."""
    aux_t = L.flat(aux, spec.dtype)
    return aux_t, (aux_t * rows).sum(1)


def _lowrank(l, r, dtype, tiles: Tiles):
    """(L, R, B, VEC, BB) for the low-rank weights W = L Rᵀ."""
    lf, rf = L.flat(l, dtype), L.flat(r, dtype)
    nb = lf.shape[1]
    vec = nb == 1
    return lf, rf, nb, vec, 16 if vec else L.tile_width(nb, tiles.block_b)


def _row_pass(fn, pair: _Pair, spec: Spec, inputs: tuple, nx: int, width: int, bw: int, **const) -> torch.Tensor:
    """Launch ``fn(a, b, na, nb, *inputs, params, lohi, out, n, m, d, nx, tiles_per_split, ...)`` over (row tiles,
    ``bw``-wide chunks of ``width`` output columns, column split) and reduce its float64 (split, n, width) partials;
    ``const``: the kernel's own constexprs."""
    a, b, na, nb, n, m, d, tiles, bk, direct = pair
    chunks = triton.cdiv(width, bw)
    tiles_i, split, per = L.row_grid(tiles, n, m, chunks, a.device)
    out = L.partials(split, n, width, device=a.device)
    fn[(tiles_i, chunks, split)](
        a, b, na, nb, *inputs, spec.params, spec.lohi, out,
        n, m, d, nx, per,
        **L.kind_constexprs(spec, clamps=True), DIRECT=direct, PRECISION=spec.precision,
        BM=tiles.block_m, BN=tiles.block_n, BK=bk, **const, **L.launch_opts(tiles),
    )
    return L.reduce_partials(out)


def mv_launch(a, b, v, spec: Spec, mode: int = 0, aux=None) -> torch.Tensor:
    """Σ_j q_ij v_jb (float64, (n, nv)); mode 0: q = k (radial part); 1/2: q = Γ·∇_1 k with Γ = ``aux`` the
    (n, d) row (mode 1) or (m, d) column (mode 2) directions. ``a``, ``b`` are the raw tensors."""
    pair = _pair(a, b, spec)
    v = L.flat(v, spec.dtype)  # (m, nv)
    nv = v.shape[1]
    vec = nv == 1
    bb = 16 if vec else L.tile_width(nv, pair.tiles.block_b)
    aux_t, s = spec.params, spec.params  # placeholders (unused pointers) when mode == 0
    if mode:
        aux_t, s = _directions(aux, pair.a if mode == 1 else pair.b, spec)
    return _row_pass(_mv_kernel, pair, spec, (v, aux_t, s), nv, nv, bb, MODE=mode, VEC=vec, BB=bb)


def grad_launch(a, b, l, r, spec: Spec) -> torch.Tensor:
    """Σ_j (L_i·R_j) ∇_1 k(a_i, b_j) (radial part), float64 (n, d)."""
    pair = _pair(a, b, spec)
    lf, rf, nb, vec, bb = _lowrank(l, r, spec.dtype, pair.tiles)
    bd = L.tile_width(pair.d, pair.tiles.block_d)
    return _row_pass(_grad_kernel, pair, spec, (lf, rf), nb, pair.d, bd, VEC=vec, BD=bd, BB=bb)


def grad2_launch(a, b, aux, lrow, rcol, spec: Spec, xv: bool) -> torch.Tensor:
    """Backward of grad_mv: rows a = x (``xv``, Γ (n, d) over rows) or rows a = y (Γ (m, d) over columns b = x);
    W_ij = lrow_i · rcol_j. Float64 (n, d)."""
    pair = _pair(a, b, spec)
    lf, rf, nb, vec, bb = _lowrank(lrow, rcol, spec.dtype, pair.tiles)
    aux_t, s = _directions(aux, pair.a if xv else pair.b, spec)
    bd = L.tile_width(pair.d, pair.tiles.block_d)
    return _row_pass(_grad2_kernel, pair, spec, (aux_t, s, lf, rf), nb, pair.d, bd, XV=xv, VEC=vec, BD=bd, BB=bb)


def param_launch(a, b, l, r, spec: Spec, mode: int, aux=None) -> torch.Tensor:
    """(n_params,) float64 kernel-parameter sums (see :func:`_param_kernel`)."""
    a, b, na, nb_, n, m, d, tiles, bk, direct = _pair(a, b, spec)
    lf, rf, nb, vec, bb = _lowrank(l, r, spec.dtype, tiles)
    aux_t, s = spec.params, spec.params
    if mode == 1:
        aux_t, s = _directions(aux, a, spec)
    rp = L.pow2(max(1, spec.n_params))
    tiles_i, split, per = L.row_grid(tiles, n, m, 1, a.device)
    out = L.partials(tiles_i * split, rp, device=a.device)
    _param_kernel[(tiles_i, split)](
        a, b, na, nb_, aux_t, s, lf, rf, spec.params, spec.lohi, out,
        n, m, d, nb, per,
        **L.kind_constexprs(spec, clamps=True), NP=spec.n_params, MODE=mode, VEC=vec, DIRECT=direct,
        PRECISION=spec.precision, BM=tiles.block_m, BN=tiles.block_n, BK=bk, BB=bb, RP=rp, **L.launch_opts(tiles),
    )
    return out.sum(0)[: spec.n_params]


def _cast(g: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if g is None else g.to(like.dtype)


def _needs_g2(spec: Spec, what: str) -> None:
    if spec.sqrt_distance or spec.l1:
        raise ValueError(
            f"{what} needs the second derivative g'' of the kernel profile; the laplacian, energy and l1_laplacian "
            "kernels are not twice differentiable (backend='torch', 'tiled' or 'keops' give the derivative almost "
            "everywhere for l1_laplacian)"
        )


# ---------------------------------------------------------------------------------------------------------------
# Autograd Functions
# ---------------------------------------------------------------------------------------------------------------


def _param_grads(a, b, l, r, aux, spec: Spec, mode: int, params, needs) -> list:
    """Kernel-parameter gradients of kernel_mv (mode 0) or grad_mv (mode 1), None where not needed; a further
    differentiation raises (:func:`.._shared.refuse`) instead of silently returning zero."""
    if not any(needs):
        return [None] * len(params)
    with torch.no_grad():
        out = L.param_grads(param_launch(a, b, l, r, spec, mode, aux), spec.param_index, params, needs)
    return refuse(L.second_order_message("the kernel-parameter gradient"), out, (a, b, l, r, aux, *params))


class _KernelMV(torch.autograd.Function):
    """o = K(x, y) v (radial part for the energy kernel), v of shape (m, B); float64 (n, B)."""

    @staticmethod
    def forward(ctx, x, y, v, spec, *params):
        ctx.save_for_backward(x, y, v, *params)
        ctx.spec = spec
        return mv_launch(x, y, v, spec)

    @staticmethod
    def backward(ctx, g):
        x, y, v, *params = ctx.saved_tensors
        spec = ctx.spec
        need = ctx.needs_input_grad
        gx = _GradMV.apply(x, y, g, v, spec, *params) if need[0] else None  # Σ_j (g_i·v_j) ∇_1 k(x_i, y_j)
        gy = _GradMV.apply(y, x, v, g, spec, *params) if need[1] else None
        gv = _KernelMV.apply(y, x, g, spec, *params) if need[2] else None  # K(y, x) g
        gp = _param_grads(x, y, g, v, None, spec, 0, params, need[4:])
        return (_cast(gx, x), _cast(gy, y), _cast(gv, v), None, *gp)


class _GradMV(torch.autograd.Function):
    """o_i = Σ_j (L_i·R_j) ∇_1 k(x_i, y_j) (radial part for the energy kernel); float64 (n, d)."""

    @staticmethod
    def forward(ctx, x, y, l, r, spec, *params):
        ctx.save_for_backward(x, y, l, r, *params)
        ctx.spec = spec
        return grad_launch(x, y, l, r, spec)

    @staticmethod
    def backward(ctx, g):
        x, y, l, r, *params = ctx.saved_tensors
        spec = ctx.spec
        need = ctx.needs_input_grad
        gx = gy = gl = gr = None
        if need[0] or need[1]:
            _needs_g2(spec, "the gradient of kernel_grad_mv in its points")
        if need[0]:
            gx = grad2_launch(x, y, g, l, r, spec, True)
        if need[1]:
            gy = grad2_launch(y, x, g, r, l, spec, False)
        if need[2]:
            gl = mv_launch(x, y, r, spec, 1, g)  # Σ_j Q_ij R_j, Q_ij = g_i · ∇_1 k(x_i, y_j)
        if need[3]:
            gr = mv_launch(y, x, l, spec, 2, g)  # Σ_i Q_ij L_i
        pg = param_launch(x, y, l, r, spec, 1, g) if any(need[5:]) else None
        pgs = L.param_grads(pg, spec.param_index, params, need[5:])
        outs = [_cast(gx, x), _cast(gy, y), _cast(gl, l), _cast(gr, r), *pgs]
        why = L.second_order_message("the gradient of kernel_grad_mv / grad_mv")
        outs = refuse(why, outs, [x, y, l, r, g, *params])
        return (*outs[:4], None, *outs[4:])


# ---------------------------------------------------------------------------------------------------------------
# Functional aliases
# ---------------------------------------------------------------------------------------------------------------


def _points(x: torch.Tensor, y: torch.Tensor, precision: str) -> torch.dtype:
    dtype = L.compute_dtype("x", x, precision)
    if isinstance(y, torch.Tensor) and y.device != x.device:
        raise ValueError(f"y is on device {y.device} but x is on {x.device}; put both on one device")
    L.compute_dtype("y", y, precision)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x must have shape (n, d) with n, d >= 1, got {tuple(x.shape)}")
    if y.ndim != 2 or y.shape[0] < 1 or y.shape[1] != x.shape[1]:
        raise ValueError(f"y must have shape (m, {x.shape[1]}) with m >= 1 (x has d = {x.shape[1]}), got "
                         f"{tuple(y.shape)}")
    if y.dtype != x.dtype:
        raise TypeError(f"y has dtype {y.dtype} but x has {x.dtype}; convert both to one dtype")
    return dtype


def kernel_mv(x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, kernel: Kernel, block: str = "xy",
              precision: str = "ieee") -> torch.Tensor:
    r"""Kernel-matrix product :math:`o = K(x, y)\,v`, :math:`o_{ib} = \sum_j k(x_i, y_j) v_{jb}`, fused.

    O(n m (d + B)) time, O((n + m)(d + B)) memory: the n × m matrix is never formed. The witness function of
    SPEC §4 is ``kernel_mv(t, [x; y], [1/n … ; −1/m …])``; B permutation statistics at once use v = E (m, B).

    Args:
        x: (n, d) query points, y: (m, d) points; one CUDA device (CPU under the Triton interpreter), one dtype.
        v: (m,) or (m, B) weights (any float dtype, cast to the compute dtype).
        kernel: resolved radial or dot-product kernel (not a DeepKernel: apply its feature map first).
        block: which RBF-B bounds apply (``"xx"``, ``"yy"``, ``"xy"``).
        precision: ``"ieee"`` (default, exact fp32), ``"tf32"`` or ``"tf32x3"`` (tensor cores; float32 only).

    Returns:
        float64 tensor of shape (n,) or (n, B). Differentiable twice in x, y and v; once in tensor kernel
        parameters (a further differentiation raises ``RuntimeError``).

    Raises:
        ValueError: tensors not on CUDA outside the interpreter, bad shapes, different devices, unknown ``block``
        or ``precision``, ``precision != "ieee"`` with float64 inputs. TypeError: non-float dtypes, x and y of
        different dtypes, unsupported kernel.

    Example:
        >>> w = torch.cat([torch.full((n,), 1 / n), torch.full((m,), -1 / m)])  # doctest: +SKIP
        >>> eta = kernel_mv(t.cuda(), torch.cat([x, y]).cuda(), w.cuda(), kernelmmd.RBF(1.0))  # doctest: +SKIP
    """
    dtype = _points(x, y, precision)
    if not isinstance(v, torch.Tensor) or v.ndim not in (1, 2):
        got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
        raise ValueError(f"v must be a tensor of shape (m,) or (m, B) with m = {y.shape[0]}, got {got}")
    L.check_like("v", v, "x", x, (y.shape[0],) if v.ndim == 1 else (y.shape[0], v.shape[1]))
    if v.ndim == 2 and v.shape[1] < 1:
        raise ValueError(f"v must have at least one column, got shape {tuple(v.shape)}")
    spec = L.make_spec(kernel, block, dtype, x.device, precision)
    v2 = v[:, None] if v.ndim == 1 else v  # (m, B)
    out = _KernelMV.apply(x, y, v2, spec, *L.tensor_params(kernel, spec))  # (n, B)
    if spec.energy:  # k = ‖a‖ + ‖b‖ − √t: the norm terms in torch (O((n + m) B), differentiable)
        out = out + energy_norm_mv(x, y, v2)
    return out[:, 0] if v.ndim == 1 else out


def grad_mv(x: torch.Tensor, y: torch.Tensor, l: torch.Tensor, r: torch.Tensor, kernel: Kernel,  # noqa: E741
            precision: str = "ieee") -> torch.Tensor:
    r"""Generalised gradient product :math:`o_i = \sum_j (L_i \cdot R_j)\, \nabla_a k(a, y_j)|_{a = x_i}` (n, d).

    The weights W = L Rᵀ (rank B) are never formed. ``kernel_grad_mv`` is L = 1, R = v; the gradient of
    ``kernel_mv`` in x is L = upstream gradient, R = v. For the energy kernel the norm term
    Σ_j W_ij x_i / ‖x_i‖ is added in torch.

    Args:
        x: (n, d), y: (m, d); l: (n, B), r: (m, B). kernel, precision: as :func:`kernel_mv` (block "xy").

    Returns:
        float64 (n, d); differentiable once in x, y, l, r and tensor kernel parameters.

    Raises:
        ValueError / TypeError: as :func:`kernel_mv`, and l, r of the wrong shape.
    """
    dtype = _points(x, y, precision)
    if not isinstance(l, torch.Tensor) or l.ndim != 2:
        raise ValueError(f"l must be a tensor of shape (n, B) with n = {x.shape[0]}")
    L.check_like("l", l, "x", x, (x.shape[0], l.shape[1]))
    L.check_like("r", r, "x", x, (y.shape[0], l.shape[1]))
    spec = L.make_spec(kernel, "xy", dtype, x.device, precision)
    out = _GradMV.apply(x, y, l, r, spec, *L.tensor_params(kernel, spec))
    if spec.energy:  # + Σ_j W_ij x_i / ‖x_i‖
        out = out + unit_rows(x.double()) * (l.double() @ r.double().sum(0))[:, None]
    return out


def kernel_grad_mv(x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, kernel: Kernel,
                   precision: str = "ieee") -> torch.Tensor:
    r"""Gradient product :math:`g_i = \sum_j v_j\, \nabla_a k(a, y_j)|_{a = x_i}`, fused (the witness gradient).

    Radial kernels: :math:`g_i = 2\big(x_i \sum_j p_{ij} - \sum_j p_{ij} y_j\big)`, :math:`p_{ij} = v_j g'(t_{ij})`;
    dot kernels: :math:`g_i = \sum_j v_j h'(x_i^\top y_j)\, y_j`; energy adds :math:`x_i/\|x_i\| \sum_j v_j`.
    O(n m d) time, O((n + m) d) memory.

    Args:
        x: (n, d), y: (m, d); v: (m,). kernel, precision: as :func:`kernel_mv`.

    Returns:
        float64 (n, d). Differentiable once in x, y, v (the point gradients need g'': not for the laplacian and
        energy kernels) and tensor kernel parameters; a second differentiation raises ``RuntimeError``.

    Raises:
        ValueError / TypeError: as :func:`kernel_mv`, and v not of shape (m,).

    Example:
        >>> grad_eta = kernel_grad_mv(t.cuda(), s.cuda(), w.cuda(), kernelmmd.RBF(1.0))  # doctest: +SKIP
    """
    _points(x, y, precision)
    if not isinstance(v, torch.Tensor) or v.ndim != 1:
        got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
        raise ValueError(f"v must be a tensor of shape (m,) with m = {y.shape[0]}, got {got}")
    L.check_like("v", v, "x", x, (y.shape[0],))
    ones = torch.ones(x.shape[0], 1, dtype=v.dtype, device=x.device)
    return grad_mv(x, y, ones, v[:, None], kernel, precision)


# ---------------------------------------------------------------------------------------------------------------
# Ahead-of-time compilation specs (tests/test_triton_aot.py compiles each for sm_90)
# ---------------------------------------------------------------------------------------------------------------


def _aot(name, fn, kind, *, r=1, degree=0, lo=False, hi=False, direct=False, precision="ieee", dt="fp32", bk=16,
         **own):
    """One ``AOT_SPECS`` entry: the constexprs every witness kernel takes, then ``own`` (the kernel's own)."""
    const = dict(KIND=kind, R=r, DEGREE=degree, CLAMP_LO=lo, CLAMP_HI=hi, DIRECT=direct, PRECISION=precision,
                 BM=64, BN=32, BK=bk, **own)
    return L.aot_spec(name, fn, const, dt=dt, f64=("out_ptr",), tensor_cores=precision != "ieee")


AOT_SPECS = [  # one representative per kernel and path: ieee, tf32, tf32x3, fp64, clamped, direct, vector/batched
    _aot("mv_rbf_vec", _mv_kernel, RBF, MODE=0, VEC=True, BB=16),
    _aot("mv_mix_rq_tf32", _mv_kernel, MIX_RQ, r=5, precision="tf32", MODE=0, VEC=False, BB=64),
    _aot("mv_rbf_bounded_direct", _mv_kernel, RBF, lo=True, hi=True, direct=True, MODE=0, VEC=False, BB=64),
    _aot("mv_poly_colaux_tf32x3", _mv_kernel, POLY, r=2, degree=3, precision="tf32x3", MODE=2, VEC=False, BB=32),
    _aot("mv_rbf_fp64", _mv_kernel, RBF, dt="fp64", MODE=0, VEC=False, BB=32),
    _aot("grad_rbf_vec", _grad_kernel, RBF, VEC=True, BD=64, BB=16),
    _aot("grad_rq_tf32x3", _grad_kernel, RQ, precision="tf32x3", VEC=False, BD=32, BB=32),
    _aot("grad_poly_tf32", _grad_kernel, POLY, r=2, degree=3, precision="tf32", VEC=True, BD=64, BB=16),
    _aot("grad_laplacian", _grad_kernel, LAPLACIAN, VEC=True, BD=64, BB=16),  # the close-pair branch of √t kernels
    _aot("mv_l1_vec", _mv_kernel, L1_LAPLACIAN, MODE=0, VEC=True, BB=16),  # L1 kinds: |a − b| sums, sign products
    _aot("mv_l1_rowaux_tf32", _mv_kernel, L1_LAPLACIAN, precision="tf32", MODE=1, VEC=False, BB=64),
    _aot("grad_l1", _grad_kernel, L1_LAPLACIAN, VEC=False, BD=64, BB=32),
    _aot("grad_l1_fp64", _grad_kernel, L1_LAPLACIAN, dt="fp64", VEC=True, BD=64, BB=16),
    _aot("param_l1_grad", _param_kernel, L1_LAPLACIAN, NP=1, MODE=1, VEC=True, BB=16, RP=1),
    _aot("grad2_rbf_x", _grad2_kernel, RBF, XV=True, VEC=True, BD=64, BB=16),
    _aot("grad2_rq_y_tf32", _grad2_kernel, RQ, precision="tf32", XV=False, VEC=False, BD=64, BB=32),
    _aot("grad2_poly_y_tf32x3", _grad2_kernel, POLY, r=2, degree=3, precision="tf32x3", XV=False, VEC=True, BD=32,
         BB=16),
    _aot("param_mix_rbf_mv", _param_kernel, MIX_RBF, r=5, NP=5, MODE=0, VEC=False, BB=32, RP=L.pow2(5)),
    _aot("param_poly_grad_tf32", _param_kernel, POLY, r=2, degree=3, precision="tf32", NP=2, MODE=1, VEC=True, BB=16,
         RP=L.pow2(2)),
]
