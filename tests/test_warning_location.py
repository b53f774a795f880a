"""Every kernelmmd warning points at the user's line (``errors.user_stacklevel``), however deep it is raised."""

import warnings

import torch

import kernelmmd as km
from kernelmmd.errors import user_stacklevel, warn


def _caught(fn):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fn()
    return [w for w in record if issubclass(w.category, km.KernelMMDWarning)]


def test_user_stacklevel_outside_the_package_is_the_caller():
    assert user_stacklevel() == 1


def test_warn_points_at_the_calling_line():
    (w,) = _caught(lambda: warn("x"))
    assert w.filename == __file__ and w.category is km.NumericalWarning


def test_range_block_and_test_warnings_point_at_the_user():
    big = torch.randn(12, 3, dtype=torch.float64) * 1e200
    calls = [
        lambda: km.mmd2_unbiased(big, big.flip(0)),  # float64 cannot hold the squared distances (_range)
        lambda: km.mmd2_block(torch.randn(11, 2), torch.randn(11, 2), block_size=5),  # points dropped (mmd.py)
        lambda: km.block_mmd_test(torch.randn(11, 2), torch.randn(11, 2), block_size=5),  # ... through a test
        lambda: km.mmd_test(big, big.flip(0), n_permutations=5, seed=0),  # range + "cannot decide" (two_sample)
    ]
    for call in calls:
        ws = _caught(call)
        assert ws, call
        assert all(w.filename == __file__ for w in ws), [(w.filename, str(w.message)[:60]) for w in ws]


def test_gcmmd_convergence_warning_points_at_the_user():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 3, generator=g, dtype=torch.float64)
    y = torch.randn(20, 3, generator=g, dtype=torch.float64) + 1
    ws = _caught(lambda: km.gcmmd2(x, y, "rbf", solver="cg", max_iter=1, precond=None, tol=1e-14))
    assert ws and all(w.filename == __file__ for w in ws)
