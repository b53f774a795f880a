"""Low-level ops and the backend dispatch table.

Every op has the same signature on every backend; estimators never import a backend module, they call
:func:`routine` (``routines[op][backend]``). Backends:

* ``"torch"`` — dense reference (:mod:`kernelmmd.ops.reference`): exact, differentiable to any order,
  O(n·m) memory. Always available.

Ops (all take already-validated 2-D tensors and a resolved, non-deep :class:`~kernelmmd.kernels.Kernel`):

* ``block_stats(x, y, kernel, variance=False) -> BlockStats``
* ``kernel_mv(x, y, v, kernel, block="xy") -> K(x, y) @ v`` (float64)
* ``kernel_grad_mv(x, y, v, kernel) -> Σ_j v_j ∇_a k(a, y_j)|_{a=x_i}`` (float64, (n, d))
* ``a_matvec(z, u0, u1, kernel) -> A·[u0; u1]`` for the derivative blocks of SPEC §2
* ``a_diag(z, kernel)``, ``a_column(z, index, kernel)``
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from .types import BlockStats

__all__ = ["BlockStats", "BACKENDS", "OPS", "routine", "select_backend"]

#: backend name -> module implementing the ops (imported lazily; fused backends need optional packages)
_MODULES = {"torch": "kernelmmd.ops.reference"}
BACKENDS = ("auto", *_MODULES)
OPS = ("block_stats", "kernel_mv", "kernel_grad_mv", "a_matvec", "a_diag", "a_column")


def select_backend(backend, *tensors, op: str = "block_stats") -> str:
    """Resolve ``backend`` ("auto" or an explicit name) to a concrete backend name for these tensors."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, one of {list(BACKENDS)}, got {type(backend).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return "torch"
    return backend


def routine(op: str, backend: str) -> Callable:
    """The implementation of ``op`` on the concrete ``backend``."""
    if op not in OPS:
        raise ValueError(f"op must be one of {list(OPS)}, got {op!r}")
    module = importlib.import_module(_MODULES[backend])
    return getattr(module, op)
