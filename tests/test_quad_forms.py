"""The quadratic-form ops ``quad_forms`` and ``h_quad_forms`` (kernelmmd.ops) on every backend against a dense
float64 reference: several kernels in one call (mixtures of distance families: squared distances, the √t kernels,
L1 distances, inner products, the energy kernel's norm terms), odd sizes, partial upper-triangle strips, float32 and
float64 inputs, row sums and pooled totals. KeOps and Triton (interpreter on CPU) cases are tiny."""

import importlib.util

import pytest
import torch

from kernelmmd import ops
from kernelmmd.kernels import RBF, RQ, Energy, L1Laplacian, Laplacian, Linear, MixRBF
from kernelmmd.ops import tiled

F32, F64 = torch.float32, torch.float64
HAS_KEOPS = importlib.util.find_spec("pykeops") is not None
HAS_TRITON = importlib.util.find_spec("triton") is not None

MIXED = [RBF(sigma=1.3), L1Laplacian(sigma=4.0), RBF(sigma=0.6), Laplacian(sigma=2.0), L1Laplacian(sigma=1.1),
         RQ(alpha=0.5), MixRBF(sigmas=(0.5, 2.0))]
ALL = [*MIXED, Linear(), Energy()]


def _dense(z, kernels):
    zd = z.double()
    return [k.matrix(zd, zd).double() for k in kernels]


def ref_quad_forms(z, v, kernels):
    """Q (Λ, B), R (Λ, N) and Σ_ij |v_i| |k_ij| |v_j| (the size of the sums, for the tolerances)."""
    vd = v.double()
    ks = _dense(z, kernels)
    q = torch.stack([(vd * (k @ vd)).sum(0) for k in ks])
    r = torch.stack([k.sum(1) for k in ks])
    size = torch.stack([(vd.abs() * (k.abs() @ vd.abs())).sum(0) for k in ks])
    return q, r, size


def ref_h_quad_forms(x, y, v, kernels):
    z = torch.cat([x, y])
    u = torch.cat([v.double(), -v.double()])
    q, r, size = ref_quad_forms(z, u, kernels)
    return q, r.sum(1), size


def _tol(dtype):
    return 2e-5 if dtype == F32 else 1e-11


def _check(backend, n, d, B, dtype, kernels, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    z = (scale * torch.randn(n, d, generator=g)).to(dtype)
    v = torch.randn(n, B, generator=g, dtype=F64)
    q, r = ops.routine("quad_forms", backend)(z, v, kernels, row_sums=True)
    q_only = ops.routine("quad_forms", backend)(z, v, kernels)
    rq, rr, size = ref_quad_forms(z, v, kernels)
    assert q.dtype == r.dtype == F64 and q.shape == (len(kernels), B) and r.shape == (len(kernels), n)
    assert torch.allclose(q, q_only, rtol=0, atol=1e-12 * float(size.max()))
    assert ((q - rq).abs() <= _tol(dtype) * size).all(), ((q - rq).abs() / size).max()
    rsize = torch.stack([k.abs().sum(1) for k in _dense(z, kernels)])
    assert ((r - rr).abs() <= _tol(dtype) * rsize).all()


def _check_h(backend, n, d, B, dtype, kernels, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g).to(dtype)
    y = (torch.randn(n, d, generator=g) + 0.3).to(dtype)
    v = torch.randint(0, 2, (n, B), generator=g).double().mul(2).sub(1)  # Rademacher signs, as the wild bootstrap
    v[:, 0] = torch.randn(n, generator=g, dtype=F64)  # and one general column
    q, tot = ops.routine("h_quad_forms", backend)(x, y, v, kernels, total=True)
    q_only = ops.routine("h_quad_forms", backend)(x, y, v, kernels)
    rq, rt, size = ref_h_quad_forms(x, y, v, kernels)
    assert q.dtype == tot.dtype == F64 and q.shape == (len(kernels), B) and tot.shape == (len(kernels),)
    assert torch.allclose(q, q_only, rtol=0, atol=1e-12 * float(size.max()))
    assert ((q - rq).abs() <= _tol(dtype) * size).all(), ((q - rq).abs() / size).max()
    tsize = torch.stack([k.abs().sum() for k in _dense(torch.cat([x, y]), kernels)])
    assert ((tot - rt).abs() <= _tol(dtype) * tsize).all()


@pytest.mark.parametrize("backend", ["torch", "tiled"])
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("n,d,B", [(1, 3, 2), (2, 1, 1), (37, 1, 5), (61, 4, 7), (150, 9, 3)])
def test_quad_forms(backend, dtype, n, d, B):
    _check(backend, n, d, B, dtype, ALL)


@pytest.mark.parametrize("backend", ["torch", "tiled"])
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("n,d,B", [(1, 2, 3), (2, 1, 1), (31, 1, 4), (45, 5, 6), (80, 8, 2)])
def test_h_quad_forms(backend, dtype, n, d, B):
    _check_h(backend, n, d, B, dtype, ALL)


@pytest.mark.parametrize("rows", [1, 7, 64])
def test_tiled_strips(monkeypatch, rows):
    """Many strips, a partial last strip and strips of one row: the upper-triangle sum and the row sums
    (the diagonal counted once, the off-diagonal blocks twice) do not depend on the strip height."""
    monkeypatch.setattr(tiled, "STRIP_ELEMENTS", rows * 61)  # 61 points: `rows` rows per strip
    _check("tiled", 61, 3, 5, F64, MIXED)
    _check_h("tiled", 61, 3, 5, F64, MIXED)
    _check("tiled", 61, 3, 5, F32, [RBF(sigma=1.0), L1Laplacian(sigma=2.0)])


def test_tiled_float32_large_scale():
    """float32 points far from the origin: the squared distances are formed on centred points, as kernel_mv does."""
    _check("tiled", 150, 6, 4, F32, [RBF(sigma=1.5), L1Laplacian(sigma=3.0)], scale=1.0)
    g = torch.Generator().manual_seed(3)
    z = (torch.randn(120, 5, generator=g) + 1e3).to(F32)
    v = torch.randn(120, 3, generator=g, dtype=F64)
    ks = [RBF(sigma=1.0), RBF(sigma=3.0)]
    q = ops.routine("quad_forms", "tiled")(z, v, ks)
    mv = torch.stack([(v * ops.routine("kernel_mv", "tiled")(z, z, v, k)).sum(0) for k in ks])
    rq, _, size = ref_quad_forms(z, v, ks)
    assert ((q - mv).abs() <= 2e-5 * size).all() and ((q - rq).abs() <= 2e-5 * size).all()


def test_tiled_matches_kernel_mv_default():
    """The tiled specialisation against the default (one kernel_mv pass per kernel) on the same backend."""
    g = torch.Generator().manual_seed(4)
    z = torch.randn(123, 7, generator=g, dtype=F64)
    v = torch.randn(123, 9, generator=g, dtype=F64)
    from kernelmmd.ops._shared import h_quad_forms_via, quad_forms_via

    q, r = tiled.quad_forms(z, v, ALL, row_sums=True)
    q2, r2 = quad_forms_via("tiled", z, v, ALL, row_sums=True)
    assert torch.allclose(q, q2, rtol=1e-12, atol=1e-10) and torch.allclose(r, r2, rtol=1e-12, atol=1e-10)
    x, y = z[:61], z[61:122]
    h, t = tiled.h_quad_forms(x, y, v[:61], ALL, total=True)
    h2, t2 = h_quad_forms_via("tiled", x, y, v[:61], ALL, total=True)
    assert torch.allclose(h, h2, rtol=1e-12, atol=1e-9) and torch.allclose(t, t2, rtol=1e-12, atol=1e-9)


def test_empty_kernel_list():
    z, v = torch.randn(5, 2), torch.randn(5, 3, dtype=F64)
    for be in ("torch", "tiled"):
        q, r = ops.routine("quad_forms", be)(z, v, [], row_sums=True)
        assert q.shape == (0, 3) and r.shape == (0, 5)


@pytest.mark.skipif(not HAS_KEOPS, reason="no pykeops")
@pytest.mark.parametrize("dtype", [F32, F64])
def test_keops(dtype):
    ks = [RBF(sigma=1.3), L1Laplacian(sigma=2.0)]
    _check("keops", 13, 3, 3, dtype, ks)
    _check_h("keops", 9, 2, 3, dtype, ks)


@pytest.mark.skipif(not HAS_TRITON, reason="no triton")
def test_triton_interpreter(monkeypatch):
    """Without CUDA, through the Triton interpreter (TRITON_INTERPRET=1, set by conftest.py) with small tiles."""
    from .triton_setup import CUDA, SMALL, L

    if not CUDA:
        monkeypatch.setattr(L, "TILES_OVERRIDE", SMALL)
    ks = [RBF(sigma=1.3), L1Laplacian(sigma=2.0)]
    _check("triton", 11, 3, 2, F32, ks)
    _check_h("triton", 7, 2, 2, F32, ks)
