r"""Kernel two-sample tests (SPEC §3, §9): permutation, linear-time, block, kernel selection, relative test.

Every test returns a result object with the statistic, the p-value and the kernel actually used (data-dependent
parameters such as ``sigma="median"`` resolved). Kernel evaluations go through the backend dispatch table
(:mod:`kernelmmd.ops`) or the public estimators of :mod:`kernelmmd.mmd`, so fused backends plug in unchanged.

* :func:`mmd_test` — the quadratic-time permutation test with MMD²_u. The B permuted statistics are quadratic forms
  of B indicator vectors evaluated in batches by one fused kernel–matrix product per batch (``kernel_mv`` with
  B columns): O(N² (d + B)) time, O(N·B_batch) memory, no per-permutation gathers, no copies of the data.
* :func:`linear_mmd_test` — the linear-time test (normal approximation of MMD²_l).
* :func:`block_mmd_test` — the B-test (Zaremba et al. 2013): normal approximation of the mean of per-block MMD²_u.
* :func:`select_kernel` / :func:`selected_mmd_test` — kernel choice by the test-power criterion
  MMD²_u / √V (Sutherland et al. 2017) on a training split, permutation test on the disjoint remainder.
* :func:`relative_mmd_test` — is Y closer to X than Z is (Bounliphone et al. 2016)? With an exactly unbiased
  variance estimate of the difference of the two MMD²_u (``kernelmmd._estimator.relative_variance``).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from . import ops
from ._estimator import block_stats, mmd2_u, mmd2_u_variance, prepare, relative_variance
from ._validate import as_generator, as_samples, check_int, check_nonnegative, check_same_size, to_output
from .errors import NumericalWarning, user_stacklevel
from .kernels import DeepKernel, Kernel, RBFBounded, get_kernel
from .mmd import mmd2_and_variance, mmd2_block, mmd2_linear

__all__ = [
    "MMDTestResult",
    "KernelSelection",
    "RelativeTestResult",
    "mmd_test",
    "linear_mmd_test",
    "block_mmd_test",
    "select_kernel",
    "selected_mmd_test",
    "relative_mmd_test",
    "mmd2_variance_unbiased",
]

#: default permutation batch: as many indicator columns as keep N·B_batch ≤ 2²⁴ entries (128 MiB in float64)
_BATCH_ENTRIES = 1 << 24
#: permuted statistics within _TIE_EPS · eps(dtype) · (size of the cancelling terms) of the observed one are ties
_TIE_EPS = 64.0


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


def _normal_sf(z: float) -> float:
    """P(N(0, 1) > z), accurate in the tail (NaN for NaN: callers decide first with :func:`_normal_p`)."""
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


def _likely_cause(tensors, kernel) -> str:
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


def _nonfinite(named, tensors=(), kernel=None) -> str | None:
    """Cause line for the first non-finite ``(description, value)`` pair, or None when every value is finite."""
    for what, value in named:
        v = float(value)
        if not math.isfinite(v):
            return f"{what} is {v!r} (not finite); {_likely_cause(tensors, kernel)}"
    return None


def _undecided(test: str, cause: str) -> float:
    """THE RULE: emit one NumericalWarning naming ``cause`` and return the p-value NaN (reject() is then False)."""
    warnings.warn(
        f"{test}: cannot decide: {cause}. p_value = NaN and reject() is False at every level.",
        NumericalWarning,
        stacklevel=user_stacklevel(),
    )
    return math.nan


def _normal_p(test, stat, std, *, name, tensors, kernel, zero_std, lower_tail=False) -> float:
    """One-sided normal-approximation p-value P(N(0,1) > stat/std) (``lower_tail``: Φ(stat/std)), under the rule.

    A non-finite statistic or standard deviation, or a zero standard deviation (``zero_std`` says why it can be 0),
    leaves the test undecided (p = NaN with one warning) instead of a p of 0 or 1 from a division by zero.
    """
    cause = _nonfinite([(f"the statistic {name}", stat), (f"the estimated standard deviation of {name}", std)],
                       tensors, kernel)
    if cause is None and std <= 0.0:
        cause = (f"the estimated standard deviation of {name} is 0 ({zero_std}): its normal approximation is "
                 f"undefined. If the samples are not constant, the {_likely_cause(tensors, kernel)}")
    if cause is not None:
        return _undecided(test, cause)
    return _normal_sf(-stat / std if lower_tail else stat / std)


def _test_kernel(k: Kernel) -> None:
    if isinstance(k, RBFBounded):
        raise ValueError(
            "kernel must be one fixed kernel for all pairs; rbf_bounded clamps distances differently per block "
            "(a GAN critic loss, not a test kernel): use 'rbf' instead"
        )


def _check_callback(callback) -> None:
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable (called with the number of permutations done) or None, "
                        f"got {type(callback).__name__}")


# ------------------------------------------------------------------------------------------- permutation test
def _indicators(N: int, n: int, count: int, gen: torch.Generator) -> torch.Tensor:
    """(N, count) float64 0/1 matrix; column b marks the n pooled points a uniform random permutation puts in X."""
    idx = torch.stack([torch.randperm(N, generator=gen)[:n] for _ in range(count)], 1)  # (n, count)
    e = torch.zeros(N, count, dtype=torch.float64)
    return e.scatter_(0, idx, 1.0)


def _permuted_mmd2(e, ke, r, total, diag, trace, n, m, magnitude: bool = False):
    r"""MMD²_u for each indicator column of ``e`` from the quadratic forms of the pooled kernel matrix K.

    With e ∈ {0,1}^N (|e| = n), f = 1 − e, r = K1, T = 1ᵀK1, D = diag(K): eᵀK̃e = eᵀKe − eᵀD,
    fᵀK̃f = T − 2eᵀr + eᵀKe − (tr K − eᵀD), eᵀKf = eᵀr − eᵀKe (the diagonal is handled exactly).
    """
    eke = (e * ke).sum(0)  # (B,)  eᵀKe
    er = e.T @ r  # (B,)  eᵀK1
    ed = e.T @ diag  # (B,)  eᵀ diag(K)
    sxx = eke - ed
    syy = total - 2.0 * er + eke - (trace - ed)
    sxy = er - eke
    stat = sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)
    if magnitude:  # size of the terms that cancel in the statistic: the scale of its rounding error
        return stat, sxx.abs() / (n * (n - 1)) + syy.abs() / (m * (m - 1)) + 2.0 * sxy.abs() / (n * m)
    return stat


def _permutation_test(xt, yt, kernel, n_permutations, gen, backend, batch_size, callback):
    n, m = xt.shape[0], yt.shape[0]
    z = torch.cat([xt, yt]).detach()  # (N, d) pooled sample; never copied per permutation
    N = n + m
    mv = ops.dispatch("kernel_mv", backend, z, z)  # pairs = N²
    dev = z.device
    diag = kernel.pairwise(z, z).double()  # (N,) k(z_i, z_i)
    trace = diag.sum()
    e0 = torch.zeros(N, 1, dtype=torch.float64, device=dev)
    e0[:n] = 1.0  # the observed split
    if batch_size is None:
        batch_size = max(1, _BATCH_ENTRIES // N)
    null = []
    done, r, total, statistic = 0, None, None, None
    while done < n_permutations:
        count = min(batch_size, n_permutations - done)
        e = _indicators(N, n, count, gen).to(dev)  # (N, count), drawn on the CPU generator
        if r is None:  # first pass also yields r = K1 and the observed statistic
            v = torch.cat([torch.ones(N, 1, dtype=torch.float64, device=dev), e0, e], 1)  # (N, count + 2)
        else:
            v = e
        kv = mv(z, z, v.to(z.dtype), kernel).double()  # (N, cols) = K V, one fused pass
        if r is None:
            r, kv = kv[:, 0], kv[:, 1:]
            total = r.sum()
            statistic, scale = _permuted_mmd2(e0, kv[:, :1], r, total, diag, trace, n, m, magnitude=True)
            statistic, scale = float(statistic[0]), float(scale[0])
            kv = kv[:, 1:]
        null.append(_permuted_mmd2(e, kv, r, total, diag, trace, n, m).cpu())
        done += count
        if callback is not None:
            callback(count)
    null = torch.cat(null)  # (B,)
    cause = _nonfinite([("the statistic MMD²_u", statistic)], (xt, yt), kernel)
    bad = int((~torch.isfinite(null)).sum())
    if cause is None and bad:  # never dropped, never counted as < or ≥ the observed statistic
        first = float(null[~torch.isfinite(null)][0])
        cause = (f"{bad} of the {n_permutations} permuted (null) statistics are not finite (e.g. {first!r}); "
                 f"{_likely_cause((xt, yt), kernel)}")
    if cause is not None:
        return statistic, _undecided("mmd_test", cause), null
    # splits equal to the observed one up to rounding (e.g. X and Y swapped when n = m) are ties and count as ≥
    tol = _TIE_EPS * torch.finfo(z.dtype).eps * scale
    p = (1.0 + float((null >= statistic - tol).sum())) / (1.0 + n_permutations)
    return statistic, p, null


def mmd_test(
    x,
    y,
    kernel="rbf",
    *,
    n_permutations: int = 1000,
    seed=None,
    backend: str = "auto",
    batch_size: int | None = None,
    callback: Callable[[int], None] | None = None,
    **params,
) -> MMDTestResult:
    r"""Quadratic-time permutation test of H0: P = Q with the statistic MMD²_u (SPEC §3).

    The pooled sample Z = [X; Y] (N = n + m points) is split at random B times. For an indicator e ∈ {0,1}^N of
    the points a split puts in X (f = 1 − e), with K the N × N kernel matrix, r = K1 and D = diag(K):

    .. math::
        \mathrm{MMD}^2_u(e) = \frac{e^\top K e - e^\top D}{n(n-1)}
          + \frac{1^\top K 1 - 2 e^\top r + e^\top K e - (\operatorname{tr}K - e^\top D)}{m(m-1)}
          - 2\,\frac{e^\top r - e^\top K e}{nm}

    so B statistics need only K·E for E = [e_1 … e_B]: one fused product per batch (``kernel_mv`` with B columns),
    O(N²(d + B)) time and O(N·B_batch) memory; the kernel matrix is never stored by fused backends and the data
    are never copied per permutation. Permutation b puts the points ``torch.randperm(N, generator)[:n]`` in X
    (drawn on the CPU, so a seed means the same splits on every device). The observed statistic is computed by the
    same formula (identity split); p-value = (1 + #{b: MMD²_u(e_b) ≥ MMD²_u(e_0)}) / (1 + B) — never 0, and exact
    (valid at every n) for any kernel. Splits whose statistic equals the observed one up to rounding (64·eps of
    the compute dtype relative to the size of the cancelling sums; e.g. X and Y swapped when n = m) count as ties (≥).

    Args:
        x: samples of P, shape (n, d) or (n,), n ≥ 2 (any (n, ...) shape a :class:`~kernelmmd.DeepKernel` takes).
        y: samples of Q, shape (m, d), m ≥ 2 (m ≠ n is fine).
        kernel: kernel name or :class:`~kernelmmd.Kernel` (default ``"rbf"``; ``sigma="median"`` or ``"mean"``
            selects the bandwidth by the pooled-distance heuristic — permutation invariant, so the test stays exact).
        n_permutations: B ≥ 1 random splits (the smallest attainable p-value is 1 / (B + 1)).
        seed: int ≥ 0, a CPU ``torch.Generator`` (consumed), or None (non-reproducible). The same seed gives the
            same permutations, hence the same p-value, on every device and for every ``batch_size``.
        backend: ``"auto"`` or an explicit backend of :mod:`kernelmmd.ops`.
        batch_size: permutations per fused pass; default ⌊2²⁴ / N⌋ (≥ 1), i.e. ≤ 128 MiB of float64 columns.
        callback: called as ``callback(k)`` after each batch of k permutations (e.g. ``tqdm.update``).
        **params: kernel parameters, e.g. ``sigma=1.0``.

    Returns:
        :class:`MMDTestResult` with ``method="permutation"`` and the B null statistics in ``null_samples``.
        ``p_value`` is NaN and ``reject()`` False at every level when the observed statistic or any permuted
        statistic is not finite (e.g. kernel values that overflow at the inputs' scale): see :class:`MMDTestResult`.

    Raises:
        TypeError, ValueError: bad inputs (shapes, n or m < 2, NaN/Inf, unknown kernel or parameters, unknown
        backend), ``n_permutations`` or ``batch_size`` not an int ≥ 1, a bad ``seed``, a non-callable
        ``callback``, or ``kernel="rbf_bounded"`` (block-dependent, not one kernel).

    Warns:
        NumericalWarning: once, naming the statistic and its value, when the test cannot decide (p = NaN).

    Example:
        >>> import torch, kernelmmd
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(50, 2, generator=g), torch.randn(50, 2, generator=g) + 1.0
        >>> res = kernelmmd.mmd_test(x, y, sigma="median", n_permutations=200, seed=0)
        >>> res.p_value < 0.05
        True
    """
    B = check_int("n_permutations", n_permutations, minimum=1)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, minimum=1)
    _check_callback(callback)
    gen = as_generator(seed)
    p = prepare([("x", x), ("y", y)], kernel, params, min_points=2)
    _test_kernel(p.kernel)
    xt, yt = p.tensors
    with torch.no_grad():
        stat, pval, null = _permutation_test(xt, yt, p.kernel, B, gen, backend, batch_size, callback)
    return MMDTestResult(
        statistic=stat,
        p_value=pval,
        kernel=p.kernel,
        method="permutation",
        n=xt.shape[0],
        m=yt.shape[0],
        null_samples=to_output(null, p.numpy),
        n_permutations=B,
    )


# ------------------------------------------------------------------------------------ normal-approximation tests
def linear_mmd_test(x, y, kernel="rbf", *, backend: str = "auto", **params) -> MMDTestResult:
    r"""Linear-time test (Gretton et al. 2012, §6): one-sided z-test on MMD²_l, O(n) time and memory.

    .. math::
        \mathrm{MMD}^2_l = \frac{2}{n}\sum_{i=1}^{n/2} h_i,\qquad
        p = 1 - \Phi\!\Big(\mathrm{MMD}^2_l \big/ \sqrt{\widehat{\operatorname{var}}(h)/(n/2)}\Big)

    h_i are i.i.d., so the statistic is asymptotically normal under H0 and H1; the test is calibrated for large n
    and much less powerful than :func:`mmd_test` at equal n (it uses n/2 pairs, not n² ones).

    Args:
        x, y: samples of shape (n, d) with the same n ≥ 4 (an odd last point of each sample is left out).
        kernel, **params: as in :func:`mmd_test` (a ``"median"`` bandwidth is resolved on the pooled sample).
        backend: validated as in :func:`mmd_test`; the O(n) kernel values are computed directly (see
            :func:`~kernelmmd.mmd2_linear`).

    Returns:
        :class:`MMDTestResult` with ``method="linear"`` and ``std`` the estimated standard deviation of MMD²_l.
        ``p_value`` is NaN and ``reject()`` False at every level when MMD²_l or its standard deviation is not
        finite, or the standard deviation is 0 (every h_i equal: constant or duplicated samples — use
        :func:`mmd_test`, which is exact there); never a p of 0 or 1 from a division by zero.

    Raises:
        TypeError, ValueError: bad inputs, n ≠ m, n < 4, ``kernel="rbf_bounded"``.

    Warns:
        NumericalWarning: once, naming the quantity and its value, when the test cannot decide (p = NaN).

    Example:
        >>> import torch, kernelmmd
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(2000, 2, generator=g), torch.randn(2000, 2, generator=g) + 1.0
        >>> kernelmmd.linear_mmd_test(x, y, sigma=1.0).p_value < 1e-3
        True
    """
    p = prepare([("x", x), ("y", y)], kernel, params, min_points=4)
    _test_kernel(p.kernel)
    xt, yt = p.tensors
    check_same_size(xt, yt, "linear_mmd_test")
    with torch.no_grad():
        est, var = mmd2_linear(xt, yt, kernel=p.kernel, return_variance=True, backend=backend)
    stat, var = float(est), float(var)
    std = math.sqrt(max(var, 0.0)) if not math.isnan(var) else math.nan
    pval = _normal_p("linear_mmd_test", stat, std, name="MMD²_l", tensors=(xt, yt), kernel=p.kernel,
                     zero_std="every pair term h_i is equal: constant or duplicated samples? mmd_test is exact there")
    return MMDTestResult(stat, pval, p.kernel, "linear", xt.shape[0], yt.shape[0], std=std)


def block_mmd_test(x, y, kernel="rbf", *, block_size: int, backend: str = "auto", **params) -> MMDTestResult:
    r"""Block test (B-test, Zaremba et al. 2013): z-test on the mean of b per-block MMD²_u.

    .. math::
        \hat\eta = \frac1b\sum_{k=1}^{b}\mathrm{MMD}^2_u(X_k, Y_k),\qquad
        p = 1 - \Phi\big(\hat\eta \,/\, (s_\eta/\sqrt b)\big)

    with s_η the sample standard deviation (ddof = 1) of the block values. Block values are i.i.d., so the statistic
    is asymptotically normal as b grows; with few blocks the right-skewed null of MMD²_u makes the test conservative
    (measured size 0.026 with 20 blocks and 0.035 with 40, for nominal 0.05, on 2-D Gaussians, 1000 repetitions).
    Cost O(n · block_size). Blocks are consecutive: shuffle the samples first if their order is not random.

    Args:
        x, y: samples of shape (n, d) with the same n. block_size: points per block from each sample,
            2 ≤ block_size ≤ n / 2 (at least two blocks; a remainder of n mod block_size points is left out
            with a :class:`~kernelmmd.NumericalWarning`).
        backend, kernel, **params: as in :func:`mmd_test`.

    Returns:
        :class:`MMDTestResult` with ``method="block"`` and ``std`` the standard error of the block mean.
        ``p_value`` is NaN and ``reject()`` False at every level when the statistic or its standard error is not
        finite, or the standard error is 0 (every block value equal: constant or duplicated samples — use
        :func:`mmd_test`); never a p of 0 or 1 from a division by zero.

    Raises:
        TypeError, ValueError: bad inputs, n ≠ m, block_size not an int in [2, n/2], ``kernel="rbf_bounded"``.

    Warns:
        NumericalWarning: once when the test cannot decide (p = NaN), naming the quantity and its value; and
        (from :func:`~kernelmmd.mmd2_block`) when n is not a multiple of ``block_size``.

    Example:
        >>> import torch, kernelmmd
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(400, 2, generator=g), torch.randn(400, 2, generator=g) + 1.0
        >>> kernelmmd.block_mmd_test(x, y, block_size=20, sigma=1.0).p_value < 1e-3
        True
    """
    p = prepare([("x", x), ("y", y)], kernel, params, min_points=2)
    _test_kernel(p.kernel)
    xt, yt = p.tensors
    check_same_size(xt, yt, "block_mmd_test")
    bs = check_int("block_size", block_size, minimum=2)
    if 2 * bs > xt.shape[0]:
        raise ValueError(f"block_size must be <= n / 2 = {xt.shape[0] // 2} (at least two blocks), got {bs}")
    with torch.no_grad():
        est, vals = mmd2_block(xt, yt, kernel=p.kernel, block_size=bs, backend=backend, return_blocks=True)
    vals = vals.double()
    nb = vals.numel()
    stat = float(vals.mean())
    std = float(vals.std(unbiased=True)) / math.sqrt(nb)
    pval = _normal_p("block_mmd_test", stat, std, name="η̂ (the mean block MMD²_u)", tensors=(xt, yt),
                     kernel=p.kernel,
                     zero_std="every block value is equal: constant or duplicated samples? mmd_test is exact there")
    return MMDTestResult(stat, pval, p.kernel, "block", nb * bs, nb * bs, std=std)


# ----------------------------------------------------------------------------------------------- kernel choice
def _as_candidates(candidates) -> list:
    if isinstance(candidates, (str, Kernel)) or not isinstance(candidates, Sequence):
        raise TypeError(
            f"candidates must be a sequence of kernels (names or Kernel objects), got {type(candidates).__name__}"
        )
    if len(candidates) == 0:
        raise ValueError("candidates must contain at least one kernel, got an empty sequence")
    return [get_kernel(c) for c in candidates]


def select_kernel(x, y, candidates, *, min_variance: float = 1e-8, backend: str = "auto") -> KernelSelection:
    r"""Choose the kernel maximising the test-power criterion of Sutherland et al. 2017 (opt-mmd).

    .. math::
        \hat J(k) = \frac{\mathrm{MMD}^2_u(X, Y; k)}{\sqrt{\max(\hat V_k,\ \text{min\_variance})}}

    with V̂ the H1 variance estimate of :func:`~kernelmmd.mmd2_and_variance`. The asymptotic power of the permutation
    test grows with J, so the argmax is the best kernel *for these data*. Select on data that the test does not see
    (:func:`selected_mmd_test` does the split): testing on the selection data makes the test anti-conservative.

    Args:
        x, y: selection samples with the same n ≥ 2. candidates: a non-empty sequence of kernels (Kernel objects,
            or names with default parameters), e.g. ``[kernelmmd.RBF(s) for s in (0.25, 0.5, 1, 2, 4)]``;
            ``"median"`` bandwidths are resolved on (x, y).
        min_variance: floor ≥ 0 on V̂ (opt-mmd uses 1e-8). backend: as in :func:`mmd_test`.

    Returns:
        :class:`KernelSelection` (the winner, resolved; every criterion). A candidate whose MMD²_u or V̂ is not
        finite gets the criterion −inf and is never chosen (unless no candidate is finite: then index 0).

    Raises:
        TypeError, ValueError: bad inputs, n ≠ m, candidates not a non-empty sequence of kernels, negative
        ``min_variance``.

    Warns:
        NumericalWarning: once, listing the candidates whose MMD²_u or V̂ is not finite.

    Example:
        >>> import torch, kernelmmd
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(100, 2, generator=g), 1.5 * torch.randn(100, 2, generator=g)
        >>> sel = kernelmmd.select_kernel(x, y, [kernelmmd.RBF(s) for s in (0.1, 1.0, 10.0)])
        >>> sel.index
        1
    """
    ks = _as_candidates(candidates)
    check_nonnegative("min_variance", min_variance)
    sel, bad = _select(x, y, ks, min_variance, backend)
    if bad:
        warnings.warn(f"select_kernel: {_bad_candidates(sel, bad)}", NumericalWarning, stacklevel=user_stacklevel())
    return sel


def _bad_candidates(sel: KernelSelection, bad: list) -> str:
    shown = ", ".join(
        f"#{i} {sel.kernels[i]!r} (MMD²_u = {float(sel.mmd2[i])!r}, V = {float(sel.variances[i])!r})" for i in bad[:3]
    )
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    return (f"{len(bad)} of {len(sel.kernels)} candidate kernels have a non-finite MMD²_u or variance on the "
            f"selection data and cannot be chosen: {shown}{more}; the inputs' scale or these kernels' parameters "
            "overflow or underflow the kernel values")


def _select(x, y, ks, min_variance, backend) -> tuple[KernelSelection, list]:
    """select_kernel without the warning: (selection, indices of candidates with non-finite MMD²_u or V̂)."""
    resolved, mmds, variances = [], [], []
    with torch.no_grad():
        for k in ks:
            p = prepare([("x", x), ("y", y)], k, {}, min_points=2)
            check_same_size(*p.tensors, "select_kernel")
            mmd2, var = mmd2_and_variance(*p.tensors, kernel=p.kernel, backend=backend)
            resolved.append(DeepKernel(k.phi, p.kernel) if isinstance(k, DeepKernel) else p.kernel)
            mmds.append(float(mmd2))
            variances.append(float(var))
    mmd_t = torch.tensor(mmds, dtype=torch.float64)
    var_t = torch.tensor(variances, dtype=torch.float64)
    crit = mmd_t / var_t.clamp_min(float(min_variance)).sqrt()
    crit = torch.where(torch.isnan(crit), torch.full_like(crit, -math.inf), crit)  # 0/0 with min_variance = 0
    finite = torch.isfinite(mmd_t) & torch.isfinite(var_t)
    crit = torch.where(finite, crit, torch.full_like(crit, -math.inf))  # an overflowed MMD² is never "best"
    best = int(torch.argmax(crit))
    bad = [int(i) for i in torch.nonzero(~finite).flatten()]
    return KernelSelection(resolved[best], best, crit, mmd_t, var_t, resolved), bad


def selected_mmd_test(
    x,
    y,
    candidates,
    *,
    train_fraction: float = 0.5,
    n_permutations: int = 1000,
    seed=None,
    backend: str = "auto",
    batch_size: int | None = None,
    min_variance: float = 1e-8,
    callback: Callable[[int], None] | None = None,
) -> MMDTestResult:
    r"""Permutation test with the kernel chosen by :func:`select_kernel` on a disjoint training split.

    Both samples are shuffled; the first n_tr = ⌊train_fraction · min(n, m)⌋ points of each select the kernel
    (maximising MMD²_u / √V̂), the remaining n − n_tr and m − n_tr points are tested with :func:`mmd_test`. The
    selection never sees the test points, so the test keeps its level exactly.

    Args:
        x, y: samples of shape (n, d), (m, d) (any (n, ...) shape for deep kernels).
        candidates: a non-empty sequence of kernels (see :func:`select_kernel`).
        train_fraction: in (0, 1); both parts need ≥ 2 points per sample.
        n_permutations, seed, backend, batch_size, callback: as in :func:`mmd_test` (``seed`` also fixes the split).
        min_variance: as in :func:`select_kernel`.

    Returns:
        :class:`MMDTestResult` on the test split, with ``selection`` set. ``p_value`` is NaN and ``reject()``
        False at every level when no candidate has a finite MMD²_u and variance on the training split (the test
        is then not run: ``statistic`` NaN, ``null_samples`` None) or when :func:`mmd_test` cannot decide.

    Raises:
        TypeError, ValueError: as :func:`select_kernel` and :func:`mmd_test`; ``train_fraction`` outside (0, 1) or
        leaving fewer than 2 points per sample on either side.

    Warns:
        NumericalWarning: once when the test cannot decide (naming the cause); once when some (not all)
        candidates were excluded from the selection for non-finite statistics.

    Example:
        >>> import torch, kernelmmd
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(200, 2, generator=g), 1.5 * torch.randn(200, 2, generator=g)
        >>> res = kernelmmd.selected_mmd_test(x, y, [kernelmmd.RBF(s) for s in (0.1, 1.0, 10.0)], seed=0)
        >>> res.n, res.m  # the other half selected the kernel
        (100, 100)
        >>> res.selection.kernel is res.selection.kernels[res.selection.index]
        True
    """
    ks = _as_candidates(candidates)
    deep = any(isinstance(k, DeepKernel) for k in ks)
    s = as_samples(("x", x), ("y", y), min_points=4, any_shape=deep)
    xt, yt = s.tensors
    if isinstance(train_fraction, bool) or not isinstance(train_fraction, numbers.Real) or not (
        0.0 < float(train_fraction) < 1.0
    ):
        raise ValueError(f"train_fraction must be a number in (0, 1), got {train_fraction!r}")
    n, m = xt.shape[0], yt.shape[0]
    n_tr = int(math.floor(float(train_fraction) * min(n, m)))
    if n_tr < 2 or n - n_tr < 2 or m - n_tr < 2:
        raise ValueError(
            f"train_fraction = {train_fraction} splits (n={n}, m={m}) into {n_tr} training and "
            f"({n - n_tr}, {m - n_tr}) test points per sample; each part needs at least 2"
        )
    gen = as_generator(seed)
    px, py = torch.randperm(n, generator=gen), torch.randperm(m, generator=gen)
    px, py = px.to(xt.device), py.to(yt.device)
    check_nonnegative("min_variance", min_variance)
    sel, bad = _select(xt[px[:n_tr]], yt[py[:n_tr]], ks, min_variance, backend)
    if len(bad) == len(ks):  # nothing to choose from: the test itself cannot decide
        B = check_int("n_permutations", n_permutations, minimum=1)
        pval = _undecided("selected_mmd_test", _bad_candidates(sel, bad) + " (so no test was run)")
        return MMDTestResult(math.nan, pval, sel.kernel, "permutation", n - n_tr, m - n_tr, None, B, selection=sel)
    if bad:
        warnings.warn(f"selected_mmd_test: {_bad_candidates(sel, bad)}", NumericalWarning, stacklevel=user_stacklevel())
    res = mmd_test(
        xt[px[n_tr:]],
        yt[py[n_tr:]],
        sel.kernel,
        n_permutations=n_permutations,
        seed=gen,
        backend=backend,
        batch_size=batch_size,
        callback=callback,
    )
    res.selection = sel
    if s.numpy and isinstance(res.null_samples, torch.Tensor):
        res.null_samples = res.null_samples.numpy()
    return res


# --------------------------------------------------------------------------------- unbiased variance estimates
def mmd2_variance_unbiased(x, y, kernel="rbf", *, backend: str = "auto", **params):
    r"""MMD²_u and an exactly unbiased estimate of its variance, for any n, m ≥ 4 (one fused block-stats pass).

    With U_X, U_Y the within-sample U-statistics and V = (1/nm) Σ k(x_i, y_j), MMD²_u = U_X + U_Y − 2V and

    .. math::
        \operatorname{Var}\mathrm{MMD}^2_u = \sum_{S\in\{X,Y\}} \frac{4(|S|-2)\zeta_1^S + 2\zeta_2^S}{|S|(|S|-1)}
          + 4\,\frac{\sigma^2_{XY} + (m-1)\xi_x + (n-1)\xi_y}{nm}
          - \frac{8}{n}\operatorname{Cov}_x(\mu_X, \mu_Y) - \frac{8}{m}\operatorname{Cov}_y(\mu_Y, \mu_X)

    with μ_S(a) = E_{s∼S} k(a, s), ζ₁^S = Var μ_S(s), ζ₂^S = Var k(s, s'), σ²_XY = Var k(x, y),
    ξ_x = Var_x μ_Y(x), ξ_y = Var_y μ_X(y). Every moment is replaced by a U-statistic over distinct indices built
    from the row sums and squared-entry sums of the three blocks (:class:`~kernelmmd.ops.BlockStats`), so the
    estimate is unbiased at every sample size (unlike the H1 estimator of :func:`~kernelmmd.mmd2_and_variance`,
    whose mean is ≈ 0.67× the true variance at m = 12). It can be slightly negative when the true variance is ~0.
    Valid under H0 and H1.

    Args:
        x: (n, d), y: (m, d) samples, n, m ≥ 4 (n ≠ m allowed). kernel, backend, **params: as in
            :func:`~kernelmmd.mmd2_unbiased`.

    Returns:
        ``(mmd2, variance)``: two floats.

    Raises:
        TypeError, ValueError: bad inputs, n or m < 4, unknown kernel or backend.

    Example:
        >>> import torch, kernelmmd
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(300, 2, generator=g), torch.randn(200, 2, generator=g) + 1
        >>> mmd2, var = kernelmmd.mmd2_variance_unbiased(x, y, sigma=1.0)
        >>> 0 < var < mmd2
        True
    """
    p = prepare([("x", x), ("y", y)], kernel, params, min_points=4)
    with torch.no_grad():
        st = block_stats(*p.tensors, p.kernel, variance=True, backend=backend)
        return float(mmd2_u(st)), float(mmd2_u_variance(st))


# ------------------------------------------------------------------------------------------------ relative test
def relative_mmd_test(
    x, y, z, kernel="poly", *, min_variance: float = 1e-10, backend: str = "auto", **params
) -> RelativeTestResult:
    r"""Relative similarity test (Bounliphone et al. 2016): is Y significantly closer to X than Z is?

    H0: MMD(P, Q_Y) ≥ MMD(P, Q_Z) against H1: MMD(P, Q_Y) < MMD(P, Q_Z), with

    .. math::
        \hat d = \mathrm{MMD}^2_u(X, Y) - \mathrm{MMD}^2_u(X, Z),\qquad
        p = \Phi\big(\hat d / \hat\sigma_d\big),\qquad \hat\sigma_d^2 = \max(\widehat{\operatorname{Var}}\,\hat d,\
        \text{min\_variance})

    by the joint asymptotic normality of the two estimates. The U_X parts of both estimates cancel, so d̂ needs only
    the XY, XZ, YY and ZZ blocks (two fused block-stats passes). The variance estimate is exactly unbiased at every
    sample size (derived in the source: the first-order terms are those of Bounliphone et al., plus the
    second-order terms); see :func:`mmd2_variance_unbiased` for the moments it uses.

    Default kernel: KID's cubic polynomial (x·y/d + 1)³ (``degree=3, gamma=None → 1/d, coef0=1``), so features in,
    p-value out is the relative KID test of the KID-adaptive learning-rate schedule (SPEC §9): x = real features,
    y = current samples, z = older samples; a small p-value means the model improved.

    Args:
        x: (n, d) reference samples, n ≥ 2. y: (m, d), z: (M, d) candidate samples, m, M ≥ 4 (sizes may differ).
        kernel, **params: kernel name/object and parameters (data-dependent ones are resolved on x, y, z pooled).
        min_variance: floor ≥ 0 on the variance estimate (the authors' code floors at 1e-5, a scale-dependent
            choice that makes their test conservative when Var d̂ < 1e-5, typical of KID with thousands of samples;
            pass ``min_variance=1e-5`` to reproduce it).
        backend: as in :func:`mmd_test`.

    Returns:
        :class:`RelativeTestResult`. ``p_value`` is NaN and ``reject()`` False at every level when d̂ or its
        variance estimate is not finite, or when σ̂ = 0 (only possible with ``min_variance=0`` and a variance
        estimate ≤ 0, e.g. a constant kernel): never a p of 0 or 1 from a division by zero.

    Raises:
        TypeError, ValueError: bad inputs (shapes, dimensions, NaN/Inf, n < 2, m or M < 4), unknown kernel or
        backend, negative ``min_variance``, ``kernel="rbf_bounded"``.

    Warns:
        NumericalWarning: once, naming the quantity and its value, when the test cannot decide (p = NaN).

    Example:
        >>> import torch, kernelmmd
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(500, 8, generator=g)
        >>> y, z = torch.randn(500, 8, generator=g) + 0.1, torch.randn(500, 8, generator=g) + 1.0
        >>> kernelmmd.relative_mmd_test(x, y, z).p_value < 0.01
        True
    """
    check_nonnegative("min_variance", min_variance)
    named = [("x", x), ("y", y), ("z", z)]
    p = prepare(named, kernel, params, min_points=2, resolve_on=3)
    _test_kernel(p.kernel)
    xt, yt, zt = p.tensors
    for name, t in (("y", yt), ("z", zt)):
        if t.shape[0] < 4:
            raise ValueError(f"{name} must have at least 4 points for the relative test's variance, got {t.shape[0]}")
    with torch.no_grad():
        sy = block_stats(xt, yt, p.kernel, variance=True, backend=backend)
        sz = block_stats(xt, zt, p.kernel, variance=True, backend=backend)
        n, m, M = sy.n, sy.m, sz.m
        d = sy.syy / (m * (m - 1)) - sz.syy / (M * (M - 1)) - 2.0 * sy.sxy / (n * m) + 2.0 * sz.sxy / (n * M)
        var = float(relative_variance(sy, sz))
        std = math.sqrt(max(var, float(min_variance))) if not math.isnan(var) else math.nan
        d = float(d)
        cause = _nonfinite([("the variance estimate of d̂", var)], (xt, yt, zt), p.kernel)
        if cause is not None and math.isfinite(d):
            pval = _undecided("relative_mmd_test", cause)
        else:  # Φ(d/σ), accurate in the lower tail; NaN with one warning for a non-finite d̂ or σ̂ = 0
            pval = _normal_p("relative_mmd_test", d, std, name="d̂ = MMD²_u(X, Y) − MMD²_u(X, Z)",
                             tensors=(xt, yt, zt), kernel=p.kernel, lower_tail=True,
                             zero_std=f"variance estimate {var!r} ≤ 0 and min_variance = 0; pass min_variance > 0")
        return RelativeTestResult(
            statistic=d,
            p_value=pval,
            std=std,
            variance=var,
            mmd2_xy=float(mmd2_u(sy)),
            mmd2_xz=float(mmd2_u(sz)),
            kernel=p.kernel,
        )
