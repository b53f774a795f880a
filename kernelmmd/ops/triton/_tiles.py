"""Tile library of the Triton kernels: the ``@triton.jit`` helpers every fused op is written with.

Triton inlines a jit function called from a kernel, so these cost nothing at run time: the kernels of
:mod:`.block_stats`, :mod:`.witness` and :mod:`.derivative_blocks` read as the maths of their op, and the tile
mechanics — masked loads and stores, the pair argument t = ‖a − b‖² or u = aᵀb accumulated over d in BK-wide
chunks with ``tl.dot`` at the chosen ``input_precision`` (``"ieee"`` / ``"tf32"`` / ``"tf32x3"``), or the L1 distance
t = Σ_k |a_k − b_k| coordinate by coordinate (no tensor cores) with its sign products, RBF-B clamps,
profile evaluation, a program's share of the column tiles — are written once, here. Kernel formulas themselves
live in :mod:`._profiles` (twins of :mod:`kernelmmd.kernels`).

Conventions: ``rows`` (BM,) and ``cols`` (BN,) are index vectors of a tile (``start + tl.arange``); a point set is a
row-major (n, d) array; rows or columns past the end read as zeros and are never written.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ...kernels import CLOSE as _CLOSE
from ._profiles import (
    ENERGY,
    LINEAR,
    dot_param_grad,
    dot_param_grad_order,
    dot_profile,
    is_l1,
    is_radial,
    is_sqrt,
    l1_param_grad_order,
    l1_profile,
    radial_param_grad,
    radial_param_grad_order,
    radial_profile,
)

# -------------------------------------------------------------------------------------------------- program layout


@triton.jit
def split_range(pid_s, tiles_per_split, m, BN: tl.constexpr):
    """[j_lo, j_hi): the column tiles (of BN columns over m) swept by split ``pid_s`` of a row tile."""
    j_lo = pid_s * tiles_per_split
    j_hi = tl.minimum(j_lo + tiles_per_split, tl.cdiv(m, BN))
    return j_lo, j_hi


@triton.jit
def load_bounds(lohi_ptr):
    """(lo, hi): the RBF-B bounds of t, the first two entries of ``lohi_ptr``."""
    return tl.load(lohi_ptr), tl.load(lohi_ptr + 1)


@triton.jit
def grid_tile(BM: tl.constexpr, BC: tl.constexpr):
    """(rows, output columns, split) of a program on the grid (row tiles, output-column chunks, column splits)."""
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    ocols = tl.program_id(1) * BC + tl.arange(0, BC)
    return rows, ocols, tl.program_id(2)


# -------------------------------------------------------------------------------------------------- loads, stores


@triton.jit
def load_vec(ptr, idx, n):
    """``ptr[idx]`` for a vector of length n; zeros past the end."""
    return tl.load(ptr + idx, mask=idx < n, other=0.0)


@triton.jit
def load_rows(p_ptr, rows, cols, n, width):
    """Tile P[rows, cols] of a row-major (n, width) matrix; zeros outside."""
    mask = (rows < n)[:, None] & (cols < width)[None, :]
    return tl.load(p_ptr + rows.to(tl.int64)[:, None] * width + cols[None, :], mask=mask, other=0.0)


@triton.jit
def store_rows(p_ptr, rows, cols, n, width, value):
    """P[rows, cols] = value for a row-major (n, width) matrix; entries outside are not written."""
    mask = (rows < n)[:, None] & (cols < width)[None, :]
    tl.store(p_ptr + rows.to(tl.int64)[:, None] * width + cols[None, :], value, mask=mask)


@triton.jit
def scaled_rows(p_ptr, rows, cols, n, width, s):
    """Tile P[rows, cols] of a row-major (n, width) matrix in float64, row i scaled by s_i (s: (BM,) float64)."""
    return load_rows(p_ptr, rows, cols, n, width).to(tl.float64) * s[:, None]


# -------------------------------------------------------------------------------------------------- pair products


@triton.jit
def direct_arg_tile(arow, brow, rmask, cmask, d, RADIAL: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                    dtype: tl.constexpr):
    """Σ_k (a_ik − b_jk)² (RADIAL) or Σ_k a_ik b_jk of a (BM, BN) tile, coordinate by coordinate (exact differences)
    from row pointers ``arow`` (BM,) and ``brow`` (BN,)."""
    acc = tl.zeros((BM, BN), dtype=dtype)
    for k in range(0, d):
        av = tl.load(arow + k, mask=rmask, other=0.0)  # (BM,)
        bv = tl.load(brow + k, mask=cmask, other=0.0)  # (BN,)
        if RADIAL:
            diff = av[:, None] - bv[None, :]
            acc += diff * diff
        else:
            acc += av[:, None] * bv[None, :]
    return acc


@triton.jit
def l1_arg_tile(arow, brow, rmask, cmask, d, BM: tl.constexpr, BN: tl.constexpr, dtype: tl.constexpr):
    """L1 distances Σ_k |a_ik − b_jk| of a (BM, BN) tile, coordinate by coordinate (exact differences) from row
    pointers ``arow`` (BM,) and ``brow`` (BN,)."""
    acc = tl.zeros((BM, BN), dtype=dtype)
    for k in range(0, d):
        av = tl.load(arow + k, mask=rmask, other=0.0)  # (BM,)
        bv = tl.load(brow + k, mask=cmask, other=0.0)  # (BN,)
        acc += tl.abs(av[:, None] - bv[None, :])
    return acc


@triton.jit
def _sign(x):
    """sign(x) with sign(0) = 0 (the subgradient of |x| at 0), in x's dtype."""
    return tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, 0.0)).to(x.dtype)


@triton.jit
def zero_rows(g_ptr, rows, n, d, k0, k1, BM: tl.constexpr, BD: tl.constexpr):
    """G[rows, k0:k1] = 0 for a row-major (n, d) slab, in BD-wide chunks; the caller issues a ``tl.debug_barrier()``
    before other threads read them back (:func:`add_sign_pair_grad` uses another layout)."""
    dr = tl.arange(0, BD)
    for c0 in range(k0, k1, BD):
        dc = c0 + dr
        omask = (rows < n)[:, None] & (dc < k1)[None, :]
        zero = tl.zeros((BM, BD), dtype=g_ptr.dtype.element_ty)
        tl.store(g_ptr + rows.to(tl.int64)[:, None] * d + dc[None, :], zero, mask=omask)


@triton.jit
def add_sign_pair_grad(g_ptr, p, a_ptr, b_ptr, rows, cols, n, m, d, k0, k1):
    """G[i, k] += Σ_j p_ij sign(a_ik − b_jk) for the tile's rows and k ∈ [k0, k1), with G a row-major (n, d) slab at
    ``g_ptr`` (read-modify-write, one column at a time): the gradient Σ_j p_ij ∇_a ‖a_i − b_j‖₁ of the L1 kernels
    (sign(0) = 0). p is zero outside the block; the caller issues a ``tl.debug_barrier()`` after each tile."""
    rmask = rows < n
    cmask = cols < m
    arow = a_ptr + rows.to(tl.int64) * d
    brow = b_ptr + cols.to(tl.int64) * d
    grow = g_ptr + rows.to(tl.int64) * d
    for k in range(k0, k1):
        av = tl.load(arow + k, mask=rmask, other=0.0)  # (BM,)
        bv = tl.load(brow + k, mask=cmask, other=0.0)  # (BN,)
        col = tl.sum(p * _sign(av[:, None] - bv[None, :]), 1)  # (BM,)
        prev = tl.load(grow + k, mask=rmask, other=0.0)
        tl.store(grow + k, prev + col.to(prev.dtype), mask=rmask)


@triton.jit
def l1_direction_tile(a_ptr, b_ptr, aux_ptr, rows, cols, n, m, d, ROW_AUX: tl.constexpr, BM: tl.constexpr,
                      BN: tl.constexpr):
    """X_ij of a (BM, BN) tile such that an L1 kernel's directional derivative is g'(t_ij) X_ij: ROW_AUX (Γ (n, d) on
    the rows) X_ij = Γ_i·sign(a_i − b_j), the derivative Γ_i·∇_a k(a_i, b_j); otherwise (Γ (m, d) on the columns)
    X_ij = Γ_j·sign(b_j − a_i), the derivative in the column point Γ_j·∇_b k(a_i, b_j) (as :func:`directional`)."""
    rmask = rows < n
    cmask = cols < m
    arow = a_ptr + rows.to(tl.int64) * d
    brow = b_ptr + cols.to(tl.int64) * d
    acc = tl.zeros((BM, BN), dtype=a_ptr.dtype.element_ty)
    for k in range(0, d):
        av = tl.load(arow + k, mask=rmask, other=0.0)  # (BM,)
        bv = tl.load(brow + k, mask=cmask, other=0.0)  # (BN,)
        sg = _sign(av[:, None] - bv[None, :])
        if ROW_AUX:
            acc += sg * tl.load(aux_ptr + rows.to(tl.int64) * d + k, mask=rmask, other=0.0)[:, None]
        else:
            acc -= sg * tl.load(aux_ptr + cols.to(tl.int64) * d + k, mask=cmask, other=0.0)[None, :]
    return acc


#: √t kernels (laplacian, energy) re-form t from coordinate differences where the ``tl.dot`` expansion gives
#: t < CLOSE · (‖a_i‖² + ‖b_j‖²) (the squared norms the expansion used). Its rounding is δt ≈ c·eps·(‖a_i‖² +
#: ‖b_j‖²), which √ magnifies without bound near t = 0 (to ~√eps at coincident points); outside the close region
#: it is at most c·eps·t/CLOSE, so √t keeps a relative error ≤ 8c·eps. The value of kernelmmd.kernels.CLOSE.
CLOSE = tl.constexpr(_CLOSE)


@triton.jit
def close_pairs(arg, na_ptr, nb_ptr, rows, cols, n, m):
    """(BM, BN) mask of the pairs in range with t < :data:`CLOSE` · (‖a_i‖² + ‖b_j‖²) (the expansion's norms)."""
    na = load_vec(na_ptr, rows, n)
    nb = load_vec(nb_ptr, cols, m)
    return (arg < (na[:, None] + nb[None, :]) * CLOSE) & (rows < n)[:, None] & (cols < m)[None, :]


@triton.jit
def any_pair(mask):
    """Whether a (BM, BN) mask has any set entry (a tile-uniform scalar for a data-dependent branch)."""
    return tl.max(mask.to(tl.int32)) > 0


@triton.jit
def sub_close_pair_grad(g_ptr, pn, a_ptr, b_ptr, rows, cols, n, m, d, k0, k1, keep):
    """G[i, k] = (G[i, k] if ``keep`` else 0) − Σ_j pn_ij (a_ik − b_jk) for the tile's rows and k ∈ [k0, k1), with G a
    row-major (n, d) slab at ``g_ptr``; from coordinate differences, one column at a time (no (BM, d) tile: these
    run in the kernels' register-heaviest loops, and only in tiles with close pairs).

    The radial gradients Σ_j p_ij (a_i − b_j) are formed as a_i Σ_j p_ij − Σ_j p_ij b_j, which loses
    eps·|p_ij|·‖a_i‖ to cancellation: harmless where p is bounded, but the √t kernels' g' ∝ t^{-1/2} makes it
    unbounded at close pairs. Their share ``pn`` (zero elsewhere) is summed here instead. The caller issues a
    ``tl.debug_barrier()`` before reading G with another layout.
    """
    rmask = rows < n
    cmask = cols < m
    arow = a_ptr + rows.to(tl.int64) * d
    brow = b_ptr + cols.to(tl.int64) * d
    grow = g_ptr + rows.to(tl.int64) * d
    for k in tl.range(k0, k1, num_stages=1):  # not pipelined: no buffers held by a rarely taken branch
        av = tl.load(arow + k, mask=rmask, other=0.0)  # (BM,)
        bv = tl.load(brow + k, mask=cmask, other=0.0)  # (BN,)
        col = tl.sum(pn * (av[:, None] - bv[None, :]), 1)  # (BM,)
        prev = tl.load(grow + k, mask=rmask & keep, other=0.0)
        tl.store(grow + k, prev - col.to(prev.dtype), mask=rmask)


@triton.jit
def pair_arg_tile(a_ptr, b_ptr, na_ptr, nb_ptr, rows, cols, n, m, d,
                  KIND: tl.constexpr, DIRECT: tl.constexpr, PRECISION: tl.constexpr,
                  BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """Pair arguments of a (BM, BN) tile: t = ‖a_i − b_j‖² (radial KIND), t = ‖a_i − b_j‖₁ (L1 KIND, always from
    exact differences, :func:`l1_arg_tile`) or u = a_iᵀb_j, in the pointers' dtype.

    ``a``/``b`` are row-major (n, d)/(m, d); ``na``/``nb`` their squared row norms (used by the radial
    ``tl.dot`` path: t = na + nb − 2aᵀb, clamped at 0). DIRECT sums exact per-coordinate products/differences
    instead (small d). For the √t kinds (laplacian, energy) the ``tl.dot`` path re-forms the pairs closer
    than :data:`CLOSE` from differences, in the tiles that have any (a data-dependent branch: tiles without close
    pairs cost nothing more). Rows/columns outside the ranges read zeros: the caller masks them.
    """
    rmask = rows < n
    cmask = cols < m
    arow = a_ptr + rows.to(tl.int64) * d  # (BM,) row pointers
    brow = b_ptr + cols.to(tl.int64) * d  # (BN,)
    dtype = a_ptr.dtype.element_ty
    RADIAL: tl.constexpr = is_radial(KIND)
    SQRT: tl.constexpr = is_sqrt(KIND)
    L1: tl.constexpr = is_l1(KIND)
    if L1:
        out = l1_arg_tile(arow, brow, rmask, cmask, d, BM, BN, dtype)
    elif DIRECT:
        out = direct_arg_tile(arow, brow, rmask, cmask, d, RADIAL, BM, BN, dtype)
    else:
        acc = tl.zeros((BM, BN), dtype=dtype)
        for k0 in range(0, d, BK):
            kk = k0 + tl.arange(0, BK)
            kmask = kk < d
            a = tl.load(arow[:, None] + kk[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)  # (BM, BK)
            b = tl.load(brow[:, None] + kk[None, :], mask=cmask[:, None] & kmask[None, :], other=0.0)  # (BN, BK)
            acc = tl.dot(a, tl.trans(b), acc, input_precision=PRECISION)  # (BM, BN)
        if RADIAL:
            na = tl.load(na_ptr + rows, mask=rmask, other=0.0)
            nb = tl.load(nb_ptr + cols, mask=cmask, other=0.0)
            out = tl.maximum(na[:, None] + nb[None, :] - 2.0 * acc, 0.0)
            if SQRT:
                close = close_pairs(out, na_ptr, nb_ptr, rows, cols, n, m)
                if any_pair(close):
                    exact = direct_arg_tile(arow, brow, rmask, cmask, d, True, BM, BN, dtype)
                    out = tl.where(close, exact, out)
        else:
            out = acc
    return out


@triton.jit
def column_tile(jt, a_ptr, b_ptr, na_ptr, nb_ptr, rows, n, m, d,
                KIND: tl.constexpr, DIRECT: tl.constexpr, PRECISION: tl.constexpr,
                BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """(cols, pair arguments) of column tile ``jt`` against a program's rows: the start of every column-tile step
    of a row pass (:func:`pair_arg_tile`)."""
    cols = jt * BN + tl.arange(0, BN)
    return cols, pair_arg_tile(a_ptr, b_ptr, na_ptr, nb_ptr, rows, cols, n, m, d, KIND, DIRECT, PRECISION, BM, BN, BK)


@triton.jit
def dot_tile(a_ptr, b_ptr, rows, cols, n, m, d, DIRECT: tl.constexpr, PRECISION: tl.constexpr,
             BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """Inner products a_iᵀb_j of a (BM, BN) tile (:func:`pair_arg_tile` without norms)."""
    return pair_arg_tile(a_ptr, b_ptr, a_ptr, b_ptr, rows, cols, n, m, d, LINEAR, DIRECT, PRECISION, BM, BN, BK)


@triton.jit
def row_scalars(s_ptr, rows, n, LOAD: tl.constexpr):
    """``s[rows]`` when LOAD (per-row scalars loaded once per program), else zeros of the same shape (unused)."""
    if LOAD:
        out = load_vec(s_ptr, rows, n)
    else:
        out = tl.zeros(rows.shape, s_ptr.dtype.element_ty)
    return out


@triton.jit
def direction_tile(a_ptr, b_ptr, aux_ptr, s_ptr, s_row, rows, cols, n, m, d, ROW_AUX: tl.constexpr,
                   DIRECT: tl.constexpr, PRECISION: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                   BK: tl.constexpr):
    """(X, s) of a directional derivative Γ·∇k on a tile, as (BM, BN) and broadcastable (BM, 1) or (1, BN).

    ROW_AUX: directions Γ (n, d) on the rows, X_ij = Γ_i·b_j and s = ``s_row`` (s_i = Γ_i·a_i, loaded once per
    program by the caller with :func:`row_scalars`). Otherwise Γ (m, d) on the columns, X_ij = a_i·Γ_j and
    s_j = Γ_j·b_j from ``s_ptr``.
    """
    if ROW_AUX:
        x = dot_tile(aux_ptr, b_ptr, rows, cols, n, m, d, DIRECT, PRECISION, BM, BN, BK)
        sv = s_row[:, None]
    else:
        x = dot_tile(a_ptr, aux_ptr, rows, cols, n, m, d, DIRECT, PRECISION, BM, BN, BK)
        sv = load_vec(s_ptr, cols, m)[None, :]
    return x, sv


@triton.jit
def directional(w, x, sv, KIND: tl.constexpr):
    """w times the directional-derivative factor of Γ·∇_1 k per unit profile derivative: 2w(s − X) for radial
    kernels (Γ·∇_1 g(t) = 2g'(t)(s − X)), wX for dot kernels (Γ·∇_1 h(u) = h'(u)X); X, s from :func:`direction_tile`."""
    if is_radial(KIND):
        out = w * 2.0 * (sv - x)
    else:
        out = w * x
    return out


@triton.jit
def directional_tile(w, a_ptr, b_ptr, aux_ptr, s_ptr, s_row, rows, cols, n, m, d, KIND: tl.constexpr,
                     ROW_AUX: tl.constexpr, DIRECT: tl.constexpr, PRECISION: tl.constexpr,
                     BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """w times the factor of Γ·∇_1 k on a tile: :func:`directional` of :func:`direction_tile`; for an L1 kind
    w·Γ·sign(a_i − b_j) (:func:`l1_direction_tile`)."""
    if is_l1(KIND):
        out = w * l1_direction_tile(a_ptr, b_ptr, aux_ptr, rows, cols, n, m, d, ROW_AUX, BM, BN)
    else:
        x, sv = direction_tile(a_ptr, b_ptr, aux_ptr, s_ptr, s_row, rows, cols, n, m, d, ROW_AUX, DIRECT, PRECISION,
                               BM, BN, BK)
        out = directional(w, x, sv, KIND)
    return out


@triton.jit
def lowrank_tile(l_ptr, r_ptr, rows, cols, n, m, nb, VEC: tl.constexpr, PRECISION: tl.constexpr,
                 BM: tl.constexpr, BN: tl.constexpr, BB: tl.constexpr):
    """W_ij = L_i · R_j for L (n, nb), R (m, nb) row-major: a (BM, BN) tile (an outer product when VEC, nb = 1)."""
    rmask = rows < n
    cmask = cols < m
    if VEC:
        lv = tl.load(l_ptr + rows, mask=rmask, other=0.0)
        rv = tl.load(r_ptr + cols, mask=cmask, other=0.0)
        w = lv[:, None] * rv[None, :]
    else:
        w = tl.zeros((BM, BN), dtype=l_ptr.dtype.element_ty)
        for b0 in range(0, nb, BB):
            bb = b0 + tl.arange(0, BB)
            bmask = bb < nb
            lt = tl.load(l_ptr + rows.to(tl.int64)[:, None] * nb + bb[None, :],
                         mask=rmask[:, None] & bmask[None, :], other=0.0)  # (BM, BB)
            rt = tl.load(r_ptr + cols.to(tl.int64)[None, :] * nb + bb[:, None],
                         mask=cmask[None, :] & bmask[:, None], other=0.0)  # (BB, BN)
            w = tl.dot(lt, rt, w, input_precision=PRECISION)
    return w


# -------------------------------------------------------------------------------------------------- profiles


@triton.jit
def clamp_arg(t, lo, hi, CLAMP_LO: tl.constexpr, CLAMP_HI: tl.constexpr):
    """t clamped to [lo, hi] (RBF-B block bounds); each side only when its flag is set."""
    out = t
    if CLAMP_LO:
        out = tl.maximum(out, lo)
    if CLAMP_HI:
        out = tl.minimum(out, hi)
    return out


@triton.jit
def zero_where_clamped(value, t, lo, hi, CLAMP_LO: tl.constexpr, CLAMP_HI: tl.constexpr):
    """``value`` with zeros where t lies outside [lo, hi] (a derivative through the clamp of t)."""
    out = value
    if CLAMP_LO:
        out = tl.where(t >= lo, out, 0.0)
    if CLAMP_HI:
        out = tl.where(t <= hi, out, 0.0)
    return out


@triton.jit
def kernel_tile(arg, p_ptr, lo, hi, KIND: tl.constexpr, R: tl.constexpr, DEGREE: tl.constexpr,
                ORDER: tl.constexpr, CLAMP_LO: tl.constexpr, CLAMP_HI: tl.constexpr):
    """g^(ORDER)(clamp t) for radial kinds (zero where clamped when ORDER ≥ 1), g^(ORDER)(t) for L1 kinds,
    h^(ORDER)(u) for dot kinds.

    The energy kernel's norm terms ‖a‖ + ‖b‖ are not included (see :func:`energy_norm_tile`).
    """
    if is_radial(KIND):
        out = radial_profile(clamp_arg(arg, lo, hi, CLAMP_LO, CLAMP_HI), p_ptr, KIND, R, ORDER)
        if ORDER > 0:
            out = zero_where_clamped(out, arg, lo, hi, CLAMP_LO, CLAMP_HI)
    elif is_l1(KIND):
        out = l1_profile(arg, p_ptr, KIND, ORDER)
    else:
        out = dot_profile(arg, p_ptr, KIND, DEGREE, ORDER)
    return out


@triton.jit
def profile_tile(arg, p_ptr, KIND: tl.constexpr, R: tl.constexpr, DEGREE: tl.constexpr, ORDER: tl.constexpr):
    """g^(ORDER)(t) or h^(ORDER)(u) without RBF-B clamps (:func:`kernel_tile` of an unbounded kernel)."""
    return kernel_tile(arg, p_ptr, 0.0, 0.0, KIND, R, DEGREE, ORDER, False, False)


@triton.jit
def param_grad_tile(arg, p_ptr, lo, hi, KIND: tl.constexpr, DEGREE: tl.constexpr, IDX: tl.constexpr,
                    ORDER: tl.constexpr, CLAMP_LO: tl.constexpr, CLAMP_HI: tl.constexpr):
    """∂g^(ORDER)(clamp t)/∂θ_IDX (zero where clamped when ORDER ≥ 1) or ∂h^(ORDER)(u)/∂θ_IDX, elementwise."""
    if is_radial(KIND):
        out = radial_param_grad_order(clamp_arg(arg, lo, hi, CLAMP_LO, CLAMP_HI), p_ptr, KIND, IDX, ORDER)
        if ORDER > 0:
            out = zero_where_clamped(out, arg, lo, hi, CLAMP_LO, CLAMP_HI)
    elif is_l1(KIND):
        out = l1_param_grad_order(arg, p_ptr, KIND, IDX, ORDER)
    else:
        out = dot_param_grad_order(arg, p_ptr, KIND, DEGREE, IDX, ORDER)
    return out


@triton.jit
def param_profile_tile(arg, p_ptr, KIND: tl.constexpr, DEGREE: tl.constexpr, IDX: tl.constexpr,
                       ORDER: tl.constexpr):
    """∂g^(ORDER)(t)/∂θ_IDX or ∂h^(ORDER)(u)/∂θ_IDX without RBF-B clamps (:func:`param_grad_tile`, unbounded)."""
    return param_grad_tile(arg, p_ptr, 0.0, 0.0, KIND, DEGREE, IDX, ORDER, False, False)


@triton.jit
def energy_norm_tile(ea_ptr, eb_ptr, rows, cols, n, m):
    """‖a_i‖ + ‖b_j‖ for a (BM, BN) tile from the norms of the uncentred points (the energy kernel's norm terms)."""
    ea = tl.load(ea_ptr + rows, mask=rows < n, other=0.0)
    eb = tl.load(eb_ptr + cols, mask=cols < m, other=0.0)
    return ea[:, None] + eb[None, :]


# -------------------------------------------------------------------------------------------------- reductions


@triton.jit
def add_param_sum(pvec, ridx, r, tile):
    """``pvec`` with Σ tile (fp32 rows, float64 across rows) added at entry r: parameter-gradient partials."""
    ts = tl.sum(tl.sum(tile, 1).to(tl.float64), 0)
    return pvec + tl.where(ridx == r, ts, 0.0)


# -------------------------------------------------------------------------------------------------- block sums


@triton.jit
def block_kernel_tile(arg, p_ptr, lo, hi, ea_ptr, eb_ptr, rows, cols, n, m, KIND: tl.constexpr, R: tl.constexpr,
                      DEGREE: tl.constexpr, CLAMP_LO: tl.constexpr, CLAMP_HI: tl.constexpr):
    """k(a_i, b_j) of a (BM, BN) tile: :func:`kernel_tile` plus, for the energy kernel, ‖a_i‖ + ‖b_j‖."""
    kv = kernel_tile(arg, p_ptr, lo, hi, KIND, R, DEGREE, 0, CLAMP_LO, CLAMP_HI)  # (BM, BN)
    if KIND == ENERGY:
        kv += energy_norm_tile(ea_ptr, eb_ptr, rows, cols, n, m)
    return kv


@triton.jit
def pair_weights(arg, p_ptr, lo, hi, c, q, al, be_ptr, ea_ptr, eb_ptr, rows, cols, n, m,
                 KIND: tl.constexpr, R: tl.constexpr, DEGREE: tl.constexpr, SAME: tl.constexpr, HAS_AL: tl.constexpr,
                 HAS_BE: tl.constexpr, HAS_Q: tl.constexpr, CLAMP_LO: tl.constexpr, CLAMP_HI: tl.constexpr):
    """Upstream weights w_ij = c + α_i + β_j + 2q k_ij of the block sums' gradient (each term only when its flag is
    set; α = ``al`` (BM,) loaded by the caller, β from ``be_ptr``), zero outside the block and, when SAME, at i = j."""
    valid = (rows < n)[:, None] & (cols < m)[None, :]
    if SAME:
        valid = valid & (rows[:, None] != cols[None, :])
    w = tl.zeros_like(arg) + c
    if HAS_AL:
        w += al[:, None]
    if HAS_BE:
        w += load_vec(be_ptr, cols, m)[None, :]
    if HAS_Q:
        w += 2.0 * q * block_kernel_tile(arg, p_ptr, lo, hi, ea_ptr, eb_ptr, rows, cols, n, m, KIND, R, DEGREE,
                                         CLAMP_LO, CLAMP_HI)
    return tl.where(valid, w, 0.0)


@triton.jit
def route_close_pairs(p, arg, g_ptr, a_ptr, b_ptr, na_ptr, nb_ptr, rows, cols, n, m, d, corrected, written,
                      jt, j_lo, MEM_ACC: tl.constexpr):
    """(p, corrected, written) after a √t kernel's close pairs: their share −Σ_j p_ij (a_i − b_j), from coordinate
    differences, goes into G's rows (:func:`sub_close_pair_grad`; added to what is there when ``corrected`` —
    ``written`` when MEM_ACC) and their entries of p are zeroed; both flags become true once G's rows are written."""
    close = close_pairs(arg, na_ptr, nb_ptr, rows, cols, n, m)
    near = any_pair(close)
    pf = tl.where(close, 0.0, p)
    if near:
        keep = corrected
        if MEM_ACC:
            keep = written
        sub_close_pair_grad(g_ptr, p - pf, a_ptr, b_ptr, rows, cols, n, m, d, 0, d, keep)
        tl.debug_barrier()
        corrected = jt >= j_lo  # (true)
        written = jt >= j_lo
    return pf, corrected, written


@triton.jit
def add_pair_product(acc, g_ptr, p, b_ptr, rows, cols, n, m, d, written, MEM_ACC: tl.constexpr,
                     PRECISION: tl.constexpr, BD: tl.constexpr):
    """Σ_j p_ij b_j of a tile added to the (BM, BD) register accumulator ``acc`` (d ≤ BD), or with MEM_ACC to G's
    rows in BD-wide chunks (read-modify-write; ``written``: they already hold partial sums). Returns ``acc``."""
    cmask = cols < m
    cols64 = cols.to(tl.int64)
    dr = tl.arange(0, BD)
    if MEM_ACC:
        for d0 in range(0, d, BD):
            dc = d0 + dr
            dmask = dc < d
            bt = tl.load(b_ptr + cols64[:, None] * d + dc[None, :],
                         mask=cmask[:, None] & dmask[None, :], other=0.0)  # (BN, BD)
            offs = rows.to(tl.int64)[:, None] * d + dc[None, :]
            omask = (rows < n)[:, None] & dmask[None, :]
            prev = tl.load(g_ptr + offs, mask=omask & written, other=0.0)
            tl.store(g_ptr + offs, tl.dot(p, bt, prev, input_precision=PRECISION), mask=omask)
        tl.debug_barrier()  # the next tile reads these rows back (possibly from other threads)
    else:
        bt = tl.load(b_ptr + cols64[:, None] * d + dr[None, :],
                     mask=cmask[:, None] & (dr < d)[None, :], other=0.0)  # (BN, BD)
        acc = tl.dot(p, bt, acc, input_precision=PRECISION)
    return acc


@triton.jit
def add_block_param_sums(pvec, ridx, arg, w, p_ptr, lo, hi, KIND: tl.constexpr, R: tl.constexpr,
                         DEGREE: tl.constexpr, CLAMP_LO: tl.constexpr, CLAMP_HI: tl.constexpr):
    """``pvec`` with Σ_ij w_ij ∂k_ij/∂θ_r added at entry r, r < R (∂g/∂θ at the clamped t, or ∂h/∂θ)."""
    for r in tl.static_range(R):
        if is_radial(KIND):
            dk = radial_param_grad(clamp_arg(arg, lo, hi, CLAMP_LO, CLAMP_HI), p_ptr, KIND, r)
        elif is_l1(KIND):
            dk = l1_param_grad_order(arg, p_ptr, KIND, r, 0)
        else:
            dk = dot_param_grad(arg, p_ptr, KIND, DEGREE, r)
        pvec = add_param_sum(pvec, ridx, r, w * dk)
    return pvec


@triton.jit
def store_block_grad(g_ptr, a_ptr, ea_ptr, ctr_ptr, rows, n, d, psum, wsum, acc, corrected, swept,
                     KIND: tl.constexpr, MEM_ACC: tl.constexpr, BD: tl.constexpr):
    """G[rows] = ∇_a of the block sums from a row tile's totals: radial 2(a_i Σ_j p_ij − Σ_j p_ij b_j) (+ Σ_j w_ij
    a_i/‖a_i‖ for the energy kernel, ``ctr`` + a = the uncentred point), dot Σ_j p_ij b_j. Σ p b is ``acc`` (plus the
    close pairs' shares in G's rows when ``corrected``), or with MEM_ACC G's rows themselves (``swept``: any tile)."""
    RADIAL: tl.constexpr = is_radial(KIND)
    SQRT: tl.constexpr = is_sqrt(KIND)
    rmask = rows < n
    dr = tl.arange(0, BD)
    if KIND == ENERGY:  # energy: + Σ_j w_ij a_i / ‖a_i‖ for the uncentred a_i (0 at a_i = 0)
        nrm = load_vec(ea_ptr, rows, n)
        winv = wsum * tl.where(nrm > 0, 1.0 / tl.where(nrm > 0, nrm, 1.0), 0.0)
    for d0 in range(0, d, BD):  # a single chunk unless MEM_ACC
        dc = d0 + dr
        offs = rows.to(tl.int64)[:, None] * d + dc[None, :]
        omask = rmask[:, None] & (dc < d)[None, :]
        if MEM_ACC:
            pb = tl.load(g_ptr + offs, mask=omask & swept, other=0.0)
        else:
            pb = acc
            if SQRT:
                pb += tl.load(g_ptr + offs, mask=omask & corrected, other=0.0)
        if RADIAL:
            at = tl.load(a_ptr + offs, mask=omask, other=0.0)  # (BM, BD)
            out = 2.0 * (at * psum[:, None] - pb)
            if KIND == ENERGY:
                ctr = load_vec(ctr_ptr, dc, d)
                out += winv[:, None] * (at + ctr[None, :])
        else:
            out = pb
        tl.store(g_ptr + offs, out, mask=omask)
