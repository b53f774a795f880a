r"""Fused block statistics of MMD² (SPEC §3, §13): Triton kernels → launchers → autograd Functions → aliases.

For one block K_AB (A = B for the within-sample blocks K_XX, K_YY; A = X, B = Y for K_XY) one tiled pass computes,
without ever holding the n × m matrix,

.. math::
    S = \sum_{i,j}{}' k(a_i, b_j), \qquad r_i = \sum_j{}' k(a_i, b_j), \qquad Q = \sum_{i,j}{}' k(a_i, b_j)^2

where :math:`\sum'` skips i = j for a within-sample block (the traces :math:`\sum_i k(a_i, a_i)` are O(n d) and
are formed in torch, differentiably, from ``kernel.pairwise``). Column sums of K_XY are the row sums of K_YX: one
more pass, only when the variance statistics are asked for.

**Forward.** Program (i, s) owns a row tile of BLOCK_M rows and sweeps a contiguous range of column tiles (all of
them when ``split = 1``; the split only exists to fill the GPU when n is small) and writes its partials (S, Q and
row sums). What a tile computes, the host reduction and the triangular schedule: docs/ARCHITECTURE.md, section "Ops"
(**Triton** ``block_stats``).

**Backward.** The gradient of any linear combination L = c·S + αᵀr + βᵀc_col + q·Q has upstream weights
:math:`w_{ij} = c + \alpha_i + \beta_j + 2 q\, k_{ij}` and, for a radial kernel with clamped t (derivative 0
where clamped, RBF-B),

.. math::
    p_{ij} = w_{ij}\, g'(t_{ij}), \qquad \nabla_{a_i} L = 2\Big(a_i \sum_j p_{ij} - \sum_j p_{ij} b_j\Big)
    \;[+\; \textstyle\sum_j w_{ij}\, a_i / \|a_i\| \text{ for the energy kernel}],

for a dot kernel :math:`\nabla_{a_i} L = \sum_j w_{ij} h'(u_{ij}) b_j`, for an L1 kernel (t = ‖a − b‖₁, summed from
exact differences) :math:`\nabla_{a_i} L = \sum_j p_{ij}\, \mathrm{sign}(a_i - b_j)` (added column by column into
float64 rows of the output, :func:`._tiles.add_sign_pair_grad`), and for each scalar kernel parameter
:math:`\partial L/\partial\theta = \sum_{ij} w_{ij}\, \partial k_{ij}/\partial\theta`. The row pass computes
P·B with ``tl.dot`` (the flash-attention structure, SPEC §13); the gradient in b is the same pass over K_BA.
For a within-sample block a point sits in both arguments: the pass runs with the symmetrised weights
w_ij + w_ji (c → 2c, β = α, q → 2q) and the parameter sums are halved. Up to d = ``block_d`` the (BLOCK_M, d)
accumulator of P·B lives in registers; above it the program accumulates into its own rows of the output (a
read-modify-write per column tile and ``chunk_d``-wide chunk: L2/HBM traffic instead of recomputing t per chunk).

**Precision.** ``precision="ieee"`` (default): fp32 products, exact to fp32 rounding. ``"tf32"``: tensor cores for
the aᵀb and P·B products (about 10 bits of mantissa in the inputs; t loses accuracy for nearby points).
``"tf32x3"``: split-precision TF32 (three tensor-core products), close to fp32 accuracy. The error of the
tensor-core modes can only be measured on a GPU (the interpreter computes in fp32/fp64 numpy); see
``benchmarks/RESULTS.md`` once it has been measured. float16/bfloat16 inputs are computed in fp32; float64 inputs
in float64 (``precision`` must then be ``"ieee"``). For d > 8, t carries an absolute rounding error of order
√d·ε·(‖a‖² + ‖b‖²): harmless for smooth kernels, but √t magnifies it without bound near t = 0. So for the
laplacian and energy kernels the data are not centred, and the pairs with t < CLOSE·(‖a‖² + ‖b‖²)
(:data:`kernelmmd.kernels.CLOSE` = 1/16) are re-formed from exact coordinate differences — their t, and in the
backward their share Σ_j p_ij (a_i − b_j), which a_i Σ p − Σ p b_j would also lose to cancellation — in the
tiles that have any (a data-dependent branch; d ≤ 8 uses exact differences throughout).

**Autograd.** Gradients flow to a, b and every tensor-valued kernel parameter. The backward kernels are not
themselves differentiable: under ``create_graph=True`` the gradients they return are tied to the inputs through a
node whose backward raises ``RuntimeError`` — a double backward fails loudly instead of treating the gradient as
a constant (use the torch or KeOps backends for higher-order derivatives).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...kernels import Kernel
from .._shared import PRECISIONS, centres, pooled_mean, refuse
from ..types import BlockStats
from ._launch import (
    Spec,
    Tiles,
    aot_spec,
    check_points,
    check_tensor,
    dtype_for,
    make_spec,
    param_grads,
    pow2,
    split_for,
    tensor_params,
    tile_width,
)
from ._profiles import (
    ENERGY,
    L1_LAPLACIAN,
    LAPLACIAN,
    LINEAR,
    MIX_RBF,
    MIX_RQ,
    POLY,
    RBF,
    RQ,
    is_l1,
    is_radial,
    is_sqrt,
)
from ._tiles import (
    add_block_param_sums,
    add_pair_product,
    add_sign_pair_grad,
    block_kernel_tile,
    kernel_tile,
    load_bounds,
    pair_arg_tile,
    pair_weights,
    route_close_pairs,
    row_scalars,
    split_range,
    store_block_grad,
    zero_rows,
)

__all__ = [
    "block_stats",
    "same_block_stats",
    "cross_block_stats",
    "LaunchConfig",
    "launch_config",
    "PRECISIONS",
    "AOT_SPECS",
]

#: tile sizes and launch parameters (:class:`._launch.Tiles`; ``chunk_d`` and ``block_m == block_n`` matter here)
LaunchConfig = Tiles


# ---------------------------------------------------------------------------------------------------------------
# Kernels (tile helpers: :mod:`._tiles`)
# ---------------------------------------------------------------------------------------------------------------


@triton.jit
def _block_stats_fwd(
    a_ptr, b_ptr, na_ptr, nb_ptr, ea_ptr, eb_ptr, p_ptr, aux_ptr,  # inputs (see _forward_launch); aux = [lo, hi]
    s_ptr, q_ptr, r_ptr,  # outputs: S and Q partials (tiles_i * split,), row-sum partials (split, n); float64
    n, m, d, tiles_per_split,
    KIND: tl.constexpr, R: tl.constexpr, DEGREE: tl.constexpr,
    SAME: tl.constexpr, TRI: tl.constexpr, ROWS: tl.constexpr,
    CLAMP_LO: tl.constexpr, CLAMP_HI: tl.constexpr, DIRECT: tl.constexpr, PRECISION: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    pid_i = tl.program_id(0)
    pid_s = tl.program_id(1)
    n_split = tl.num_programs(1)
    rows = pid_i * BM + tl.arange(0, BM)
    rmask = rows < n
    lo, hi = load_bounds(aux_ptr)
    j_lo, j_hi = split_range(pid_s, tiles_per_split, m, BN)
    if TRI:  # within-sample block without row sums: tiles on and above the diagonal (BM == BN)
        j_lo = tl.maximum(j_lo, pid_i)
    acc_r = tl.zeros((BM,), dtype=tl.float64)  # row sums (S = their total)
    acc_q = tl.zeros((BM,), dtype=tl.float64)
    for jt in range(j_lo, j_hi):
        cols = jt * BN + tl.arange(0, BN)
        arg = pair_arg_tile(a_ptr, b_ptr, na_ptr, nb_ptr, rows, cols, n, m, d,
                            KIND, DIRECT, PRECISION, BM, BN, BK)
        kv = block_kernel_tile(arg, p_ptr, lo, hi, ea_ptr, eb_ptr, rows, cols, n, m, KIND, R, DEGREE,
                               CLAMP_LO, CLAMP_HI)  # (BM, BN)
        valid = rmask[:, None] & (cols < m)[None, :]
        if SAME:
            valid = valid & (rows[:, None] != cols[None, :])
        kv = tl.where(valid, kv, 0.0)
        tile_r = tl.sum(kv, 1)  # fp32 inside the tile, float64 across tiles
        if TRI:
            tile_r = tile_r * tl.where(jt == pid_i, 1.0, 2.0)
        acc_r += tile_r.to(tl.float64)
        if ROWS:
            acc_q += tl.sum(kv * kv, 1).to(tl.float64)
    out = pid_i * n_split + pid_s
    tl.store(s_ptr + out, tl.sum(acc_r, 0))
    if ROWS:
        tl.store(q_ptr + out, tl.sum(acc_q, 0))
        tl.store(r_ptr + pid_s * n + rows, acc_r, mask=rmask)


@triton.jit
def _block_stats_bwd(
    a_ptr, b_ptr, na_ptr, nb_ptr, ea_ptr, eb_ptr, ctr_ptr, p_ptr, aux_ptr,  # as the forward; ctr: the centre (d,)
    al_ptr, be_ptr,  # row / column weights α, β; aux = [lo, hi, c, q]
    g_ptr, pg_ptr,  # outputs: gradient partials (split, n, d) in the compute dtype; parameter partials (., RP) f64
    n, m, d, tiles_per_split,
    KIND: tl.constexpr, R: tl.constexpr, DEGREE: tl.constexpr, SAME: tl.constexpr,
    HAS_AL: tl.constexpr, HAS_BE: tl.constexpr, HAS_Q: tl.constexpr, GRAD: tl.constexpr, PARAMS: tl.constexpr,
    CLAMP_LO: tl.constexpr, CLAMP_HI: tl.constexpr, DIRECT: tl.constexpr, PRECISION: tl.constexpr,
    MEM_ACC: tl.constexpr,  # d > BD: accumulate P·B in the program's own rows of g (read-modify-write per tile)
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr, RP: tl.constexpr,
):
    """Gradient partials of Σ_ij w_ij k_ij, w = c + α_i + β_j + 2q k_ij: ∇ over this program's rows a_i (GRAD) and
    Σ w ∂k/∂θ (PARAMS), over the column tiles of its split (formulas: module docstring)."""
    RADIAL: tl.constexpr = is_radial(KIND)
    SQRT: tl.constexpr = is_sqrt(KIND)
    L1: tl.constexpr = is_l1(KIND)
    pid_i = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_i * BM + tl.arange(0, BM)
    lo, hi = load_bounds(aux_ptr)
    c = tl.load(aux_ptr + 2)
    q = tl.load(aux_ptr + 3)
    dt = a_ptr.dtype.element_ty
    g_base = g_ptr + pid_s.to(tl.int64) * n * d  # this split's (n, d) slab; rows of this program are its own
    al = row_scalars(al_ptr, rows, n, HAS_AL)  # α_i
    j_lo, j_hi = split_range(pid_s, tiles_per_split, m, BN)
    psum = tl.zeros((BM,), dtype=dt)  # Σ_j p_ij
    corrected = j_lo > j_hi  # (false) √t kernels: g's rows hold −Σ p (a − b) over close pairs (register mode)
    wsum = tl.zeros((BM,), dtype=dt)  # Σ_j w_ij (energy norm terms)
    acc = tl.zeros((BM, BD), dtype=dt)  # Σ_j p_ij b_j when d ≤ BD
    ridx = tl.arange(0, RP)
    pvec = tl.zeros((RP,), dtype=tl.float64)
    if GRAD and L1:  # L1 kinds: Σ_j p_ij sign(a_i − b_j) is added column by column into g's rows (float64)
        zero_rows(g_base, rows, n, d, 0, d, BM, BD)
        tl.debug_barrier()
    for jt in range(j_lo, j_hi):
        cols = jt * BN + tl.arange(0, BN)
        arg = pair_arg_tile(a_ptr, b_ptr, na_ptr, nb_ptr, rows, cols, n, m, d,
                            KIND, DIRECT, PRECISION, BM, BN, BK)
        w = pair_weights(arg, p_ptr, lo, hi, c, q, al, be_ptr, ea_ptr, eb_ptr, rows, cols, n, m,
                         KIND, R, DEGREE, SAME, HAS_AL, HAS_BE, HAS_Q, CLAMP_LO, CLAMP_HI)
        if GRAD and L1:
            p = w * kernel_tile(arg, p_ptr, lo, hi, KIND, R, DEGREE, 1, CLAMP_LO, CLAMP_HI)  # (BM, BN)
            add_sign_pair_grad(g_base, p, a_ptr, b_ptr, rows, cols, n, m, d, 0, d)
            tl.debug_barrier()
        elif GRAD:
            p = w * kernel_tile(arg, p_ptr, lo, hi, KIND, R, DEGREE, 1, CLAMP_LO, CLAMP_HI)  # (BM, BN)
            written = jt > j_lo  # MEM_ACC: this split's rows of g hold partial sums (0 before the first tile)
            if SQRT:  # close pairs: −Σ p (a − b) from differences, into g's rows
                p, corrected, written = route_close_pairs(p, arg, g_base, a_ptr, b_ptr, na_ptr, nb_ptr, rows, cols,
                                                          n, m, d, corrected, written, jt, j_lo, MEM_ACC)
            acc = add_pair_product(acc, g_base, p, b_ptr, rows, cols, n, m, d, written, MEM_ACC, PRECISION, BD)
            if RADIAL:
                psum += tl.sum(p, 1)
            if KIND == ENERGY:
                wsum += tl.sum(w, 1)
        if PARAMS:
            pvec = add_block_param_sums(pvec, ridx, arg, w, p_ptr, lo, hi, KIND, R, DEGREE, CLAMP_LO, CLAMP_HI)
    if GRAD and not L1:
        store_block_grad(g_base, a_ptr, ea_ptr, ctr_ptr, rows, n, d, psum, wsum, acc, corrected, j_hi > j_lo,
                         KIND, MEM_ACC, BD)
    if PARAMS:
        tl.store(pg_ptr + (pid_i * tl.num_programs(1) + pid_s) * RP + ridx, pvec)


# ---------------------------------------------------------------------------------------------------------------
# Host launchers (shared checks, tiles and grids: :mod:`._launch`)
# ---------------------------------------------------------------------------------------------------------------


def launch_config(n: int, m: int, d: int, dtype: torch.dtype, precision: str, device: torch.device) -> LaunchConfig:
    """Default launch configuration for a block of n × m pairs in R^d.

    Chosen from the sm_90 register report of ``ptxas`` (64 × 64 tiles with 8 warps keep the forward pass free of
    register spills; the backward's register accumulator is 64 columns wide — a few dozen bytes of spills — and its
    in-memory chunks 32 wide, spill-free) but not yet timed on a GPU. Under the interpreter (CPU tensors) tiles are
    32 wide and the split is 1.
    """
    if device.type != "cuda":
        return LaunchConfig(block_m=32, block_n=32, block_k=32, block_d=32, chunk_d=32, split=1)
    if dtype == torch.float64:
        return LaunchConfig(block_m=64, block_n=64, block_k=16, block_d=64, chunk_d=32, num_warps=8, num_stages=2)
    if precision == "ieee":
        return LaunchConfig(block_m=64, block_n=64, block_k=32, block_d=64, chunk_d=32, num_warps=8, num_stages=2)
    return LaunchConfig(block_m=64, block_n=64, block_k=32, block_d=64, chunk_d=32, num_warps=8, num_stages=3)


def _compute_dtype(name: str, t: torch.Tensor, precision: str) -> torch.dtype:
    check_tensor(name, t)
    check_points(name, t)
    return dtype_for(name, t, precision)


def _aux(spec: Spec, c=None, q=None) -> torch.Tensor:
    """[lo, hi] or [lo, hi, c, q] on the device in the compute dtype (c, q may be device tensors: no host sync)."""
    if c is None:
        return spec.lohi
    cq = torch.stack([c.reshape(()).to(spec.dtype), q.reshape(()).to(spec.dtype)])
    return torch.cat([spec.lohi, cq])


def _norms(a: torch.Tensor, ctr: torch.Tensor, spec: Spec) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared norms of the centred rows (for t), and for the energy kernel the norms of the uncentred rows."""
    na = (a * a).sum(1)  # (n,)
    if not spec.energy:
        return na, na
    raw = a + ctr  # (n, d): the points as given
    return na, (raw * raw).sum(1).sqrt()


def _forward_launch(a, b, na, nb, ea, eb, spec: Spec, same: bool, rows: bool):
    """Launch the forward pass over K_AB; returns (S, row sums or None, Q or None), float64.

    a, b: centred points (n, d), (m, d); na, nb: their squared norms; ea, eb: norms of the uncentred points (energy
    kernel; any tensor otherwise).
    """
    n, d = a.shape
    m = b.shape[0]
    cfg = launch_config(n, m, d, a.dtype, spec.precision, a.device)
    tiles_i, tiles_j = triton.cdiv(n, cfg.block_m), triton.cdiv(m, cfg.block_n)
    split, per = split_for(cfg, tiles_i, tiles_j, a.device)
    tri = same and not rows and cfg.block_m == cfg.block_n
    f64 = dict(dtype=torch.float64, device=a.device)
    s_part = torch.empty(tiles_i * split, **f64)
    q_part = torch.empty(tiles_i * split, **f64) if rows else s_part
    r_part = torch.empty(split, n, **f64) if rows else s_part
    _block_stats_fwd[(tiles_i, split)](
        a, b, na, nb, ea, eb, spec.params, _aux(spec), s_part, q_part, r_part,
        n, m, d, per,
        KIND=spec.kind, R=spec.r, DEGREE=spec.degree, SAME=same, TRI=tri, ROWS=rows,
        CLAMP_LO=spec.clamp_lo, CLAMP_HI=spec.clamp_hi, DIRECT=d <= cfg.direct_max_d, PRECISION=spec.precision,
        BM=cfg.block_m, BN=cfg.block_n, BK=tile_width(d, cfg.block_k),
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    if not rows:
        return s_part.sum(), None, None
    return s_part.sum(), r_part.sum(0), q_part.sum()


def _backward_launch(a, b, na, nb, ea, eb, ctr, spec: Spec, same: bool, c, q, alpha, beta, want_grad: bool,
                     want_params: bool):
    """Launch the backward pass over K_AB with weights w_ij = c + α_i + β_j + 2q k_ij (i ≠ j when ``same``).

    Returns (∇_a Σ w_ij k_ij in the compute dtype or None, (R,) float64 Σ w_ij ∂k_ij/∂θ_r or None).
    """
    n, d = a.shape
    m = b.shape[0]
    cfg = launch_config(n, m, d, a.dtype, spec.precision, a.device)
    tiles_i, tiles_j = triton.cdiv(n, cfg.block_m), triton.cdiv(m, cfg.block_n)
    # the gradient partials take split·n·d elements: no split beyond 2^24 of them (64 MB in fp32)
    split, per = split_for(cfg, tiles_i, tiles_j, a.device, max_split=max(1, 2**24 // (n * d)))
    mem_acc = d > cfg.block_d
    bd = cfg.chunk_d if mem_acc else tile_width(d, cfg.block_d)
    rp = pow2(spec.r)
    zero = torch.zeros((), dtype=a.dtype, device=a.device)
    aux = _aux(spec, zero if c is None else c, zero if q is None else q)
    gdt = torch.float64 if spec.l1 else a.dtype  # L1 kinds add column sums into g across tiles: float64
    g_part = torch.empty(split, n, d, dtype=gdt, device=a.device) if want_grad else aux
    pg_part = torch.empty(tiles_i * split, rp, dtype=torch.float64, device=a.device) if want_params else aux
    al = alpha.to(a.dtype).contiguous() if alpha is not None else aux
    be = beta.to(a.dtype).contiguous() if beta is not None else aux
    _block_stats_bwd[(tiles_i, split)](
        a, b, na, nb, ea, eb, ctr, spec.params, aux, al, be, g_part, pg_part,
        n, m, d, per,
        KIND=spec.kind, R=spec.r, DEGREE=spec.degree, SAME=same,
        HAS_AL=alpha is not None, HAS_BE=beta is not None, HAS_Q=q is not None, GRAD=want_grad, PARAMS=want_params,
        CLAMP_LO=spec.clamp_lo, CLAMP_HI=spec.clamp_hi, DIRECT=d <= cfg.direct_max_d, PRECISION=spec.precision,
        MEM_ACC=mem_acc, BM=cfg.block_m, BN=cfg.block_n, BK=tile_width(d, cfg.block_k), BD=bd, RP=rp,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    grad = None
    if want_grad:
        grad = (g_part[0] if split == 1 else g_part.sum(0, dtype=torch.float64)).to(a.dtype)
    pgrad = pg_part.sum(0)[: spec.r] if want_params else None
    return grad, pgrad


# ---------------------------------------------------------------------------------------------------------------
# Autograd Functions
# ---------------------------------------------------------------------------------------------------------------


_TWICE = (
    "the triton block_stats op is differentiable once: its backward is a fused kernel without a derivative of its "
    "own, so its gradient cannot be differentiated again (double backward). Use backend='torch' or "
    "backend='keops' for higher-order derivatives"
)


class _SameBlock(torch.autograd.Function):
    """(S, [r, Q]) of the within-sample block K_AA without its diagonal; a is prepared (centred, contiguous)."""

    @staticmethod
    def forward(ctx, a, ctr, spec, rows, *params):
        ctx.set_materialize_grads(False)
        na, ea = _norms(a, ctr, spec)
        s, r, q = _forward_launch(a, a, na, na, ea, ea, spec, True, rows)
        ctx.save_for_backward(a, na, ea, ctr, *params)
        ctx.spec, ctx.rows = spec, rows
        return (s, r, q) if rows else s

    @staticmethod
    def backward(ctx, *grads):
        a, na, ea, ctr, *params = ctx.saved_tensors
        spec = ctx.spec
        gs = grads[0]
        gr, gq = (grads[1], grads[2]) if ctx.rows else (None, None)
        want_grad = ctx.needs_input_grad[0]
        needs = ctx.needs_input_grad[4:]
        want_params = any(needs)
        if (gs is None and gr is None and gq is None) or not (want_grad or want_params):
            return (None, None, None, None, *([None] * len(params)))
        with torch.no_grad():
            # symmetrised weights w_ij + w_ji = 2c + α_i + α_j + 4q k_ij: a_i appears as both arguments
            c = None if gs is None else 2.0 * gs
            q = None if gq is None else 2.0 * gq
            grad, pgrad = _backward_launch(a, a, na, na, ea, ea, ctr, spec, True, c, q, gr, gr, want_grad,
                                           want_params)
            if pgrad is not None:
                pgrad = 0.5 * pgrad  # Σ (w + wᵀ) ∂k = 2 Σ w ∂k
            out = (grad, *param_grads(pgrad, spec.param_index, params, needs))
        out = refuse(_TWICE, out, (a, *params, *grads))
        return (out[0], None, None, None, *out[1:])


class _CrossBlock(torch.autograd.Function):
    """(S, [r, c, Q]) of the cross block K_AB; a and b are prepared (same centring, contiguous)."""

    @staticmethod
    def forward(ctx, a, b, ctr, spec, rows, *params):
        ctx.set_materialize_grads(False)
        (na, ea), (nb, eb) = _norms(a, ctr, spec), _norms(b, ctr, spec)
        s, r, q = _forward_launch(a, b, na, nb, ea, eb, spec, False, rows)
        ctx.save_for_backward(a, b, na, nb, ea, eb, ctr, *params)
        ctx.spec, ctx.rows = spec, rows
        if not rows:
            return s
        _, cs, _ = _forward_launch(b, a, nb, na, eb, ea, spec, False, True)  # column sums = row sums of K_BA
        return s, r, cs, q

    @staticmethod
    def backward(ctx, *grads):
        a, b, na, nb, ea, eb, ctr, *params = ctx.saved_tensors
        spec = ctx.spec
        gs = grads[0]
        gr, gc, gq = (grads[1], grads[2], grads[3]) if ctx.rows else (None, None, None)
        need_a, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        needs = ctx.needs_input_grad[5:]
        want_params = any(needs)
        if gs is None and gr is None and gc is None and gq is None:
            return (None, None, None, None, None, *([None] * len(params)))
        grad_a = grad_b = pgrad = None
        with torch.no_grad():
            if need_a or want_params:  # rows = a: w_ij = c + α_i + β_j + 2q k_ij
                grad_a, pgrad = _backward_launch(a, b, na, nb, ea, eb, ctr, spec, False, gs, gq, gr, gc, need_a,
                                                 want_params)
            if need_b:  # rows = b over K_BA: the roles of α and β swap
                grad_b, _ = _backward_launch(b, a, nb, na, eb, ea, ctr, spec, False, gs, gq, gc, gr, True, False)
            out = (grad_a, grad_b, *param_grads(pgrad, spec.param_index, params, needs))
        out = refuse(_TWICE, out, (a, b, *params, *grads))
        return (out[0], out[1], None, None, None, *out[2:])


# ---------------------------------------------------------------------------------------------------------------
# Functional aliases
# ---------------------------------------------------------------------------------------------------------------


def _prepared(t: torch.Tensor, dtype: torch.dtype, centre: torch.Tensor) -> torch.Tensor:
    return (t.to(dtype) - centre).contiguous()  # centre is detached: gradients pass straight through


def _centre(kernel: Kernel, dtype: torch.dtype, *sets: torch.Tensor) -> torch.Tensor:
    """(1, d) centre subtracted before t = ‖a‖² + ‖b‖² − 2aᵀb: the pooled mean where :func:`.._shared.centres`,
    else zero (the energy kernel's norm terms are formed from the centred points plus this centre)."""
    if not centres(kernel):
        return torch.zeros(1, sets[0].shape[1], dtype=dtype, device=sets[0].device)
    return pooled_mean(*sets, dtype=dtype)


def same_block_stats(a: torch.Tensor, kernel: Kernel, block: str = "xx", *, rows: bool = False,
                     precision: str = "ieee"):
    r"""Statistics of the within-sample block K_AA without its diagonal: (S, r, Q), float64.

    .. math::
        S = \sum_{i \ne j} k(a_i, a_j), \quad r_i = \sum_{j \ne i} k(a_i, a_j), \quad Q = \sum_{i \ne j} k(a_i, a_j)^2

    Args:
        a: (n, d) CUDA tensor (CPU under the Triton interpreter). kernel: resolved radial or dot kernel.
        block: ``"xx"`` or ``"yy"`` (selects the RBF-B bounds). rows: also compute r (n,) and Q (else None).
        precision: ``"ieee"``, ``"tf32"`` or ``"tf32x3"`` (float32 inputs only).

    Returns:
        ``(S, r, Q)`` with r and Q None unless ``rows``; differentiable once in a and tensor kernel parameters.

    Raises:
        ValueError: a not on CUDA (outside the interpreter), bad shape, bad precision. TypeError: non-float dtype,
        unsupported kernel.
    """
    dtype = _compute_dtype("a", a, precision)
    spec = make_spec(kernel, block, dtype, a.device, precision)
    centre = _centre(kernel, dtype, a)
    params = tensor_params(kernel, spec)
    out = _SameBlock.apply(_prepared(a, dtype, centre), centre.reshape(-1), spec, rows, *params)
    return tuple(out) if rows else (out, None, None)


def cross_block_stats(a: torch.Tensor, b: torch.Tensor, kernel: Kernel, block: str = "xy", *, rows: bool = False,
                      precision: str = "ieee"):
    r"""Statistics of the cross block K_AB: (S, r, c, Q), float64.

    .. math::
        S = \sum_{i,j} k(a_i, b_j), \quad r_i = \sum_j k(a_i, b_j), \quad c_j = \sum_i k(a_i, b_j),
        \quad Q = \sum_{i,j} k(a_i, b_j)^2

    Args:
        a: (n, d), b: (m, d) tensors on one CUDA device (CPU under the Triton interpreter), one dtype.
        rows: also compute r (n,), c (m,) and Q (one more pass for c); otherwise they are None.

    Returns:
        ``(S, r, c, Q)``; differentiable once in a, b and tensor kernel parameters.

    Raises:
        ValueError / TypeError: as :func:`same_block_stats`, and for a and b of different d, device or dtype.
    """
    dtype = _check_pair(a, b, precision, ("a", "b"))
    spec = make_spec(kernel, block, dtype, a.device, precision)
    centre = _centre(kernel, dtype, a, b)
    params = tensor_params(kernel, spec)
    out = _CrossBlock.apply(_prepared(a, dtype, centre), _prepared(b, dtype, centre), centre.reshape(-1), spec, rows,
                            *params)
    return tuple(out) if rows else (out, None, None, None)


def _check_pair(a, b, precision: str, names: tuple[str, str]) -> torch.dtype:
    """Validate two point sets for one launch; returns the compute dtype."""
    na, nb = names
    dtype = _compute_dtype(na, a, precision)
    _compute_dtype(nb, b, precision)
    if b.shape[1] != a.shape[1]:
        raise ValueError(f"{nb} has {b.shape[1]} features but {na} has {a.shape[1]}; both must live in the same R^d")
    if b.device != a.device:
        raise ValueError(f"{nb} is on device {b.device} but {na} is on {a.device}; put both on one device")
    if b.dtype != a.dtype:
        raise TypeError(f"{nb} has dtype {b.dtype} but {na} has {a.dtype}; convert both to one dtype")
    return dtype


def _trace(a: torch.Tensor, kernel: Kernel, block: str, dtype: torch.dtype) -> torch.Tensor:
    """Σ_i k(a_i, a_i) in float64 through torch (O(n d), differentiable to any order)."""
    a = a.to(dtype)
    return kernel.pairwise(a, a, block).double().sum()


def block_stats(x: torch.Tensor, y: torch.Tensor, kernel: Kernel, variance: bool = False,
                precision: str = "ieee") -> BlockStats:
    r"""Block statistics of K_XX, K_YY, K_XY (SPEC §3) by fused Triton passes; every field float64.

    ``sxx``/``syy`` exclude the diagonal, ``dxx``/``dyy`` are the traces, ``sxy`` the full cross sum; with
    ``variance``: row sums ``rxx``/``ryy`` (zero diagonal), ``rxy``/``cxy`` and squared sums ``qxx``/``qyy``/``qxy``.
    O((n + m)² d) time, O((n + m) d) memory; the within-sample blocks cost half when ``variance`` is False.

    Args:
        x: (n, d), y: (m, d) on one CUDA device (CPU tensors under the Triton interpreter), one dtype.
        kernel: resolved radial or dot-product kernel (not a DeepKernel: apply its feature map first).
        variance: also compute the row/column sums and squared sums.
        precision: ``"ieee"`` (default, exact fp32), ``"tf32"`` or ``"tf32x3"`` (tensor cores; float32 only).

    Returns:
        :class:`~kernelmmd.ops.types.BlockStats`, differentiable once in x, y and tensor kernel parameters.

    Raises:
        ValueError: tensors not on CUDA outside the interpreter, bad shapes, different d or devices, unknown
        ``precision``, or ``precision != "ieee"`` with float64 inputs. TypeError: non-float dtypes, different dtypes,
        unsupported kernel.

    Example:
        >>> st = block_stats(x.cuda(), y.cuda(), kernelmmd.RBF(1.0))  # doctest: +SKIP
        >>> mmd2_u = st.sxx / (n * (n - 1)) + st.syy / (m * (m - 1)) - 2 * st.sxy / (n * m)  # doctest: +SKIP
    """
    dtype = _check_pair(x, y, precision, ("x", "y"))
    sxy, rxy, cxy, qxy = cross_block_stats(x, y, kernel, "xy", rows=variance, precision=precision)
    sxx, rxx, qxx = same_block_stats(x, kernel, "xx", rows=variance, precision=precision)
    syy, ryy, qyy = same_block_stats(y, kernel, "yy", rows=variance, precision=precision)
    return BlockStats(
        n=x.shape[0], m=y.shape[0], sxx=sxx, syy=syy, sxy=sxy,
        dxx=_trace(x, kernel, "xx", dtype), dyy=_trace(y, kernel, "yy", dtype),
        rxx=rxx, ryy=ryy, rxy=rxy, cxy=cxy, qxx=qxx, qyy=qyy, qxy=qxy,
    )


# ---------------------------------------------------------------------------------------------------------------
# Ahead-of-time compilation specs (tests/test_triton_aot.py compiles each for sm_90)
# ---------------------------------------------------------------------------------------------------------------


def _aot_fwd(name, kind, *, r=1, degree=0, same=False, tri=False, rows=True, lo=False, hi=False, direct=False,
             precision="ieee", dt="fp32", bk=32, tensor_cores=False):
    const = dict(KIND=kind, R=r, DEGREE=degree, SAME=same, TRI=tri, ROWS=rows, CLAMP_LO=lo, CLAMP_HI=hi,
                 DIRECT=direct, PRECISION=precision, BM=64, BN=64, BK=bk)
    return aot_spec(name, _block_stats_fwd, const, dt=dt, f64=("s_ptr", "q_ptr", "r_ptr"), tensor_cores=tensor_cores)


def _aot_bwd(name, kind, *, r=1, degree=0, same=False, al=True, be=True, q=True, grad=True, params=True, lo=False,
             hi=False, direct=False, precision="ieee", mem_acc=False, dt="fp32", bk=32, bd=64, tensor_cores=False):
    const = dict(KIND=kind, R=r, DEGREE=degree, SAME=same, HAS_AL=al, HAS_BE=be, HAS_Q=q, GRAD=grad, PARAMS=params,
                 CLAMP_LO=lo, CLAMP_HI=hi, DIRECT=direct, PRECISION=precision, MEM_ACC=mem_acc, BM=64, BN=64, BK=bk,
                 BD=bd, RP=pow2(r))
    return aot_spec(name, _block_stats_bwd, const, dt=dt, f64=("pg_ptr",), tensor_cores=tensor_cores)


AOT_SPECS = [
    _aot_fwd("fwd_rbf_same_tri", RBF, same=True, tri=True, rows=False),
    _aot_fwd("fwd_rbf_cross_rows", RBF),
    _aot_fwd("fwd_rbf_bounded_lo", RBF, same=True, lo=True),
    _aot_fwd("fwd_rbf_bounded_hi", RBF, hi=True),
    _aot_fwd("fwd_mix_rq_tf32", MIX_RQ, r=5, precision="tf32", tensor_cores=True),
    _aot_fwd("fwd_rq_tf32x3", RQ, same=True, precision="tf32x3", tensor_cores=True),
    _aot_fwd("fwd_laplacian_direct", LAPLACIAN, direct=True),
    _aot_fwd("fwd_energy", ENERGY),
    _aot_fwd("fwd_laplacian_tf32", LAPLACIAN, precision="tf32", tensor_cores=True),
    _aot_fwd("fwd_poly_tf32", POLY, r=2, degree=3, precision="tf32", tensor_cores=True),
    _aot_fwd("fwd_linear_direct", LINEAR, direct=True),
    _aot_fwd("fwd_rbf_fp64", RBF, dt="fp64", bk=16),
    _aot_fwd("fwd_l1_same_tri", L1_LAPLACIAN, same=True, tri=True, rows=False),  # L1: |a − b| sums, no tensor cores
    _aot_fwd("fwd_l1_cross_rows_fp64", L1_LAPLACIAN, dt="fp64", bk=16),
    _aot_bwd("bwd_rbf_same", RBF, same=True),
    _aot_bwd("bwd_rbf_mem_acc", RBF, mem_acc=True, params=False, bd=32),
    _aot_bwd("bwd_energy_mem_acc_tf32", ENERGY, mem_acc=True, precision="tf32", bd=32, tensor_cores=True),
    _aot_bwd("bwd_mix_rbf_tf32", MIX_RBF, r=5, precision="tf32", tensor_cores=True),
    _aot_bwd("bwd_rq_tf32x3_direct", RQ, direct=True, precision="tf32x3", tensor_cores=True),
    _aot_bwd("bwd_rbf_bounded", RBF, lo=True, hi=True, al=False, be=False),
    _aot_bwd("bwd_laplacian_params_only", LAPLACIAN, grad=False, q=False),
    _aot_bwd("bwd_energy", ENERGY, same=True, params=False),
    _aot_bwd("bwd_poly_tf32", POLY, r=2, degree=3, precision="tf32", tensor_cores=True),
    _aot_bwd("bwd_linear", LINEAR, q=False),
    _aot_bwd("bwd_rbf_fp64", RBF, dt="fp64", bk=16),
    _aot_bwd("bwd_l1_same", L1_LAPLACIAN, same=True),  # sign products into float64 g rows, σ sums
    _aot_bwd("bwd_l1_cross_mem", L1_LAPLACIAN, mem_acc=True, bd=32),
]
