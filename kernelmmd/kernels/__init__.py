r"""Kernels: the one place where kernel formulas live (SPEC §1).

A kernel is described by a *profile* so that every backend needs only a few scalar functions:

* radial kernels  :math:`k(a, b) = g(t)`, :math:`t = \|a - b\|^2`, expose ``profile(t, order)`` returning
  :math:`g, g', g'', g'''` (``order`` = 0..3) and ``param_grads(t)`` (derivatives of :math:`g` in each scalar
  parameter, for fused backward passes);
* dot-product kernels :math:`k(a, b) = h(u)`, :math:`u = a^\top b`, expose ``profile(u, order)`` for
  :math:`h, h', h''` (and :math:`h'''`);
* L1 kernels :math:`k(a, b) = g(t)`, :math:`t = \|a - b\|_1` (:class:`L1Kernel`; the L1 Laplace kernel
  :class:`L1Laplacian`) expose ``profile(t, order)`` and ``param_grads(t)`` like radial kernels; their gradient is
  :math:`g'(t)\,\mathrm{sign}(a - b)`;
* :class:`DeepKernel` wraps a top kernel ``K`` on :math:`\mathbb{R}^s` and a feature map :math:`\varphi`:
  :math:`k(x, y) = K(\varphi(x), \varphi(y))`; :class:`ARD` is the one with :math:`\varphi(x) = x/\ell` and a radial
  ``K`` at unit scale.

Profiles are written with tensor *methods* and arithmetic only (``.exp()``, ``.sqrt()``, ``.log()``, ``**``),
so the same code evaluates torch tensors and KeOps ``LazyTensor`` symbolic formulas. The Triton backend keeps a
twin of each profile keyed by :attr:`RadialKernel.kind_id` / :attr:`DotKernel.kind_id`; a test compares the twin
with these definitions at every order.

Parameters may be Python floats or scalar tensors (``requires_grad=True`` makes them trainable; every backend
returns gradients for them). ``sigma="median"`` (or ``"mean"``) is resolved on the data at each call by
:meth:`Kernel.resolve`.
"""

# CLOSE (the backends' close-pair rule), safe_sqrt (their norm terms) and phi_features (deep-kernel features for the
# estimators) are re-exported for kernelmmd's own modules, not in __all__
from ._base import CLOSE as CLOSE
from ._base import Kernel, bandwidth, sqdist
from ._base import safe_sqrt as safe_sqrt
from .deep import ARD, DeepKernel, MMDDKernel
from .deep import phi_features as phi_features
from .dot import DotKernel, Linear, Poly
from .l1 import L1Kernel, L1Laplacian
from .radial import RBF, RQ, Energy, Laplacian, MixRBF, MixRQ, RadialKernel, RBFBounded
from .registry import KERNELS, get_kernel

__all__ = [
    "Kernel",
    "RadialKernel",
    "DotKernel",
    "RBF",
    "MixRBF",
    "RQ",
    "MixRQ",
    "RBFBounded",
    "Laplacian",
    "Energy",
    "L1Kernel",
    "L1Laplacian",
    "Linear",
    "Poly",
    "DeepKernel",
    "ARD",
    "MMDDKernel",
    "KERNELS",
    "get_kernel",
    "sqdist",
    "bandwidth",
]
