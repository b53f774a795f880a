"""Deep kernels K ∘ φ: :class:`DeepKernel`, :class:`ARD` (φ(x) = x/ℓ) and :func:`phi_features` (φ(x) checked and
reshaped to (n, s))."""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch

from ._base import Kernel, as_list
from .radial import RBF, RQ, Laplacian, MixRBF, MixRQ
from .registry import get_kernel

__all__ = ["DeepKernel", "ARD", "phi_features"]


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


#: the radial bases ARD takes, by name and class (rbf / laplacian lose their sigma to the lengthscales)
_ARD_BASES = {"rbf": RBF, "rq": RQ, "laplacian": Laplacian, "mix_rbf": MixRBF, "mix_rq": MixRQ}


class _Scale:
    """The feature map of :class:`ARD`: φ(x) = x / ℓ coordinatewise (a fixed linear map, differentiable in ℓ)."""

    def __init__(self, lengthscales: torch.Tensor):
        self.lengthscales = lengthscales

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim > 2:
            raise ValueError(f"ARD takes (n, d) or (n,) inputs, got shape {tuple(x.shape)}")
        x = x.reshape(x.shape[0], -1)
        ell, d = self.lengthscales, x.shape[1]
        if ell.numel() not in (1, d):
            raise ValueError(
                f"lengthscales has {ell.numel()} values {ell.detach().tolist()} but the inputs have d = {d} "
                f"coordinates: give d lengthscales (or one, broadcast to every coordinate)"
            )
        # float32 / float64 inputs keep their dtype (half precision is scaled in float32)
        dt = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        return x.to(dt) / ell.to(device=x.device, dtype=dt)


def _lengthscales(v) -> torch.Tensor:
    """ℓ as a 1-D tensor (a tensor input kept, differentiably), checked finite and > 0."""
    if isinstance(v, torch.Tensor):
        if v.ndim > 1:
            raise ValueError(f"lengthscales must be a number or a 1-D sequence, got a tensor of shape {tuple(v.shape)}")
        ell = v.reshape(-1)
    elif isinstance(v, numbers.Real) and not isinstance(v, bool):
        ell = torch.tensor([float(v)], dtype=torch.float64)
    else:
        vals = as_list("lengthscales", v)
        if any(isinstance(a, bool) or not isinstance(a, (numbers.Real, torch.Tensor)) for a in vals):
            raise TypeError(f"lengthscales must be numbers > 0, got {vals!r}")
        if any(isinstance(a, torch.Tensor) for a in vals):
            ell = torch.stack([torch.as_tensor(a, dtype=torch.float64).reshape(()) for a in vals])
        else:
            ell = torch.tensor([float(a) for a in vals], dtype=torch.float64)
    if ell.numel() == 0:
        raise ValueError("lengthscales must contain at least one value, got an empty tensor")
    if not ell.is_floating_point():
        ell = ell.double()
    e = ell.detach()
    if not e.is_meta and not bool((torch.isfinite(e) & (e > 0)).all()):
        raise ValueError(f"lengthscales must be finite and > 0, got {e.tolist()}")
    return ell


class ARD(DeepKernel):
    r"""Automatic relevance determination: :math:`k(a, b) = g\big(\sum_i (a_i - b_i)^2/\ell_i^2\big)` (SPEC §14).

    ``g`` is the radial ``base`` kernel's profile at unit scale, so ``ARD(ℓ, "rbf")`` is
    :math:`\exp(-\sum_i (a_i - b_i)^2 / (2\ell_i^2))` and equal lengthscales :math:`\ell_i = \sigma` give exactly
    ``RBF(σ)`` (likewise ``"laplacian"``: :math:`\exp(-\sqrt{\sum_i (a_i-b_i)^2/\ell_i^2})` = ``Laplacian(σ)``).
    The base's other parameters pass through and act on the scaled inputs: ``alpha`` of ``"rq"``
    (:math:`(1 + t/(2\alpha))^{-\alpha}`), ``alphas`` of ``"mix_rq"``, and ``sigmas`` of ``"mix_rbf"`` (component r
    then has lengthscales :math:`\sigma_r \ell_i`). ``sigma`` of rbf / laplacian is replaced by ℓ (TypeError if
    given). A base kernel object (RBF, RQ, Laplacian, MixRBF, MixRQ) is used as given, on the scaled inputs.

    It is the deep kernel ``DeepKernel(φ, base)`` with the fixed feature map :math:`\varphi(x) = x/\ell`
    (elementwise), so every estimator, test, witness, ``witness_grad`` (chain rule: ∇ divided by ℓ), ``kid``,
    ``smmd2`` and ``gcmmd2`` take it and every backend runs the base kernel unchanged. Tensor lengthscales with
    ``requires_grad`` get gradients through the scaling.

    Args:
        lengthscales: ℓ > 0, finite: a number (broadcast to every coordinate) or a 1-D sequence / tensor of
            length d (checked against the inputs when the kernel is used).
        base: ``"rbf"``, ``"rq"``, ``"laplacian"``, ``"mix_rbf"``, ``"mix_rq"`` or a kernel object of those types.
        **params: the base's parameters other than sigma (``alpha``, ``alphas``, ``sigmas``).

    Example:
        >>> x, y = torch.randn(50, 2, dtype=torch.float64), torch.randn(40, 2, dtype=torch.float64)
        >>> k = ARD([0.5, 2.0], "rbf")
        >>> float(k.matrix(x[:1], x[:1]))
        1.0
    """

    name = "ard"

    def __init__(self, lengthscales, base: Kernel | str = "rbf", **params):
        self.lengthscales = _lengthscales(lengthscales)
        if isinstance(base, str):
            if base not in _ARD_BASES:
                raise ValueError(f"ARD base must be one of {sorted(_ARD_BASES)} or a kernel object, got {base!r}")
            if "sigma" in params:
                raise TypeError(
                    f"ARD(base={base!r}) takes no sigma: the lengthscales replace it (ARD(ℓ, {base!r}) with all "
                    f"ℓ_i = σ is {_ARD_BASES[base].__name__}(σ))"
                )
            top = get_kernel(base, **params)
        elif type(base) in _ARD_BASES.values():
            top = get_kernel(base, **params)
        else:
            raise TypeError(
                f"ARD base must be one of {sorted(_ARD_BASES)} or an RBF, RQ, Laplacian, MixRBF or MixRQ object, "
                f"got {base!r}"
            )
        self.top = top
        self.twice_differentiable = top.twice_differentiable

    @property
    def phi(self) -> _Scale:
        return _Scale(self.lengthscales)

    def params(self):
        return {"lengthscales": self.lengthscales, "base": self.top}


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

