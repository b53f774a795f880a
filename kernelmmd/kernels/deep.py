"""Deep kernels K ∘ φ: :class:`DeepKernel`, :class:`ARD` (φ(x) = x/ℓ), :class:`MMDDKernel` (Liu et al. 2020) and
:func:`phi_features` (φ(x) checked and reshaped to (n, s))."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch

from ._base import Kernel, as_list, sqdist
from .radial import RBF, RQ, Laplacian, MixRBF, MixRQ
from .registry import get_kernel

__all__ = ["DeepKernel", "ARD", "MMDDKernel", "phi_features"]


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



def _one_scalar(name: str, v, what: str, meta_value: float):
    """(v, its value as a float) for a float, or a 0-d / one-element floating tensor (kept, reshaped to 0-d, so
    gradients flow; a meta tensor's value is ``meta_value``). ``what`` names the accepted numbers in the errors."""
    if isinstance(v, torch.Tensor):
        if v.numel() != 1 or not v.is_floating_point():
            raise ValueError(f"{name} must be {what} or a one-element floating tensor, got {v!r}")
        v = v.reshape(())
        return v, (float(v.detach()) if not v.is_meta else meta_value)
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        return float(v), float(v)
    raise TypeError(f"{name} must be {what} or a tensor, got {type(v).__name__} {v!r}")


def _positive(name: str, v):
    """A bandwidth > 0: a float, or a 0-d / one-element tensor (kept, differentiably)."""
    v, val = _one_scalar(name, v, "a number > 0", 1.0)
    if not (math.isfinite(val) and val > 0):
        raise ValueError(f"{name} must be finite and > 0, got {val!r}")
    return v


def _unit_interval(name: str, v):
    """A weight in the open interval (0, 1): a float or a one-element tensor (kept, differentiably)."""
    v, val = _one_scalar(name, v, "a number in (0, 1)", 0.5)
    if not (0.0 < val < 1.0):
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {val!r}")
    return v


def _gauss(t):
    """The unit-scale Gaussian profile e^{−t/2} (t a squared distance)."""
    return (-0.5 * t).exp()


class _MMDDTop(Kernel):
    r"""The MMD-D kernel on its concatenated features F = [φ/σ_φ, a/σ_q] (the last ``raw_dims`` columns are a/σ_q):
    :math:`k(F, F') = (1-\varepsilon)\,e^{-\|F-F'\|^2/2} + \varepsilon\,e^{-\|F_q-F'_q\|^2/2}`.

    Not a function of one distance, so it has no ``profile``: the dense torch backend evaluates it through
    :meth:`matrix`; the fused backends refuse it (:meth:`profiles` raises). :func:`kernelmmd.optimize_kernel` keeps
    MMD-D on the fused path by combining three unit-scale RBF passes (:meth:`MMDDKernel.gaussian_parts`).
    """

    name = "mmdd_top"
    translation_invariant = True

    def __init__(self, eps, raw_dims: int):
        self.eps = eps
        self.raw_dims = raw_dims

    def params(self):
        return {"eps": self.eps, "raw_dims": self.raw_dims}

    def _check(self, a):
        if a.shape[-1] < self.raw_dims:
            raise ValueError(
                f"MMD-D features have {a.shape[-1]} columns, fewer than the {self.raw_dims} raw input coordinates"
            )

    def matrix(self, x, y, block="xy"):
        self._check(x)
        r = self.raw_dims
        eps = self.eps
        t = sqdist(x, y)  # (n, m): ‖Δφ‖²/σ_φ² + ‖Δa‖²/σ_q²
        tq = sqdist(x[:, -r:], y[:, -r:])  # (n, m): ‖Δa‖²/σ_q²
        return (1.0 - eps) * _gauss(t) + eps * _gauss(tq)

    def pairwise(self, a, b, block="xy"):
        self._check(a)
        r = self.raw_dims
        d2 = (a - b) ** 2  # (n, s + d)
        return (1.0 - self.eps) * _gauss(d2.sum(1)) + self.eps * _gauss(d2[:, -r:].sum(1))

    def profiles(self, t, orders=(0, 1)):
        raise TypeError(
            "the MMD-D kernel (MMDDKernel) is a sum of Gaussians on two feature sets, not a function of one "
            "distance: the fused backends (tiled, keops, triton) cannot evaluate it in estimators and tests; pass "
            "backend='torch' (dense), or optimise it with kernelmmd.optimize_kernel, which stays fused"
        )

    profile = profiles


class MMDDKernel(DeepKernel):
    r"""The deep kernel of MMD-D (Liu et al., ICML 2020), a deep Gaussian kernel kept characteristic by a Gaussian on
    the raw inputs (SPEC §14):

    .. math::
        k(a, b) = \big[(1-\varepsilon)\,\kappa(\varphi(a), \varphi(b)) + \varepsilon\big]\, q(a, b),\qquad
        \kappa(u, v) = e^{-\|u-v\|^2/(2\sigma_\varphi^2)},\quad q(a, b) = e^{-\|a-b\|^2/(2\sigma_q^2)}

    with :math:`\varepsilon \in (0, 1)`. The product of two Gaussians is one Gaussian on the concatenated, scaled
    features :math:`F(a) = [\varphi(a)/\sigma_\varphi,\ a/\sigma_q]`, so

    .. math::
        k(a, b) = (1-\varepsilon)\, G(\|F(a) - F(b)\|^2) + \varepsilon\, G(\|a - b\|^2/\sigma_q^2),\qquad
        G(t) = e^{-t/2},

    a positive combination of two Gaussian kernels, hence positive definite (and characteristic, through q) for
    every φ. ε is a float here (the public DK-for-TST code writes ``10^(-10)``, which is XOR in Python and gives −4,
    a non-PSD kernel; here ε outside (0, 1) raises). :func:`kernelmmd.optimize_kernel` learns φ's parameters,
    σ_φ, σ_q (log space) and ε (through a sigmoid).

    Estimators and tests take it as a :class:`DeepKernel` (features F, then a sum-of-Gaussians top kernel with
    ``raw_dims`` = the input dimension, recorded on each feature call); that top kernel is evaluated by the dense
    ``backend="torch"`` only, which ``backend="auto"`` picks on the CPU up to ``Auto.dense_max_pairs`` pairs. The
    fused ``block_stats`` statistics come from three unit-scale RBF passes (:meth:`gaussian_parts`), which
    :func:`kernelmmd.optimize_kernel` and :func:`kernelmmd.optimized_mmd_test` use on every backend.

    Args:
        phi: a callable (usually an ``nn.Module``) mapping (n, ...) inputs to (n, s) or (n,) features.
        sigma_phi, sigma_q: bandwidths > 0 (numbers or one-element tensors; tensors with ``requires_grad`` get
            gradients).
        eps: ε in (0, 1) (number or one-element tensor).

    Example:
        >>> import torch, kernelmmd
        >>> k = kernelmmd.MMDDKernel(torch.nn.Linear(3, 2).double(), sigma_phi=1.0, sigma_q=2.0, eps=0.1)
        >>> x = torch.randn(5, 3, dtype=torch.float64)
        >>> bool(torch.allclose(k.matrix(x, x).diagonal(), torch.ones(5, dtype=torch.float64)))
        True
    """

    name = "mmdd"

    def __init__(self, phi: Callable, sigma_phi=1.0, sigma_q=1.0, eps=0.1):
        if not callable(phi):
            raise TypeError(f"phi must be callable (e.g. an nn.Module), got {type(phi).__name__}")
        self.phi = phi
        self.sigma_phi = _positive("sigma_phi", sigma_phi)
        self.sigma_q = _positive("sigma_q", sigma_q)
        self.eps = _unit_interval("eps", eps)
        self.raw_dims = None  # the input dimension d, recorded by features()
        self.twice_differentiable = True

    def params(self):
        return {"phi": type(self.phi).__name__, "sigma_phi": self.sigma_phi, "sigma_q": self.sigma_q, "eps": self.eps}

    @property
    def top(self) -> _MMDDTop:
        if self.raw_dims is None:
            raise RuntimeError("MMDDKernel.top is defined once features() has seen the inputs (it needs their d)")
        return _MMDDTop(self.eps, self.raw_dims)

    @top.setter
    def top(self, value):
        if not isinstance(value, _MMDDTop):
            raise TypeError(
                f"MMDDKernel's top kernel is a sum of Gaussians; set sigma_phi, sigma_q or eps, got {value!r}"
            )
        self.eps, self.raw_dims = value.eps, value.raw_dims

    def _phi_and_raw(self, x: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(φ(x) checked, shape (n, s); x flattened to (n, d) in φ's dtype)."""
        f = phi_features(self.phi, x, name)
        return f, x.reshape(x.shape[0], -1).to(f.dtype)

    def features(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """F(x) = [φ(x)/σ_φ, x/σ_q], shape (n, s + d); records d for the top kernel."""
        f, raw = self._phi_and_raw(x, name)
        self.raw_dims = raw.shape[1]
        return torch.cat([f / self.sigma_phi, raw / self.sigma_q], dim=1)  # (n, s + d)

    def gaussian_parts(self, x: torch.Tensor, name: str = "x") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""The three feature sets whose unit-scale Gaussians give every block statistic of this kernel:

        ``joint`` = [φ/σ_φ, a/σ_q] (the (1 − ε) term), ``raw`` = a/σ_q (the ε term) and ``cross`` =
        [φ/σ_φ, √2·a/σ_q], whose Gaussian is the product of the two terms' Gaussians (the cross term of k²).
        Each (n, ·), differentiable in φ's parameters, σ_φ and σ_q.
        """
        f, raw = self._phi_and_raw(x, name)
        fs, rs = f / self.sigma_phi, raw / self.sigma_q  # (n, s), (n, d)
        return torch.cat([fs, rs], 1), rs, torch.cat([fs, math.sqrt(2.0) * rs], 1)

    def weights(self) -> tuple:
        """(1 − ε, ε): the weights of the ``joint`` and ``raw`` Gaussians."""
        return 1.0 - self.eps, self.eps

    def matrix(self, x, y, block="xy"):
        fx, fy = self.features(x, "x"), self.features(y, "y")
        return self.top.matrix(fx, fy, block)

    def pairwise(self, a, b, block="xy"):
        fa, fb = self.features(a, "a"), self.features(b, "b")
        return self.top.pairwise(fa, fb, block)
