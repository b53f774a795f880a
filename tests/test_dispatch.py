"""Backend dispatch: explicit names, the rules of backend="auto" / kernelmmd.Auto(...), missing packages (clear
error when asked for explicitly, one BackendFallbackWarning per missing package under auto) and input errors."""

from __future__ import annotations

import warnings

import pytest
import torch

import kernelmmd as km
from kernelmmd import ops

X = torch.randn(20, 3, dtype=torch.float64)
Y = torch.randn(15, 3, dtype=torch.float64) + 0.5


@pytest.fixture
def fresh(monkeypatch):
    """Isolated import-error and warn-once state (restored after the test)."""
    monkeypatch.setattr(ops, "_IMPORT_ERRORS", dict(ops._IMPORT_ERRORS))
    monkeypatch.setattr(ops, "_WARNED", set())
    return monkeypatch


def _missing(mp, backend, package):
    ops._load(backend)
    mp.setitem(ops._IMPORT_ERRORS, backend, ModuleNotFoundError(f"No module named '{package}'"))


def test_backends_and_ops_listed():
    assert ops.BACKENDS == ("auto", "torch", "tiled", "keops", "triton")
    assert set(ops.OPS) == {"block_stats", "kernel_mv", "kernel_grad_mv", "a_matvec", "a_diag", "a_column",
                            "dense_blocks", "quad_forms", "h_quad_forms"}
    for be in ("torch", "tiled"):
        assert ops.available(be)
        for op in ops.OPS:
            assert callable(ops.routine(op, be))


def test_auto_cpu_thresholds():
    small, big = torch.randn(10, 3), torch.randn(200, 3)
    assert ops.select_backend("auto", small, small) == "torch"
    assert ops.select_backend(km.Auto(), small, small) == "torch"
    assert ops.select_backend(km.Auto(dense_max_pairs=100), small, small) == "torch"  # 10·10 = 100: inclusive
    assert ops.select_backend(km.Auto(dense_max_pairs=99), small, small) == "tiled"
    assert ops.select_backend(km.Auto(dense_max_pairs=1999), small, big) == "tiled"  # n·m = 2000
    assert ops.select_backend(km.Auto(dense_max_pairs=100), small, op="a_matvec") == "torch"  # M² for one set
    default = km.Auto().dense_max_pairs
    n = int(default**0.5)
    a = torch.empty(n, 2)
    assert ops.select_backend("auto", a, a) == "torch"
    b = torch.empty(n + 1, 2)
    assert ops.select_backend("auto", b, b) == "tiled"


def test_auto_keops_rule(fresh):
    x = torch.randn(30, 4)
    if ops.available("keops"):
        assert ops.select_backend(km.Auto(dense_max_pairs=0, keops_min_pairs=900), x, x) == "keops"
        assert ops.select_backend(km.Auto(dense_max_pairs=0, keops_min_pairs=901), x, x) == "tiled"
        assert ops.select_backend(km.Auto(dense_max_pairs=0, keops_min_pairs=0, keops_max_dim=3), x, x) == "tiled"
    assert ops.select_backend(km.Auto(dense_max_pairs=10**6, keops_min_pairs=0), x, x) == "torch"


def test_explicit_missing_backend_raises(fresh):
    _missing(fresh, "keops", "pykeops")
    msg = r"backend='keops' needs the 'pykeops' package.*pip install 'kernelmmd\[keops\]'"
    with pytest.raises(ImportError, match=msg):
        ops.select_backend("keops", X, Y)
    with pytest.raises(ImportError, match=r"needs the 'pykeops' package"):
        km.mmd2_unbiased(X, Y, backend="keops")
    with pytest.raises(ImportError, match=r"needs the 'pykeops' package"):
        ops.routine("block_stats", "keops")
    _missing(fresh, "triton", "triton")
    with pytest.raises(ImportError, match=r"backend='triton' needs the 'triton' package.*kernelmmd\[triton\]"):
        ops.select_backend("triton", X, Y)


def test_auto_fallback_warns_once_per_package(fresh):
    _missing(fresh, "keops", "pykeops")
    rules = km.Auto(dense_max_pairs=0, keops_min_pairs=0)
    with pytest.warns(km.BackendFallbackWarning, match=r"would use 'keops'.*'pykeops' package is not available.*"
                      r"using 'tiled' instead.*pip install 'kernelmmd\[keops\]'"):
        assert ops.select_backend(rules, X, Y) == "tiled"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ops.select_backend(rules, X, Y) == "tiled"  # second time: silent
        v = km.mmd2_unbiased(X, Y, backend=rules)  # and through an estimator
    torch.testing.assert_close(v, km.mmd2_unbiased(X, Y, backend="torch"), rtol=1e-10, atol=1e-12)


def test_auto_cuda_rules(fresh):
    """The CUDA branch of the rules, with the device test stubbed (real CUDA runs are in test_auto_on_cuda)."""
    fresh.setattr(ops, "_is_cuda", lambda t: True)
    x32, x64 = torch.randn(8, 3), torch.randn(8, 3, dtype=torch.float64)
    have_triton = ops._has_op("triton", "block_stats")
    if have_triton:
        assert ops.select_backend("auto", x32, x32) == "triton"
        assert ops.select_backend("auto", x32.half(), x32.half()) == "triton"
    if ops.available("keops"):
        assert ops.select_backend("auto", x64, x64) == "keops"  # Triton refuses float64
    _missing(fresh, "triton", "triton")
    with pytest.warns(km.BackendFallbackWarning, match=r"would use 'triton' for CUDA torch.float32 tensors"):
        got = ops.select_backend("auto", x32, x32)
    assert got == ("keops" if ops.available("keops") else "torch")
    _missing(fresh, "keops", "pykeops")
    msg = r"would use 'keops' for CUDA torch.float64 tensors.*using 'torch'"
    with pytest.warns(km.BackendFallbackWarning, match=msg):
        assert ops.select_backend("auto", x64, x64) == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ops.select_backend("auto", x32, x32) == "torch"  # both already reported


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_on_cuda():
    x = torch.randn(64, 3, device="cuda")
    want = "triton" if ops._has_op("triton", "block_stats") else ("keops" if ops.available("keops") else "torch")
    assert ops.select_backend("auto", x, x) == want
    if ops.available("keops"):
        assert ops.select_backend("auto", x.double(), x.double()) == "keops"


def test_auto_results_agree_across_choices():
    x, y = torch.randn(40, 2, dtype=torch.float64), torch.randn(30, 2, dtype=torch.float64)
    a = km.mmd2_unbiased(x, y, sigma=1.0)
    b = km.mmd2_unbiased(x, y, sigma=1.0, backend=km.Auto(dense_max_pairs=0))
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


def test_errors():
    with pytest.raises(TypeError, match="backend must be a string, one of .* or a kernelmmd.Auto"):
        ops.select_backend(3, X)
    with pytest.raises(ValueError, match=r"backend must be one of .* got 'gpu'"):
        ops.select_backend("gpu", X)
    with pytest.raises(ValueError, match="op must be one of"):
        ops.routine("nope", "torch")
    with pytest.raises(ValueError, match=r"backend must be one of .*a concrete backend.*got 'auto'"):
        ops.routine("block_stats", "auto")
    with pytest.raises(ValueError, match=r"backend must be one of .* got 'cuda'"):
        ops.available("cuda")
    with pytest.raises(TypeError, match="dense_max_pairs must be an integer >= 0, got float 1.5"):
        km.Auto(dense_max_pairs=1.5)
    with pytest.raises(ValueError, match="keops_min_pairs must be an integer >= 0, got -1"):
        km.Auto(keops_min_pairs=-1)
    with pytest.raises(ValueError, match="keops_max_dim must be an integer >= 0, got -2"):
        km.Auto(keops_max_dim=-2)


def test_routine_missing_op(monkeypatch):
    import kernelmmd.ops.tiled as tiled

    monkeypatch.delattr(tiled, "a_column")
    with pytest.raises(NotImplementedError, match="backend 'tiled' does not provide the op 'a_column'"):
        ops.routine("a_column", "tiled")


def test_other_import_errors_surface(fresh):
    """Only ImportError means 'missing'; any other exception while importing a backend is a bug and propagates."""
    import importlib

    real = importlib.import_module

    def broken(name, *a, **k):
        if name == "kernelmmd.ops.keops":
            raise RuntimeError("boom")
        return real(name, *a, **k)

    fresh.setattr(ops, "_IMPORT_ERRORS", {})
    fresh.setattr(importlib, "import_module", broken)
    with pytest.raises(RuntimeError, match="boom"):
        ops.available("keops")
