r"""Aggregated MMD tests over many kernels: :func:`mmdagg_test` (MMDAgg, Schrab et al., JMLR 2023) and
:func:`mmdagginc_test` (MMDAggInc, Schrab et al., NeurIPS 2022), with their result type :class:`MMDAggResult`
(SPEC §14; docs/ARCHITECTURE.md, "Two-sample tests").

Every resampled statistic of MMDAgg is a quadratic form of the kernel matrices, so B of them for every kernel come
from one ``quad_forms`` (permutations: eᵀK_λe) or ``h_quad_forms`` (wild bootstrap: εᵀH_λε with the n × n matrix
H_λ = K_XX + K_YY − K_XY − K_YX) pass per batch of columns: the N × N matrix is never formed on the fused backends.
MMDAggInc's statistic is a sum over R·N pairs only, formed from the pair values directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .. import ops
from .._validate import as_generator, check_choice, check_int, to_output
from ._common import (
    _check_level,
    check_families,
    compute_dtype,
    family_collection,
    likely_cause,
    lp_distances,
    nonfinite,
    prepare_samples,
    undecided,
)
from .permutation import BATCH_ENTRIES, check_resampling, resample_batches, split_statistics, tie_tolerance

__all__ = ["MMDAggResult", "mmdagg_test", "mmdagginc_test", "agg_weights", "mmdagg_bandwidths"]

WEIGHTS = ("uniform", "increasing", "decreasing", "centred")
RESAMPLING = ("auto", "wild bootstrap", "permutation")
#: at most this many points of X and of Y enter the bandwidth grid (their cross distances), as in the reference
MAX_SAMPLES = 500
#: bisection steps of the level correction (B3 of the reference)
BISECTION_STEPS = 50
#: λ → our σ for MMDAgg's kernels: gaussian exp(−d²/λ²) = RBF(σ = λ/√2), laplace exp(−d₁/λ) = L1Laplacian(σ = λ)
SIGMA_PER_LAMBDA = {"gaussian": 1.0 / math.sqrt(2.0), "laplace": 1.0}


# ----------------------------------------------------------------------------------------------------- result
@dataclass
class MMDAggResult:
    r"""Outcome of :func:`mmdagg_test` / :func:`mmdagginc_test`: one single test per (kernel, bandwidth) λ, rejected
    at level α when some λ's statistic exceeds its (1 − u·w_λ)-quantile, u the level correction.

    Attributes:
        reject: the aggregated decision at ``alpha`` (False when the test cannot decide).
        alpha: the level the correction u was computed for.
        statistics: observed statistic per λ, shape (Λ,), float64 (MMD²_u for permutations; for the wild bootstrap
            Σ_{i≠j} h(z_i, z_j) / (n(n − 1)) with h = k(x_i,x_j) + k(y_i,y_j) − k(x_i,y_j) − k(x_j,y_i); MMDAggInc:
            the mean of h over the chosen pairs).
        quantiles: the (1 − u·w_λ)-quantile of the B1 resampled statistics and the observed one, per λ.
        p_values: per-λ p-values #{b ≤ B1 + 1 : M_b ≥ M_obs} / (B1 + 1) (the observed statistic counted; never 0).
        thresholds: u·w_λ: λ rejects iff its p-value ≤ its threshold (iff its statistic > its quantile).
        rejects: bool per λ. u: the level correction (NaN when the test cannot decide).
        kernels: our kernel per λ (``RBF(sigma=...)``, ``L1Laplacian(sigma=...)``); families: ``"gaussian"`` or
            ``"laplace"`` per λ; bandwidths: λ in the reference's convention (see :func:`mmdagg_test`); weights: w_λ
            (summing to 1).
        method: ``"wild bootstrap"``, ``"permutation"`` or ``"wild bootstrap, incomplete U-statistic"``.
        n, m: sample sizes used. n_permutations, n_correction: B1 and B2.
        null_samples: the B1 + B2 resampled statistics, shape (Λ, B1 + B2) (the first B1 give the quantiles, the
            last B2 the level correction); numpy for numpy inputs.
        pairs: MMDAggInc: the number of pairs (i, j) its statistic sums over; None for MMDAgg.
    """

    reject: bool
    alpha: float
    statistics: object
    quantiles: object
    p_values: object
    thresholds: object
    rejects: object
    u: float
    kernels: list
    families: tuple
    bandwidths: object
    weights: object
    method: str
    n: int
    m: int
    n_permutations: int
    n_correction: int
    null_samples: object = field(default=None, repr=False)
    pairs: int | None = None
    _tol: object = field(default=None, repr=False)

    @property
    def rejected_by(self) -> list[tuple[str, float]]:
        """(family, λ) of every single test that rejected."""
        return [(f, float(b)) for f, b, r in zip(self.families, self.bandwidths, self.rejects) if bool(r)]

    def reject_at(self, alpha: float) -> bool:
        """The aggregated decision at another level: the level correction recomputed from the stored resamples."""
        _check_level(alpha)
        stat, null, w = (torch.as_tensor(v, dtype=torch.float64) for v in (self.statistics, self.null_samples,
                                                                         self.weights))
        if not (torch.isfinite(stat).all() and torch.isfinite(null).all()):
            return False
        return bool(_aggregate(stat, null, w, float(alpha), self.n_permutations, self._tol)["rejects"].any())

    def __repr__(self) -> str:
        verdict = "reject" if self.reject else ("cannot decide" if math.isnan(self.u) else "do not reject")
        hits = self.rejected_by
        which = ", ".join(f"{f}(λ={b:.3g})" for f, b in hits[:4]) + (", …" if len(hits) > 4 else "")
        which = f"{len(hits)} of {len(self.families)}" + (f": {which}" if hits else "")
        return (f"MMDAggResult({verdict} H0 at alpha={self.alpha:g}; {self.method}, n={self.n}, m={self.m}, "
                f"kernels {sorted(set(self.families))}, B1={self.n_permutations}, "
                f"B2={self.n_correction}, u={self.u:.4g}; rejected by: {which})")


# -------------------------------------------------------------------------------------------- collection, weights
def agg_weights(count: int, kind: str) -> list[float]:
    """MMDAgg's weights over ``count`` bandwidths of one kernel (Schrab et al. 2023, §5.1), summing to 1.

    uniform 1/K; decreasing ∝ 1/i; increasing ∝ 1/(K + 1 − i); centred ∝ 1/(|(K + 1)/2 − i| + 1) (odd K) or
    1/(|(K + 1)/2 − i| + ½) (even K), i = 1..K.
    """
    check_choice("weights", kind, WEIGHTS)
    idx = range(1, count + 1)
    if kind == "uniform":
        return [1 / count] * count
    if kind in ("decreasing", "increasing"):
        norm = sum(1 / i for i in idx)
        return [1 / ((i if kind == "decreasing" else count + 1 - i) * norm) for i in idx]
    shift = 1 if count % 2 == 1 else 0.5
    norm = sum(1 / (abs((count + 1) / 2 - i) + shift) for i in idx)
    return [1 / ((abs((count + 1) / 2 - i) + shift) * norm) for i in idx]


def mmdagg_bandwidths(x: torch.Tensor, y: torch.Tensor, p: int, count: int) -> list[float]:
    """MMDAgg's geometric grid of ``count`` bandwidths λ from the L_p cross distances of the first ≤ 500 points of x, y.

    λ_min = (min distance, or max(5% quantile, 0.1) if the min is < 0.1) / 2, λ_max = 2·max(max distance, 0.3),
    λ_r = λ_min·c^r with c = (λ_max / λ_min)^(1/(count − 1)), r = 0..count − 1.
    """
    d = lp_distances(x[:MAX_SAMPLES], y[:MAX_SAMPLES], p).flatten().cpu()
    lo = float(d.min())
    if lo < 0.1:
        lo = max(float(d.sort().values[int(math.floor(d.numel() * 0.05))]), 0.1)
    lo = lo / 2
    hi = max(float(d.max()), 0.3) * 2
    power = (hi / lo) ** (1 / (count - 1))
    return [power**i * lo for i in range(count)]


# -------------------------------------------------------------------------------------------------- resampling
def _signs(n: int, count: int, gen: torch.Generator) -> torch.Tensor:
    """(n, count) float64 Rademacher signs ε ∈ {±1}, drawn on the CPU generator column after column (so the
    resamples do not depend on the batch size)."""
    return torch.randint(0, 2, (count, n), generator=gen, dtype=torch.float64).mul_(2.0).sub_(1.0).T


def _wild_statistics(x, y, kernels, count, gen, backend, batch_size, callback):
    r"""Wild bootstrap (n = m): Σ_ij ε_iε_j h_λ(z_i, z_j) − Σ_i h_λ(z_i, z_i) is Σ_{i≠j} ε_iε_j h_λ(z_i, z_j) (the
    i = j terms do not depend on ε: ε_i² = 1), divided by n(n − 1); one ``h_quad_forms`` pass (all kernels) per
    batch of signs, the first one also returning 1ᵀK_λ1 (the size of the cancelling terms).
    Returns ``(observed (Λ,), magnitude (Λ,), null (Λ, count))`` as :func:`split_statistics` does."""
    n = x.shape[0]
    z = torch.cat([x, y])  # (2n, d): the auto backend rules see the pooled sample, as for the permutations
    hq = ops.dispatch("h_quad_forms", backend, z, z)
    const = torch.stack([(k.pairwise(x, x) + k.pairwise(y, y) - 2.0 * k.pairwise(x, y)).double().sum()
                         for k in kernels])[:, None].cpu()  # (Λ, 1) the i = j terms, O(n d)
    scale = n * (n - 1)
    head = torch.ones(n, 1, dtype=torch.float64)  # the observed ε = 1
    draw = lambda c: _signs(n, c, gen)  # noqa: E731
    null = []
    for v, first in resample_batches(draw, count, head, 2 * n, x.device, batch_size, callback):
        if first:
            forms, total = hq(x, y, v, kernels, total=True)  # (Λ, cols) εᵀH_λε, (Λ,) 1ᵀK_λ1
            stats = (forms.cpu() - const) / scale
            magnitude, observed, stats = total.cpu() / scale, stats[:, 0], stats[:, 1:]
        else:
            stats = (hq(x, y, v, kernels).cpu() - const) / scale
        null.append(stats)
    return observed, magnitude, torch.cat(null, 1)


def _incomplete_statistics(x, y, kernels, R, count, gen, batch_size, callback):
    r"""MMDAggInc: the mean of h(i, j) = k(x_i,x_j) − k(x_i,y_j) − k(y_i,x_j) + k(y_i,y_j) over the pairs
    (i, i + r), r = 1..R, and its wild-bootstrap copies Σ ε_iε_j h(i, j) / L: O(L·d) pair values per batch, O(L·B)."""
    N = x.shape[0]
    L = R * N - R * (R + 1) // 2  # Σ_r (N − r)
    size = batch_size if batch_size is not None else max(1, BATCH_ENTRIES // N)
    null, observed, done = [], None, 0
    while done < count:
        c = min(size, count - done)
        eps = _signs(N, c, gen).to(x.device)  # (N, c)
        if observed is None:
            eps = torch.cat([torch.ones(N, 1, dtype=torch.float64, device=x.device), eps], 1)  # observed: ε = 1
        acc = torch.zeros(len(kernels), eps.shape[1], dtype=torch.float64, device=x.device)
        mag = torch.zeros(len(kernels), dtype=torch.float64, device=x.device)
        for r in range(1, R + 1):
            a, b, ya, yb = x[:-r], x[r:], y[:-r], y[r:]  # pairs (i, i + r)
            h = torch.stack([k.pairwise(a, b) - k.pairwise(a, yb) - k.pairwise(ya, b) + k.pairwise(ya, yb)
                             for k in kernels]).double()  # (Λ, N − r)
            acc += h @ (eps[:-r] * eps[r:])  # (Λ, cols)
            mag += h.abs().sum(1)
        acc = acc.cpu() / L
        if observed is None:
            observed, magnitude, acc = acc[:, 0], mag.cpu() / L, acc[:, 1:]
        null.append(acc)
        done += c
        if callback is not None:
            callback(c)
    return observed, magnitude, torch.cat(null, 1), L


# ------------------------------------------------------------------------------------------- level correction
def _aggregate(stat, null, weights, alpha, B1, tol, steps: int = BISECTION_STEPS) -> dict:
    r"""The MMDAgg decision from observed statistics (Λ,) and resamples (Λ, B1 + B2).

    M1 = the first B1 resamples and the observed statistic (sorted per λ), M2 = the last B2. For u ∈ [0, min 1/w],
    q_λ(u) = the ⌈(B1 + 1)(1 − u·w_λ)⌉-th smallest of M1_λ; ``steps`` bisection steps find the largest u with
    #{b ≤ B2 : some λ has M2_λb > q_λ(u)} / B2 ≤ α. λ rejects when stat_λ − tol_λ > q_λ(u) (ties with the
    observed statistic up to rounding count as ≥), equivalently p_λ ≤ u·w_λ.
    """
    m1 = torch.cat([null[:, :B1], stat[:, None]], 1).sort(1).values  # (Λ, B1 + 1)
    m2 = null[:, B1:]  # (Λ, B2)

    def quantiles(u):
        k = torch.ceil((B1 + 1) * (1 - u * weights)).long().sub(1).clamp(0, B1)  # (Λ,) 0-based rank
        return m1.gather(1, k[:, None])[:, 0]

    lo, hi = 0.0, min(1 / float(w) for w in weights)
    for _ in range(steps):
        u = (hi + lo) / 2
        if float((m2 > quantiles(u)[:, None]).any(0).sum()) / m2.shape[1] <= alpha:
            lo = u
        else:
            hi = u
    q = quantiles(lo)
    p = (m1 >= (stat - tol)[:, None]).sum(1).double() / (B1 + 1)
    return dict(u=lo, quantiles=q, p_values=p, thresholds=lo * weights, rejects=stat - tol > q)


def _result(stat, scale, null, z, kernels, families, lams, weights, alpha, B1, B2, method, n, m, numpy, test,
            pairs=None) -> MMDAggResult:
    """Apply the cannot-decide rule, aggregate, and package the result."""
    L = len(kernels)
    tol = tie_tolerance(z, scale)
    cause = nonfinite([(f"the statistic for {kernels[i]!r}", stat[i]) for i in range(L)], (z,), kernels[0])
    bad = int((~torch.isfinite(null)).sum())
    if cause is None and bad:
        cause = (f"{bad} of the {null.numel()} resampled (null) statistics are not finite; "
                 f"{likely_cause((z,), kernels[0])}")
    if cause is None:
        agg = _aggregate(stat, null, weights, alpha, B1, tol)
    else:
        undecided(test, cause)
        nan = torch.full((L,), math.nan, dtype=torch.float64)
        agg = dict(u=math.nan, quantiles=nan, p_values=nan, thresholds=nan, rejects=torch.zeros(L, dtype=torch.bool))
    out = lambda t: to_output(t, numpy)  # noqa: E731
    return MMDAggResult(
        reject=bool(agg["rejects"].any()), alpha=float(alpha), statistics=out(stat), quantiles=out(agg["quantiles"]),
        p_values=out(agg["p_values"]), thresholds=out(agg["thresholds"]), rejects=out(agg["rejects"]), u=agg["u"],
        kernels=kernels, families=families, bandwidths=out(torch.tensor(lams, dtype=torch.float64)),
        weights=out(weights), method=method, n=n, m=m, n_permutations=B1, n_correction=B2, null_samples=out(null),
        pairs=pairs, _tol=tol,
    )


def _collection(xt, yt, kernels, n_bandwidths, weights, sigma_per_lambda, bandwidths):
    """Families, λ, our kernels and weights (each family's weights divided by the number of families)."""
    names = check_families(kernels)
    w = agg_weights(n_bandwidths, weights)
    fams, lams, ks = family_collection(names, n_bandwidths, sigma_per_lambda,
                                       lambda p: bandwidths(xt, yt, p, n_bandwidths))
    ws = [v / len(names) for v in w] * len(names)
    return tuple(fams), lams, ks, torch.tensor(ws, dtype=torch.float64)


def _check_common(alpha, n_permutations, n_correction, batch_size, callback):
    _check_level(alpha)
    B1, _ = check_resampling(n_permutations, batch_size, callback)
    B2 = check_int("n_correction", n_correction, minimum=1)
    return float(alpha), B1, B2


# ---------------------------------------------------------------------------------------------------- the tests
def mmdagg_test(
    x,
    y,
    *,
    alpha: float = 0.05,
    kernels=("laplace", "gaussian"),
    n_bandwidths: int = 10,
    weights: str = "uniform",
    n_permutations: int = 2000,
    n_correction: int = 2000,
    resampling: str = "auto",
    seed=None,
    backend: str = "auto",
    batch_size: int | None = None,
    callback: Callable[[int], None] | None = None,
) -> MMDAggResult:
    r"""MMDAgg (Schrab, Kim, Albert, Laurent, Guedj & Gretton, JMLR 2023): the MMD test aggregated over a collection
    Λ of kernels and bandwidths, with a level correction so that the aggregated test has level α (SPEC §14).

    **Collection.** For each family in ``kernels`` (``"laplace"``: k = exp(−‖a−b‖₁/λ), an L1 kernel;
    ``"gaussian"``: k = exp(−‖a−b‖²/λ²)), ``n_bandwidths`` values λ on a geometric grid from the L1 resp. L2 cross
    distances of the first ≤ 500 points of X and Y (:func:`mmdagg_bandwidths`). These are the reference's kernels
    (``mmdagg/jax.py``, ``np.py``); as our kernels they are ``L1Laplacian(sigma=λ)`` and ``RBF(sigma=λ/√2)``
    (``result.kernels``). Weights w_λ (:func:`agg_weights`), divided by the number of families (Σ w = 1).

    **Resampling** (``resampling="auto"``: wild bootstrap when n = m, permutations otherwise). Wild bootstrap,
    pairing x_i with y_i: with ε ∈ {±1}ⁿ and h(z_i, z_j) = k(x_i,x_j) + k(y_i,y_j) − k(x_i,y_j) − k(x_j,y_i),

    .. math:: M_\lambda(\varepsilon) = \frac{1}{n(n-1)} \sum_{i \ne j} \varepsilon_i \varepsilon_j h_\lambda(z_i, z_j)
              = \frac{v^\top K_\lambda v - \sum_i [k(x_i,x_i) + k(y_i,y_i) - 2k(x_i,y_i)]}{n(n-1)},
              \quad v = [\varepsilon; -\varepsilon]

    (the observed statistic is ε = 1). Permutations: M_λ = MMD²_u of a uniformly random split of the pooled sample
    (the observed split included), as :func:`~kernelmmd.mmd_test`. B1 + B2 resamples plus the observed one.

    **Decision.** q_λ(u) is the (1 − u·w_λ)-quantile of the B1 resamples and the observed statistic; u is the largest
    value (50 bisection steps on [0, min 1/w_λ]) such that at most a fraction α of the B2 held-back resamples have
    some M_λ > q_λ(u). The test rejects when some observed M_λ > q_λ(u), equivalently p_λ ≤ u·w_λ with
    p_λ = #{M_λ,b ≥ M_λ,obs} / (B1 + 1).

    **Cost.** Every resampled statistic is a quadratic form (εᵀH_λε, eᵀK_λe): one ``h_quad_forms`` / ``quad_forms``
    pass (all kernels) per batch of columns, O(|Λ|·N²·(d + B1 + B2)) time and O(N·B_batch) memory, N = n + m; the
    kernel matrix is never formed on the fused backends (``backend``). The ``tiled`` backend visits the upper
    triangle only and shares each distance tile within a family: for the wild bootstrap 2n² kernel values and
    n²(B1 + B2)/2 float64 multiply-adds per kernel. The same seed gives the same resamples on every device and batch
    size.

    Args:
        x, y: samples, shapes (n, d) and (m, d) (or (n,)), n, m ≥ 2 (wild bootstrap: n = m, x_i paired with y_i).
        alpha: level in (0, 1) (the correction u is computed for it; :meth:`MMDAggResult.reject_at` redoes it).
        kernels: families, a subset of ``("laplace", "gaussian")`` (or one name).
        n_bandwidths: bandwidths per family, ≥ 2.
        weights: ``"uniform"``, ``"increasing"``, ``"decreasing"`` or ``"centred"``.
        n_permutations: B1 ≥ 1 resamples for the quantiles. n_correction: B2 ≥ 1 resamples for the correction.
        resampling: ``"auto"``, ``"wild bootstrap"`` (needs n = m) or ``"permutation"``.
        seed: int ≥ 0, a CPU ``torch.Generator`` or None (non-reproducible).
        backend: ``"auto"`` or a backend of :mod:`kernelmmd.ops`.
        batch_size: resamples per pass (default ⌊2²⁴/N⌋). callback: called with the resamples done per batch.

    Returns:
        :class:`MMDAggResult`. When a statistic or a resample is not finite the test cannot decide: one
        NumericalWarning, ``reject`` False, p-values and u NaN.

    Raises:
        TypeError, ValueError: bad x / y (shape, NaN/Inf, n or m < 2), ``alpha`` outside (0, 1), an unknown kernel
        family, weights or resampling, integers < their minimum, ``"wild bootstrap"`` with n ≠ m, a bad seed.

    Example:
        >>> import torch, kernelmmd
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(100, 2, generator=g), torch.randn(100, 2, generator=g) + 1.0
        >>> kernelmmd.mmdagg_test(x, y, n_permutations=200, n_correction=200, seed=0).reject
        True
    """
    alpha, B1, B2 = _check_common(alpha, n_permutations, n_correction, batch_size, callback)
    check_choice("resampling", resampling, RESAMPLING)
    xt, yt, numpy, amax = prepare_samples(x, y, n_bandwidths)
    n, m = xt.shape[0], yt.shape[0]
    if resampling == "wild bootstrap" and n != m:
        raise ValueError(f"resampling='wild bootstrap' pairs x_i with y_i and needs n = m, got n = {n}, m = {m}; "
                         "use resampling='permutation' (or 'auto')")
    wild = resampling == "wild bootstrap" or (resampling == "auto" and n == m)
    gen = as_generator(seed)
    fams, lams, ks, w = _collection(xt, yt, kernels, n_bandwidths, weights, SIGMA_PER_LAMBDA, mmdagg_bandwidths)
    xt, yt = compute_dtype(xt, yt, ks, amax)
    z = torch.cat([xt, yt])
    with torch.no_grad():
        if wild:
            stat, scale, null = _wild_statistics(xt, yt, ks, B1 + B2, gen, backend, batch_size, callback)
        else:
            stat, scale, null = split_statistics(z, n, ks, B1 + B2, gen, backend, batch_size, callback)
    method = "wild bootstrap" if wild else "permutation"
    return _result(stat, scale, null, z, ks, fams, lams, w, alpha, B1, B2, method, n, m, numpy, "mmdagg_test")


def mmdagginc_test(
    x,
    y,
    *,
    R: int = 200,
    alpha: float = 0.05,
    kernels=("gaussian",),
    n_bandwidths: int = 10,
    weights: str = "uniform",
    n_permutations: int = 500,
    n_correction: int = 500,
    seed=None,
    batch_size: int | None = None,
    callback: Callable[[int], None] | None = None,
) -> MMDAggResult:
    r"""MMDAggInc (Schrab, Kim, Guedj & Gretton, NeurIPS 2022): MMDAgg on an incomplete U-statistic, from linear
    (R fixed) to quadratic (R = N − 1) time.

    With N = min(n, m) (the first N points of each sample, x_i paired with y_i; the bandwidth grid is computed
    before this truncation, as in the reference) and the pairs D_R = {(i, i + r):
    r = 1..R, i + r ≤ N} (the R superdiagonals, L = R·N − R(R + 1)/2 pairs),

    .. math:: M_\lambda(\varepsilon) = \frac{1}{L} \sum_{(i,j) \in D_R} \varepsilon_i \varepsilon_j
              \big[k(x_i,x_j) - k(x_i,y_j) - k(y_i,x_j) + k(y_i,y_j)\big]

    with Rademacher ε (wild bootstrap; the observed statistic is ε = 1). Collection, weights and the level correction
    are those of :func:`mmdagg_test` (the reference, ``agginc``, uses the Gaussian kernel exp(−d²/λ²) with the L2
    grid, the default here; ``kernels=("laplace", "gaussian")`` adds the L1 Laplace family).

    **Cost.** O(|Λ|·L·(d + B1 + B2)) time (L pair values per kernel and batch of resamples, recomputed per batch),
    O(N·B_batch + |Λ|·N) memory; no kernel matrix and no fused pass (the pair values are elementwise, on the inputs'
    device). R ≥ N − 1 gives the complete U-statistic (all pairs i < j) in quadratic time.

    Args:
        x, y: samples (n, d), (m, d), min(n, m) ≥ 2. R: number of superdiagonals, ≥ 1 (capped at N − 1).
        alpha, kernels, n_bandwidths, weights, seed, batch_size, callback: as :func:`mmdagg_test`.
        n_permutations: B1 ≥ 1 wild-bootstrap resamples for the quantiles (reference default 500).
        n_correction: B2 ≥ 1 resamples for the level correction (reference default 500).

    Returns:
        :class:`MMDAggResult` with ``method="wild bootstrap, incomplete U-statistic"`` and ``pairs`` = L.

    Raises:
        TypeError, ValueError: as :func:`mmdagg_test`; ``R`` not an int ≥ 1.

    Example:
        >>> import torch, kernelmmd
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g) + 1.0
        >>> kernelmmd.mmdagginc_test(x, y, R=20, n_permutations=200, n_correction=200, seed=0).reject
        True
    """
    alpha, B1, B2 = _check_common(alpha, n_permutations, n_correction, batch_size, callback)
    check_int("R", R, minimum=1)
    xt, yt, numpy, amax = prepare_samples(x, y, n_bandwidths)
    N = min(xt.shape[0], yt.shape[0])
    R = min(int(R), N - 1)
    gen = as_generator(seed)
    fams, lams, ks, w = _collection(xt, yt, kernels, n_bandwidths, weights, SIGMA_PER_LAMBDA, mmdagg_bandwidths)
    xt, yt = compute_dtype(xt[:N], yt[:N], ks, amax)  # the grid saw the first ≤ 500 of each sample, as the reference
    with torch.no_grad():
        stat, scale, null, L = _incomplete_statistics(xt, yt, ks, R, B1 + B2, gen, batch_size, callback)
    return _result(stat, scale, null, torch.cat([xt, yt]), ks, fams, lams, w, alpha, B1, B2,
                   "wild bootstrap, incomplete U-statistic", N, N, numpy, "mmdagginc_test", pairs=L)

