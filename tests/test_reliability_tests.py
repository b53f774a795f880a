"""Issue 12, item 1: a test whose statistic (or standard deviation, or a null statistic) is not finite, or whose
normal approximation has a zero standard deviation, cannot decide: p = NaN, reject() False at every level, and one
kernelmmd.NumericalWarning naming the cause. Never a p-value computed from a NaN."""

import math
import re
import warnings

import numpy as np
import pytest
import torch

import kernelmmd as km
from kernelmmd import ops

LEVELS = (1e-9, 0.05, 0.5, 0.999999)
CAUSE = r"cannot decide: .*not finite.*likely cause: the inputs' scale \(largest \|coordinate\|"


def _huge(n, m, d=3, scale=1e200, seed=0):
    """float64 data whose squared distances overflow (t = inf, inf − inf = NaN) at any bandwidth."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64) * scale,
            torch.randn(m, d, generator=g, dtype=torch.float64) * scale)


def _undecided(res, *, statistic_nan=True):
    assert math.isnan(res.p_value)
    if statistic_nan:
        assert not math.isfinite(res.statistic)
    assert not any(res.reject(a) for a in LEVELS)


def _one_warning(record, match):
    """Exactly one "cannot decide" warning (input checks elsewhere may add their own, e.g. on the data's range)."""
    numerical = [w for w in record if issubclass(w.category, km.NumericalWarning) and "cannot" in str(w.message)]
    assert len(numerical) == 1, [str(w.message) for w in numerical]
    assert re.search(match, str(numerical[0].message)), str(numerical[0].message)
    assert numerical[0].filename == __file__  # points at the caller, not into kernelmmd


def _call(match, f, *args, **kw):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        res = f(*args, **kw)
    _one_warning(record, match)
    return res


# ------------------------------------------------------------------------------------------- non-finite statistic
def test_permutation_test_nan_statistic():
    x, y = _huge(30, 25)
    with pytest.warns(km.NumericalWarning, match=r"mmd_test: " + CAUSE):
        res = km.mmd_test(x, y, sigma=1.0, n_permutations=20, seed=0)
    _undecided(res)
    _call(r"MMD²_u is nan.*RBF\(sigma=1.0\).*sigma='median'", km.mmd_test, x, y, sigma=1.0, n_permutations=5, seed=0)
    with pytest.warns(km.NumericalWarning, match="mmd_test: cannot decide"):
        res = km.mmd_test(x.numpy(), y.numpy(), sigma=1.0, n_permutations=5, seed=0)  # numpy in: same rule
    _undecided(res)


def test_linear_kernel_overflow_all_tests():
    """MMD² of a linear kernel on float64 data at 1e160 overflows (xᵀy ~ 1e320): every test cannot decide."""
    x, y = _huge(40, 40, scale=1e160)
    z = _huge(40, 40, scale=1e160, seed=1)[1]
    cases = [
        (r"mmd_test: " + CAUSE, km.mmd_test, dict(n_permutations=9, seed=0)),
        (r"linear_mmd_test: " + CAUSE, km.linear_mmd_test, {}),
        (r"block_mmd_test: " + CAUSE, km.block_mmd_test, dict(block_size=10)),
    ]
    for match, f, kw in cases:
        _undecided(_call(match, f, x, y, "linear", **kw))
    res = _call(r"relative_mmd_test: " + CAUSE, km.relative_mmd_test, x, y, z, "linear")
    _undecided(res)
    res = _call(r"selected_mmd_test: cannot decide: 2 of 2 candidate kernels have a non-finite", km.selected_mmd_test,
                x, y, [km.Linear(), km.Poly(2)], n_permutations=9, seed=0)
    _undecided(res)
    assert res.null_samples is None and res.selection is not None and (res.n, res.m) == (20, 20)


def test_normal_tests_on_huge_rbf_data():
    """At 1e200 the rbf values are NaN (block test: inf − inf in the expansion) or all 0 (linear test: exact
    differences, k = exp(−inf)): either way the test cannot decide and the warning names the scale."""
    x, y = _huge(40, 40)
    for f, kw in ((km.linear_mmd_test, {}), (km.block_mmd_test, dict(block_size=10))):
        res = _call(rf"{f.__name__}: cannot decide: .*likely cause: the inputs' scale \(largest \|coordinate\| "
                    r"[0-9.]+e\+200, computed in torch.float64\) or the kernel parameters \(RBF\(sigma=1.0\)\)",
                    f, x, y, sigma=1.0, **kw)
        _undecided(res, statistic_nan=False)


def test_nan_null_statistics_are_never_dropped(monkeypatch):
    """A finite observed statistic but NaN permuted ones (a kernel_mv returning NaN for the permutation columns)."""
    real = ops.routine

    def routine(op, backend):
        f = real(op, backend)
        if op != "kernel_mv":
            return f

        def mv(a, b, v, kernel):
            out = f(a, b, v, kernel)
            if out.shape[1] > 2:  # first pass: [1, e0, permutations...]; poison one permutation column
                out = out.clone()
                out[:, 3] = float("nan")
            return out

        return mv

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 2, generator=g), torch.randn(20, 2, generator=g) + 3.0  # would reject clearly
    monkeypatch.setattr(ops, "routine", routine)
    with pytest.warns(km.NumericalWarning, match=r"1 of the 30 permuted \(null\) statistics are not finite"):
        res = km.mmd_test(x, y, sigma=1.0, n_permutations=30, seed=0)
    assert math.isfinite(res.statistic) and res.statistic > 0
    _undecided(res, statistic_nan=False)
    assert int(torch.isnan(res.null_samples).sum()) == 1  # kept in the result, not dropped


def test_nan_variance_monkeypatched(monkeypatch):
    """A finite MMD²_l with a NaN variance (monkeypatched estimator): no p-value from NaN."""
    from kernelmmd.two_sample import normal

    monkeypatch.setattr(normal, "mmd2_linear", lambda *a, **k: (torch.tensor(0.3), torch.tensor(float("nan"))))
    x = torch.randn(20, 2)
    with pytest.warns(km.NumericalWarning, match=r"the estimated standard deviation of MMD²_l is nan"):
        res = km.linear_mmd_test(x, x + 1, sigma=1.0)
    assert res.statistic == pytest.approx(0.3)
    _undecided(res, statistic_nan=False)


def test_select_kernel_never_picks_an_overflowed_candidate():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 2, generator=g, dtype=torch.float64), torch.randn(30, 2, generator=g, dtype=torch.float64)
    x, y = x * 1e100, y * 1e100 + 3e100
    # the linear kernel's MMD² ~ 1e200 is finite but its variance ~ 1e400 overflows; rbf at sigma=1e100 is fine
    with pytest.warns(km.NumericalWarning, match=r"select_kernel: 1 of 2 candidate kernels .* #0 Linear\(\)"):
        sel = km.select_kernel(x, y, [km.Linear(), km.RBF(1e100)])
    assert sel.index == 1 and sel.criteria[0] == -math.inf
    with pytest.warns(km.NumericalWarning, match=r"selected_mmd_test: 1 of 2 candidate kernels"):
        res = km.selected_mmd_test(x, y, [km.Linear(), km.RBF(1e100)], n_permutations=19, seed=0)
    assert res.selection.index == 1 and math.isfinite(res.p_value) and res.reject(0.1)


# -------------------------------------------------------------------------------------- zero estimated variance
@pytest.mark.parametrize("shift", [0.0, 1.0], ids=["identical", "two-point-masses"])
def test_zero_std_normal_tests_cannot_decide(shift):
    """Constant samples: every h_i / block value is equal, std = 0. Never p = 0 from stat / 0 (nor p = 1 from 0/0)."""
    c = torch.ones(20, 2, dtype=torch.float64)
    for f, kw, name in ((km.linear_mmd_test, {}, "MMD²_l"), (km.block_mmd_test, dict(block_size=5), "η̂")):
        with pytest.warns(km.NumericalWarning, match=rf"{f.__name__}: cannot decide: the estimated standard "
                                                     rf"deviation of {name}.* is 0 \(every .* equal: constant"):
            res = f(c, c + shift, sigma=1.0, **kw)
        assert res.std == 0.0 and math.isfinite(res.statistic) and (res.statistic > 0) == (shift > 0)
        _undecided(res, statistic_nan=False)
    # the exact permutation test decides both cases
    res = km.mmd_test(c, c + shift, sigma=1.0, n_permutations=19, seed=0)
    assert res.p_value == (1.0 if shift == 0 else 0.05)


def test_relative_test_variance_floor_and_zero_std():
    c = torch.ones(8, 2, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default floor decides without a warning
        res = km.relative_mmd_test(c, c, c, "rbf", sigma=1.0)
    assert res.variance == 0.0 and res.std == pytest.approx(1e-5) and res.p_value == 0.5 and not res.reject(0.4)
    # no floor and a zero variance: was "the sign decides" (p = 0 for any d̂ < 0), now undecided
    g = torch.Generator().manual_seed(0)
    x, y, z = (torch.randn(k, 2, generator=g, dtype=torch.float64) for k in (6, 7, 5))
    with pytest.warns(km.NumericalWarning, match=r"relative_mmd_test: cannot decide: .* is 0 \(variance estimate "
                                                 r"0\.0 ≤ 0 and min_variance = 0; pass min_variance > 0\)"):
        res = km.relative_mmd_test(x, y, z, "poly", degree=0, min_variance=0.0)
    assert res.variance == 0.0 and res.std == 0.0 and res.statistic == 0.0
    _undecided(res, statistic_nan=False)


def test_reject_is_false_for_nan_p_explicitly():
    r = km.MMDTestResult(statistic=0.5, p_value=float("nan"), kernel=km.RBF(1.0), method="linear", n=4, m=4)
    assert not any(r.reject(a) for a in LEVELS)
    with pytest.raises(ValueError, match="alpha"):
        r.reject(float("nan"))  # alpha is still validated
    rr = km.RelativeTestResult(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, km.Poly())
    assert not any(rr.reject(a) for a in LEVELS)
    assert km.MMDTestResult(0.5, np.float64(0.01), km.RBF(1.0), "linear", 4, 4).reject(0.05)


def test_finite_results_do_not_warn():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 2, generator=g), torch.randn(40, 2, generator=g) + 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert km.mmd_test(x, y, sigma=1.0, n_permutations=19, seed=0).reject(0.1)
        assert km.linear_mmd_test(x, y, sigma=1.0).p_value < 0.05
        assert km.block_mmd_test(x, y, sigma=1.0, block_size=10).p_value < 0.05
