r"""Low-level ops and the backend dispatch table.

Every op has the same signature on every backend; estimators never import a backend module, they call
:func:`dispatch` (``dispatch(op, backend, x, y)(x, y, ...)``), which is :func:`select_backend` then :func:`routine`
(``routines[op][backend]``).

Backends
--------

=========  ==========================================  =========================  ===========================
name       what                                        memory                     differentiable
=========  ==========================================  =========================  ===========================
``torch``  dense reference (:mod:`.reference`)          O(n·m)                     any order, every op
``tiled``  torch, row tiles of x against all of y,      O(rows·m + (n + m)·d)      ``block_stats``: once (a 2nd
           BLAS distances, float64 accumulation                                   derivative raises); other ops:
           (:mod:`.tiled`)                                                        any order
``keops``  pykeops LazyTensor reductions, CPU and GPU   O((n + m)·d)               any order, every op
           (:mod:`.keops`, needs ``kernelmmd[keops]``)
``triton`` fused Triton kernels (:mod:`.triton`,        O((n + m)·d)               see :mod:`.triton`
           needs ``kernelmmd[triton]``; CUDA float32 /
           half, or CPU under ``TRITON_INTERPRET=1``)
=========  ==========================================  =========================  ===========================

Precision: every sum and statistic is float64 on every backend. ``torch`` and ``tiled`` evaluate kernels in the
input dtype and accumulate in float64 (``tiled``: within-tile matrix products in the input dtype, every sum across
tiles in float64); ``keops`` reduces float32 inputs with ``dtype_acc="float64"`` and computes float64 inputs in
float64. float16/bfloat16 inputs are upcast to float32 by the estimators before they reach an op.

``backend="auto"`` (the default everywhere, same as ``backend=Auto()``) picks, from the tensors' device, dtype and
size, with ``pairs`` = n·m (the row counts of the first two tensors, M² for ops over one set Z) and d the feature
dimension — the thresholds are the fields of :class:`Auto`, so they are arguments, never hidden:

1. CUDA tensors of float32 / half: ``triton``; if triton is not installed, ``keops``; else rule 3.
2. CUDA tensors of float64 (Triton refuses float64): ``keops`` if installed, else rule 3.
3. Otherwise (CPU): ``torch`` while ``pairs <= dense_max_pairs``; above it ``keops`` if installed and
   ``keops_min_pairs <= pairs`` and ``d <= keops_max_dim`` (``keops_min_pairs=None``, the CPU default, never picks
   KeOps: the tiled backend was faster at every measured point of the CPU grid, see ``benchmarks/RESULTS.md``);
   else ``tiled``.

When a rule would pick a backend whose package is missing, ``auto`` uses the next choice and emits one
:class:`~kernelmmd.errors.BackendFallbackWarning` per process and missing package, naming it. Asking for a missing
backend explicitly raises ``ImportError`` naming the package and the pip extra.

Ops (all take already-validated 2-D tensors and a resolved, non-deep :class:`~kernelmmd.kernels.Kernel`):

* ``block_stats(x, y, kernel, variance=False) -> BlockStats``
* ``kernel_mv(x, y, v, kernel, block="xy") -> K(x, y) @ v`` (float64)
* ``kernel_grad_mv(x, y, v, kernel) -> Σ_j v_j ∇_a k(a, y_j)|_{a=x_i}`` (float64, (n, d))
* ``a_matvec(z, u0, u1, kernel) -> A·[u0; u1]`` for the derivative blocks of SPEC §2
* ``a_diag(z, kernel)``, ``a_column(z, index, kernel)``
* ``quad_forms(z, v, kernels, row_sums=False) -> Q`` (float64, (Λ, B)): Q[λ, b] = Σ_ij v_ib k_λ(z_i, z_j) v_jb for
  each kernel of a list (the full matrix, diagonal included; callers subtract what they need), with ``row_sums``
  also ``(Q, R)``, R[λ] = K_λ·1 (Λ, N). The resampled statistics of the permutation and aggregated tests.
* ``h_quad_forms(x, y, v, kernels, total=False) -> Q`` (n = m, float64, (Λ, B)): Q[λ, b] = Σ_ij v_ib v_jb h_λ(i, j),
  h(i, j) = k(x_i,x_j) + k(y_i,y_j) − k(x_i,y_j) − k(x_j,y_i) (the wild bootstrap); with ``total`` also
  ``(Q, T)``, T[λ] = 1ᵀK_λ1 over the pooled [x; y]. Default for a backend module that does not define them
  (:func:`routine` binds it): one ``kernel_mv`` pass per kernel (:func:`._shared.quad_forms_via`; h as the pooled
  form [v; −v]ᵀK[v; −v]); ``tiled`` specialises both
  (upper-triangle row strips, one distance strip per distance family shared by its kernels, float64 products:
  N²/2 kernel values and N²B/2 multiply-adds per kernel, n²B/2 for h instead of 4n²B).
* ``dense_blocks(z, kernel) -> (K, G, H)``: the derivative blocks materialised, (M, M), (M d, M), (M d, M d)
  (GCMMD's ``dense`` / ``feature`` solvers, :func:`kernelmmd.derivative_blocks`). O(M² d²) memory by design: the
  ``tiled`` and ``keops`` backends re-export the dense reference's, ``triton`` does not provide it (callers ask for
  ``routine("dense_blocks", "torch")``).
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import BackendFallbackWarning, user_stacklevel
from ._shared import PRECISIONS, h_quad_forms_via, quad_forms_via
from .types import BlockStats

__all__ = ["Auto", "BlockStats", "BACKENDS", "OPS", "PRECISIONS", "available", "dispatch", "routine",
           "select_backend"]

#: backend name -> module implementing the ops (imported lazily; fused backends need optional packages)
_MODULES = {
    "torch": "kernelmmd.ops.reference",
    "tiled": "kernelmmd.ops.tiled",
    "keops": "kernelmmd.ops.keops",
    "triton": "kernelmmd.ops.triton",
}
#: backend name -> (package it needs, pip extra)
_PACKAGES = {"keops": ("pykeops", "keops"), "triton": ("triton", "triton")}
BACKENDS = ("auto", *_MODULES)
OPS = ("block_stats", "kernel_mv", "kernel_grad_mv", "a_matvec", "a_diag", "a_column", "dense_blocks", "quad_forms",
       "h_quad_forms")
#: composite ops: a backend module that does not define one gets this default, built on its own ``kernel_mv``
#: (``routine`` binds the backend name); ``tiled`` specialises both
_COMPOSITE = {"quad_forms": quad_forms_via, "h_quad_forms": h_quad_forms_via}


@dataclass(frozen=True)
class Auto:
    """The rules of ``backend="auto"``, with their thresholds as documented fields (see :mod:`kernelmmd.ops`).

    Pass ``backend=kernelmmd.Auto(dense_max_pairs=...)`` to any estimator to change them; ``backend="auto"`` is
    ``Auto()``. ``pairs`` is n·m (the row counts of the first two point sets; M² for ops over one set Z).

    Attributes:
        dense_max_pairs: on CPU (and on CUDA when no fused backend is installed) the dense ``torch`` backend is used
            while ``pairs <= dense_max_pairs``, the ``tiled`` one above. Default 256² = 65 536 (n = m = 256), chosen
            for differentiability first: small problems (GAN batches) keep the dense backend's any-order
            derivatives (gradient penalties differentiate MMD² twice; the tiled backend is once-differentiable).
            At n = 256 dense costs 0.7–2× the tiled time, a few ms either way (the dense / tiled table of
            benchmarks/RESULTS.md, "MMD²_u").
        keops_min_pairs: on CPU, use ``keops`` (when installed) from this many pairs on, if also
            ``d <= keops_max_dim``. ``None`` (default): never on CPU.
        keops_max_dim: largest feature dimension for which ``auto`` picks KeOps on CPU (KeOps has no BLAS: its cost
            per pair grows with d much faster than a tiled matrix product's).

    Raises:
        TypeError, ValueError: on thresholds that are not integers ≥ 0 (or ``None`` for ``keops_min_pairs``).

    Example:
        >>> import torch, kernelmmd
        >>> x, y = torch.randn(50, 3), torch.randn(40, 3)
        >>> v = kernelmmd.mmd2_unbiased(x, y, backend=kernelmmd.Auto(dense_max_pairs=0))  # tiled from 1 pair on
    """

    dense_max_pairs: int = 256 * 256
    keops_min_pairs: int | None = None
    keops_max_dim: int = 64

    def __post_init__(self):
        from .._validate import check_int

        check_int("dense_max_pairs", self.dense_max_pairs, minimum=0)
        if self.keops_min_pairs is not None:
            check_int("keops_min_pairs", self.keops_min_pairs, minimum=0)
        check_int("keops_max_dim", self.keops_max_dim, minimum=0)


_IMPORT_ERRORS: dict[str, ImportError | None] = {}
_WARNED: set[str] = set()


def _load(backend: str):
    """Import a backend module; ImportError (a missing package) is recorded, not raised."""
    if backend not in _IMPORT_ERRORS:
        try:
            importlib.import_module(_MODULES[backend])
            _IMPORT_ERRORS[backend] = None
        except ImportError as e:  # catch ImportError only: any other error is a bug and must surface
            _IMPORT_ERRORS[backend] = e
    return _IMPORT_ERRORS[backend]


def available(backend: str) -> bool:
    """Whether ``backend``'s module (and the optional package it needs) can be imported."""
    if backend not in _MODULES:
        raise ValueError(f"backend must be one of {list(_MODULES)}, got {backend!r}")
    return _load(backend) is None


def _missing_message(backend: str, err: ImportError) -> str:
    pkg, extra = _PACKAGES.get(backend, (None, None))
    if pkg is None:
        return f"backend={backend!r} could not be imported: {err}"
    return (
        f"backend={backend!r} needs the {pkg!r} package, which could not be imported ({err}); "
        f"install it with: pip install 'kernelmmd[{extra}]'"
    )


def _fallback(backend: str, why: str, instead: str) -> None:
    if backend in _WARNED:
        return
    _WARNED.add(backend)
    pkg, extra = _PACKAGES[backend]
    warnings.warn(
        f"backend='auto' would use {backend!r} {why}, but the {pkg!r} package is not available "
        f"({_IMPORT_ERRORS[backend]}); using {instead!r} instead. Install it with: pip install 'kernelmmd[{extra}]' "
        "(this warning is shown once per process)",
        BackendFallbackWarning,
        stacklevel=user_stacklevel(),
    )


def _pairs_and_dim(tensors) -> tuple[int, int]:
    ts = [t for t in tensors if isinstance(t, torch.Tensor)]
    if not ts:
        return 0, 0
    n = ts[0].shape[0] if ts[0].ndim else 1
    m = ts[1].shape[0] if len(ts) > 1 and ts[1].ndim else n
    d = ts[0].shape[1] if ts[0].ndim > 1 else 1
    return int(n) * int(m), int(d)


def _cpu_choice(rules: Auto, pairs: int, d: int, op: str) -> str:
    if pairs <= rules.dense_max_pairs:
        return "torch"
    if rules.keops_min_pairs is not None and pairs >= rules.keops_min_pairs and d <= rules.keops_max_dim:
        if available("keops"):
            return "keops"
        _fallback("keops", f"for n·m = {pairs} >= keops_min_pairs = {rules.keops_min_pairs}", "tiled")
    return "tiled"


def _has_op(backend: str, op: str) -> bool:
    return available(backend) and hasattr(importlib.import_module(_MODULES[backend]), op)


def _is_cuda(t: torch.Tensor) -> bool:
    return t.is_cuda


def _auto(rules: Auto, tensors, op: str) -> str:
    pairs, d = _pairs_and_dim(tensors)
    t0 = next((t for t in tensors if isinstance(t, torch.Tensor)), None)
    if t0 is not None and _is_cuda(t0):
        if t0.dtype != torch.float64:
            if _has_op("triton", op):
                return "triton"
            if not available("triton"):
                nxt = "keops" if available("keops") else _cpu_choice(rules, pairs, d, op)
                _fallback("triton", f"for CUDA {t0.dtype} tensors", nxt)
        if available("keops"):
            return "keops"
        nxt = _cpu_choice(rules, pairs, d, op)
        _fallback("keops", f"for CUDA {t0.dtype} tensors", nxt)
        return nxt
    return _cpu_choice(rules, pairs, d, op)


def select_backend(backend, *tensors, op: str = "block_stats") -> str:
    """Resolve ``backend`` (``"auto"``, an :class:`Auto`, or an explicit name) to a concrete backend name.

    Raises:
        TypeError: ``backend`` is neither a string nor an :class:`Auto`.
        ValueError: unknown backend name.
        ImportError: an explicitly requested backend whose package is not installed (names the pip extra).
    """
    if isinstance(backend, Auto):
        return _auto(backend, tensors, op)
    if not isinstance(backend, str):
        raise TypeError(
            f"backend must be a string, one of {list(BACKENDS)}, or a kernelmmd.Auto(...), got {type(backend).__name__}"
        )
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)} or a kernelmmd.Auto(...), got {backend!r}")
    if backend == "auto":
        return _auto(_DEFAULT_AUTO, tensors, op)
    err = _load(backend)
    if err is not None:
        raise ImportError(_missing_message(backend, err)) from err
    return backend


_DEFAULT_AUTO = Auto()


def routine(op: str, backend: str) -> Callable:
    """The implementation of ``op`` on the concrete ``backend``.

    Raises:
        ValueError: unknown op or backend name. ImportError: the backend's package is missing.
        NotImplementedError: the backend does not (yet) provide this op.
    """
    if op not in OPS:
        raise ValueError(f"op must be one of {list(OPS)}, got {op!r}")
    if backend not in _MODULES:
        raise ValueError(f"backend must be one of {list(_MODULES)} (a concrete backend), got {backend!r}")
    err = _load(backend)
    if err is not None:
        raise ImportError(_missing_message(backend, err)) from err
    module = importlib.import_module(_MODULES[backend])
    fn = getattr(module, op, None)
    if fn is None and op in _COMPOSITE:  # not specialised by this backend: the default built on its kernel_mv
        return functools.partial(_COMPOSITE[op], backend)
    if fn is None:
        raise NotImplementedError(f"backend {backend!r} does not provide the op {op!r}")
    return fn


def dispatch(op: str, backend, *tensors) -> Callable:
    """The implementation of ``op`` on the backend that ``backend`` resolves to for ``tensors``.

    ``dispatch(op, backend, x, y)`` is ``routine(op, select_backend(backend, x, y, op=op))``: ``tensors`` are the
    point sets the ``auto`` rules look at (``x, y`` for the two-set ops, ``z`` for the ops over one set), not
    necessarily every argument of the op. Call the result with the op's own arguments.

    Args:
        op: one of :data:`OPS`.
        backend: ``"auto"``, a :class:`Auto`, or a concrete backend name (see :func:`select_backend`).
        *tensors: the tensors that drive the ``auto`` choice (device, dtype, n·m, d).

    Returns:
        The backend's function for ``op``.

    Raises:
        TypeError, ValueError, ImportError: as :func:`select_backend` and :func:`routine`.
        NotImplementedError: the selected backend does not provide ``op``.

    Example:
        >>> import torch
        >>> from kernelmmd import ops
        >>> from kernelmmd.kernels import RBF
        >>> x, y = torch.randn(50, 3), torch.randn(40, 3)
        >>> stats = ops.dispatch("block_stats", "auto", x, y)(x, y, RBF(sigma=1.0))
    """
    return routine(op, select_backend(backend, *tensors, op=op))
