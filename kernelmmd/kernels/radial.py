"""Radial kernels k(a, b) = g(‖a − b‖²): :class:`RadialKernel` and rbf, mix_rbf, rq, mix_rq, rbf_bounded, laplacian,
energy, with their profiles g..g''' and parameter derivatives (``kind_id`` names each profile for the Triton twins)."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import torch

from .._validate import check_positive
from ._base import ProfileKernel, SigmaBandwidth, as_list, bandwidth, check_param, is_lazy, safe_sqrt, sqdist

__all__ = ["RadialKernel", "RBF", "MixRBF", "RQ", "MixRQ", "RBFBounded", "Laplacian", "Energy"]


class RadialKernel(ProfileKernel):
    r"""k(a, b) = g(‖a − b‖²). Subclasses define :meth:`profile` and :meth:`param_grads`."""

    translation_invariant = True
    #: g depends on √t (laplacian, energy), and g' ∝ t^{-1/2} amplifies the rounding of t at close points: dense
    #: distances are formed from coordinate differences (see sqdist), tiled ones in float64
    sqrt_distance = False

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
    if is_lazy(s):  # a KeOps parameter: symbolic, as before
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
    if is_lazy(c):
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


def _gauss_terms(s, t, orders) -> tuple:
    """exp(c·t)·c^o for each o in ``orders`` (c = −1/(2s²) limited as in :func:`_gauss_coef`): the profile of one
    Gaussian and its derivatives from one exp — RBF and each MixRBF component."""
    return _exp_terms(_gauss_coef(s, t), t, orders)


def _exp_terms(c, t, orders) -> tuple:
    """exp(c·t)·c^o for each o in ``orders``, from one exp (c^o limited as in :func:`_coef_pow`): the profile
    derivatives of every exponential profile (the Gaussian of RBF / MixRBF, the L1 Laplace kernel)."""
    g = _exp_new(t * c)
    return tuple(g * _coef_pow(c, o, t) if o else g for o in orders)


def _exp_new(z):
    """exp of a freshly made tensor, in place (one pass and one allocation less over a tile); KeOps LazyTensors and
    other array types get their out-of-place ``exp``."""
    return z.exp_() if isinstance(z, torch.Tensor) else z.exp()


class RBF(SigmaBandwidth, RadialKernel):
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

    def profile(self, t, order=0):
        self._check_order(order)
        self._require_resolved()
        return _gauss_terms(self.sigma, t, (order,))[0]

    def param_grads(self, t):
        self._require_resolved()
        return [_gauss_dsigma(self.sigma, t)]

    def profiles(self, t, orders=(0, 1)):
        for o in orders:
            self._check_order(o)
        self._require_resolved()
        return _gauss_terms(self.sigma, t, orders)


class MixRBF(RadialKernel):
    r"""Mixture of Gaussians :math:`g(t) = \sum_r \exp(-t/(2\sigma_r^2))`.

    Args:
        sigmas: bandwidths > 0. Li et al. (MMD-GAN) use (1, 2, 4, 8, 16); Wang et al. (1, √2, 2, 2√2, 4).
    """

    name = "mix_rbf"
    kind_id = 1

    def __init__(self, sigmas: Sequence = (1.0, 2.0, 4.0, 8.0, 16.0)):
        sigmas = as_list("sigmas", sigmas)
        self.sigmas = [check_param(f"sigmas[{i}]", s) for i, s in enumerate(sigmas)]

    def params(self):
        return {"sigmas": self.sigmas}

    def scalar_params(self):
        return list(self.sigmas)

    def profile(self, t, order=0):
        return self.profiles(t, (order,))[0]

    def param_grads(self, t):
        return [_gauss_dsigma(s, t) for s in self.sigmas]

    def profiles(self, t, orders=(0, 1)):
        for o in orders:
            self._check_order(o)
        out = None
        for s in self.sigmas:
            terms = _gauss_terms(s, t, orders)
            out = terms if out is None else tuple(a + b for a, b in zip(out, terms))
        return out


class RQ(RadialKernel):
    r"""Rational quadratic :math:`g(t) = (1 + t/(2\alpha))^{-\alpha}`, α > 0.

    With :math:`u = 1 + t/(2\alpha)`: :math:`g' = -\tfrac12 u^{-\alpha-1}`,
    :math:`g'' = \tfrac{\alpha+1}{4\alpha} u^{-\alpha-2}`,
    :math:`g''' = -\tfrac{(\alpha+1)(\alpha+2)}{8\alpha^2} u^{-\alpha-3}`.
    """

    name = "rq"
    kind_id = 2

    def __init__(self, alpha=1.0):
        self.alpha = check_param("alpha", alpha)

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
        alphas = as_list("alphas", alphas)
        self.alphas = [check_param(f"alphas[{i}]", a) for i, a in enumerate(alphas)]

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


class Laplacian(SigmaBandwidth, RadialKernel):
    r"""Laplacian kernel :math:`g(t) = \exp(-\sqrt t/\sigma)`. Not differentiable at t = 0: MMD only.

    The profile derivatives are those of :math:`\exp(-\sqrt t/\sigma)` for t > 0 and are set to 0 at t = 0 (the
    subgradient used for coincident points).
    """

    name = "laplacian"
    kind_id = 4
    sqrt_distance = True
    twice_differentiable = False

    def profile(self, t, order=0):
        self._check_order(order)
        self._require_resolved()
        r = safe_sqrt(t)
        g = (r * (-1.0 / self.sigma)).exp()
        if order == 0:
            return g
        if order > 1:
            raise ValueError("the laplacian kernel is not twice differentiable; only order 0 and 1 exist")
        # g'(t) = -g / (2 σ sqrt t) for t > 0; 0 at t = 0
        if is_lazy(t):  # KeOps: Rsqrt(0) = 0
            return g * t.rsqrt() * (-0.5 / self.sigma)
        pos = t > 0
        rr = torch.where(pos, r, torch.ones_like(r))
        return torch.where(pos, -g / (2.0 * self.sigma * rr), torch.zeros_like(g))

    def param_grads(self, t):
        self._require_resolved()
        r = safe_sqrt(t)
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
        r = safe_sqrt(t)
        if order == 0:
            return -r
        if order > 1:
            raise ValueError("the energy kernel is not twice differentiable; only order 0 and 1 exist")
        if is_lazy(t):  # KeOps: Rsqrt(0) = 0
            return t.rsqrt() * -0.5
        pos = t > 0
        rr = torch.where(pos, r, torch.ones_like(r))
        return torch.where(pos, -0.5 / rr, torch.zeros_like(r))

    def matrix(self, x, y, block="xy"):
        nx = safe_sqrt((x * x).sum(1))  # (n,)
        ny = safe_sqrt((y * y).sum(1))  # (m,)
        return nx[:, None] + ny[None, :] + self.profile(sqdist(x, y, exact=True), 0)

    def pairwise(self, a, b, block="xy"):
        diff = a - b
        norm = lambda v: safe_sqrt((v * v).sum(1))  # noqa: E731
        return norm(a) + norm(b) - norm(diff)

