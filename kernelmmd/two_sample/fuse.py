r"""MMD-FUSE (Biggs, Schrab & Gretton, NeurIPS 2023): :func:`mmdfuse_test` and :class:`MMDFuseResult` (SPEC §14;
docs/ARCHITECTURE.md, "Two-sample tests").

The permuted MMD²_u of every kernel come from the batched split machinery of :func:`~kernelmmd.mmd_test` (one
``quad_forms`` pass, all kernels, per batch of split indicators); the normalisers N̂_λ are one more ``quad_forms`` pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .. import ops
from .._validate import as_generator, check_positive, to_output
from ._common import (
    _check_level,
    _rejects,
    check_families,
    compute_dtype,
    family_collection,
    family_kernels,
    likely_cause,
    lp_distances,
    nonfinite,
    prepare_samples,
    undecided,
)
from .permutation import check_resampling, split_statistics, tie_tolerance

__all__ = ["MMDFuseResult", "mmdfuse_test", "fuse_bandwidths"]

#: at most this many pooled points (a uniformly random subset, drawn from the test's generator) enter the grid
MAX_POINTS = 2000
#: λ → our σ for MMD-FUSE's kernels: gaussian exp(−d²/(2λ²)) = RBF(σ = λ), laplace exp(−√2·d₁/λ) = L1Laplacian(λ/√2)
SIGMA_PER_LAMBDA = {"gaussian": 1.0, "laplace": 1.0 / math.sqrt(2.0)}
#: σ of k² relative to σ of k: exp(−t/(2σ²))² = RBF(σ/√2), exp(−d₁/σ)² = L1Laplacian(σ/2)
SQUARE_SIGMA = {"gaussian": 1.0 / math.sqrt(2.0), "laplace": 0.5}


@dataclass
class MMDFuseResult:
    r"""Outcome of :func:`mmdfuse_test`.

    Attributes:
        statistic: FUSE = log((1/|Λ|) Σ_λ exp(t·M̂_λ)) of the observed split (float; NaN when not computable).
        p_value: (1 + #{b : FUSE_b ≥ FUSE_obs}) / (B + 1), never 0; NaN when the test cannot decide.
        reject: p_value ≤ alpha (False when the test cannot decide). alpha: the level of ``reject``.
        statistics: the observed M̂_λ = c·MMD²_u,λ / N̂_λ per kernel, shape (|Λ|,).
        kernels, families, bandwidths: our kernel, its family and λ (the reference's convention) per entry.
        n, m: sample sizes. n_permutations: B. lambda_multiplier: t.
        null_samples: the B permuted FUSE statistics, shape (B,) (numpy for numpy inputs).
    """

    statistic: float
    p_value: float
    reject: bool
    alpha: float
    statistics: object
    kernels: list
    families: tuple
    bandwidths: object
    n: int
    m: int
    n_permutations: int
    lambda_multiplier: float
    null_samples: object = field(default=None, repr=False)

    def reject_at(self, alpha: float) -> bool:
        """p ≤ alpha; always False when the p-value is NaN (the test could not decide)."""
        _check_level(alpha)
        return _rejects(self.p_value, alpha)

    def __repr__(self) -> str:
        verdict = "reject" if self.reject else ("cannot decide" if math.isnan(self.p_value) else "do not reject")
        return (f"MMDFuseResult({verdict} H0 at alpha={self.alpha:g}; FUSE={self.statistic:.6g}, "
                f"p={self.p_value:.4g}, n={self.n}, m={self.m}, {len(self.families)} kernels "
                f"{sorted(set(self.families))}, B={self.n_permutations})")


def fuse_bandwidths(z: torch.Tensor, p: int, count: int, gen: torch.Generator | None = None) -> list[float]:
    """MMD-FUSE's linear grid of ``count`` bandwidths from the L_p distances of the pooled sample z.

    The distances d(z_i, z_j), i ≤ j (the zeros of the diagonal included, as in the reference) with every zero
    replaced by their median; λ from (5% quantile)/2 to 2·(95% quantile), evenly spaced. Above ``MAX_POINTS`` pooled
    points a uniformly random subset of that many (from ``gen``) is used: a function of the pooled sample and of
    independent randomness, so the permutation test stays exact.
    """
    if z.shape[0] > MAX_POINTS:
        z = z[torch.randperm(z.shape[0], generator=gen)[:MAX_POINTS].to(z.device)]
    N = z.shape[0]
    iu = torch.triu_indices(N, N, device=z.device)
    d = lp_distances(z, z, p)[iu[0], iu[1]].cpu().sort().values  # (N(N+1)/2,)
    L = d.numel()
    median = float(d[L // 2]) if L % 2 else 0.5 * (float(d[L // 2 - 1]) + float(d[L // 2]))
    d = torch.where(d == 0, torch.full_like(d, median), d).sort().values
    lo, hi = float(d[int(math.floor(L * 0.05))]) / 2, float(d[int(math.floor(L * 0.95))]) * 2
    return torch.linspace(lo, hi, count, dtype=torch.float64).tolist()


def _frobenius(z, names, kernels, backend) -> torch.Tensor:
    """N̂_λ = √(Σ_{i≠j} k_λ(z_i, z_j)²) per kernel: k² is the same family at a smaller σ, so 1ᵀK²1 for all the
    kernels is one ``quad_forms`` pass with v = 1 (distances shared within a family)."""
    k2s = [family_kernels(name, [k.sigma * SQUARE_SIGMA[name]])[0] for name, k in zip(names, kernels)]
    ones = torch.ones(z.shape[0], 1, dtype=torch.float64, device=z.device)
    sums = ops.dispatch("quad_forms", backend, z, z)(z, ones, k2s)[:, 0]  # (Λ,) 1ᵀK²_λ1
    diag = torch.stack([k2.pairwise(z, z).double().sum() for k2 in k2s])
    return (sums - diag).clamp_min(0.0).sqrt().cpu()  # (Λ,)


def mmdfuse_test(
    x,
    y,
    *,
    alpha: float = 0.05,
    kernels=("laplace", "gaussian"),
    n_bandwidths: int = 10,
    n_permutations: int = 2000,
    lambda_multiplier: float = 1.0,
    seed=None,
    backend: str = "auto",
    batch_size: int | None = None,
    callback: Callable[[int], None] | None = None,
) -> MMDFuseResult:
    r"""MMD-FUSE (Biggs, Schrab & Gretton, NeurIPS 2023): a permutation test whose statistic fuses the normalised
    MMD²_u of many kernels by a soft maximum, without data splitting (SPEC §14).

    For each kernel λ (families ``"laplace"``: exp(−√2·‖a−b‖₁/λ) = ``L1Laplacian(sigma=λ/√2)``, ``"gaussian"``:
    exp(−‖a−b‖²/(2λ²)) = ``RBF(sigma=λ)``, the reference's ``mmdfuse.py`` conventions; ``n_bandwidths`` λ each from
    :func:`fuse_bandwidths`) and each split of the pooled sample (n' = min(n, m)),

    .. math::
        \hat M_\lambda = \frac{\big(n'(n'-1)\big)^{3/2}\,\mathrm{MMD}^2_{u,\lambda}}{\hat N_\lambda},\qquad
        \hat N_\lambda = \Big(\sum_{i \ne j} k_\lambda(z_i, z_j)^2\Big)^{1/2},\qquad
        \mathrm{FUSE} = \log \frac{1}{|\Lambda|} \sum_\lambda \exp\big(t \hat M_\lambda\big)

    (N̂_λ is over the pooled sample, hence the same for every split; k² is k at σ/√2 (gaussian) or σ/2 (laplace), so
    N̂_λ is one kernel sum). The observed split and B uniformly random ones give
    p = (1 + #{b : FUSE_b ≥ FUSE_obs}) / (B + 1); splits whose statistic equals the observed one up to rounding count
    as ties (≥). Reject when p ≤ α.

    **Cost.** One ``quad_forms`` pass (all kernels) per batch of split indicators plus one for the N̂_λ:
    O(|Λ|·N²·(d + B)) time, O(N·B_batch) memory (N = n + m; the ``tiled`` backend visits the upper triangle only and
    shares distances within a family); the grid uses the distances of ≤ 2000 pooled points.

    Args:
        x, y: samples, shapes (n, d), (m, d), n, m ≥ 2 (m ≠ n is fine).
        alpha: level in (0, 1). kernels: a subset of ``("laplace", "gaussian")``. n_bandwidths: λ per family, ≥ 2.
        n_permutations: B ≥ 1. lambda_multiplier: t > 0 (the reference's default 1).
        seed: int ≥ 0, a CPU ``torch.Generator``, or None. backend: ``"auto"`` or a backend of :mod:`kernelmmd.ops`.
        batch_size: permutations per pass (default ⌊2²⁴/N⌋). callback: called with the permutations done.

    Returns:
        :class:`MMDFuseResult`. A statistic or permuted statistic that is not finite: the test cannot decide (one
        NumericalWarning, p NaN, ``reject`` False).

    Raises:
        TypeError, ValueError: bad x / y, ``alpha`` outside (0, 1), unknown kernel families, integers below their
        minimum, ``lambda_multiplier`` not > 0, a bad seed or callback.

    Example:
        >>> import torch, kernelmmd
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(100, 2, generator=g), torch.randn(100, 2, generator=g) + 1.0
        >>> kernelmmd.mmdfuse_test(x, y, n_permutations=200, seed=0).reject
        True
    """
    _check_level(alpha)
    B, _ = check_resampling(n_permutations, batch_size, callback)
    check_positive("lambda_multiplier", lambda_multiplier)
    names = check_families(kernels)
    xt, yt, numpy, amax = prepare_samples(x, y, n_bandwidths)
    n, m = xt.shape[0], yt.shape[0]
    gen = as_generator(seed)
    z = torch.cat([xt, yt])
    fams, lams, ks = family_collection(names, n_bandwidths, SIGMA_PER_LAMBDA,
                                       lambda p: fuse_bandwidths(z, p, n_bandwidths, gen))
    xt, yt = compute_dtype(xt, yt, ks, amax)
    z = torch.cat([xt, yt])
    t = float(lambda_multiplier)
    with torch.no_grad():
        mmd2, scale, null = split_statistics(z, n, ks, B, gen, backend, batch_size, callback)  # (Λ,), (Λ,), (Λ, B)
        norm = _frobenius(z, fams, ks, backend)  # (Λ,)
    c = (min(n, m) * (min(n, m) - 1)) ** 1.5 / norm  # (Λ,)
    fuse = lambda mh: torch.logsumexp(t * mh, 0) - math.log(len(ks))  # noqa: E731
    stats = c * mmd2  # (Λ,) observed M̂_λ
    statistic, null_fuse = float(fuse(stats)), fuse(c[:, None] * null)  # (B,)
    cause = nonfinite([("the statistic FUSE", statistic)], (xt, yt), ks[0])
    bad = int((~torch.isfinite(null_fuse)).sum())
    if cause is None and bad:
        cause = (f"{bad} of the {B} permuted FUSE statistics are not finite; {likely_cause((xt, yt), ks[0])}")
    if cause is not None:
        p = undecided("mmdfuse_test", cause)
    else:  # ties up to rounding: the largest rounding of t·M̂_λ moves the soft maximum by at most as much
        tol = t * float((c * tie_tolerance(z, scale)).max())
        p = (1.0 + float((null_fuse >= statistic - tol).sum())) / (1.0 + B)
    return MMDFuseResult(
        statistic=statistic, p_value=p, reject=_rejects(p, alpha), alpha=float(alpha),
        statistics=to_output(stats, numpy), kernels=ks, families=tuple(fams),
        bandwidths=to_output(torch.tensor(lams, dtype=torch.float64), numpy), n=n, m=m, n_permutations=B,
        lambda_multiplier=t, null_samples=to_output(null_fuse, numpy),
    )
