r"""What every two-sample test shares: the result types and the "cannot decide" rule (private module).

A test whose statistic, standard deviation or a null statistic is not finite, or whose normal approximation has a
zero standard deviation, cannot decide: :func:`undecided` emits one :class:`~kernelmmd.NumericalWarning` naming the
cause and returns the p-value NaN, and ``reject()`` is then False at every level. See docs/ARCHITECTURE.md,
"Two-sample tests".
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field

import torch

from .. import _range
from .._validate import as_samples, check_int
from ..errors import NumericalWarning, user_stacklevel
from ..kernels import Kernel, RBFBounded, get_kernel

__all__ = [
    "KernelSelection",
    "MMDTestResult",
    "RelativeTestResult",
    "likely_cause",
    "nonfinite",
    "undecided",
    "normal_p",
    "check_test_kernel",
    "FAMILIES",
    "check_families",
    "family_kernels",
    "lp_distances",
    "prepare_samples",
    "compute_dtype",
]


# ------------------------------------------------------------------------------------------------- result types
@dataclass
class KernelSelection:
    """Outcome of :func:`select_kernel`.

    Attributes:
        kernel: the chosen candidate with its data-dependent parameters resolved on the selection data.
        index: its position in ``candidates``.
        criteria: MMD²_u / √max(V, min_variance) per candidate, shape (C,), float64.
        mmd2: MMD²_u per candidate, shape (C,). variances: the H1 variance estimate V per candidate, shape (C,).
        kernels: every candidate, resolved.
    """

    kernel: Kernel
    index: int
    criteria: torch.Tensor
    mmd2: torch.Tensor
    variances: torch.Tensor
    kernels: list = field(default_factory=list)


@dataclass
class MMDTestResult:
    """Outcome of a two-sample test of H0: P = Q against H1: P ≠ Q (reject for large statistics).

    **Undecided tests.** When a quantity the p-value needs is not finite — the observed statistic, the estimated
    standard deviation of a normal-approximation test, or any permuted (null) statistic — or the estimated standard
    deviation is 0 (a normal approximation is then undefined), the test cannot decide: ``p_value`` is NaN,
    :meth:`reject` is False at every level, and the test emits one :class:`~kernelmmd.NumericalWarning` naming the
    quantity, its value and the likely cause (the inputs' scale or the kernel parameters). A p-value is never
    computed from a NaN. Check ``math.isnan(result.p_value)`` to tell "cannot decide" from "do not reject".

    Attributes:
        statistic: the test statistic (MMD²_u for ``"permutation"``, MMD²_l for ``"linear"``, the mean block
            MMD²_u for ``"block"``), a float (NaN or ±inf when it could not be computed).
        p_value: a float in (0, 1], or NaN when the test cannot decide (see above). For the permutation test
            (1 + #{null ≥ statistic}) / (1 + B), never 0.
        kernel: the kernel used, data-dependent parameters resolved (e.g. ``RBF(sigma=1.37)``).
        method: ``"permutation"``, ``"linear"`` or ``"block"``.
        n, m: the sample sizes the test used.
        null_samples: the B permuted statistics (float64, shape (B,); numpy for numpy inputs), or None.
        n_permutations: B, or None for the normal-approximation tests.
        std: the estimated standard deviation of the statistic (normal-approximation tests), or None.
        selection: the :class:`KernelSelection` when the kernel was chosen by :func:`selected_mmd_test`.
    """

    statistic: float
    p_value: float
    kernel: Kernel
    method: str
    n: int
    m: int
    null_samples: object = None
    n_permutations: int | None = None
    std: float | None = None
    selection: KernelSelection | None = None

    def reject(self, alpha: float = 0.05) -> bool:
        """True when the test rejects H0 at level ``alpha`` (p ≤ alpha); always False when ``p_value`` is NaN."""
        _check_level(alpha)
        return _rejects(self.p_value, alpha)


@dataclass
class RelativeTestResult:
    """Outcome of :func:`relative_mmd_test` (H0: MMD(P, Q_Y) ≥ MMD(P, Q_Z)).

    Attributes:
        statistic: d̂ = MMD²_u(X, Y) − MMD²_u(X, Z), a float (negative when Y looks closer to X).
        p_value: Φ(d̂ / σ̂); small when Y is significantly closer to X than Z is. NaN when the test cannot decide
            (d̂ or its variance estimate not finite, or σ̂ = 0: see :func:`relative_mmd_test`); then
            :meth:`reject` is False at every level.
        std: σ̂, the estimated standard deviation of d̂ (after the ``min_variance`` floor).
        variance: the unbiased variance estimate of d̂ before the floor (may be slightly negative).
        mmd2_xy, mmd2_xz: the two MMD²_u estimates.
        kernel: the kernel used, resolved.
    """

    statistic: float
    p_value: float
    std: float
    variance: float
    mmd2_xy: float
    mmd2_xz: float
    kernel: Kernel

    def reject(self, alpha: float = 0.05) -> bool:
        """True when H0 is rejected at level ``alpha``, i.e. Y is significantly closer to X than Z is.

        Always False when ``p_value`` is NaN (the test could not decide).
        """
        _check_level(alpha)
        return _rejects(self.p_value, alpha)


# ---------------------------------------------------------------------------------------------------- helpers
def _check_level(alpha) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}")


def check_train_fraction(train_fraction) -> None:
    """The ``train_fraction`` of the split tests (:func:`~kernelmmd.selected_mmd_test`,
    :func:`~kernelmmd.optimized_mmd_test`): a real number in (0, 1)."""
    if isinstance(train_fraction, bool) or not isinstance(train_fraction, numbers.Real) or not (
        0.0 < float(train_fraction) < 1.0
    ):
        raise ValueError(f"train_fraction must be a number in (0, 1), got {train_fraction!r}")


def _normal_sf(z: float) -> float:
    """P(N(0, 1) > z), accurate in the tail (NaN for NaN: callers decide first with :func:`normal_p`)."""
    if math.isnan(z):
        return math.nan
    return 0.5 * math.erfc(z / math.sqrt(2.0))


# ------------------------------------------------------------------ the "cannot decide" rule (every test uses it)
def _rejects(p_value, alpha) -> bool:
    """p ≤ alpha, and explicitly False for a NaN p-value (a test that could not decide never rejects)."""
    p = float(p_value)
    if math.isnan(p):
        return False
    return p <= float(alpha)


def likely_cause(tensors, kernel) -> str:
    """The usual reasons for a non-finite statistic, with the numbers that let the user check them."""
    amax, dtype = 0.0, None
    for t in tensors:
        if t.numel():
            amax = max(amax, float(t.detach().abs().max()))
            dtype = t.dtype
    where = f"largest |coordinate| {amax:.3g}" + (f", computed in {dtype}" if dtype is not None else "")
    fix = "rescale the data"
    if hasattr(kernel, "sigma") or hasattr(kernel, "sigmas"):
        fix += " or choose bandwidths matched to the pairwise distances (e.g. sigma='median')"
    return f"likely cause: the inputs' scale ({where}) or the kernel parameters ({kernel!r}) overflow or underflow " \
        f"the kernel values; {fix}"


def nonfinite(named, tensors=(), kernel=None) -> str | None:
    """Cause line for the first non-finite ``(description, value)`` pair, or None when every value is finite."""
    for what, value in named:
        v = float(value)
        if not math.isfinite(v):
            return f"{what} is {v!r} (not finite); {likely_cause(tensors, kernel)}"
    return None


def undecided(test: str, cause: str) -> float:
    """THE RULE: emit one NumericalWarning naming ``cause`` and return the p-value NaN (reject() is then False)."""
    warnings.warn(
        f"{test}: cannot decide: {cause}. p_value = NaN and reject() is False at every level.",
        NumericalWarning,
        stacklevel=user_stacklevel(),
    )
    return math.nan


def normal_p(test, stat, std, *, name, tensors, kernel, zero_std, lower_tail=False) -> float:
    """One-sided normal-approximation p-value P(N(0,1) > stat/std) (``lower_tail``: Φ(stat/std)), under the rule.

    A non-finite statistic or standard deviation, or a zero standard deviation (``zero_std`` says why it can be 0),
    leaves the test undecided (p = NaN with one warning) instead of a p of 0 or 1 from a division by zero.
    """
    cause = nonfinite([(f"the statistic {name}", stat), (f"the estimated standard deviation of {name}", std)],
                      tensors, kernel)
    if cause is None and std <= 0.0:
        cause = (f"the estimated standard deviation of {name} is 0 ({zero_std}): its normal approximation is "
                 f"undefined. If the samples are not constant, the {likely_cause(tensors, kernel)}")
    if cause is not None:
        return undecided(test, cause)
    return _normal_sf(-stat / std if lower_tail else stat / std)


def check_test_kernel(k: Kernel) -> None:
    """A test needs one fixed kernel for all pairs: ValueError for :class:`~kernelmmd.RBFBounded` (a GAN loss)."""
    if isinstance(k, RBFBounded):
        raise ValueError(
            "kernel must be one fixed kernel for all pairs; rbf_bounded clamps distances differently per block "
            "(a GAN critic loss, not a test kernel): use 'rbf' instead"
        )


# ------------------------------------------------------- kernel families of the aggregated tests (MMDAgg, MMD-FUSE)
#: name -> (p of the L_p distance the kernel is a function of, registry name of our kernel with that profile)
FAMILIES = {"laplace": (1, "l1_laplacian"), "gaussian": (2, "rbf")}


def check_families(kernels) -> tuple[str, ...]:
    """``kernels`` of an aggregated test: one name or a sequence of distinct names of :data:`FAMILIES`."""
    names = (kernels,) if isinstance(kernels, str) else kernels
    if not isinstance(names, (list, tuple)) or not names:
        raise ValueError(f"kernels must be a non-empty sequence of names from {list(FAMILIES)}, got {kernels!r}")
    for k in names:
        if not isinstance(k, str) or k not in FAMILIES:
            raise ValueError(f"kernels must contain names from {list(FAMILIES)}, got {k!r} in {kernels!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"kernels must not repeat a name, got {kernels!r}")
    return tuple(names)


def family_kernels(name: str, sigmas) -> list[Kernel]:
    """Our kernel of family ``name`` at each bandwidth σ (gaussian: RBF exp(−‖a−b‖²/(2σ²)); laplace: L1Laplacian
    exp(−‖a−b‖₁/σ)). ValueError naming x and y when a bandwidth is not finite (distances beyond float64)."""
    bad = [float(s) for s in sigmas if not math.isfinite(float(s))]
    if bad:
        raise ValueError(f"x and y: the L{FAMILIES[name][0]} distances between the samples overflow float64, so the "
                         f"{name} bandwidths are not finite (e.g. {bad[0]!r}); rescale the data")
    return [get_kernel(FAMILIES[name][1], sigma=float(s)) for s in sigmas]


def family_collection(names, n_bandwidths: int, sigma_per_lambda: dict, grid) -> tuple[list, list, list]:
    """The kernels of an aggregated test (MMDAgg, MMD-FUSE): for each family ``name`` in ``names`` (in order) the
    ``n_bandwidths`` λ of ``grid(p)`` (p of the family's L_p distance) and our kernel at σ = sigma_per_lambda[name]·λ.
    Returns (family per kernel, λ per kernel, kernels)."""
    fams, lams, ks = [], [], []
    for name in names:
        lam = grid(FAMILIES[name][0])
        fams += [name] * n_bandwidths
        lams += lam
        ks += family_kernels(name, [sigma_per_lambda[name] * v for v in lam])
    return fams, lams, ks


def lp_distances(a: torch.Tensor, b: torch.Tensor, p: int) -> torch.Tensor:
    """All ‖a_i − b_j‖_p (p = 1 or 2) in float64, shape (n, m), from coordinate differences (no expansion).

    Computed on the points divided by the power of two just below their largest |coordinate| (exact), so squares do
    not overflow: distances of data at 1e200 stay finite (the kernels then overflow, and the test cannot decide).
    """
    a, b = a.double(), b.double()
    top = float(torch.maximum(a.abs().max(), b.abs().max())) if a.numel() and b.numel() else 0.0
    scale = math.ldexp(1.0, math.frexp(top)[1] - 1) if 0.0 < top < math.inf else 1.0  # ≤ top < 2·scale
    d = torch.cdist(a / scale, b / scale, p=float(p), compute_mode="donot_use_mm_for_euclid_dist")
    return d * scale


def prepare_samples(x, y, n_bandwidths) -> tuple[torch.Tensor, torch.Tensor, bool, float]:
    """Validated (n, d) / (m, d) tensors (half precision upcast), whether numpy came in, and max |coordinate|."""
    check_int("n_bandwidths", n_bandwidths, minimum=2)
    s = as_samples(("x", x), ("y", y), min_points=2)
    xt, yt = s.tensors
    if xt.dtype in (torch.float16, torch.bfloat16):
        xt, yt = xt.float(), yt.float()
    return xt.detach(), yt.detach(), s.numpy, max(s.amax)


def compute_dtype(xt, yt, kernels, amax):
    """(x, y) in the compute dtype of :func:`kernelmmd._range.compute`: float64 when some kernel needs it."""
    for k in kernels:
        if xt.dtype == torch.float64:
            break
        (xt, yt), _, _ = _range.compute((xt, yt), k, amax)
    return xt, yt
