"""Deep kernels K ∘ φ: :class:`DeepKernel` and :func:`phi_features` (φ(x) checked and reshaped to (n, s))."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._base import Kernel
from .registry import get_kernel

__all__ = ["DeepKernel", "phi_features"]


class DeepKernel(Kernel):
    r"""Deep kernel :math:`k(x, y) = K(\varphi(x), \varphi(y))` (SPEC §1).

    Args:
        phi: a callable (usually an ``nn.Module``) mapping (n, ...) inputs to (n, s) or (n,) features.
        top: the kernel K on features: a :class:`Kernel` or a name such as ``"rbf"``.
        **params: parameters of ``top`` when it is given by name.
    """

    name = "deep"

    def __init__(self, phi: Callable, top: Kernel | str = "rbf", **params):
        if not callable(phi):
            raise TypeError(f"phi must be callable (e.g. an nn.Module), got {type(phi).__name__}")
        if isinstance(top, DeepKernel):
            raise TypeError("top must be a kernel on features, not another DeepKernel")
        self.phi = phi
        self.top = get_kernel(top, **params)
        self.twice_differentiable = self.top.twice_differentiable

    def params(self):
        return {"phi": type(self.phi).__name__, "top": self.top}

    def features(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """φ(x) as an (n, s) tensor.

        ``name`` is the argument ``x`` came from, for the messages: φ must return a floating-point tensor with one
        row per point, all finite (TypeError / ValueError naming φ, the input set and what φ returned otherwise).
        """
        return phi_features(self.phi, x, name)

    def matrix(self, x, y, block="xy"):
        fx, fy = self.features(x, "x"), self.features(y, "y")
        return self.top.resolve(fx, fy).matrix(fx, fy, block)

    def pairwise(self, a, b, block="xy"):
        fa, fb = self.features(a, "a"), self.features(b, "b")
        return self.top.resolve(fa, fb).pairwise(fa, fb, block)


def phi_features(phi, x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """``phi(x)`` checked and reshaped to (n, s): a floating-point tensor with one row per point of ``x``, finite.

    ``name`` names the input set in the messages (``phi(y) returned NaN or Inf features``).
    """
    f = phi(x)
    if not isinstance(f, torch.Tensor):
        what = f"{type(f).__name__} of shape {f.shape}" if hasattr(f, "shape") else type(f).__name__
        raise TypeError(
            f"phi({name}) must return a torch.Tensor of shape (n,) or (n, s) (one row per point), got {what}"
        )
    n = x.shape[0]
    if f.ndim == 0 or f.shape[0] != n:
        raise ValueError(
            f"phi({name}) must return shape (n,) or (n, s) with n = {n} (one row per point: phi must not change "
            f"the number of points), got {tuple(f.shape)}"
        )
    if not f.is_floating_point():
        raise TypeError(f"phi({name}) must return floating-point features, got dtype {f.dtype}")
    if not f.is_meta and not bool(torch.isfinite(f.detach()).all()):
        raise ValueError(
            f"phi({name}) returned NaN or Inf features: phi applied to {name} must give finite values"
        )
    return f.reshape(n, -1)

