"""The base of every kernel: :class:`Kernel`, parameter checks, squared distances (:func:`sqdist`, :data:`CLOSE`),
the zero-subgradient square root and the bandwidth heuristic. Helpers without a leading underscore here are shared by
the modules of :mod:`kernelmmd.kernels` (and :func:`safe_sqrt` by the backends' norm terms); they are not part of
kernelmmd's public API."""

from __future__ import annotations

import copy

import numpy as np
import torch

from .._validate import as_samples, check_choice, check_int, check_positive

HEURISTICS = ("median", "mean")


def scalar(v):
    """A parameter as stored: a float, or a 0-d tensor kept as is (so gradients flow)."""
    if isinstance(v, torch.Tensor):
        return v.reshape(())
    return float(v)


def unresolved(kernel, name: str, value):
    """ValueError for a profile evaluated while a data-dependent parameter is still a heuristic name."""
    return ValueError(
        f"{type(kernel).__name__}({name}={value!r}) must be resolved on data before its profile or matrix is "
        f"evaluated: use kernel.resolve(x, y), or pass the kernel to an estimator (which resolves it)"
    )


def check_param(name: str, v, *, heuristic_ok: bool = False):
    if heuristic_ok and isinstance(v, str):
        if v not in HEURISTICS:
            raise ValueError(f"{name} must be a number > 0 or one of {list(HEURISTICS)}, got {v!r}")
        return v
    check_positive(name, v)
    return scalar(v)


def as_list(name, v):
    if isinstance(v, np.ndarray):
        if v.ndim != 1:
            raise ValueError(f"{name} must be a 1-D sequence of numbers, got a numpy array of shape {v.shape}")
        v = v.tolist()
    if isinstance(v, torch.Tensor):
        if v.ndim != 1:
            raise ValueError(f"{name} must be a 1-D sequence of numbers, got a tensor of shape {tuple(v.shape)}")
        v = list(v.unbind()) if v.requires_grad else v.tolist()
    if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(v).__name__} {v!r}")
    if len(v) == 0:
        raise ValueError(f"{name} must contain at least one value, got an empty sequence")
    return list(v)


#: The fused backends form squared distances by the expansion t = ‖a‖² + ‖b‖² − 2aᵀb (after centring), whose
#: rounding is about eps·(‖a‖² + ‖b‖²). For the √t kernels (laplacian, energy) they re-form the pairs with
#: t < CLOSE · (‖a‖² + ‖b‖²) from coordinate differences, values and gradients: elsewhere the expansion's error
#: in √t is a few eps relative (≤ eps/(2·CLOSE) times the expansion's rounding factor), while at close pairs √
#: would magnify it without bound (to √eps at coincident points).
CLOSE = 1.0 / 16.0


def sqdist(x: torch.Tensor, y: torch.Tensor, exact: bool = False) -> torch.Tensor:
    r"""Squared Euclidean distances :math:`\|x_i - y_j\|^2`, shape (n, m), never negative.

    Uses :math:`\|x\|^2 + \|y\|^2 - 2x^\top y` after centring both sets on the mean of ``x`` (free, and it shrinks
    the norms that cancel), clamped at 0; when ``y is x`` the diagonal is exactly 0. Differentiable; the gradient is
    finite at coincident points. The expansion loses about eps·‖x − c‖² to cancellation, which √t kernels
    (laplacian, energy) turn into √eps-sized errors at nearby points: ``exact=True`` sums the coordinate
    differences instead (``torch.cdist`` without the matrix-product path; O(n·m) memory, slower).
    """
    if exact:
        return torch.cdist(x, y, p=2.0, compute_mode="donot_use_mm_for_euclid_dist").square()
    c = x.detach().mean(0, keepdim=True)
    xc = x - c  # (n, d)
    yc = xc if y is x else y - c  # (m, d)
    xn = (xc * xc).sum(1)
    yn = xn if y is x else (yc * yc).sum(1)
    # one (n, m) allocation: ‖y‖² − 2 xᵀy by addmm, then ‖x‖² in place (addmm's backward keeps its inputs only)
    t = torch.addmm(yn[None, :], xc, yc.T, alpha=-2.0).add_(xn[:, None])  # (n, m)
    if x is y:  # the diagonal is exactly 0 (matters for sqrt-based kernels)
        t.diagonal().zero_()
    if not (torch.is_grad_enabled() and t.requires_grad):
        return t.clamp_min_(0.0)
    # clamp the value at 0 but let the gradient through unchanged: negative t is rounding error, and masking the
    # gradient there would zero the mixed second derivative -2 g'(0) I at coincident points
    return t + (t.clamp_min(0.0) - t).detach()


def is_lazy(t) -> bool:
    """True for a KeOps ``LazyTensor`` (symbolic formula) rather than a torch tensor or a number."""
    return not isinstance(t, (torch.Tensor, int, float))


def safe_sqrt(t):
    """sqrt with a zero (sub)gradient at t = 0 instead of inf/NaN.

    On a KeOps LazyTensor this is KeOps' ``Sqrt``, whose derivative ``Rsqrt(t)/2`` is defined as 0 at t = 0:
    the same zero subgradient.
    """
    if is_lazy(t):
        return t.sqrt()
    pos = t > 0
    return torch.where(pos, torch.where(pos, t, torch.ones_like(t)).sqrt(), torch.zeros_like(t))


def bandwidth(x: torch.Tensor, y: torch.Tensor | None = None, rule: str = "median", max_points: int = 1000,
              p: int = 2) -> float:
    """Bandwidth heuristic: the median (or mean) pairwise Euclidean (``p=2``) or L1 (``p=1``) distance of the pooled
    sample.

    At most ``max_points`` points (evenly strided, so the result is deterministic) enter the computation.
    Returns a float (the heuristic is not differentiated). Falls back to 1.0 if all points coincide.

    Args:
        x: (n, d) or (n,) points, a tensor or numpy array. y: (m, d) points pooled with x, or None.
        rule: ``"median"`` or ``"mean"``.
        max_points: integer ≥ 2, the most points used.
        p: 2 for Euclidean distances (the radial kernels), 1 for L1 distances (:class:`~kernelmmd.L1Laplacian`).

    Raises:
        TypeError, ValueError: bad x / y (shape, NaN/Inf, different d), an unknown ``rule``, ``max_points`` < 2,
        ``p`` not 1 or 2.
    """
    check_choice("rule", rule, HEURISTICS)
    max_points = check_int("max_points", max_points, minimum=2)
    if isinstance(p, bool) or p not in (1, 2):
        raise ValueError(f"p must be 1 (L1 distances) or 2 (Euclidean distances), got {p!r}")
    named = [("x", x)] if y is None else [("x", x), ("y", y)]
    ts = as_samples(*named).tensors
    z = ts[0] if y is None else torch.cat(ts)
    z = z.detach()
    if z.shape[0] > max_points:
        idx = torch.linspace(0, z.shape[0] - 1, max_points, device=z.device).round().long()
        z = z[idx]
    zd = z.double()
    t = torch.cdist(zd, zd, p=1.0) if p == 1 else sqdist(zd, zd)  # L1 distances, or squared Euclidean ones
    iu = torch.triu_indices(z.shape[0], z.shape[0], 1, device=z.device)
    d = t[iu[0], iu[1]]
    d = d if p == 1 else d.sqrt()
    if d.numel() == 0:
        return 1.0
    v = float(torch.quantile(d, 0.5)) if rule == "median" else float(d.mean())
    return v if v > 0 else 1.0


class Kernel:
    """Base class. Subclasses implement :meth:`matrix`; radial and dot kernels implement ``profile``."""

    name: str = ""
    #: needed by SMMD / GCMMD (H block). Laplacian, energy and bounded RBF are not.
    twice_differentiable: bool = True
    #: k(a + c, b + c) = k(a, b) for all c (lets fused code centre the data)
    translation_invariant: bool = False

    def matrix(self, x: torch.Tensor, y: torch.Tensor, block: str = "xy") -> torch.Tensor:
        """Dense kernel matrix K(x, y) of shape (n, m) (reference implementation)."""
        raise NotImplementedError

    def pairwise(self, a: torch.Tensor, b: torch.Tensor, block: str = "xy") -> torch.Tensor:
        """Elementwise k(a_i, b_i) for a, b of shape (n, d): shape (n,) (used by the linear-time estimator)."""
        raise NotImplementedError

    def resolve(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Kernel:
        """Return a kernel with every data-dependent parameter (``"median"`` bandwidths, ``gamma=None``) fixed."""
        return self

    def params(self) -> dict[str, object]:
        """The kernel's parameters by name (floats or tensors)."""
        return {}

    def scalar_params(self) -> list:
        """Flat list of the scalar parameters, in the order ``param_grads`` uses (floats or 0-d tensors)."""
        return []

    def cast(self, dtype: torch.dtype) -> Kernel:
        """The same kernel with its floating tensor parameters converted ``.to(dtype)`` (differentiably; floats and
        other attributes are kept). ``self`` when nothing changes. Used to compute in float64 (see ``_range``)."""
        return self._map_tensors(lambda v: v.to(dtype) if v.is_floating_point() and v.dtype != dtype else v)

    def _tensors(self) -> list[torch.Tensor]:
        """Every tensor held by the kernel's attributes (parameters, also inside lists and a DeepKernel's top)."""
        out = []
        self._map_tensors(lambda v: out.append(v) or v)
        return out

    def _map_tensors(self, fn) -> Kernel:
        """A shallow copy with ``fn`` applied to every tensor attribute (also in lists/tuples and nested kernels);
        ``self`` when ``fn`` returns every tensor unchanged. Generic, so new kernels need no code here."""

        def conv(v):
            if isinstance(v, torch.Tensor):
                return fn(v)
            if isinstance(v, Kernel):
                return v._map_tensors(fn)
            if isinstance(v, (list, tuple)):
                return type(v)(conv(a) for a in v)
            return v

        new = {k: conv(v) for k, v in vars(self).items()}
        if all(new[k] is v or (isinstance(v, (list, tuple)) and all(a is b for a, b in zip(new[k], v)))
               for k, v in vars(self).items()):
            return self
        out = copy.copy(self)
        vars(out).update(new)
        return out

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={_fmt(v)}" for k, v in self.params().items())
        return f"{type(self).__name__}({inner})"


class ProfileKernel(Kernel):
    """k(a, b) = g(t) for a distance t(a, b) ≥ 0 (‖a − b‖² for :class:`~kernelmmd.kernels.radial.RadialKernel`,
    ‖a − b‖₁ for :class:`~kernelmmd.kernels.l1.L1Kernel`). Subclasses define :meth:`profile` (g^{(order)}(t) for
    order 0..3) and :meth:`param_grads` (∂g/∂θ for each scalar parameter of :meth:`scalar_params`)."""

    #: stable small integer naming the profile for fused backends (Triton constexpr)
    kind_id: int = -1

    def profile(self, t, order: int = 0):
        """g^{(order)}(t) for order in 0..3, elementwise on a tensor (or KeOps LazyTensor) ``t`` ≥ 0."""
        raise NotImplementedError

    def param_grads(self, t) -> list:
        """∂g/∂θ_r (t) for each scalar parameter θ_r of :meth:`scalar_params`, elementwise."""
        return []

    def profiles(self, t, orders=(0, 1)) -> tuple:
        """``(g^{(o)}(t) for o in orders)``: several orders at once, sharing the transcendental work where the
        profile allows it (one exp per component for rbf / mix_rbf / l1_laplacian, one log and exp for rq / mix_rq)."""
        return tuple(self.profile(t, o) for o in orders)

    def _check_order(self, order: int) -> None:
        if isinstance(order, bool) or order not in (0, 1, 2, 3):
            raise ValueError(f"order must be 0, 1, 2 or 3, got {order!r}")

    def _require_resolved(self) -> None:
        """A ``sigma="median"`` / ``"mean"`` kernel has no profile until :meth:`resolve` fixed it on data."""
        sigma = getattr(self, "sigma", None)
        if isinstance(sigma, str):
            raise unresolved(self, "sigma", sigma)


class SigmaBandwidth:
    """Mixin for the kernels with one bandwidth ``sigma`` (RBF, Laplacian, L1Laplacian): a number > 0 (or a scalar
    tensor), or ``"median"`` / ``"mean"``, resolved by :func:`bandwidth` on the pooled sample with the distance of
    the kernel, ``_distance_p`` (2: Euclidean, the radial kernels; 1: L1)."""

    _distance_p: int = 2

    def __init__(self, sigma=1.0):
        self.sigma = check_param("sigma", sigma, heuristic_ok=True)

    def params(self):
        return {"sigma": self.sigma}

    def scalar_params(self):
        return [self.sigma]

    def resolve(self, x, y=None):
        if isinstance(self.sigma, str):
            return type(self)(sigma=bandwidth(x, y, self.sigma, p=self._distance_p))
        return self


def _fmt(v):
    if isinstance(v, torch.Tensor):
        return f"{v.detach().tolist()}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(str(_fmt(a)) for a in v) + "]"
    return repr(v)
