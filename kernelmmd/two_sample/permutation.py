r"""The quadratic-time permutation test :func:`mmd_test` (SPEC §3): B permuted MMD²_u from one ``quad_forms`` pass
(eᵀKe for every split indicator e of a batch) per batch (see docs/ARCHITECTURE.md, "Two-sample tests")."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import ops
from .._estimator import prepare
from .._validate import as_generator, check_int, to_output
from ._common import MMDTestResult, check_test_kernel, likely_cause, nonfinite, undecided

__all__ = ["mmd_test", "indicators", "split_mmd2", "split_statistics", "resample_batches", "tie_tolerance",
           "check_callback", "BATCH_ENTRIES"]

#: default resampling batch: as many columns as keep N·B_batch ≤ 2²⁴ entries (128 MiB in float64)
BATCH_ENTRIES = 1 << 24
#: resampled statistics within TIE_EPS · eps(dtype) · (size of the cancelling terms) of the observed one are ties
TIE_EPS = 64.0


def check_callback(callback) -> None:
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable (called with the number of resamples done) or None, "
                        f"got {type(callback).__name__}")


def check_resampling(n_permutations, batch_size, callback) -> tuple[int, int | None]:
    """The arguments every resampling test shares: ``n_permutations`` an int ≥ 1, ``batch_size`` None or an int ≥ 1,
    ``callback`` None or callable. Returns (B, batch_size) as ints."""
    B = check_int("n_permutations", n_permutations, minimum=1)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, minimum=1)
    check_callback(callback)
    return B, batch_size


def indicators(N: int, n: int, count: int, gen: torch.Generator) -> torch.Tensor:
    """(N, count) float64 0/1 matrix; column b marks the n pooled points a uniform random permutation puts in X."""
    idx = torch.stack([torch.randperm(N, generator=gen)[:n] for _ in range(count)], 1)  # (n, count)
    e = torch.zeros(N, count, dtype=torch.float64)
    return e.scatter_(0, idx, 1.0)


def tie_tolerance(z: torch.Tensor, scale):
    """Resampled statistics ≥ observed − this count as ≥ the observed one (rounding of the cancelling sums)."""
    return TIE_EPS * torch.finfo(z.dtype).eps * scale


def split_mmd2(eke, er, ed, total, trace, n, m, magnitude: bool = False):
    r"""MMD²_u of splits of the pooled sample from the quadratic forms of its kernel matrix K (any broadcastable
    shapes, e.g. (Λ, B) forms with (Λ, 1) totals).

    For an indicator e ∈ {0,1}^N (|e| = n), f = 1 − e, with eke = eᵀKe, er = eᵀr (r = K1), ed = eᵀD (D = diag(K)),
    total = 1ᵀK1 and trace = tr K: eᵀK̃e = eᵀKe − eᵀD, fᵀK̃f = T − 2eᵀr + eᵀKe − (tr K − eᵀD), eᵀKf = eᵀr − eᵀKe
    (the diagonal is handled exactly).
    """
    sxx = eke - ed
    syy = total - 2.0 * er + eke - (trace - ed)
    sxy = er - eke
    stat = sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)
    if magnitude:  # size of the terms that cancel in the statistic: the scale of its rounding error
        return stat, sxx.abs() / (n * (n - 1)) + syy.abs() / (m * (m - 1)) + 2.0 * sxy.abs() / (n * m)
    return stat


def resample_batches(draw, count, head, rows, device, batch_size, callback):
    """Batches of resampled columns: yields ``(v, first)``, v (rows, cols) float64 on ``device``.

    ``draw(c)`` returns c new (rows, c) float64 CPU columns (drawn on the CPU generator column after column, so the
    resamples do not depend on the batch size); ``head`` (rows, h) is prepended to the first batch (``first`` True;
    e.g. the observed split). ``count`` drawn columns in all, at most ``batch_size`` (default ⌊2²⁴ / rows⌋) per
    batch; ``callback(c)`` after each batch has been used.
    """
    size = batch_size if batch_size is not None else max(1, BATCH_ENTRIES // rows)
    done = 0
    while done < count:
        c = min(size, count - done)
        v = draw(c)  # (rows, c), drawn on the CPU generator
        if done == 0:
            v = torch.cat([head, v], 1)  # (rows, h + c)
        yield v.to(device), done == 0
        done += c
        if callback is not None:
            callback(c)


def split_statistics(z, n, kernels, count, gen, backend, batch_size=None, callback=None):
    """MMD²_u of the observed split (the first n pooled points in X) and of ``count`` uniform random splits, for
    each kernel: ``(observed (Λ,), magnitude (Λ,), null (Λ, count))``, float64, null on the CPU.

    One ``quad_forms`` call per batch of indicators e (all kernels at once: eᵀK_λe per column), the first one also
    returning the row sums r_λ = K_λ1; O(Λ·N²(d + cols)) work per batch, O(N·cols) memory."""
    N = z.shape[0]
    m = N - n
    qf = ops.dispatch("quad_forms", backend, z, z)  # pairs = N²
    diag = torch.stack([k.pairwise(z, z).double() for k in kernels])  # (Λ, N) k(z_i, z_i)
    head = torch.zeros(N, 1, dtype=torch.float64)
    head[:n, 0] = 1.0  # the observed split e₀
    null = []
    draw = lambda c: indicators(N, n, c, gen)  # noqa: E731
    for v, first in resample_batches(draw, count, head, N, z.device, batch_size, callback):
        if first:
            forms, r = qf(z, v, kernels, row_sums=True)  # (Λ, cols) eᵀK_λe, (Λ, N) r_λ = K_λ1
            total, trace = r.sum(1, keepdim=True), diag.sum(1, keepdim=True)  # (Λ, 1)
        else:
            forms = qf(z, v, kernels)
        stats = split_mmd2(forms, r @ v, diag @ v, total, trace, n, m, magnitude=first)  # (Λ, cols)
        if first:
            stats, size = stats
            observed, scale = stats[:, 0].cpu(), size[:, 0].cpu()
            stats = stats[:, 1:]
        null.append(stats.cpu())
    return observed, scale, torch.cat(null, 1)


def _permutation_test(xt, yt, kernel, n_permutations, gen, backend, batch_size, callback):
    z = torch.cat([xt, yt]).detach()  # (N, d) pooled sample; never copied per permutation
    observed, scale, null = split_statistics(z, xt.shape[0], [kernel], n_permutations, gen, backend, batch_size,
                                             callback)
    statistic, null = float(observed[0]), null[0]  # (B,)
    cause = nonfinite([("the statistic MMD²_u", statistic)], (xt, yt), kernel)
    bad = int((~torch.isfinite(null)).sum())
    if cause is None and bad:  # never dropped, never counted as < or ≥ the observed statistic
        first = float(null[~torch.isfinite(null)][0])
        cause = (f"{bad} of the {n_permutations} permuted (null) statistics are not finite (e.g. {first!r}); "
                 f"{likely_cause((xt, yt), kernel)}")
    if cause is not None:
        return statistic, undecided("mmd_test", cause), null
    # splits equal to the observed one up to rounding (e.g. X and Y swapped when n = m) are ties and count as ≥
    tol = tie_tolerance(z, float(scale[0]))
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

    so B statistics need only the quadratic forms e_bᵀKe_b (and r once): one ``quad_forms`` pass per batch of B
    columns, O(N²(d + B)) time and O(N·B_batch) memory (the ``tiled`` backend visits the upper triangle only:
    N²/2 kernel values, N²B/2 multiply-adds); the kernel matrix is never stored by fused backends and the data
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
        batch_size: permutations per pass; default ⌊2²⁴ / N⌋ (≥ 1), i.e. ≤ 128 MiB of float64 columns.
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
    B, batch_size = check_resampling(n_permutations, batch_size, callback)
    gen = as_generator(seed)
    p = prepare([("x", x), ("y", y)], kernel, params, min_points=2)
    check_test_kernel(p.kernel)
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
