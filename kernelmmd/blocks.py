r"""Derivative blocks K, G, H over a point set Z and their products (SPEC §2).

With (l, i) ↦ l·d + i::

    K[l, l']           = k(z_l, z_l')                                   M × M
    G[(l, i), l']      = ∂_i k(z_l, z_l')          (first argument)      M d × M
    H[(l, i), (l', j)] = ∂_i ∂_{j+d} k(z_l, z_l')  (first i, second j)   M d × M d
    A                  = [[K, Gᵀ], [G, H]]                               symmetric PSD

:func:`derivative_blocks` materialises them (small M·d only); the products never do: O(M² d) time.
Vectors over the G/H index are passed as (M, d) arrays (row l holds the d entries (l, 0..d−1)).
These need a twice-differentiable radial or dot-product kernel (rbf, mix_rbf, rq, mix_rq, linear, poly).
"""

from __future__ import annotations

import torch

from . import _range, ops
from ._validate import as_samples, check_int, to_output
from .kernels import DeepKernel, get_kernel

__all__ = ["derivative_blocks", "a_matvec", "g_matvec", "gt_matvec", "h_matvec", "a_diagonal", "a_column"]


def _prep(z, kernel, params, vectors=()):
    k = get_kernel(kernel, **params)
    if isinstance(k, DeepKernel):
        raise TypeError("derivative blocks are defined for kernels on R^d; pass the top kernel and φ(z) instead")
    s = as_samples(("z", z))
    zt = s.tensors[0]
    if zt.dtype in (torch.float16, torch.bfloat16):
        zt = zt.float()
    k = k.resolve(zt)
    if not k.twice_differentiable:
        raise ValueError(
            f"derivative blocks need a twice-differentiable kernel (rbf, mix_rbf, rq, mix_rq, linear, poly), got {k!r}"
        )
    # compute dtype: float64 where float32 cannot hold t, g, g', g'' (see kernelmmd._range); results cast back
    (zt,), k, plan = _range.compute((zt,), k, s.amax[0], orders=(0, 1, 2))
    vs = []
    for name, v, shape in vectors:
        if isinstance(v, torch.Tensor):
            vt = v
        else:
            import numpy as np

            if not isinstance(v, np.ndarray):
                raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(v).__name__}")
            vt = torch.from_numpy(v)
        want = shape(zt)
        if tuple(vt.shape) != want:
            raise ValueError(f"{name} must have shape {want}, got {tuple(vt.shape)}")
        if vt.dtype == torch.bool or vt.is_complex():
            raise TypeError(f"{name} must hold real numbers, got dtype {vt.dtype}")
        if not vt.is_meta and not bool(torch.isfinite(vt.detach()).all()):
            raise ValueError(f"{name} contains NaN or Inf values")
        vs.append(vt.to(device=zt.device, dtype=zt.dtype))
    return zt, k, (lambda v: to_output(plan.result(v), s.numpy)), vs


def derivative_blocks(z, kernel="rbf", *, backend: str = "auto", **params):
    """Materialised (K, G, H) over Z, shapes (M, M), (M d, M), (M d, M d). Reference / small problems only.

    ``backend`` is accepted like every other function's and validated (a name of :data:`kernelmmd.ops.BACKENDS` or
    a :class:`~kernelmmd.Auto`); the blocks are always materialised by the dense torch reference.
    """
    zt, k, out, _ = _prep(z, kernel, params)
    ops.select_backend(backend, zt, op="a_matvec")  # validated only (see above)
    return tuple(out(b) for b in ops.routine("dense_blocks", "torch")(zt, k))


def a_matvec(z, u0, u1, kernel="rbf", *, backend: str = "auto", **params):
    """A·u for u = [u0 (M,); u1 (M, d)]: returns (K u0 + Gᵀ u1 (M,), G u0 + H u1 (M, d))."""
    zt, k, out, (a, b) = _prep(
        z, kernel, params, [("u0", u0, lambda t: (t.shape[0],)), ("u1", u1, lambda t: tuple(t.shape))]
    )
    top, bottom = ops.dispatch("a_matvec", backend, zt)(zt, a, b, k)
    return out(top), out(bottom)


def g_matvec(z, v, kernel="rbf", *, backend: str = "auto", **params):
    """G·v for v of shape (M,): shape (M, d)."""
    zt = as_samples(("z", z)).tensors[0]
    zeros = torch.zeros_like(zt) if isinstance(z, torch.Tensor) else torch.zeros_like(zt).numpy()
    return a_matvec(z, v, zeros, kernel, backend=backend, **params)[1]


def gt_matvec(z, u, kernel="rbf", *, backend: str = "auto", **params):
    """Gᵀ·u for u of shape (M, d): shape (M,)."""
    zt = as_samples(("z", z)).tensors[0]
    zeros = zt.new_zeros(zt.shape[0])
    return a_matvec(z, zeros if isinstance(z, torch.Tensor) else zeros.numpy(), u, kernel, backend=backend, **params)[0]


def h_matvec(z, v, kernel="rbf", *, backend: str = "auto", **params):
    """H·v for v of shape (M, d): shape (M, d)."""
    zt = as_samples(("z", z)).tensors[0]
    zeros = zt.new_zeros(zt.shape[0])
    return a_matvec(z, zeros if isinstance(z, torch.Tensor) else zeros.numpy(), v, kernel, backend=backend, **params)[1]


def a_diagonal(z, kernel="rbf", *, backend: str = "auto", **params):
    """diag(A) as (diag K (M,), diag H (M, d))."""
    zt, k, out, _ = _prep(z, kernel, params)
    top, bottom = ops.dispatch("a_diag", backend, zt)(zt, k)
    return out(top), out(bottom)


def a_column(z, index: int, kernel="rbf", *, backend: str = "auto", **params):
    """Column ``index`` of A, 0 ≤ index < M(1+d), as (top (M,), bottom (M, d))."""
    zt, k, out, _ = _prep(z, kernel, params)
    check_int("index", index, minimum=0)
    top, bottom = ops.dispatch("a_column", backend, zt)(zt, index, k)
    return out(top), out(bottom)
