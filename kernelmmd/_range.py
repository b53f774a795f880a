r"""The compute dtype of a call: exact at float32's extremes, or one :class:`~kernelmmd.NumericalWarning`.

Once a call's inputs are validated and its kernel resolved (docs/ARCHITECTURE.md, section "Data flow of one call",
step 1), :func:`compute` decides the dtype the kernel values are computed in:

* W, the working dtype, is the tensors' dtype (float32 or float64). Let M = max |coordinate| over all point sets
  (computed by the finiteness check, no extra pass), d the feature dimension and S = d·M² (a bound on ‖a‖²: squared
  distances t ≤ 4S, inner products |u| ≤ S; for an L1 kernel S = d·M, a bound on ‖a‖₁, and L1 distances t ≤ 2S).
* W is *safe* when (1) 4S·16 does not overflow W, (2) S is 0 or at least tiny(W)·2²⁴ (no subnormal distances), and
  (3) the kernel's profile (g at t, or h at u, orders 0–1, or 0–2 for the derivative-block / SMMD / GCMMD calls)
  evaluated in W at a grid of points spanning [0, 4S] (resp. [−S, S]; powers of two 2⁸ apart, from the top of the range
  down to tiny(W)·2²⁴, plus 0) is finite where float64 is, within 1e-4 of the largest float64 value of that order,
  and below max(W)/16 (so the float64 sums cast back to W stay finite); and (4) for a radial kernel whose squared
  distances come from the expansion (all but the √t kernels, which re-form close pairs from differences), g changes
  by at most ``RESOLVE_TOL`` of its largest value over the expansion's rounding error 2·eps(W)·S (else points that
  coincide across point sets, as in ``witness(x, y, x)``, get wrong kernel values). The grid is evaluated with the
  kernel's parameters as floats (tensor parameters read with one host sync), on CPU; its verdict is cached per
  (kernel, W, binary exponent of S, orders).
* float32 not safe, float64 safe: the call computes in float64 (tensors ``.double()`` and tensor kernel parameters
  ``Kernel.cast(float64)``, both differentiable) and returns float32: exact, no warning.
* float64 not safe either (or float64 inputs not safe): the call computes anyway (in float64) and emits one
  NumericalWarning naming the magnitude M, d, the kernel and what overflows.
* After a computation promoted to float64, a result that is not finite in the output dtype (e.g. a poly-kernel MMD²
  of 1e60 cast back to float32) emits a NumericalWarning suggesting float64 inputs (one host sync, only on that path).

Normal-range float32 inputs take none of these paths: their results are bitwise what they were.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from .errors import warn
from .kernels import DotKernel, Kernel, L1Kernel, RadialKernel

__all__ = ["Plan", "compute", "plan"]

#: squared distances / inner products up to 4S (S = d·max|x|²) must stay below max(W) / MARGIN
MARGIN = 16.0
#: S below tiny(W)·SUBNORMAL (but > 0) means distances lose precision to subnormals
SUBNORMAL = 2.0**24
#: the profile in W may differ from float64 by this much relative to the largest float64 value of that order
PROBE_TOL = 1e-4
_STEP = 8  # binary orders of magnitude between probe points
#: the profile may change by this much (relative to its largest value) within the expansion's rounding error of a
#: squared distance, about 2·eps(W)·S: beyond it, pairs that coincide across point sets (witness(x, y, x),
#: kernel_matrix(x, x.clone())) get wrong kernel values (sigma=1e-20 on unit data: 0 instead of 1)
RESOLVE_TOL = 1e-3

_CACHE: dict = {}


@dataclass
class Plan:
    """Where a call computes (``dtype``) and what it returns (``out``)."""

    dtype: torch.dtype
    out: torch.dtype
    describe: str = ""  # "inputs of magnitude ... (d = ...)" for messages

    @property
    def promoted(self) -> bool:
        return self.dtype != self.out

    def result(self, value: torch.Tensor, what: str = "the result") -> torch.Tensor:
        """``value`` in the output dtype; a NumericalWarning if a promoted computation's result does not fit it."""
        v = value.to(self.out)
        if self.promoted and not bool(torch.isfinite(v.detach()).all()):
            warn(f"kernelmmd: {what} for {self.describe} does not fit {_name(self.out)} (computed in float64 because "
                 f"float32 could not hold the kernel values; it overflows on the cast back): pass float64 inputs")
        return v


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _float_kernel(kernel: Kernel) -> Kernel:
    """The kernel with every tensor parameter replaced by its value as a float (one host sync for all of them)."""
    ts = kernel._tensors()
    if not ts:
        return kernel
    if len(ts) == 1:
        vals = iter([float(ts[0].detach())])
    else:
        vals = iter(torch.stack([t.detach().reshape(()).to(torch.float64) for t in ts]).cpu().tolist())
    return kernel._map_tensors(lambda v: next(vals))


def _pow2(v: float) -> float:
    """v rounded to the nearest power of two (sign kept, 0 and non-finite values unchanged)."""
    if v == 0 or not math.isfinite(v):
        return v
    e = round(math.log2(abs(v)))
    try:
        return math.copysign(2.0**e, v)
    except OverflowError:  # pragma: no cover - |v| within a factor √2 of float64's max
        return v


def _rounded(kf: Kernel) -> Kernel:
    """A copy of ``kf`` (float parameters) with every float attribute rounded to a power of two: the probe's verdict
    is cached per rounded kernel, so a bandwidth that changes a little from call to call (``sigma="median"`` on each
    batch) reuses it; ``MARGIN`` covers the factor of up to √2."""
    new = copy.copy(kf)
    for name, v in vars(kf).items():
        if isinstance(v, float):
            setattr(new, name, _pow2(v))
        elif isinstance(v, (list, tuple)) and all(isinstance(a, float) for a in v):
            setattr(new, name, type(v)(_pow2(a) for a in v))
    return new


def _sig(v):
    if isinstance(v, float):
        return _pow2(v)
    if isinstance(v, (list, tuple)):
        return tuple(_sig(a) for a in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _sig(a)) for k, a in v.items()))
    return v


def _signature(kf: Kernel) -> tuple:
    """The cache key of a float-parameter kernel: its attributes with floats rounded as :func:`_rounded` does
    (cheaper than building the rounded copy and its repr on every call)."""
    return tuple((name, _sig(v)) for name, v in vars(kf).items())


def _grid(W: torch.dtype, S: float, radial: bool) -> list[float]:
    if S <= 0:
        return [0.0]
    fi = torch.finfo(W)
    top = 2.0 ** math.ceil(math.log2(S)) * (4.0 if radial else 1.0)
    floor = fi.tiny * SUBNORMAL
    pts = [0.0]
    p = top
    while p >= floor:
        pts.append(p)
        p = p * 2.0**-_STEP
    if not radial:
        pts += [-p for p in pts[1:]]
    return pts


def _probe(kf: Kernel, W: torch.dtype, S: float, orders: tuple[int, ...]) -> str | None:
    """Why the profile of ``kf`` (float parameters) is not faithful in W over the range of S, or None."""
    radial = isinstance(kf, (RadialKernel, L1Kernel))  # a profile of a distance: the grid spans [0, 4S]
    if not (radial or isinstance(kf, DotKernel)):
        return None  # a custom kernel without a profile: only the magnitude rules apply
    if not kf.twice_differentiable:
        orders = tuple(o for o in orders if o <= 1)
    key = (type(kf), _signature(kf), W, math.frexp(S)[1] if S > 0 else None, orders)
    try:
        if key in _CACHE:
            return _CACHE[key]
    except TypeError:  # an attribute that cannot be hashed: key by the rounded kernel's repr
        key = (type(kf), repr(_rounded(kf)), *key[2:])
        if key in _CACHE:
            return _CACHE[key]
    kf = _rounded(kf)
    pts = _grid(W, S, radial)
    big = torch.finfo(W).max
    reason = None
    with torch.no_grad():
        vw = kf.profiles(torch.tensor(pts, dtype=W), orders)
        v64 = kf.profiles(torch.tensor(pts, dtype=torch.float64), orders)
    for o, a, b in zip(orders, vw, v64):
        a, b = torch.as_tensor(a).double(), torch.as_tensor(b)
        what = "values" if o == 0 else f"derivative of order {o}"
        if not bool(torch.isfinite(b).all()):
            reason = f"its {what} overflow float64"
            break
        ref = float(b.abs().max())
        if not bool(torch.isfinite(a).all()) or ref * MARGIN > big:
            reason = f"its {what} overflow {_name(W)}"
            break
        if float((a - b).abs().max()) > PROBE_TOL * ref:
            reason = f"its {what} lose precision in {_name(W)} (the parameters or the scale leave its range)"
            break
    # √t kernels re-form close pairs exactly, L1 distances are sums of exact differences
    if reason is None and isinstance(kf, RadialKernel) and not kf.sqrt_distance and S > 0:
        dt = 2.0 * torch.finfo(W).eps * 2.0 ** math.ceil(math.log2(S))
        with torch.no_grad():
            (g,) = kf.profiles(torch.tensor([0.0, dt], dtype=torch.float64), (0,))
        g = torch.as_tensor(g)
        if float((g[1] - g[0]).abs()) > RESOLVE_TOL * float(v64[0].abs().max()):
            reason = (f"its values change by more than {RESOLVE_TOL:g} of their largest within the rounding error of "
                      f"the squared distances in {_name(W)} (about {dt:.1e}): the bandwidth is too small for the "
                      "data's scale (coinciding points would get wrong kernel values)")
    if len(_CACHE) > 512:
        _CACHE.clear()
    _CACHE[key] = reason
    return reason


def _unsafe(kf: Kernel, W: torch.dtype, d: int, M: float, orders) -> str | None:
    fi = torch.finfo(W)
    l1 = isinstance(kf, L1Kernel)
    S = d * M if l1 else d * M * M  # a Python float: inf on overflow, never an exception
    dot = isinstance(kf, DotKernel)
    arg = "inner products" if dot else ("L1 distances" if l1 else "squared distances")
    top = S if dot else 4.0 * S
    if top * MARGIN > fi.max:
        return f"{arg} (up to {top:.1e}) overflow {_name(W)}"
    if 0 < S < fi.tiny * SUBNORMAL:
        return f"{arg} (at most {top:.1e}) are subnormal in {_name(W)}"
    r = _probe(kf, W, S, tuple(orders))
    return None if r is None else f"kernel {kf!r}: {r}"


def plan(tensors, kernel: Kernel, amax: float | None = None, *, orders=(0, 1), what: str = "inputs") -> Plan:
    """The :class:`Plan` for point sets ``tensors`` (float32 or float64, shape (n, d)) and a resolved ``kernel``.

    ``amax``: max |coordinate| over the tensors if already known (from :func:`kernelmmd._validate.as_samples`); else
    one reduction and one host sync here (feature maps). Emits the NumericalWarning when no dtype is safe.
    """
    W = tensors[0].dtype
    out = torch.float64 if W == torch.float64 else torch.float32
    if W not in (torch.float32, torch.float64) or tensors[0].is_meta:
        return Plan(W, out)
    if amax is None:
        live = [t.detach().abs().amax() for t in tensors if t.numel()]
        amax = float(torch.stack(live).max()) if live else 0.0
    d = tensors[0].shape[1] if tensors[0].ndim > 1 else 1
    desc = f"{what} of magnitude {amax:.1e} (d = {d})"
    if not math.isfinite(amax):
        warn(f"kernelmmd: {what} contain NaN or Inf values (max |value| = {amax}); results will be NaN")
        return Plan(W, out, desc)
    kf = _float_kernel(kernel)
    why = _unsafe(kf, W, d, amax, orders)
    if why is None:
        return Plan(W, out, desc)
    if W == torch.float32:
        why64 = _unsafe(kf, torch.float64, d, amax, orders)
        if why64 is None:
            return Plan(torch.float64, out, desc)
        why = why64
    warn(f"kernelmmd: {desc}: {why}; results may be inf/NaN or inaccurate: rescale the data (or the kernel's "
         "parameters) to a moderate range")
    return Plan(torch.float64, out, desc)


def compute(tensors, kernel: Kernel, amax: float | None = None, *, orders=(0, 1), what: str = "inputs"):
    """``(tensors, kernel, plan)`` in the compute dtype: half precision upcast to float32, then :func:`plan`; a
    promoted call gets ``.double()`` tensors and ``kernel.cast(torch.float64)`` (both differentiable)."""
    tensors = tuple(tensors)
    if tensors[0].dtype in (torch.float16, torch.bfloat16):
        tensors = tuple(t.float() for t in tensors)
    p = plan(tensors, kernel, amax, orders=orders, what=what)
    if p.dtype != tensors[0].dtype:
        tensors = tuple(t.to(p.dtype) for t in tensors)
        kernel = kernel.cast(p.dtype)
    return tensors, kernel, p
