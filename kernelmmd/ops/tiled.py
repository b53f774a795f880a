r"""Tiled torch backend (``"tiled"``): row tiles of x against all of y, BLAS distances, float64 accumulation.

The CPU workhorse for problems too large for the dense reference. Every op walks over row tiles
``x[s:e]`` (``rows = max(1, TILE_ELEMENTS // m)`` rows, so a tile holds about :data:`TILE_ELEMENTS` entries),
forms squared distances with one matrix product per tile (:math:`t = \|a\|^2 + \|b\|^2 - 2ab^\top` after centring
on the pooled mean, clamped at 0), evaluates the kernel profile from :mod:`kernelmmd.kernels` in the input dtype
and adds the tile's partial sums into float64 accumulators. Memory is O(rows·m + (n + m)·d), in the forward and
in the backward pass; no n × m matrix ever exists. L1 kernels (:class:`~kernelmmd.kernels.L1Kernel`) form
t = ‖a_i − b_j‖₁ per tile from exact differences (``torch.cdist`` with p = 1, no centring) and their gradients as
Σ_j p_ij sign(a_i − b_j) (:func:`kernelmmd.kernels.l1.sign_mv`, sign(0) = 0).

* :func:`block_stats` is one ``autograd.Function`` per kernel block. Within-sample blocks (xx, yy) visit only the
  upper triangle of tiles (half the kernel evaluations); the diagonal is excluded exactly (masked, and the traces
  are computed from ``kernel.pairwise(x, x)``, where t = 0 exactly). When only the sums are requested
  (``variance=False``) and an input needs a gradient, the gradients of the sums are formed in the same pass as the
  values (one kernel evaluation per pair for value *and* gradient); with ``variance=True`` the backward pass
  recomputes the tiles, weighting each pair by the incoming gradients of the sums, row/column sums and squared
  sums. Differentiable once (in x, y and tensor kernel parameters); a second differentiation raises PyTorch's
  ``RuntimeError`` instead of returning a wrong zero.
* :func:`kernel_mv`, :func:`kernel_grad_mv` and :func:`a_matvec` compute their output rows tile by tile with
  differentiable torch code under per-tile activation checkpointing (``torch.utils.checkpoint``, non-reentrant):
  differentiable to any order (double backward for gradient penalties), still O(rows·m) memory in backward.
* :func:`a_diag` and :func:`a_column` are O(M d) already and come from the reference backend, as does
  :func:`dense_blocks` (it materialises the blocks by design).

Precision: kernel values, the sums along each row of a tile (torch's pairwise summation) and within-tile products
(``P @ y`` in the gradients) are formed in the input dtype; every sum across rows and tiles, every statistic and every
returned matrix-vector product is float64 (SPEC §13: tile partials in fp32, combined in float64).
"""

from __future__ import annotations

import functools
import math

import torch
from torch.utils.checkpoint import checkpoint

from ..kernels import DotKernel, Kernel, L1Kernel, RadialKernel
from ..kernels.l1 import l1dist, sign_mv
from ._shared import centres, close_threshold, energy_norm_mv, pooled_mean, refuse, row_norms, unit_rows
from .reference import a_column, a_diag, dense_blocks, require_twice
from .types import BlockStats

__all__ = ["block_stats", "kernel_mv", "kernel_grad_mv", "a_matvec", "a_diag", "a_column", "dense_blocks",
           "quad_forms", "h_quad_forms", "TILE_ELEMENTS", "STRIP_ELEMENTS"]

#: kernel entries per tile (rows × columns): about 4 MiB of float32 per temporary, in the range of equally fast tile
#: sizes on the CPU; at large d the distance product needs more rows to run at BLAS speed, so tiles get at least d/2
#: rows (capped at 8 × TILE_ELEMENTS entries). Measurements: benchmarks/RESULTS.md, "Tile size".
TILE_ELEMENTS = 1 << 20


def _rows(m: int, d: int = 0) -> int:
    """Rows per tile against m columns of dimension d."""
    m = max(1, m)
    return max(1, TILE_ELEMENTS // m, min(d // 2, 8 * TILE_ELEMENTS // m))


def _tensor_params(kernel: Kernel) -> tuple[list[int], list[torch.Tensor]]:
    """Indices (into ``scalar_params``) and values of the kernel parameters that are tensors."""
    idx, ps = [], []
    for i, p in enumerate(kernel.scalar_params()):
        if isinstance(p, torch.Tensor):
            idx.append(i)
            ps.append(p)
    return idx, ps


def _check_kernel(kernel: Kernel, op: str) -> None:
    if not isinstance(kernel, (RadialKernel, DotKernel, L1Kernel)):
        raise TypeError(f"{op} on the tiled backend needs a radial or dot-product kernel (or an L1 kernel), "
                        f"got {kernel!r}")


# --------------------------------------------------------------------------------------------------------------
# Tiles of one kernel block k(a_i, b_j) (no autograd: used inside the Function's forward and backward)
# --------------------------------------------------------------------------------------------------------------


def _close_pairs(t: torch.Tensor, an: torch.Tensor, bn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (i, j) of the tile's pairs with t < CLOSE · (‖a_i‖² + ‖b_j‖²) (centred squared norms): where the
    expansion's rounding, ~eps·(‖a_i‖² + ‖b_j‖²), is large relative to t (see :data:`kernelmmd.kernels.CLOSE`)."""
    t = t.detach()
    if t.numel() == 0:
        return (torch.empty(0, dtype=torch.long, device=t.device),) * 2
    # rows whose nearest column could qualify (one row-min pass, no (B, C) temporaries), then those rows exactly
    rows = (t.amin(1) < close_threshold(an, bn.max())).nonzero().squeeze(1)
    i, j = (t[rows] < close_threshold(an[rows, None], bn[None, :])).nonzero().unbind(1)
    return rows[i], j


def _pair_chunks(k: int, d: int):
    """Slices [s0, s1) of k index pairs in R^d, about TILE_ELEMENTS gathered numbers each."""
    step = max(1, TILE_ELEMENTS // max(1, d))
    return ((s0, min(k, s0 + step)) for s0 in range(0, k, step))


def _pair_sqdist(a: torch.Tensor, b: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """‖a_i − b_j‖² for index pairs, (k,), from coordinate differences (differentiable)."""
    parts = []
    for s0, s1 in _pair_chunks(i.numel(), a.shape[1]):
        diff = a[i[s0:s1]] - b[j[s0:s1]]  # (k', d)
        parts.append((diff * diff).sum(1))
    return torch.cat(parts)


def _add_pair_grads(a, b, i, j, p, ga, gb) -> None:
    """ga[i] += 2 p (a_i − b_j) and gb[j] −= the same, for index pairs with weights p (k,), from differences."""
    for s0, s1 in _pair_chunks(i.numel(), a.shape[1]):
        ii, jj = i[s0:s1], j[s0:s1]
        part = ((a[ii] - b[jj]) * (2.0 * p[s0:s1])[:, None]).to(ga.dtype)  # (k', d)
        ga.index_add_(0, ii, part)
        if gb is not None:
            gb.index_add_(0, jj, -part)


class _Block:
    """Evaluates tiles k(a[r0:r1], b[c0:c1]) of one kernel block, and accumulates pair-weighted gradients.

    For a radial kernel the tile is g(clamp(t)) (+ ‖a_i‖ + ‖b_j‖ for the energy kernel) and its t-derivative
    g'(clamp(t))·1[lo ≤ t ≤ hi]; for a dot-product kernel h(aᵀb) and h'(aᵀb); for an L1 kernel g(t) and g'(t) with
    t = ‖a_i − b_j‖₁ summed from exact differences (``torch.cdist``, p = 1), gradients Σ_j p_ij sign(a_i − b_j).
    """

    def __init__(self, kernel: Kernel, a: torch.Tensor, b: torch.Tensor, block: str):
        self.kernel, self.block = kernel, block
        self.radial = isinstance(kernel, RadialKernel)
        self.l1 = isinstance(kernel, L1Kernel)
        self.a, self.b = a, b
        if self.radial:
            c = pooled_mean(a) if b is a else pooled_mean(a, b)  # (1, d)
            self.ac = a - c  # (n, d) centred: shrinks the norms that cancel in ‖a‖² + ‖b‖² − 2aᵀb
            self.bc = self.ac if b is a else b - c  # (m, d)
            # distances from (ta, tb): the centred inputs, in float64 for √t kernels, whose close pairs are re-formed
            # from differences of the given points (ra, rb: the centred ones are rounded), see _close_pairs
            self.sqrt = kernel.sqrt_distance
            self.exact = kernel.sqrt_distance and a.dtype != torch.float64
            self.ta = self.ac.double() if self.exact else self.ac
            self.tb = self.ta if b is a else (self.bc.double() if self.exact else self.bc)
            if self.sqrt:
                self.ra = a.double() if self.exact else a
                self.rb = self.ra if b is a else (b.double() if self.exact else b)
            self.an = (self.ta * self.ta).sum(1)  # (n,)
            self.bn = self.an if b is a else (self.tb * self.tb).sum(1)  # (m,)
            lo, hi = kernel.block_bounds(block)
            self.lo, self.hi = max(lo, 0.0), hi
            self.bounded_lo, self.bounded_hi = lo > 0, hi < math.inf
            self.norms = bool(getattr(kernel, "norm_terms", False))
            if self.norms:  # energy kernel: k = ‖a‖ + ‖b‖ + g(t)
                self.na = row_norms(a)  # (n,)
                self.nb = self.na if b is a else row_norms(b)  # (m,)
                self.ua = unit_rows(a)  # (n, d)
                self.ub = self.ua if b is a else unit_rows(b)  # (m, d)

    def tile(self, r0: int, r1: int, c0: int, c1: int, grad: bool):
        """(K, D, T): kernel values, their derivative in t (or u) if ``grad``, and the (clamped) t or u."""
        if self.l1:
            t = l1dist(self.a[r0:r1], self.b[c0:c1])  # (B, C)
            k, dk = self.kernel.profiles(t, (0, 1)) if grad else (self.kernel.profile(t, 0), None)
            return k, dk, t
        if self.radial:
            if self.ta.shape[1] == 1:  # d = 1: differences (a matrix product with inner size 1 is slow)
                t = (self.ta[r0:r1] - self.tb[c0:c1].T).square_()  # (B, C)
            else:
                t = torch.addmm(self.bn[None, c0:c1], self.ta[r0:r1], self.tb[c0:c1].T, alpha=-2.0)  # (B, C)
                t.add_(self.an[r0:r1, None])
            if self.sqrt:
                i, j = _close_pairs(t, self.an[r0:r1], self.bn[c0:c1])
                self.close = (r0 + i, c0 + j)  # absolute indices, reused by add_grads on this tile
                if i.numel():
                    t[i, j] = _pair_sqdist(self.ra, self.rb, r0 + i, c0 + j)
            if self.exact:
                t = t.to(self.a.dtype)
            mask = None
            if grad and (self.bounded_lo or self.bounded_hi):
                mask = torch.ones_like(t, dtype=torch.bool)
                if self.bounded_lo:
                    mask &= t >= self.lo
                if self.bounded_hi:
                    mask &= t <= self.hi
            t.clamp_(min=self.lo, max=self.hi if self.bounded_hi else None)
            if grad:
                k, dk = self.kernel.profiles(t, (0, 1))
                if mask is not None:
                    dk = dk * mask
            else:
                k, dk = self.kernel.profile(t, 0), None
            if self.norms:
                k = k + self.na[r0:r1, None] + self.nb[None, c0:c1]
            return k, dk, t
        u = self.a[r0:r1] @ self.b[c0:c1].T  # (B, C)
        if grad:
            k, dk = self.kernel.profiles(u, (0, 1))
        else:
            k, dk = self.kernel.profile(u, 0), None
        return k, dk, u

    def add_grads(self, w, dk, r0, r1, c0, c1, ga, gb):
        """ga[r0:r1] += Σ_j w_ij ∂k(a_i, b_j)/∂a_i and gb[c0:c1] += Σ_i w_ij ∂k(a_i, b_j)/∂b_j (gb may be None), for
        a part [r0, r1) × [c0, c1) of the tile last returned by :meth:`tile`."""
        p = w * dk  # (B, C)
        if self.l1:  # Σ_j p_ij sign(a_i − b_j), and −Σ_i p_ij sign(a_i − b_j) for the columns
            if gb is None:
                ga[r0:r1] += sign_mv(self.a[r0:r1], self.b[c0:c1], p)
            else:
                pa, pb = sign_mv(self.a[r0:r1], self.b[c0:c1], p, cols=True)
                ga[r0:r1] += pa
                gb[c0:c1] += pb
        elif self.radial:
            ar, bc = self.ac[r0:r1], self.bc[c0:c1]
            if self.exact:  # g' ∝ t^{-1/2}: a_i Σ p − Σ p b_j cancels heavily at close points; form it in float64
                p, ar, bc = p.double(), self.ta[r0:r1], self.tb[c0:c1]
            if self.sqrt:  # ... and take the close pairs' Σ p (a_i − b_j) from differences
                ii, jj = self.close  # of the last tile, which contains this one
                keep = (ii >= r0) & (ii < r1) & (jj >= c0) & (jj < c1)
                i, j = ii[keep] - r0, jj[keep] - c0
                if i.numel():
                    _add_pair_grads(self.ra, self.rb, r0 + i, c0 + j, p[i, j], ga, gb)
                    p = p.index_put((i, j), p.new_zeros(()))
            ga[r0:r1] += 2.0 * (ar * p.sum(1, keepdim=True) - p @ bc)  # Σ_j 2 g' w (a_i − b_j)
            if gb is not None:
                gb[c0:c1] += 2.0 * (bc * p.sum(0)[:, None] - p.T @ ar)
            if self.norms:  # ∂(‖a_i‖ + ‖b_j‖)/∂a_i = a_i / ‖a_i‖
                if not isinstance(w, torch.Tensor):
                    w = torch.full_like(p, w)
                ga[r0:r1] += self.ua[r0:r1] * w.sum(1, keepdim=True)
                if gb is not None:
                    gb[c0:c1] += self.ub[c0:c1] * w.sum(0)[:, None]
        else:
            ga[r0:r1] += p @ self.b[c0:c1]  # Σ_j h' w b_j
            if gb is not None:
                gb[c0:c1] += p.T @ self.a[r0:r1]


def _dsum(t: torch.Tensor) -> torch.Tensor:
    """Sum of a tile: per row in the tile's dtype (torch's pairwise summation), the rows in float64.

    ``tile.sum(dtype=torch.float64)`` on float32 is ~50× slower than the exp that made the tile (measured on the
    2-core CPU); the pairwise float32 row sums lose ~1e-9 relative."""
    return t.sum(-1).double().sum() if t.ndim else t.double()


def _param_grads(kernel, t, w, idx, scale=1.0):
    """Σ w ∂g/∂θ_r over the tile, for the tensor parameters ``idx``."""
    if not idx:
        return []
    pg = kernel.param_grads(t)
    return [scale * _dsum(w * pg[i]) for i in idx]


def _tiles_sym(n: int, d: int):
    """Upper-triangular tiling of an n × n block: (r0, r1) with columns [r0, n) ([r0, r1) is the diagonal square)."""
    rows = _rows(n, d)
    for r0 in range(0, n, rows):
        yield r0, min(n, r0 + rows)


_ONCE = (
    "the tiled backend's block_stats is differentiable once (its backward pass is not itself differentiable); "
    "for higher derivatives use backend='torch' or backend='keops'"
)


def _once_differentiable(backward):
    """Runs the backward pass without building a graph; under ``create_graph=True`` its results are wrapped in
    :class:`._shared.Refuse` nodes linked to the Function's inputs (the saved tensors after the first
    ``ctx.n_eager``): a second derivative through block_stats is an error (also for ``torch.autograd.grad`` with
    ``allow_unused=True``), never a silent constant."""

    @functools.wraps(backward)
    def wrapper(ctx, *grads):
        with torch.no_grad():
            out = backward(ctx, *grads)
        return tuple(refuse(_ONCE, out, ctx.saved_tensors[ctx.n_eager :]))

    return wrapper


def _zero_diag(mat: torch.Tensor) -> torch.Tensor:
    mat.diagonal().zero_()
    return mat


class _BlockSums(torch.autograd.Function):
    """Sums over one kernel block, in float64.

    forward(spec, a, b, *params) with spec = (kernel, block name, variance, param indices); ``b is None`` marks a
    within-sample block k(a_i, a_i') whose diagonal is excluded. Returns (S,) or, with variance,
    (S, Q, r) for a within-sample block and (S, Q, r, c) for the cross block: the sum, the sum of squares, the row
    sums and the column sums.
    """

    @staticmethod
    def forward(ctx, spec, a, b, *params):
        kernel, block, variance, idx = spec
        sym = b is None
        bb = a if sym else b
        n, m = a.shape[0], bb.shape[0]
        need = ctx.needs_input_grad
        eager = not variance and any(need[1:])  # gradients of S formed in this pass
        blk = _Block(kernel, a, bb, block)
        f64 = torch.float64
        S = torch.zeros((), dtype=f64, device=a.device)
        Q = torch.zeros((), dtype=f64, device=a.device)
        r = torch.zeros(n, dtype=f64, device=a.device) if variance else None
        c = torch.zeros(m, dtype=f64, device=a.device) if variance and not sym else None
        ga = torch.zeros_like(a, dtype=f64) if eager else None  # float64 accumulators across tiles
        gb = torch.zeros_like(bb, dtype=f64) if eager and not sym else None
        gp = [torch.zeros((), dtype=f64, device=a.device) for _ in idx] if eager else []
        if sym:
            for r0, r1 in _tiles_sym(n, a.shape[1]):
                k, dk, t = blk.tile(r0, r1, r0, n, eager)  # (B, n − r0): square [r0, r1) then rectangle
                B = r1 - r0
                _zero_diag(k[:, :B])
                if eager:
                    _zero_diag(dk[:, :B])
                sq, rect = k[:, :B], k[:, B:]
                S += _dsum(sq) + 2.0 * _dsum(rect)
                if variance:
                    k2 = k * k
                    Q += _dsum(k2[:, :B]) + 2.0 * _dsum(k2[:, B:])
                    r[r0:r1] += k.sum(1).double()
                    r[r1:] += rect.sum(0).double()
                if eager:  # S = Σ_{i≠j} k_ij: weight 2 per unordered pair (see backward)
                    blk.add_grads(_zero_diag(torch.full_like(sq, 2.0)), dk[:, :B], r0, r1, r0, r1, ga, None)
                    blk.add_grads(2.0, dk[:, B:], r0, r1, r1, n, ga, ga)
                    if idx:
                        w = torch.full_like(k, 2.0)
                        w[:, :B] = 1.0
                        _zero_diag(w[:, :B])
                        for acc, v in zip(gp, _param_grads(kernel, t, w, idx)):
                            acc += v
        else:
            rows = _rows(m, a.shape[1])
            for r0 in range(0, n, rows):
                r1 = min(n, r0 + rows)
                k, dk, t = blk.tile(r0, r1, 0, m, eager)  # (B, m)
                S += _dsum(k)
                if variance:
                    Q += _dsum(k * k)
                    r[r0:r1] = k.sum(1).double()
                    c += k.sum(0).double()
                if eager:
                    blk.add_grads(1.0, dk, r0, r1, 0, m, ga, gb)
                    for acc, v in zip(gp, _param_grads(kernel, t, torch.ones_like(k), idx)):
                        acc += v
        ctx.spec, ctx.eager, ctx.dtype = spec, eager, a.dtype
        ctx.n_eager = (2 + len(gp)) if eager else 0
        ctx.save_for_backward(*((ga, gb, *gp) if eager else ()), a, b, *params)
        if not variance:
            return (S,)
        return (S, Q, r) if sym else (S, Q, r, c)

    @staticmethod
    @_once_differentiable
    def backward(ctx, *grads):
        kernel, block, variance, idx = ctx.spec
        need = ctx.needs_input_grad
        if ctx.eager:
            ga, gb, *gp = ctx.saved_tensors[: ctx.n_eager]
            gS = grads[0]
            out_a = (gS * ga).to(ctx.dtype) if need[1] else None
            out_b = (gS * gb).to(ctx.dtype) if gb is not None and need[2] else None
            return (None, out_a, out_b, *[gS * g for g in gp])
        a, b, *params = ctx.saved_tensors[ctx.n_eager :]
        sym = b is None
        gS, gQ, gr = grads[0], grads[1], grads[2]
        gc = None if sym else grads[3]
        bb = a if sym else b
        n, m = a.shape[0], bb.shape[0]
        blk = _Block(kernel, a, bb, block)
        dt = a.dtype
        ga = torch.zeros_like(a, dtype=torch.float64)
        gb = None if sym else torch.zeros_like(b, dtype=torch.float64)
        gp = [torch.zeros((), dtype=torch.float64, device=a.device) for _ in idx]
        gSv, gQv = float(gS), float(gQ)
        grv = gr.to(dt)
        if sym:
            # L = gS·Σ_{i≠j} k + gQ·Σ_{i≠j} k² + Σ_i gr_i Σ_{j≠i} k_ij; per unordered pair the weight is
            # W_ij = 2 gS + 4 gQ k_ij + gr_i + gr_j and ∂L/∂a_i = Σ_{j≠i} W_ij ∂₁k(a_i, a_j)
            for r0, r1 in _tiles_sym(n, a.shape[1]):
                k, dk, t = blk.tile(r0, r1, r0, n, True)
                B = r1 - r0
                w = (2.0 * gSv + 4.0 * gQv * k) + grv[r0:r1, None] + grv[None, r0:]
                _zero_diag(w[:, :B])
                blk.add_grads(w[:, :B], dk[:, :B], r0, r1, r0, r1, ga, None)
                blk.add_grads(w[:, B:], dk[:, B:], r0, r1, r1, n, ga, ga)
                if idx:
                    w[:, :B] *= 0.5  # the square holds both orders of each pair
                    for acc, v in zip(gp, _param_grads(kernel, t, w, idx)):
                        acc += v
        else:
            gcv = gc.to(dt)
            rows = _rows(m, a.shape[1])
            for r0 in range(0, n, rows):
                r1 = min(n, r0 + rows)
                k, dk, t = blk.tile(r0, r1, 0, m, True)
                w = (gSv + 2.0 * gQv * k) + grv[r0:r1, None] + gcv[None, :]
                blk.add_grads(w, dk, r0, r1, 0, m, ga, gb)
                for acc, v in zip(gp, _param_grads(kernel, t, w, idx)):
                    acc += v
        out_a = ga.to(dt) if need[1] else None
        out_b = gb.to(dt) if gb is not None and need[2] else None
        return (None, out_a, out_b, *gp)


def _block(kernel, a, b, block, variance):
    idx, ps = _tensor_params(kernel)
    return _BlockSums.apply((kernel, block, variance, tuple(idx)), a, b, *ps)


def block_stats(x: torch.Tensor, y: torch.Tensor, kernel: Kernel, variance: bool = False) -> BlockStats:
    """Block sums of K_XX, K_YY, K_XY (diagonals excluded exactly from the within-sample sums) and, with
    ``variance``, row/column sums and sums of squared entries (SPEC §3), float64, O(rows·m) memory."""
    _check_kernel(kernel, "block_stats")
    n, m = x.shape[0], y.shape[0]
    oxx = _block(kernel, x, None, "xx", variance)
    oyy = _block(kernel, y, None, "yy", variance)
    oxy = _block(kernel, x, y, "xy", variance)
    dxx = kernel.pairwise(x, x, "xx").double().sum()
    dyy = kernel.pairwise(y, y, "yy").double().sum()
    st = BlockStats(n=n, m=m, sxx=oxx[0], syy=oyy[0], sxy=oxy[0], dxx=dxx, dyy=dyy)
    if variance:
        st.qxx, st.rxx = oxx[1], oxx[2]
        st.qyy, st.ryy = oyy[1], oyy[2]
        st.qxy, st.rxy, st.cxy = oxy[1], oxy[2], oxy[3]
    return st


# --------------------------------------------------------------------------------------------------------------
# Row-separable ops: per-tile differentiable torch code under activation checkpointing
# --------------------------------------------------------------------------------------------------------------


def _by_rows(fn, x: torch.Tensor, m: int, track: bool) -> torch.Tensor:
    """cat over row tiles of fn(x[r0:r1], r0); checkpointed per tile when ``track`` (a gradient may be needed):
    the tile's temporaries are dropped after the forward pass and recomputed in the backward pass."""
    rows = _rows(m, x.shape[1])
    track = track and torch.is_grad_enabled()
    out = []
    for r0 in range(0, x.shape[0], rows):
        xb = x[r0 : r0 + rows]
        out.append(checkpoint(fn, xb, r0, use_reentrant=False) if track else fn(xb, r0))
    return torch.cat(out) if len(out) > 1 else out[0]


def _needs_grad(*ts) -> bool:
    return any(isinstance(t, torch.Tensor) and t.requires_grad for t in ts)


def _centre(kernel, *ts):
    """Inputs shifted by their pooled mean where :func:`._shared.centres` (distances are unchanged), else as given."""
    if centres(kernel):
        c = pooled_mean(*ts)  # (1, d), detached
        return tuple(t - c for t in ts)
    return ts


def _sq(a, b, kernel, diag_at=None, with_close=False):
    """Squared distances of the tile a = rows [r0, r0 + B) against b, value clamped at 0 with the gradient passed
    through (as kernels.sqdist). √t kernels (given uncentred points): formed in float64 on points centred on b's
    mean, the close pairs re-formed from differences of the given points, then rounded to the input dtype;
    ``with_close`` also returns those pairs' indices (i, j). ``diag_at = r0`` when a and b are the same point set:
    the entries (i, r0 + i) are set to exactly 0."""
    exact = kernel.sqrt_distance
    a2, b2 = (a.double(), b.double()) if exact else (a, b)
    if exact:
        c = pooled_mean(b2)  # (1, d), detached
        ac, bc = a2 - c, b2 - c
    else:
        ac, bc = a2, b2  # already centred by _centre
    an, bn = (ac * ac).sum(1), (bc * bc).sum(1)
    if a.shape[1] == 1:  # d = 1: exact differences
        t = (a2 - b2.T).square()  # (B, m)
    else:
        t = an[:, None] + bn[None, :] - 2.0 * (ac @ bc.T)  # (B, m)
    close = None
    if exact:  # close pairs from differences of the given points (values and gradients)
        close = _close_pairs(t, an.detach(), bn.detach())
        if a.shape[1] > 1 and close[0].numel():
            t = t.index_put(close, _pair_sqdist(a2, b2, *close))
    t = t.to(a.dtype)
    if diag_at is not None:
        i = torch.arange(a.shape[0], device=a.device)
        mask = torch.zeros_like(t, dtype=torch.bool)
        keep = i + diag_at < b.shape[0]
        mask[i[keep], (i + diag_at)[keep]] = True
        t = t.masked_fill(mask, 0.0)
    t = t + (t.clamp_min(0.0) - t).detach()
    return (t, close) if with_close else t


def _k_tile(xb, y, kernel, block, diag_at=None):
    """Differentiable tile k(xb, y) in the input dtype (inputs already centred for radial kernels)."""
    if isinstance(kernel, L1Kernel):
        return kernel.profile(l1dist(xb, y), 0)
    if isinstance(kernel, RadialKernel):
        t = _sq(xb, y, kernel, diag_at)
        lo, hi = kernel.block_bounds(block)
        if lo > 0 or hi < math.inf:
            t = t.clamp(lo, hi)
        return kernel.profile(t, 0)
    return kernel.profile(xb @ y.T, 0)


def kernel_mv(x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, kernel: Kernel, block: str = "xy") -> torch.Tensor:
    """K(x, y) @ v for v of shape (m,) or (m, B); float64 result of shape (n,) or (n, B). Any-order differentiable."""
    _check_kernel(kernel, "kernel_mv")
    same = x is y
    xc, yc = _centre(kernel, x, y)
    yc = xc if same else yc
    vd = v.double()

    def fn(xb, r0):
        return _k_tile(xb, yc, kernel, block, r0 if same else None).double() @ vd  # (B,) or (B, B')

    out = _by_rows(fn, xc, y.shape[0], _needs_grad(x, y, v, *kernel.scalar_params()))
    if getattr(kernel, "norm_terms", False):  # energy kernel: + ‖x_i‖ Σ_j v_j + Σ_j ‖y_j‖ v_j, on raw inputs
        out = out + energy_norm_mv(x, y, v)
    return out


def kernel_grad_mv(x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, kernel: Kernel) -> torch.Tensor:
    r""":math:`\sum_j v_j \nabla_a k(a, y_j)|_{a = x_i}`, shape (n, d), float64. Any-order differentiable."""
    _check_kernel(kernel, "kernel_grad_mv")
    vd = v.double()
    if isinstance(kernel, RadialKernel):
        xc, yc = _centre(kernel, x, y)
        lo, hi = kernel.block_bounds("xy")
        yd = yc.double()

        same = x is y
        yc = xc if same else yc

        def fn(xb, r0):
            t, close = _sq(xb, yc, kernel, r0 if same else None, with_close=True)  # (B, m)
            gp = kernel.profile(t.clamp(lo, hi) if (lo > 0 or hi < math.inf) else t, 1)
            if lo > 0 or hi < math.inf:
                gp = gp * ((t >= lo) & (t <= hi))  # the clamp's derivative
            p = gp.double() * vd[None, :]  # (B, m)
            xbd = xb.double()
            near = None
            if close is not None:  # √t kernel, g' ∝ t^{-1/2}: the close pairs' Σ p (x_i − y_j) by differences
                i, j = close
                if i.numel():
                    near = torch.zeros_like(xbd)  # differentiable: index_add_ of a graph-carrying source
                    _add_pair_grads(xbd, yd, i, j, p[i, j], near, None)
                    p = p.index_put((i, j), p.new_zeros(()))
            out = 2.0 * (xbd * p.sum(1, keepdim=True) - p @ yd)  # (B, d)
            return out if near is None else out + near

        out = _by_rows(fn, xc, y.shape[0], _needs_grad(x, y, v, *kernel.scalar_params()))
        if getattr(kernel, "norm_terms", False):  # + Σ_j v_j x_i / ‖x_i‖
            out = out + unit_rows(x.double()) * vd.sum()
        return out
    yd = y.double()
    if isinstance(kernel, L1Kernel):  # Σ_j v_j g'(t_ij) sign(x_i − y_j), t = ‖x_i − y_j‖₁

        def fn_l1(xb, r0):
            p = kernel.profile(l1dist(xb, y), 1).double() * vd[None, :]  # (B, m)
            return sign_mv(xb.double(), yd, p)

        return _by_rows(fn_l1, x, y.shape[0], _needs_grad(x, y, v, *kernel.scalar_params()))

    def fn_dot(xb, r0):
        p = kernel.profile(xb @ y.T, 1).double() * vd[None, :]  # (B, m)
        return p @ yd

    return _by_rows(fn_dot, x, y.shape[0], _needs_grad(x, y, v, *kernel.scalar_params()))


def a_matvec(z: torch.Tensor, u0: torch.Tensor, u1: torch.Tensor, kernel: Kernel) -> tuple[torch.Tensor, torch.Tensor]:
    r"""A·u for A = [[K, Gᵀ], [G, H]] over Z (SPEC §2), u = [u0 (M,); u1 (M, d)], by row tiles of Z.

    Returns (K u0 + Gᵀ u1 of shape (M,), G u0 + H u1 of shape (M, d)) in the input dtype, formed from float64
    products. O(rows·M + M d) memory; any-order differentiable.
    """
    require_twice(kernel, "a_matvec")
    M, d = z.shape
    radial = isinstance(kernel, RadialKernel)
    zc = _centre(kernel, z)[0]
    zd, u0d, u1d = zc.double(), u0.double(), u1.double()
    s = (zd * u1d).sum(1)  # (M,)  z_l' · u1_l'

    def fn(zb, r0):  # a row tile of the centred Z
        zbd = zb.double()
        c = zbd @ u1d.T  # (B, M)  c[l, l'] = z_l · u1_l'
        if radial:
            g0, g1, g2 = (g.double() for g in kernel.profiles(_sq(zb, zc, kernel, r0), (0, 1, 2)))  # (B, M)
            p = g1 * u0d[None, :]
            gu0 = 2.0 * (zbd * p.sum(1, keepdim=True) - p @ zd)  # G u0
            g1u1 = g1 @ u1d  # (B, d)
            gtu1 = 2.0 * (g1 @ s - (zbd * g1u1).sum(1))  # Gᵀ u1
            wc = g2 * c
            hu1 = -2.0 * g1u1 - 4.0 * (
                zbd * wc.sum(1, keepdim=True) - zbd * (g2 @ s)[:, None] - wc @ zd + g2 @ (s[:, None] * zd)
            )
        else:
            h0, h1, h2 = (h.double() for h in kernel.profiles(zb @ zc.T, (0, 1, 2)))
            gu0 = (h1 * u0d[None, :]) @ zd
            gtu1 = (h1 * c).sum(1)
            hu1 = h1 @ u1d + (h2 * c) @ zd
            g0 = h0
        return torch.cat([(g0 @ u0d + gtu1)[:, None], gu0 + hu1], 1)  # (B, 1 + d)

    out = _by_rows(fn, zc, M, _needs_grad(z, u0, u1, *kernel.scalar_params()))
    return out[:, 0].to(z.dtype), out[:, 1:].to(z.dtype)


# --------------------------------------------------------------------------------------------------------------
# Quadratic forms of many kernels: upper-triangle row strips, one distance strip per distance family
# --------------------------------------------------------------------------------------------------------------


def _family(kernel: Kernel):
    """Kernels with the same key share their distance strips: L1 distances, squared distances (centred or the √t
    kernels' exact form) or inner products."""
    _check_kernel(kernel, "quad_forms")
    if isinstance(kernel, L1Kernel):
        return ("l1",)
    if isinstance(kernel, RadialKernel):
        return ("sq", kernel.sqrt_distance, centres(kernel))
    return ("dot",)


def _groups(kernels) -> dict:
    """family key -> [(index in kernels, kernel)], in the order of first appearance."""
    out: dict = {}
    for i, k in enumerate(kernels):
        out.setdefault(_family(k), []).append((i, k))
    return out


def _dist(key, kernel, a, b, diag: bool):
    """The distance strip of a family (``kernel`` one of its members) for rows a against columns b; ``diag``: a and
    b start at the same point of one set (entries (i, i) are a point against itself: t = 0 exactly)."""
    if key[0] == "l1":
        return l1dist(a, b)
    if key[0] == "sq":
        return _sq(a, b, kernel, 0 if diag else None)
    return a @ b.T


def _profile(key, kernel, t):
    """Kernel values (input dtype) from a distance strip, as :func:`_k_tile` forms them (block ``"xy"``)."""
    if key[0] == "sq":
        lo, hi = kernel.block_bounds("xy")
        if lo > 0 or hi < math.inf:
            t = t.clamp(lo, hi)
    return kernel.profile(t, 0)


#: kernel entries per upper-triangle strip of :func:`quad_forms` / :func:`h_quad_forms` (rows × columns ≤ this): with
#: 2 000 columns and 4 002 resampled columns, 128 to 256 rows ran at the same speed, 512 and 1 024 rows 10–40 % slower
#: (one core; benchmarks/RESULTS.md, "MMDAgg and MMD-FUSE")
STRIP_ELEMENTS = 1 << 19


def _strip_rows(n: int) -> int:
    """Rows per upper-triangle strip of an n-point set (a strip holds ≤ n columns)."""
    return max(1, min(n, STRIP_ELEMENTS // max(1, n)))


@torch.no_grad()
def quad_forms(z: torch.Tensor, v: torch.Tensor, kernels, row_sums: bool = False):
    r"""Q[λ, b] = Σ_ij v_ib k_λ(z_i, z_j) v_jb for every kernel of ``kernels`` (the full matrix, diagonal included);
    with ``row_sums`` also R[λ] = K_λ·1, (Λ, N). float64 results on z's device; not differentiable.

    Upper-triangle row strips: strip I holds k(z_I, z_J) for J ≥ I, and Σ_I v_Iᵀ K_II v_I + 2 Σ_{I<J} v_Iᵀ K_IJ v_J
    takes N²/2 kernel values and N²B/2 multiply-adds per kernel. One distance strip per family (L1, squared
    distances, inner products) serves all its kernels; each kernel strip is reduced to its forms at once
    (O(rows·N + N·B) memory). Kernel values in the input dtype, the strip's product with V and every sum in float64.
    """
    N = z.shape[0]
    vd = v.double()
    q = torch.zeros(len(kernels), vd.shape[1], dtype=torch.float64, device=z.device)
    r = torch.zeros(len(kernels), N, dtype=torch.float64, device=z.device) if row_sums else None
    rows = _strip_rows(N)
    for key, members in _groups(kernels).items():
        (zc,) = _centre(members[0][1], z)
        for r0 in range(0, N, rows):
            r1 = min(N, r0 + rows)
            t = _dist(key, members[0][1], zc[r0:r1], zc[r0:], True)  # (rows, N − r0)
            vi, vj = vd[r0:r1], vd[r0:]
            for i, k in members:
                kd = _profile(key, k, t).double()
                if row_sums:
                    r[i, r0:r1] += kd.sum(1)
                    r[i, r1:] += kd[:, r1 - r0:].sum(0)
                kd[:, r1 - r0:] *= 2.0  # K_IJ for J > I stands for K_JI too
                q[i] += (vi * (kd @ vj)).sum(0)
    for i, k in enumerate(kernels):
        if getattr(k, "norm_terms", False):  # energy kernel: + ‖z_i‖ + ‖z_j‖
            q[i] += (vd * energy_norm_mv(z, z, vd)).sum(0)
            if row_sums:
                r[i] += energy_norm_mv(z, z, torch.ones(N, dtype=torch.float64, device=z.device))
    return (q, r) if row_sums else q


@torch.no_grad()
def h_quad_forms(x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, kernels, total: bool = False):
    r"""Q[λ, b] = Σ_ij v_ib v_jb h_λ(i, j), h(i, j) = k(x_i,x_j) + k(y_i,y_j) − k(x_i,y_j) − k(x_j,y_i) (n = m; the
    i = j terms included), for every kernel; with ``total`` also 1ᵀK_λ1 over the pooled sample [x; y], (Λ,).
    float64 on x's device; not differentiable.

    H is symmetric n × n: upper-triangle row strips of its four kernel blocks (2n² kernel values and n²B/2
    multiply-adds per kernel, against 4n² and 4n²B for the pooled form [v; −v]ᵀK[v; −v]); one set of four distance
    strips per family serves all its kernels; H's strip is formed and multiplied in float64.
    """
    n = x.shape[0]
    vd = v.double()
    q = torch.zeros(len(kernels), vd.shape[1], dtype=torch.float64, device=x.device)
    tot = torch.zeros(len(kernels), dtype=torch.float64, device=x.device) if total else None
    rows = _strip_rows(n)
    for key, members in _groups(kernels).items():
        k0 = members[0][1]
        (zc,) = _centre(k0, torch.cat([x, y]))  # centred as kernel_mv centres the pooled sample (same rounding)
        xc, yc = zc[:n], zc[n:]
        for r0 in range(0, n, rows):
            r1 = min(n, r0 + rows)
            xa, ya, xb, yb = xc[r0:r1], yc[r0:r1], xc[r0:], yc[r0:]
            txx, tyy = _dist(key, k0, xa, xb, True), _dist(key, k0, ya, yb, True)
            txy, tyx = _dist(key, k0, xa, yb, False), _dist(key, k0, ya, xb, False)
            vi, vj = vd[r0:r1], vd[r0:]
            for i, k in members:
                p = _profile(key, k, txx).double() + _profile(key, k, tyy).double()  # within-sample terms
                c = _profile(key, k, txy).double() + _profile(key, k, tyx).double()  # cross terms (symmetric)
                if total:
                    s = p + c
                    tot[i] += s.sum() + s[:, r1 - r0:].sum()
                h = p.sub_(c)
                h[:, r1 - r0:] *= 2.0  # H_IJ for J > I stands for H_JI too
                q[i] += (vi * (h @ vj)).sum(0)
    if total:  # energy kernel: the norm terms cancel in h, not in the pooled sum
        z = torch.cat([x, y])
        for i, k in enumerate(kernels):
            if getattr(k, "norm_terms", False):
                tot[i] += energy_norm_mv(z, z, torch.ones(2 * n, dtype=torch.float64, device=x.device)).sum()
    return (q, tot) if total else q
