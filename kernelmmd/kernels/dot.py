"""Dot-product kernels k(a, b) = h(aᵀb): :class:`DotKernel`, linear and poly, with their profiles h, h', h''."""

from __future__ import annotations

from .._validate import check_finite, check_int
from ._base import Kernel, check_param, scalar

__all__ = ["DotKernel", "Linear", "Poly"]


class DotKernel(Kernel):
    r"""k(a, b) = h(aᵀb). Subclasses define :meth:`profile` and :meth:`param_grads`."""

    kind_id: int = -1

    def profile(self, u, order: int = 0):
        raise NotImplementedError

    def param_grads(self, u) -> list:
        return []

    def profiles(self, u, orders=(0, 1)) -> tuple:
        """``(h^{(o)}(u) for o in orders)``."""
        return tuple(self.profile(u, o) for o in orders)

    def _check_order(self, order: int) -> None:
        if isinstance(order, bool) or not isinstance(order, int) or order < 0:
            raise ValueError(f"order must be an integer >= 0, got {order!r}")

    def matrix(self, x, y, block="xy"):
        return self.profile(x @ y.T, 0)

    def pairwise(self, a, b, block="xy"):
        return self.profile((a * b).sum(1), 0)


class Linear(DotKernel):
    r"""Linear kernel :math:`h(u) = u`."""

    name = "linear"
    kind_id = 10

    def profile(self, u, order=0):
        self._check_order(order)
        if order == 0:
            return u
        if order == 1:
            return u * 0.0 + 1.0
        return u * 0.0


class Poly(DotKernel):
    r"""Polynomial kernel :math:`h(u) = (\gamma u + c)^p`.

    Args:
        degree: integer p ≥ 0 (KID uses 3).
        gamma: scale > 0, or ``None`` for 1/d (resolved on the data).
        coef0: offset c (KID uses 1).
    """

    name = "poly"
    kind_id = 11

    def __init__(self, degree=3, gamma=None, coef0=1.0):
        self.degree = check_int("degree", degree, minimum=0)
        if isinstance(gamma, str):
            raise TypeError(f"gamma must be a number > 0 or None (1/d, resolved on the data), got str {gamma!r}")
        self.gamma = None if gamma is None else check_param("gamma", gamma)
        check_finite("coef0", coef0)
        self.coef0 = scalar(coef0)

    def params(self):
        return {"degree": self.degree, "gamma": self.gamma, "coef0": self.coef0}

    def scalar_params(self):
        return [self.gamma, self.coef0]

    def resolve(self, x, y=None):
        if self.gamma is None:
            return Poly(self.degree, 1.0 / x.shape[-1], self.coef0)
        return self

    def _gamma(self):
        if self.gamma is None:
            raise ValueError("Poly(gamma=None) must be resolved on data first (kernel.resolve(x))")
        return self.gamma

    def profile(self, u, order=0):
        self._check_order(order)
        p, g, c = self.degree, self._gamma(), self.coef0
        if order > p:
            return u * 0.0
        coef = 1.0
        for k in range(order):
            coef *= p - k
        base = u * g + c
        e = p - order
        val = base**e if e > 0 else base * 0.0 + 1.0
        return val * (coef * g**order)

    def param_grads(self, u):
        p, g, c = self.degree, self._gamma(), self.coef0
        if p == 0:
            return [u * 0.0, u * 0.0]
        d = (u * g + c) ** (p - 1) * p if p > 1 else u * 0.0 + 1.0
        return [d * u, d]

