r"""Kernels: the one place where kernel formulas live (SPEC §1).

A kernel is described by a *profile* so that every backend needs only a few scalar functions:

* radial kernels  :math:`k(a, b) = g(t)`, :math:`t = \|a - b\|^2`, expose ``profile(t, order)`` returning
  :math:`g, g', g'', g'''` (``order`` = 0..3) and ``param_grads(t)`` (derivatives of :math:`g` in each scalar
  parameter, for fused backward passes);
* dot-product kernels :math:`k(a, b) = h(u)`, :math:`u = a^\top b`, expose ``profile(u, order)`` for
  :math:`h, h', h''` (and :math:`h'''`);
* :class:`DeepKernel` wraps a top kernel ``K`` on :math:`\mathbb{R}^s` and a feature map :math:`\varphi`:
  :math:`k(x, y) = K(\varphi(x), \varphi(y))`.

Profiles are written with tensor *methods* and arithmetic only (``.exp()``, ``.sqrt()``, ``.log()``, ``**``),
so the same code evaluates torch tensors and KeOps ``LazyTensor`` symbolic formulas. The Triton backend keeps a
twin of each profile keyed by :attr:`RadialKernel.kind_id` / :attr:`DotKernel.kind_id`; a test compares the twin
with these definitions at every order.

Parameters may be Python floats or scalar tensors (``requires_grad=True`` makes them trainable; every backend
returns gradients for them). ``sigma="median"`` (or ``"mean"``) is resolved on the data at each call by
:meth:`Kernel.resolve`.
"""

from __future__ import annotations

import copy
import inspect
import math
import sys
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ._validate import as_samples, check_choice, check_finite, check_int, check_positive

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
    "Linear",
    "Poly",
    "DeepKernel",
    "KERNELS",
    "get_kernel",
    "sqdist",
    "bandwidth",
]

_BLOCKS = ("xx", "yy", "xy")
_HEURISTICS = ("median", "mean")


def _scalar(v):
    """A parameter as stored: a float, or a 0-d tensor kept as is (so gradients flow)."""
    if isinstance(v, torch.Tensor):
        return v.reshape(())
    return float(v)


def _value(v) -> float:
    return float(v.detach()) if isinstance(v, torch.Tensor) else float(v)


def _unresolved(kernel, name: str, value):
    """ValueError for a profile evaluated while a data-dependent parameter is still a heuristic name."""
    return ValueError(
        f"{type(kernel).__name__}({name}={value!r}) must be resolved on data before its profile or matrix is "
        f"evaluated: use kernel.resolve(x, y), or pass the kernel to an estimator (which resolves it)"
    )


def _check_param(name: str, v, *, heuristic_ok: bool = False):
    if heuristic_ok and isinstance(v, str):
        if v not in _HEURISTICS:
            raise ValueError(f"{name} must be a number > 0 or one of {list(_HEURISTICS)}, got {v!r}")
        return v
    check_positive(name, v)
    return _scalar(v)


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


def _is_lazy(t) -> bool:
    """True for a KeOps ``LazyTensor`` (symbolic formula) rather than a torch tensor or a number."""
    return not isinstance(t, (torch.Tensor, int, float))


def _safe_sqrt(t):
    """sqrt with a zero (sub)gradient at t = 0 instead of inf/NaN.

    On a KeOps LazyTensor this is KeOps' ``Sqrt``, whose derivative ``Rsqrt(t)/2`` is defined as 0 at t = 0:
    the same zero subgradient.
    """
    if _is_lazy(t):
        return t.sqrt()
    pos = t > 0
    return torch.where(pos, torch.where(pos, t, torch.ones_like(t)).sqrt(), torch.zeros_like(t))


def bandwidth(x: torch.Tensor, y: torch.Tensor | None = None, rule: str = "median", max_points: int = 1000) -> float:
    """Bandwidth heuristic: the median (or mean) pairwise Euclidean distance of the pooled sample.

    At most ``max_points`` points (evenly strided, so the result is deterministic) enter the computation.
    Returns a float (the heuristic is not differentiated). Falls back to 1.0 if all points coincide.

    Args:
        x: (n, d) or (n,) points, a tensor or numpy array. y: (m, d) points pooled with x, or None.
        rule: ``"median"`` or ``"mean"``.
        max_points: integer ≥ 2, the most points used.

    Raises:
        TypeError, ValueError: bad x / y (shape, NaN/Inf, different d), an unknown ``rule``, ``max_points`` < 2.
    """
    check_choice("rule", rule, _HEURISTICS)
    max_points = check_int("max_points", max_points, minimum=2)
    named = [("x", x)] if y is None else [("x", x), ("y", y)]
    ts = as_samples(*named).tensors
    z = ts[0] if y is None else torch.cat(ts)
    z = z.detach()
    if z.shape[0] > max_points:
        idx = torch.linspace(0, z.shape[0] - 1, max_points, device=z.device).round().long()
        z = z[idx]
    t = sqdist(z.double(), z.double())
    iu = torch.triu_indices(z.shape[0], z.shape[0], 1, device=z.device)
    d = t[iu[0], iu[1]].sqrt()
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


def _fmt(v):
    if isinstance(v, torch.Tensor):
        return f"{v.detach().tolist()}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(str(_fmt(a)) for a in v) + "]"
    return repr(v)


class RadialKernel(Kernel):
    r"""k(a, b) = g(‖a − b‖²). Subclasses define :meth:`profile` and :meth:`param_grads`."""

    translation_invariant = True
    #: g depends on √t (laplacian, energy), and g' ∝ t^{-1/2} amplifies the rounding of t at close points: dense
    #: distances are formed from coordinate differences (see sqdist), tiled ones in float64
    sqrt_distance = False
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
        profile allows it (one exp per component for rbf / mix_rbf, one log and exp for rq / mix_rq)."""
        return tuple(self.profile(t, o) for o in orders)

    def block_bounds(self, block: str) -> tuple[float, float]:
        """Clamp applied to t in the given block ('xx', 'yy', 'xy'); (0, inf) except for bounded kernels."""
        return (0.0, math.inf)

    def matrix(self, x, y, block: str = "xy"):
        return self._at(sqdist(x, y, exact=self.sqrt_distance), block)

    def pairwise(self, a, b, block="xy"):
        diff = a - b
        return self._at((diff * diff).sum(1), block)

    def _at(self, t, block):
        lo, hi = self.block_bounds(block)
        if lo > 0 or hi < math.inf:
            t = t.clamp(lo, hi)
        return self.profile(t, 0)

    def _check_order(self, order: int) -> None:
        if isinstance(order, bool) or order not in (0, 1, 2, 3):
            raise ValueError(f"order must be 0, 1, 2 or 3, got {order!r}")

    def _require_resolved(self) -> None:
        """A ``sigma="median"`` / ``"mean"`` kernel has no profile until :meth:`resolve` fixed it on data."""
        sigma = getattr(self, "sigma", None)
        if isinstance(sigma, str):
            raise _unresolved(self, "sigma", sigma)


_FINITE_MAX = {dt: torch.finfo(dt).max for dt in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}


def _finite_max(t) -> float:
    """The largest finite value of ``t``'s dtype (a torch tensor), else of float64 (numbers, KeOps LazyTensors)."""
    if isinstance(t, torch.Tensor):
        return _FINITE_MAX.get(t.dtype, sys.float_info.max)
    return sys.float_info.max


def _gauss_coef(s, t):
    """c = −1/(2s²) of a Gaussian profile exp(c·t), limited to −(the largest finite value of t's dtype).

    With a huge 1/(2s²) (s ≲ 1e-19 against float32 distances, or s² underflowing to 0) the product c·t is then 0 at
    t = 0 (g = 1 rather than 0·inf = NaN) and −inf (g = 0) where it overflows. Values in range are unchanged (results
    in the normal range are bitwise the same); a tensor s stays differentiable (a clamp, no host sync).
    """
    big = _finite_max(t)
    if isinstance(s, torch.Tensor):  # (a float32 s against float64 t: s's own range; inf becomes its max)
        return (-0.5 / (s * s)).clamp_min(-min(big, _finite_max(s)))
    if _is_lazy(s):  # a KeOps parameter: symbolic, as before
        return -0.5 / (s * s)
    ss = s * s
    return max(-0.5 / ss, -big) if ss > 0 else -big


def _coef_pow(c, order: int, t):
    """c**order limited to ± the largest finite value of t's dtype: g·c^order is then 0 (not 0·inf = NaN) where
    g = exp(c·t) underflows, and finite at t = 0."""
    big = _finite_max(t)
    if isinstance(c, torch.Tensor):
        big = min(big, _finite_max(c))
        return (c**order).clamp(-big, big)
    if _is_lazy(c):
        return c**order
    try:
        p = c**order
    except OverflowError:  # Python floats raise instead of returning inf
        p = math.copysign(math.inf, c) if order % 2 else math.inf
    return min(max(p, -big), big)


def _gauss_dsigma(s, t):
    """∂/∂s exp(−t/(2s²)) = exp(c t)·(−2 c t)/s with c = −1/(2s²): 0 at t = 0 and where the Gaussian underflows (the
    textbook form g·t/s³ overflows s³ or t/s³ first for tiny s and gives 0·inf = NaN)."""
    c = _gauss_coef(s, t)
    ct = t * c
    v = ct.exp() * ct * (-2.0 / s)
    if isinstance(v, torch.Tensor):  # exp(ct) = 0 next to ct = −inf
        v = torch.nan_to_num(v, nan=0.0, posinf=math.inf, neginf=-math.inf)
    return v


def _exp_new(z):
    """exp of a freshly made tensor, in place (one pass and one allocation less over a tile); KeOps LazyTensors and
    other array types get their out-of-place ``exp``."""
    return z.exp_() if isinstance(z, torch.Tensor) else z.exp()


class RBF(RadialKernel):
    r"""Gaussian kernel :math:`g(t) = \exp(-t / (2\sigma^2))`.

    Derivatives: :math:`g' = -g/(2\sigma^2)`, :math:`g'' = g/(4\sigma^4)`, :math:`g''' = -g/(8\sigma^6)`.

    Args:
        sigma: bandwidth > 0 (float or scalar tensor), or ``"median"`` / ``"mean"`` (pairwise distance heuristic
            on the pooled sample, resolved at each call).

    Example:
        >>> k = RBF(sigma=2.0)
        >>> float(k.profile(torch.tensor(0.0)))
        1.0
    """

    name = "rbf"
    kind_id = 0

    def __init__(self, sigma=1.0):
        self.sigma = _check_param("sigma", sigma, heuristic_ok=True)

    def params(self):
        return {"sigma": self.sigma}

    def scalar_params(self):
        return [self.sigma]

    def resolve(self, x, y=None):
        if isinstance(self.sigma, str):
            return type(self)(sigma=bandwidth(x, y, self.sigma))
        return self

    def profile(self, t, order=0):
        self._check_order(order)
        self._require_resolved()
        c = _gauss_coef(self.sigma, t)
        g = _exp_new(t * c)
        return g * _coef_pow(c, order, t) if order else g

    def param_grads(self, t):
        self._require_resolved()
        return [_gauss_dsigma(self.sigma, t)]

    def profiles(self, t, orders=(0, 1)):
        for o in orders:
            self._check_order(o)
        self._require_resolved()
        c = _gauss_coef(self.sigma, t)
        g = _exp_new(t * c)
        return tuple(g * _coef_pow(c, o, t) if o else g for o in orders)


class MixRBF(RadialKernel):
    r"""Mixture of Gaussians :math:`g(t) = \sum_r \exp(-t/(2\sigma_r^2))`.

    Args:
        sigmas: bandwidths > 0. Li et al. (MMD-GAN) use (1, 2, 4, 8, 16); Wang et al. (1, √2, 2, 2√2, 4).
    """

    name = "mix_rbf"
    kind_id = 1

    def __init__(self, sigmas: Sequence = (1.0, 2.0, 4.0, 8.0, 16.0)):
        sigmas = _as_list("sigmas", sigmas)
        self.sigmas = [_check_param(f"sigmas[{i}]", s) for i, s in enumerate(sigmas)]

    def params(self):
        return {"sigmas": self.sigmas}

    def scalar_params(self):
        return list(self.sigmas)

    def profile(self, t, order=0):
        self._check_order(order)
        out = None
        for s in self.sigmas:
            c = _gauss_coef(s, t)
            e = _exp_new(t * c)
            e = e * _coef_pow(c, order, t) if order else e
            out = e if out is None else out + e
        return out

    def param_grads(self, t):
        return [_gauss_dsigma(s, t) for s in self.sigmas]

    def profiles(self, t, orders=(0, 1)):
        for o in orders:
            self._check_order(o)
        out = [0.0] * len(orders)
        for s in self.sigmas:
            c = _gauss_coef(s, t)
            e = _exp_new(t * c)
            out = [acc + (e * _coef_pow(c, o, t) if o else e) for acc, o in zip(out, orders)]
        return tuple(out)


class RQ(RadialKernel):
    r"""Rational quadratic :math:`g(t) = (1 + t/(2\alpha))^{-\alpha}`, α > 0.

    With :math:`u = 1 + t/(2\alpha)`: :math:`g' = -\tfrac12 u^{-\alpha-1}`,
    :math:`g'' = \tfrac{\alpha+1}{4\alpha} u^{-\alpha-2}`,
    :math:`g''' = -\tfrac{(\alpha+1)(\alpha+2)}{8\alpha^2} u^{-\alpha-3}`.
    """

    name = "rq"
    kind_id = 2

    def __init__(self, alpha=1.0):
        self.alpha = _check_param("alpha", alpha)

    def params(self):
        return {"alpha": self.alpha}

    def scalar_params(self):
        return [self.alpha]

    def profile(self, t, order=0):
        self._check_order(order)
        return _rq_profile(t, self.alpha, order)

    def param_grads(self, t):
        return [_rq_dalpha(t, self.alpha)]

    def profiles(self, t, orders=(0, 1)):
        for o in orders:
            self._check_order(o)
        return _rq_profiles(t, self.alpha, orders)


def _rq_coef(a, order):
    # g^{(k)}(t) = coef_k * u^{-a-k}: coef_0 = 1, coef_{k+1} = coef_k * (-(a + k)) / (2a)
    c = 1.0
    for k in range(order):
        c = c * (-(a + k)) / (2.0 * a)
    return c


def _rq_profile(t, a, order):
    u = 1.0 + t * (0.5 / a)
    return (u.log() * (-(a + order))).exp() * _rq_coef(a, order)


def _rq_profiles(t, a, orders):
    # g^{(k)} = coef_k · u^{-a} · u^{-k}: one log and one exp for all orders
    u = 1.0 + t * (0.5 / a)
    p = (u.log() * (-a)).exp()
    inv = 1.0 / u
    out = []
    for o in orders:
        v = p
        for _ in range(o):
            v = v * inv
        out.append(v * _rq_coef(a, o) if o else v)
    return tuple(out)


def _rq_dalpha(t, a):
    u = 1.0 + t * (0.5 / a)
    g = (u.log() * (-a)).exp()
    return g * (t * (0.5 / a) / u - u.log())


class MixRQ(RadialKernel):
    r"""Mixture of rational quadratics :math:`\sum_r (1 + t/(2\alpha_r))^{-\alpha_r}`.

    Args:
        alphas: shapes > 0; Bińkowski et al. (MMD-GAN-GP) use (0.2, 0.5, 1, 2, 5).
    """

    name = "mix_rq"
    kind_id = 3

    def __init__(self, alphas: Sequence = (0.2, 0.5, 1.0, 2.0, 5.0)):
        alphas = _as_list("alphas", alphas)
        self.alphas = [_check_param(f"alphas[{i}]", a) for i, a in enumerate(alphas)]

    def params(self):
        return {"alphas": self.alphas}

    def scalar_params(self):
        return list(self.alphas)

    def profile(self, t, order=0):
        self._check_order(order)
        out = 0.0
        for a in self.alphas:
            out = out + _rq_profile(t, a, order)
        return out

    def param_grads(self, t):
        return [_rq_dalpha(t, a) for a in self.alphas]

    def profiles(self, t, orders=(0, 1)):
        for o in orders:
            self._check_order(o)
        out = [0.0] * len(orders)
        for a in self.alphas:
            out = [acc + v for acc, v in zip(out, _rq_profiles(t, a, orders))]
        return tuple(out)


class RBFBounded(RBF):
    r"""Bounded Gaussian (RBF-B, Wang et al.): :math:`\exp(-\mathrm{clamp}(t)/(2\sigma^2))` with per-block bounds.

    Each block ('xx', 'yy', 'xy') uses ``"lower"`` (t ← max(t, lower)), ``"upper"`` (t ← min(t, upper)) or
    ``None`` (plain). The defaults are the attractive −MMD² loss of SPEC §7: within-group pairs use the lower
    bound, cross pairs the upper one. For the repulsive discriminator loss with x = real, y = fake use
    ``xx="upper", yy="lower", xy=None``. Used in critic losses only; not a positive-definite kernel.
    """

    name = "rbf_bounded"
    kind_id = 0  # same profile as rbf; the bounds are applied to t before the profile
    twice_differentiable = False

    def __init__(self, sigma=1.0, lower=0.25, upper=4.0, xx="lower", yy="lower", xy="upper"):
        super().__init__(sigma)
        check_positive("lower", lower)
        check_positive("upper", upper)
        if float(lower) > float(upper):
            raise ValueError(f"lower must be <= upper, got lower={lower}, upper={upper}")
        self.lower, self.upper = float(lower), float(upper)
        for name, mode in (("xx", xx), ("yy", yy), ("xy", xy)):
            if mode not in ("lower", "upper", None):
                raise ValueError(f"{name} must be 'lower', 'upper' or None, got {mode!r}")
        self.modes = {"xx": xx, "yy": yy, "xy": xy}

    def params(self):
        return {"sigma": self.sigma, "lower": self.lower, "upper": self.upper, **self.modes}

    def resolve(self, x, y=None):
        if isinstance(self.sigma, str):
            return RBFBounded(bandwidth(x, y, self.sigma), self.lower, self.upper, **self.modes)
        return self

    def block_bounds(self, block):
        mode = self.modes[block]
        if mode == "lower":
            return (self.lower, math.inf)
        if mode == "upper":
            return (0.0, self.upper)
        return (0.0, math.inf)


class Laplacian(RadialKernel):
    r"""Laplacian kernel :math:`g(t) = \exp(-\sqrt t/\sigma)`. Not differentiable at t = 0: MMD only.

    The profile derivatives are those of :math:`\exp(-\sqrt t/\sigma)` for t > 0 and are set to 0 at t = 0 (the
    subgradient used for coincident points).
    """

    name = "laplacian"
    kind_id = 4
    sqrt_distance = True
    twice_differentiable = False

    def __init__(self, sigma=1.0):
        self.sigma = _check_param("sigma", sigma, heuristic_ok=True)

    def params(self):
        return {"sigma": self.sigma}

    def scalar_params(self):
        return [self.sigma]

    def resolve(self, x, y=None):
        if isinstance(self.sigma, str):
            return Laplacian(sigma=bandwidth(x, y, self.sigma))
        return self

    def profile(self, t, order=0):
        self._check_order(order)
        self._require_resolved()
        r = _safe_sqrt(t)
        g = (r * (-1.0 / self.sigma)).exp()
        if order == 0:
            return g
        if order > 1:
            raise ValueError("the laplacian kernel is not twice differentiable; only order 0 and 1 exist")
        # g'(t) = -g / (2 σ sqrt t) for t > 0; 0 at t = 0
        if _is_lazy(t):  # KeOps: Rsqrt(0) = 0
            return g * t.rsqrt() * (-0.5 / self.sigma)
        pos = t > 0
        rr = torch.where(pos, r, torch.ones_like(r))
        return torch.where(pos, -g / (2.0 * self.sigma * rr), torch.zeros_like(g))

    def param_grads(self, t):
        self._require_resolved()
        r = _safe_sqrt(t)
        g = (r * (-1.0 / self.sigma)).exp()
        return [g * r / (self.sigma * self.sigma)]


class Energy(RadialKernel):
    r"""Energy-distance kernel :math:`k(a, b) = \|a\| + \|b\| - \|a - b\|` (distance-induced, origin 0).

    MMD² with this kernel is the energy distance. The radial part is :math:`g(t) = -\sqrt t`; the norm terms
    (``norm_terms = True``) are added by every backend. Not differentiable at coincident points: MMD only.
    """

    name = "energy"
    kind_id = 5
    sqrt_distance = True
    twice_differentiable = False
    translation_invariant = False
    norm_terms = True

    def profile(self, t, order=0):
        self._check_order(order)
        r = _safe_sqrt(t)
        if order == 0:
            return -r
        if order > 1:
            raise ValueError("the energy kernel is not twice differentiable; only order 0 and 1 exist")
        if _is_lazy(t):  # KeOps: Rsqrt(0) = 0
            return t.rsqrt() * -0.5
        pos = t > 0
        rr = torch.where(pos, r, torch.ones_like(r))
        return torch.where(pos, -0.5 / rr, torch.zeros_like(r))

    def matrix(self, x, y, block="xy"):
        nx = _safe_sqrt((x * x).sum(1))  # (n,)
        ny = _safe_sqrt((y * y).sum(1))  # (m,)
        return nx[:, None] + ny[None, :] + self.profile(sqdist(x, y, exact=True), 0)

    def pairwise(self, a, b, block="xy"):
        diff = a - b
        norm = lambda v: _safe_sqrt((v * v).sum(1))  # noqa: E731
        return norm(a) + norm(b) - norm(diff)


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
        self.gamma = None if gamma is None else _check_param("gamma", gamma)
        check_finite("coef0", coef0)
        self.coef0 = _scalar(coef0)

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


def _as_list(name, v):
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


#: name -> class; the names accepted by ``kernel="..."`` everywhere
KERNELS: dict[str, type[Kernel]] = {
    "rbf": RBF,
    "mix_rbf": MixRBF,
    "rq": RQ,
    "mix_rq": MixRQ,
    "rbf_bounded": RBFBounded,
    "laplacian": Laplacian,
    "energy": Energy,
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
