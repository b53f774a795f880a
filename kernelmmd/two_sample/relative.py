r"""The relative similarity test :func:`relative_mmd_test` (Bounliphone et al. 2016) and
:func:`mmd2_variance_unbiased`, both on the exactly unbiased variance estimates of ``kernelmmd._estimator`` (moments
of the Hoeffding decomposition from block sums)."""

from __future__ import annotations

import math

import torch

from .._estimator import block_stats, mmd2_u, mmd2_u_variance, prepare, relative_variance
from .._validate import check_nonnegative
from ._common import RelativeTestResult, check_test_kernel, nonfinite, normal_p, undecided

__all__ = ["mmd2_variance_unbiased", "relative_mmd_test"]


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
    check_test_kernel(p.kernel)
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
        cause = nonfinite([("the variance estimate of d̂", var)], (xt, yt, zt), p.kernel)
        if cause is not None and math.isfinite(d):
            pval = undecided("relative_mmd_test", cause)
        else:  # Φ(d/σ), accurate in the lower tail; NaN with one warning for a non-finite d̂ or σ̂ = 0
            pval = normal_p("relative_mmd_test", d, std, name="d̂ = MMD²_u(X, Y) − MMD²_u(X, Z)",
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
