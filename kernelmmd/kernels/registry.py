"""The kernel registry: :data:`KERNELS` (the names accepted by ``kernel="..."``) and :func:`get_kernel`."""

from __future__ import annotations

import inspect

from ._base import Kernel
from .dot import Linear, Poly
from .l1 import L1Laplacian
from .radial import RBF, RQ, Energy, Laplacian, MixRBF, MixRQ, RBFBounded

__all__ = ["KERNELS", "get_kernel"]


#: name -> class; the names accepted by ``kernel="..."`` everywhere
KERNELS: dict[str, type[Kernel]] = {
    "rbf": RBF,
    "mix_rbf": MixRBF,
    "rq": RQ,
    "mix_rq": MixRQ,
    "rbf_bounded": RBFBounded,
    "laplacian": Laplacian,
    "energy": Energy,
    "l1_laplacian": L1Laplacian,
    "linear": Linear,
    "poly": Poly,
}


def _init_params(cls) -> list[str]:
    """Keyword parameters of a kernel class's constructor (none for Linear and Energy)."""
    if cls.__init__ is object.__init__:
        return []
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def get_kernel(kernel: Kernel | str, **params) -> Kernel:
    """Build a kernel from a name and parameters, or pass a :class:`Kernel` object through.

    Raises:
        ValueError: unknown kernel name. TypeError: parameters that the kernel does not take, parameters
        given together with a kernel object, or a kernel of the wrong type.
    """
    if isinstance(kernel, Kernel):
        if params:
            raise TypeError(
                f"kernel parameters {sorted(params)} were given with a kernel object {kernel!r}; "
                "put them in the object instead"
            )
        return kernel
    if isinstance(kernel, str):
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {sorted(KERNELS)} or a Kernel object, got {kernel!r}")
        cls = KERNELS[kernel]
        accepted = _init_params(cls)
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise TypeError(f"kernel {kernel!r} takes parameters {accepted}, got {sorted(params)}")
        return cls(**params)
    raise TypeError(f"kernel must be a kernel name (str) or a Kernel object, got {type(kernel).__name__}")
