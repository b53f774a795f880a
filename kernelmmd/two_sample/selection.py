r"""Kernel choice by the test-power criterion MMD²_u / √V̂ (Sutherland et al. 2017): :func:`select_kernel`, and
:func:`selected_mmd_test` (select on a training split, permutation test on the disjoint remainder)."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence

import torch

from .._estimator import prepare
from .._validate import as_generator, as_samples, check_int, check_nonnegative, check_same_size
from ..errors import NumericalWarning, user_stacklevel
from ..kernels import DeepKernel, Kernel, get_kernel
from ..mmd import mmd2_and_variance
from ._common import KernelSelection, MMDTestResult, check_train_fraction, undecided
from .permutation import mmd_test

__all__ = ["select_kernel", "selected_mmd_test"]


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


def _with_top(k: DeepKernel, top) -> DeepKernel:
    """``k`` (a DeepKernel or a subclass such as ARD, kept as such) with its top kernel replaced by the resolved one."""
    out = copy.copy(k)
    out.top = top
    return out


def _select(x, y, ks, min_variance, backend) -> tuple[KernelSelection, list]:
    """select_kernel without the warning: (selection, indices of candidates with non-finite MMD²_u or V̂)."""
    resolved, mmds, variances = [], [], []
    with torch.no_grad():
        for k in ks:
            p = prepare([("x", x), ("y", y)], k, {}, min_points=2)
            check_same_size(*p.tensors, "select_kernel")
            mmd2, var = mmd2_and_variance(*p.tensors, kernel=p.kernel, backend=backend)
            resolved.append(_with_top(k, p.kernel) if isinstance(k, DeepKernel) else p.kernel)
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
    check_train_fraction(train_fraction)
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
        pval = undecided("selected_mmd_test", _bad_candidates(sel, bad) + " (so no test was run)")
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
