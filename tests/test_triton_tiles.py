"""The shared Triton tile library (kernelmmd.ops.triton._tiles) and launch helpers (._launch) on their own.

Every helper is also exercised by the op tests (test_triton_block_stats / _witness / _derivative_blocks); these tests
pin down the tile conventions — which entries of a partial tile are valid, the precision-independent pair arguments,
the column range of a split — against float64 references, through the interpreter without CUDA.
"""

import pytest
import torch

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

import kernelmmd as km  # noqa: E402
from kernelmmd.kernels import CLOSE  # noqa: E402
from kernelmmd.ops.triton import _launch as L  # noqa: E402
from kernelmmd.ops.triton import _tiles as T  # noqa: E402
from kernelmmd.ops.triton._tiles import (  # noqa: E402
    direction_tile,
    directional,
    lowrank_tile,
    pair_arg_tile,
    row_scalars,
    split_range,
    store_rows,
)

from .triton_setup import DEVICE, F64  # noqa: E402


@triton.jit
def _pair(a_ptr, b_ptr, na_ptr, nb_ptr, o_ptr, n, m, d, r0, c0,
          KIND: tl.constexpr, DIRECT: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    rows = r0 + tl.arange(0, BM)
    cols = c0 + tl.arange(0, BN)
    t = pair_arg_tile(a_ptr, b_ptr, na_ptr, nb_ptr, rows, cols, n, m, d, KIND, DIRECT, "ieee", BM, BN, BK)
    store_rows(o_ptr, tl.arange(0, BM), tl.arange(0, BN), BM, BN, t)


@triton.jit
def _weights(a_ptr, b_ptr, aux_ptr, s_ptr, l_ptr, r_ptr, o_ptr, n, m, d, nb, KIND: tl.constexpr,
             ROW_AUX: tl.constexpr, VEC: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BB: tl.constexpr):
    rows = tl.arange(0, BM)
    cols = tl.arange(0, BN)
    s_row = row_scalars(s_ptr, rows, n, ROW_AUX)
    x, sv = direction_tile(a_ptr, b_ptr, aux_ptr, s_ptr, s_row, rows, cols, n, m, d, ROW_AUX, True, "ieee",
                           BM, BN, 16)
    w = lowrank_tile(l_ptr, r_ptr, rows, cols, n, m, nb, VEC, "ieee", BM, BN, BB)
    store_rows(o_ptr, rows, cols, n, m, directional(w, x, sv, KIND))


@triton.jit
def _split(o_ptr, tiles_per_split, m, BN: tl.constexpr):
    pid_s = tl.program_id(0)
    j_lo, j_hi = split_range(pid_s, tiles_per_split, m, BN)
    tl.store(o_ptr + 2 * pid_s, j_lo)
    tl.store(o_ptr + 2 * pid_s + 1, j_hi)


def _randn(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(DEVICE, dtype)


@pytest.mark.parametrize("kind", [0, 10], ids=["t", "u"])
@pytest.mark.parametrize("direct,d", [(True, 3), (False, 3), (False, 37)], ids=["direct", "dot", "dot-3-chunks"])
@pytest.mark.parametrize("r0,c0", [(0, 0), (16, 16)], ids=["full", "partial"])
def test_pair_arg_tile(kind, direct, d, r0, c0):
    """t = ‖a_i − b_j‖² (clamped at 0) or u = a_iᵀb_j on the valid part of a (partial) 16 × 16 tile, float32."""
    n, m = 21, 19
    a, b = _randn(n, d, seed=1, dtype=torch.float32), _randn(m, d, seed=2, dtype=torch.float32)
    out = torch.full((16, 16), float("nan"), dtype=torch.float32, device=DEVICE)
    _pair[(1,)](a, b, (a * a).sum(1), (b * b).sum(1), out, n, m, d, r0, c0, kind, direct, 16, 16, 16)
    ad, bd = a.double()[r0:r0 + 16], b.double()[c0:c0 + 16]
    want = ((ad[:, None] - bd[None]) ** 2).sum(2) if kind < 10 else ad @ bd.T
    got = out[: ad.shape[0], : bd.shape[0]].double()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * d)


@pytest.mark.parametrize("kind,exact", [(0, False), (4, True), (5, True)], ids=["rbf", "laplacian", "energy"])
def test_pair_arg_tile_close_pairs(kind, exact):
    """Far from the origin, pairs 1e-4 apart: the tl.dot expansion keeps ~eps·‖a‖² of noise in t (relative error
    ≫ 1 here), the √t kinds re-form exactly those pairs from differences (t to float32 rounding of t itself)."""
    n, m, d = 21, 19, 37
    a = _randn(n, d, seed=1, dtype=torch.float32) + 20.0
    b = torch.cat([a[:5] + 1e-4 * _randn(5, d, seed=3, dtype=torch.float32), _randn(m - 5, d, seed=2) + 20.0])
    b = b.to(torch.float32)
    out = torch.full((16, 16), float("nan"), dtype=torch.float32, device=DEVICE)
    _pair[(1,)](a, b, (a * a).sum(1), (b * b).sum(1), out, n, m, d, 0, 0, kind, False, 16, 16, 16)
    want = ((a.double()[:16, None] - b.double()[None, :16]) ** 2).sum(2)
    rel = ((out.double() - want).abs() / want)[:5, :5].diagonal()  # the close pairs
    assert want[:5, :5].diagonal().max() < 1e-6
    assert T.CLOSE.value == CLOSE  # close_pairs' threshold is kernelmmd.kernels.CLOSE
    if exact:
        assert float(rel.max()) < 1e-5
        torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=0)
    else:
        assert float(rel.max()) > 1e-1  # what the refinement is for


@pytest.mark.parametrize("kind", [0, 11], ids=["radial", "dot"])
@pytest.mark.parametrize("row_aux", [True, False], ids=["row-aux", "col-aux"])
@pytest.mark.parametrize("nb", [1, 3], ids=["vec", "lowrank"])
def test_directional_weights(kind, row_aux, nb):
    """(L Rᵀ)_ij · 2(s − X) (radial) or · X (dot); X = Γ_i·b_j, s_i = Γ_i·a_i (rows) or X = a_i·Γ_j, s_j = Γ_j·b_j."""
    n, m, d = 6, 5, 4
    a, b = _randn(n, d, seed=1), _randn(m, d, seed=2)
    aux = _randn(n if row_aux else m, d, seed=3)
    s = (aux * (a if row_aux else b)).sum(1)
    lf, rf = _randn(n, nb, seed=4), _randn(m, nb, seed=5)
    out = torch.zeros(n, m, dtype=F64, device=DEVICE)
    _weights[(1,)](a, b, aux, s, lf, rf, out, n, m, d, nb, kind, row_aux, nb == 1, 8, 8, 16)
    x, sv = (aux @ b.T, s[:, None]) if row_aux else (a @ aux.T, s[None, :])
    w = lf @ rf.T
    torch.testing.assert_close(out, w * 2 * (sv - x) if kind < 10 else w * x, rtol=1e-12, atol=1e-12)


def test_split_range_covers_the_column_tiles_once():
    m, bn, per = 100, 16, 3  # 7 column tiles in splits of 3: [0, 3), [3, 6), [6, 7)
    out = torch.zeros(6, dtype=torch.int32, device=DEVICE)
    _split[(3,)](out, per, m, bn)
    assert out.tolist() == [0, 3, 3, 6, 6, 7]


def test_tile_sizes_and_splits():
    assert [L.pow2(v) for v in (1, 2, 3, 17)] == [1, 2, 4, 32]
    assert [L.tile_width(v, 64) for v in (1, 20, 3000)] == [16, 32, 64]
    assert L.split_for(L.Tiles(split=None), 4, 10, torch.device("cpu")) == (1, 10)
    assert L.split_for(L.Tiles(split=3), 4, 10, torch.device("cpu")) == (3, 4)  # 4 + 4 + 2 column tiles
    assert L.split_for(L.Tiles(split=8), 4, 2, torch.device("cpu")) == (2, 1)
    part = torch.arange(12, dtype=F64).reshape(2, 2, 3)
    assert torch.equal(L.reduce_partials(part), part.sum(0)) and torch.equal(L.reduce_partials(part[:1]), part[0])


def test_prepare_centres_translation_invariant_kernels_only():
    a, b = _randn(5, 3, seed=1) + 10.0, _randn(4, 3, seed=2) + 10.0
    for kernel, centred in ((km.RBF(1.0), True), (km.Energy(), False), (km.Poly(2, 1.0, 1.0), False)):
        spec = L.make_spec(kernel, "xy", F64, a.device, "ieee")
        pa, pb, na, nb = L.prepare(spec, a, b)
        shift = torch.cat([a, b]).mean(0) if centred else torch.zeros(3, dtype=F64, device=a.device)
        torch.testing.assert_close(pa, a - shift)
        torch.testing.assert_close(pb, b - shift)
        torch.testing.assert_close(na, (pa * pa).sum(1))
        torch.testing.assert_close(nb, (pb * pb).sum(1))


def test_refuse_raises_on_a_second_derivative():
    x = torch.randn(3, dtype=F64, requires_grad=True)
    (y,) = L.refuse("no second derivative here", [x * 2.0], [x])
    with pytest.raises(RuntimeError, match="no second derivative here"):
        torch.autograd.grad(y.sum(), x)
    with torch.no_grad():
        assert L.refuse("unused", [x], [x])[0] is x  # no graph is being built: passed through


def test_aot_spec_signature_follows_the_kernel_arguments():
    spec = L.aot_spec("k", _pair, dict(KIND=0, DIRECT=False, BM=16, BN=16, BK=16), f64=("o_ptr",))
    assert list(spec["signature"]) == list(_pair.arg_names)
    assert spec["signature"]["a_ptr"] == "*fp32" and spec["signature"]["o_ptr"] == "*fp64"
    assert spec["signature"]["n"] == "i32" and spec["signature"]["BK"] == "constexpr"
