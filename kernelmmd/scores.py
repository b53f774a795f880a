r"""Evaluation scores on feature vectors (SPEC §9): KID (over subsets, or exact all-pairs) and FID.

Both take features (e.g. Inception pool3 activations, shape (n, 2048)); computing features is the caller's job.

* :func:`kid` — Kernel Inception Distance, MMD²_u with the cubic kernel (xᵀy/d + 1)³ (Bińkowski et al. 2018).
  ``subsets=k`` reproduces torchmetrics / torch-fidelity (mean and population std over k random subsets);
  ``subsets=None`` is new here: the exact all-pairs MMD²_u through the fused block-statistics pass, with an
  exactly unbiased estimate of its variance.
* :func:`fid` — Fréchet Inception Distance in float64, via a symmetric eigen-decomposition (no complex sqrtm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ._estimator import block_stats, mmd2_u, mmd2_u_variance, prepare
from ._validate import as_generator, as_samples, check_int
from .kernels import Poly
from .ops import BlockStats

__all__ = ["KIDResult", "kid", "fid", "frechet_distance"]


@dataclass
class KIDResult:
    """KID estimate. Unpacks as ``mean, std = kernelmmd.kid(...)`` (like torchmetrics' ``compute()``).

    Attributes:
        mean: the KID value (mean of the subset MMD²_u, or the exact all-pairs MMD²_u), a float.
        std: subsets: the population standard deviation (ddof = 0, as torchmetrics / torch-fidelity) of the subset
            values; exact: √max(variance, 0), the estimated standard deviation of the exact estimate.
        values: the per-subset MMD²_u (float64 tensor of shape (subsets,)), or None for the exact score.
        variance: exact mode: the unbiased variance estimate of the all-pairs MMD²_u; None for subsets.
        kernel: the :class:`~kernelmmd.Poly` kernel used (γ resolved).
    """

    mean: float
    std: float
    values: torch.Tensor | None
    variance: float | None
    kernel: Poly

    def __iter__(self):
        return iter((self.mean, self.std))


def kid(
    real_feats,
    fake_feats,
    subsets: int | None = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed=None,
    *,
    backend: str = "auto",
) -> KIDResult:
    r"""Kernel Inception Distance: MMD²_u between feature sets with the polynomial kernel.

    .. math::
        k(a, b) = (\gamma\, a^\top b + c)^p \quad(\text{KID: } p = 3,\ \gamma = 1/d,\ c = 1),\qquad
        \mathrm{KID} = \mathrm{MMD}^2_u(\text{real}, \text{fake})

    With ``subsets=k`` (the papers' protocol, 100 subsets of 1000): for each subset draw ``subset_size`` real and
    ``subset_size`` fake points without replacement (``torch.randperm(n)[:subset_size]`` for real, then for fake,
    from one generator: with ``seed=s`` the subsets are those torchmetrics' ``KernelInceptionDistance.compute()``
    draws after ``torch.manual_seed(s)``), compute MMD²_u, and report the mean and the population std. With
    ``backend="auto"`` each subset pair is one set of dense products in the features' dtype: K_XY in full, K_XX and
    K_YY only on and above the diagonal (BLAS syrk on the CPU, through numpy), kernel values summed in float64 —
    two products' worth of multiply-adds where three dense blocks take three — or, when that takes fewer
    multiply-adds (overlapping subsets: n, m small next to √subsets · subset_size, rule in ``_gram_pays``), all
    subsets from one pass over the whole Gram matrices, each pair's kernel value computed once and summed per subset
    by float64 products with the subsets' indicators. An explicit ``backend`` computes the three blocks of each
    subset through that backend's block statistics instead (same values to rounding).

    With ``subsets=None``: the exact all-pairs MMD²_u over all n real and m fake points in one fused block-statistics
    pass (O((n + m)² d) time, O((n + m) d) memory on fused backends), and ``std`` from the exactly unbiased variance
    estimate of :func:`~kernelmmd.mmd2_variance_unbiased` (n, m ≥ 4; n ≠ m allowed). This removes the subset
    sampling noise, and its std is that of an estimate from all points, not from 1000.

    Args:
        real_feats: (n, d) features of real data. fake_feats: (m, d) features of generated data.
        subsets: number of subsets ≥ 1, or None for the exact score.
        subset_size: points per subset from each set, 2 ≤ subset_size ≤ min(n, m) (ignored when exact).
        degree, gamma, coef0: kernel parameters p ≥ 0, γ > 0 (None → 1/d), c.
        seed: int ≥ 0, a CPU ``torch.Generator`` or None, for the subsets.
        backend: ``"auto"`` or an explicit backend of :mod:`kernelmmd.ops` (subsets: see above).

    Returns:
        :class:`KIDResult` (``mean, std = kid(...)`` works).

    Raises:
        TypeError, ValueError: bad features (shape, NaN/Inf, different d), ``subsets`` not None or an int ≥ 1,
        ``subset_size`` not an int in [2, min(n, m)], fewer than 4 points for the exact score, bad kernel
        parameters, a bad ``seed``, unknown backend.

    Example:
        >>> import torch, kernelmmd
        >>> g = torch.Generator().manual_seed(0)
        >>> real, fake = torch.rand(500, 16, generator=g), torch.rand(400, 16, generator=g) + 0.1
        >>> mean, std = kernelmmd.kid(real, fake, subsets=10, subset_size=200, seed=0)
        >>> exact = kernelmmd.kid(real, fake, subsets=None)
        >>> exact.mean > 0
        True
    """
    if subsets is not None:
        subsets = check_int("subsets", subsets, minimum=1)
    kernel = Poly(degree=degree, gamma=gamma, coef0=coef0)
    p = prepare([("real_feats", real_feats), ("fake_feats", fake_feats)], kernel, {}, min_points=2)
    xt, yt = p.tensors
    n, m = xt.shape[0], yt.shape[0]
    with torch.no_grad():
        if subsets is None:
            if min(n, m) < 4:
                raise ValueError(f"the exact KID needs at least 4 real and 4 fake points, got n={n}, m={m}")
            st = block_stats(xt, yt, p.kernel, variance=True, backend=backend)
            var = float(mmd2_u_variance(st))
            return KIDResult(float(mmd2_u(st)), math.sqrt(max(var, 0.0)), None, var, p.kernel)
        ss = check_int("subset_size", subset_size, minimum=2)
        if ss > min(n, m):
            raise ValueError(
                f"subset_size must be <= the number of real (n={n}) and fake (m={m}) points, got {ss}"
            )
        gen = as_generator(seed)
        draws = [(torch.randperm(n, generator=gen)[:ss], torch.randperm(m, generator=gen)[:ss])
                 for _ in range(subsets)]  # real, then fake, per subset (torchmetrics' order)
        d = xt.shape[1]
        if backend == "auto" and _gram_pays(n, m, d, subsets, ss):
            vals = _gram_values(xt.detach(), yt.detach(), p.kernel, draws)
        else:
            vals, buf = [], _Buffers()
            for ir, jf in draws:
                ir, jf = ir.to(xt.device), jf.to(yt.device)
                if backend == "auto":  # a subset in index order (the statistic is symmetric): a faster gather
                    xs = torch.index_select(xt.detach(), 0, ir.sort().values, out=buf.get("x", (ss, d), xt))
                    ys = torch.index_select(yt.detach(), 0, jf.sort().values, out=buf.get("y", (ss, d), yt))
                    st = _subset_stats(xs, ys, p.kernel, buf)  # xs, ys: (ss, d)
                else:
                    st = block_stats(xt[ir], yt[jf], p.kernel, backend=backend)
                vals.append(mmd2_u(st))
            vals = torch.stack(vals)
        vals = vals.double().cpu()  # (subsets,)
    return KIDResult(float(vals.mean()), float(vals.std(unbiased=False)), vals, None, p.kernel)


# The subset path of kid(backend="auto"): dense products of one subset pair, K_XX and K_YY from the blocks on and
# above the diagonal only (measured in benchmarks/RESULTS.md, 'KID over subsets').
_PRODUCT_ENTRIES = 2**22  # the largest product aᵀb formed at once (16 MiB in float32)
_GRAM_ROWS = 2048  # rows of a diagonal Gram block a_I a_Iᵀ
_KERNEL_ROWS = 128  # CPU: rows of a product that go through the kernel at once (they stay in a core's L2 cache)


class _Buffers:
    """Work arrays reused from one subset to the next: a fresh multi-MiB array per product costs page faults on
    the CPU (measured on the 2-core machine: a 1000-row gather takes 1.5 ms into a reused array, 5–12 ms into a new
    one)."""

    def __init__(self):
        self._flat = {}

    def get(self, name: str, shape: tuple, like: torch.Tensor) -> torch.Tensor:
        """A contiguous array of ``shape`` with ``like``'s dtype and device (contents undefined)."""
        size = math.prod(shape)
        flat = self._flat.get(name)
        if flat is None or flat.numel() < size or flat.dtype != like.dtype or flat.device != like.device:
            flat = self._flat[name] = torch.empty(size, dtype=like.dtype, device=like.device)
        return flat[:size].view(shape)


def _gram(a: torch.Tensor, buf: _Buffers) -> torch.Tensor:
    """a aᵀ, (b, b). On the CPU through numpy's matmul, which calls BLAS syrk for ``a @ a.T`` (half the multiply-adds
    of a general product, then a mirror copy); torch has no syrk."""
    out = buf.get("gram", (a.shape[0], a.shape[0]), a)
    if a.device.type == "cpu":
        an = a.numpy()  # (b, d), a view
        np.matmul(an, an.T, out=out.numpy())
        return out
    return torch.mm(a, a.T, out=out)


def _ksum(kernel: Poly, u: torch.Tensor) -> torch.Tensor:
    """Σ_ij h(u_ij) over a product u (B, C): kernel values in u's dtype, summed in float64; on the CPU in slices of
    rows that stay in cache."""
    step = _KERNEL_ROWS if u.device.type == "cpu" else max(1, u.shape[0])
    s = torch.zeros((), dtype=torch.float64, device=u.device)
    for r0 in range(0, u.shape[0], step):
        s += kernel.profile(u[r0 : r0 + step], 0).double().sum()
    return s


def _cross_sum(kernel: Poly, a: torch.Tensor, b: torch.Tensor, buf: _Buffers) -> torch.Tensor:
    """Σ_ij k(a_i, b_j), float64, one product of at most ``_PRODUCT_ENTRIES`` entries at a time."""
    rows = max(1, _PRODUCT_ENTRIES // max(1, b.shape[0]))
    s = torch.zeros((), dtype=torch.float64, device=a.device)
    for r0 in range(0, a.shape[0], rows):
        ar = a[r0 : r0 + rows]
        s += _ksum(kernel, torch.mm(ar, b.T, out=buf.get("product", (ar.shape[0], b.shape[0]), a)))  # (rows, m)
    return s


def _upper_sums(kernel: Poly, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_{i≠j} h(g_ij), Σ_i h(g_ii)) in float64 for a symmetric product g (B, B), from its upper triangle: per slice
    of rows I, the square g_II (its sum less its trace) and twice the rectangle g_IJ, J the columns after I."""
    size = g.shape[0]
    step = _KERNEL_ROWS if g.device.type == "cpu" else max(1, size)
    off = torch.zeros((), dtype=torch.float64, device=g.device)
    diag = torch.zeros((), dtype=torch.float64, device=g.device)
    for r0 in range(0, size, step):
        b = min(size, r0 + step) - r0
        k = kernel.profile(g[r0 : r0 + b, r0:], 0)  # (b, size − r0): the square, then the rectangle
        tr = k.diagonal().double().sum()
        off += k[:, :b].double().sum() - tr + 2.0 * k[:, b:].double().sum()
        diag += tr
    return off, diag


def _within_sums(kernel: Poly, a: torch.Tensor, buf: _Buffers) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_{i≠j} k(a_i, a_j), Σ_i k(a_i, a_i)) in float64 from the products on and above the diagonal: per row block
    I, the upper triangle of the square a_I a_Iᵀ (syrk on the CPU) and twice the rectangle a_I a_Jᵀ, J the rows
    after I."""
    n = a.shape[0]
    off = torch.zeros((), dtype=torch.float64, device=a.device)
    diag = torch.zeros((), dtype=torch.float64, device=a.device)
    for r0 in range(0, n, _GRAM_ROWS):
        r1 = min(n, r0 + _GRAM_ROWS)
        o, t = _upper_sums(kernel, _gram(a[r0:r1], buf))  # (B, B) Gram block
        off += o
        diag += t
        if r1 < n:
            off += 2.0 * _cross_sum(kernel, a[r0:r1], a[r1:], buf)
    return off, diag


def _subset_stats(x: torch.Tensor, y: torch.Tensor, kernel: Poly, buf: _Buffers) -> BlockStats:
    """The block sums of one subset pair (dense, no gradients): 2 products' worth of multiply-adds per pair of
    subsets instead of 3 (K_XX, K_YY symmetric)."""
    sxx, dxx = _within_sums(kernel, x, buf)
    syy, dyy = _within_sums(kernel, y, buf)
    return BlockStats(x.shape[0], y.shape[0], sxx, syy, _cross_sum(kernel, x, y, buf), dxx, dyy)


def _sqrt_psd(a: torch.Tensor) -> torch.Tensor:
    """Symmetric PSD square root by eigen-decomposition (negative rounding eigenvalues clamped to 0)."""
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp_min(0.0).sqrt()) @ v.T


def _check_stats(name_mu, mu, name_cov, cov):
    for name, t, nd in ((name_mu, mu, 1), (name_cov, cov, 2)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"{name} must hold real numbers, got dtype {t.dtype}")
        if t.ndim != nd:
            raise ValueError(f"{name} must have {nd} dimension(s), got shape {tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or Inf values")
    d = mu.shape[0]
    if tuple(cov.shape) != (d, d):
        raise ValueError(f"{name_cov} must have shape ({d}, {d}) to match {name_mu}, got {tuple(cov.shape)}")
    if d == 0:
        raise ValueError(f"{name_mu} must have at least one entry, got shape {tuple(mu.shape)}")
    c = cov.detach().double()
    scale = float(c.abs().max())
    asym = float((c - c.T).abs().max())
    if asym > _tol(cov) * scale:
        raise ValueError(
            f"{name_cov} must be a symmetric covariance matrix, got max |{name_cov} - {name_cov}.T| = {asym:.3g} "
            f"(max |entry| {scale:.3g})"
        )


def _tol(t: torch.Tensor) -> float:
    """Relative tolerance for rounding in a covariance given in ``t``'s dtype: √eps (float64 for integers)."""
    return math.sqrt(torch.finfo(t.dtype if t.is_floating_point() else torch.float64).eps)


def _check_psd(name: str, w: torch.Tensor, tol: float) -> None:
    """Eigenvalues ``w`` of a symmetric matrix: none below −tol · max |w| (rounding), else ValueError."""
    lo, hi = float(w.min()), float(w.abs().max())
    if lo < -tol * hi:
        raise ValueError(
            f"{name} must be positive semi-definite (a covariance), got an eigenvalue {lo:.3g} "
            f"(largest |eigenvalue| {hi:.3g})"
        )


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    r"""Fréchet (2-Wasserstein²) distance between N(μ₁, Σ₁) and N(μ₂, Σ₂), in float64.

    .. math::
        \|\mu_1 - \mu_2\|^2 + \operatorname{tr}\Sigma_1 + \operatorname{tr}\Sigma_2
        - 2\operatorname{tr}\big(\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}\big)^{1/2}

    :math:`\operatorname{tr}(\Sigma_1\Sigma_2)^{1/2} = \operatorname{tr}(\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2})^{1/2}`
    (similar matrices), and the right-hand side is the sum of square roots of the eigenvalues of a symmetric PSD
    matrix: two ``eigh`` calls, no complex arithmetic, no iterative sqrtm, correct for singular Σ (n ≤ d).

    Args:
        mu1, mu2: means, shape (d,). cov1, cov2: symmetric PSD covariances, shape (d, d).

    Returns:
        a float ≥ 0 (up to rounding).

    Raises:
        TypeError: non-tensor or non-real inputs. ValueError: wrong shapes, NaN/Inf entries, a covariance that is not
        symmetric or not positive semi-definite beyond rounding (√eps of its dtype relative to its largest entry /
        eigenvalue).

    Example:
        >>> import torch, kernelmmd
        >>> e = torch.eye(2, dtype=torch.float64)
        >>> round(kernelmmd.frechet_distance(torch.zeros(2), e, torch.ones(2), 4 * e), 6)
        4.0
    """
    _check_stats("mu1", mu1, "cov1", cov1)
    _check_stats("mu2", mu2, "cov2", cov2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"mu1 and mu2 must have the same shape, got {tuple(mu1.shape)} and {tuple(mu2.shape)}")
    tols = (_tol(cov1), _tol(cov2))
    return _frechet(mu1, cov1, mu2, cov2, check_psd=tols)


def _frechet(mu1, cov1, mu2, cov2, check_psd=None) -> float:
    """frechet_distance on validated statistics; ``check_psd = (tol1, tol2)`` also checks both covariances are PSD
    (cov1 from the eigenvalues its square root needs anyway, cov2 with one more ``eigvalsh``)."""
    mu1, mu2, cov1, cov2 = (t.detach().double() for t in (mu1, mu2, cov1, cov2))
    cov2 = cov2.to(cov1.device)
    sym1, sym2 = 0.5 * (cov1 + cov1.T), 0.5 * (cov2 + cov2.T)
    if check_psd is not None:
        w1, v1 = torch.linalg.eigh(sym1)
        _check_psd("cov1", w1, check_psd[0])
        _check_psd("cov2", torch.linalg.eigvalsh(sym2), check_psd[1])
        s1 = (v1 * w1.clamp_min(0.0).sqrt()) @ v1.T
    else:
        s1 = _sqrt_psd(sym1)
    mid = s1 @ sym2 @ s1
    tr_sqrt = torch.linalg.eigvalsh(0.5 * (mid + mid.T)).clamp_min(0.0).sqrt().sum()
    diff = (mu1 - mu2.to(mu1.device)).pow(2).sum()
    return float(diff + torch.trace(cov1) + torch.trace(cov2) - 2.0 * tr_sqrt)


def fid(real_feats, fake_feats) -> float:
    r"""Fréchet Inception Distance between the Gaussians fitted to two feature sets, in float64.

    .. math::
        \mathrm{FID} = \|\hat\mu_r - \hat\mu_f\|^2 + \operatorname{tr}\big(\hat\Sigma_r + \hat\Sigma_f
        - 2(\hat\Sigma_r\hat\Sigma_f)^{1/2}\big)

    with sample means and unbiased (ddof = 1) sample covariances, as pytorch-fid / torchmetrics; see
    :func:`frechet_distance`. FID is biased upwards at small n (it is a plug-in estimate): compare values computed
    at equal sample sizes.

    Args:
        real_feats: (n, d), fake_feats: (m, d) features, n, m ≥ 2; numpy arrays or tensors of any float dtype.

    Returns:
        a float.

    Raises:
        TypeError, ValueError: bad features (shape, different d, NaN/Inf, fewer than 2 points).

    Example:
        >>> import torch, kernelmmd
        >>> g = torch.Generator().manual_seed(0)
        >>> a, b = torch.randn(1000, 4, generator=g), torch.randn(1000, 4, generator=g) + 1
        >>> 3.5 < kernelmmd.fid(a, b) < 4.5
        True
    """
    s = as_samples(("real_feats", real_feats), ("fake_feats", fake_feats), min_points=2)
    a, b = (t.detach().double() for t in s.tensors)  # (n, d), (m, d)
    stats = []
    for name, t in (("real_feats", a), ("fake_feats", b)):
        mu, cov = t.mean(0), _cov(t)
        if not (bool(torch.isfinite(mu).all()) and bool(torch.isfinite(cov).all())):
            big = float(t.abs().max())
            raise ValueError(f"{name}: its mean or covariance overflows float64 (max |feature| {big:.3g})")
        stats += [mu, cov]
    return _frechet(*stats)  # sample covariances are symmetric PSD: no check needed


def _cov(a: torch.Tensor) -> torch.Tensor:
    c = a - a.mean(0, keepdim=True)
    return (c.T @ c) / (a.shape[0] - 1)  # (d, d)


# Reuse across subsets: when the subsets overlap enough, the kernel sums of every subset come from one pass over the
# whole (upper-triangular) Gram matrices, each pair's kernel value computed once: e_sᵀ K e_s for indicator columns
# e_s, K's tiles times E (n, subsets) in float64.
_INDICATOR_ENTRIES = 2**25  # the most float64 indicator entries (n + m) · subsets the Gram pass holds (256 MiB)


def _gram_pays(n: int, m: int, d: int, subsets: int, size: int) -> bool:
    """Whether the whole-Gram pass takes fewer multiply-adds than the subsets: ((n² + m²)/2 + nm)(d + 2·subsets)
    (products in the features' dtype, then float64 products with the indicators, counted twice) against
    subsets · 2·size² · d (per subset: K_XY and the halves of K_XX, K_YY), and its float64 indicator columns
    (n + m, subsets) hold at most ``_INDICATOR_ENTRIES`` entries. E.g. 100 subsets of 1000 at d = 2048: the Gram pass
    below n = m ≈ 9 500."""
    if (n + m) * subsets > _INDICATOR_ENTRIES:
        return False
    return ((n * n + m * m) / 2 + n * m) * (d + 2 * subsets) < subsets * 2 * size * size * d


def _indicators(count: int, draws) -> torch.Tensor:
    """(count, subsets) float64 indicator columns of the subsets' points."""
    e = torch.zeros(count, len(draws), dtype=torch.float64)
    for s, idx in enumerate(draws):
        e[idx, s] = 1.0
    return e


def _gram_forms(kernel: Poly, a: torch.Tensor, b: torch.Tensor | None, ea: torch.Tensor, eb: torch.Tensor | None):
    """Per column s: Σ_{i≠j} e_is e_js k(a_i, a_j) (``b`` None) or Σ_ij ea_is eb_js k(a_i, b_j), float64 (subsets,).

    Within a sample only the row blocks' Gram squares (syrk on the CPU, diagonal zeroed) and the rectangles after
    them (counted twice) are formed; each product chunk has at most ``_PRODUCT_ENTRIES`` entries."""
    q = torch.zeros(ea.shape[1], dtype=torch.float64, device=a.device)
    buf = _Buffers()

    def add(u, e_rows, e_cols, weight):  # u: a product chunk (B, C); e_rows (B, S), e_cols (C, S)
        k = kernel.profile(u, 0).double()  # (B, C)
        q.add_((e_rows * (k @ e_cols)).sum(0), alpha=weight)

    if b is not None:
        rows = max(1, _PRODUCT_ENTRIES // max(1, b.shape[0]))
        for r0 in range(0, a.shape[0], rows):
            add(a[r0 : r0 + rows] @ b.T, ea[r0 : r0 + rows], eb, 1.0)  # (rows, m)
        return q
    n = a.shape[0]
    for r0 in range(0, n, _GRAM_ROWS):
        r1 = min(n, r0 + _GRAM_ROWS)
        k = kernel.profile(_gram(a[r0:r1], buf), 0)  # (B, B)
        k.diagonal().zero_()
        k = k.double()
        q += (ea[r0:r1] * (k @ ea[r0:r1])).sum(0)
        rest = n - r1
        if rest:
            cols = max(1, _PRODUCT_ENTRIES // (r1 - r0))
            for c0 in range(r1, n, cols):
                add(a[r0:r1] @ a[c0 : c0 + cols].T, ea[r0:r1], ea[c0 : c0 + cols], 2.0)  # (B, cols)
    return q


def _gram_values(x: torch.Tensor, y: torch.Tensor, kernel: Poly, draws) -> torch.Tensor:
    """MMD²_u of every subset pair in ``draws`` from one pass over the Gram matrices, float64 (subsets,)."""
    size = draws[0][0].numel()
    ex = _indicators(x.shape[0], [ir for ir, _ in draws]).to(x.device)  # (n, subsets)
    ey = _indicators(y.shape[0], [jf for _, jf in draws]).to(y.device)  # (m, subsets)
    sxx, syy = _gram_forms(kernel, x, None, ex, None), _gram_forms(kernel, y, None, ey, None)
    dxx, dyy = (e.T @ kernel.pairwise(a, a).double() for a, e in ((x, ex), (y, ey)))  # (subsets,) traces
    st = BlockStats(size, size, sxx, syy, _gram_forms(kernel, x, y, ex, ey), dxx, dyy)
    return mmd2_u(st)
