"""The shared test base of the fused backends: a backend's test class supplies the ops ("build it") and inherits
the value and gradient checks against the dense truth (:mod:`kernelmmd.ops.reference`, itself tested against
``tests/reference_np.py``), with a per-op, per-dtype tolerance table. See docs/ARCHITECTURE.md, "Tests".
"""

from __future__ import annotations

import itertools

import pytest
import torch

from kernelmmd.ops import reference as R

from ._cases import KINDS, TWICE, case

__all__ = ["KINDS", "TWICE", "OpSuite", "BlockStatsSuite", "KernelMvSuite", "KernelGradMvSuite", "AMatvecSuite",
           "AuxSuite", "BackendSuite", "grid", "make_kernel", "points", "assert_close", "tensor_params"]

FIELDS = ("sxx", "syy", "sxy", "dxx", "dyy", "rxx", "ryy", "rxy", "cxy", "qxx", "qyy", "qxy")
F64, F32 = torch.float64, torch.float32

# Relative tolerances (values, gradients) per op and input dtype. float64: rounding only. float32 inputs are compared
# with the float64 reference evaluated on the same (float32-rounded) points: values to 1e-6 relative to the scale of
# the kernel sums (Σ|k| over the block for sums, per row for row sums; Σ_j |k_ij||v_j| for kernel_mv) or 1e-5 of the
# largest entry (kernel_grad_mv, a_matvec). float32 gradients: within the tolerance relative to the largest reference
# gradient entry, or within twice the error of the dense reference itself run in float32 (Liger's method: a
# low-precision result is judged against the precision's own error), whichever is larger: gradients that cancel
# (e.g. derivative blocks at d = 50, where the kernel is almost diagonal) are as accurate as float32 arithmetic
# allows, not more.
TOLERANCES = {
    "block_stats": {F64: (1e-10, 1e-9), F32: (1e-6, 1e-5)},
    "kernel_mv": {F64: (1e-10, 1e-9), F32: (1e-6, 1e-5)},
    # float32: the parameter gradients of ∇k pass through h″ of float32 pair arguments (poly d/dγ on torch 2.14:
    # 1.4e-5 of the largest entry, the dense float32 reference 4e-7): 3e-5, still ~250 float32 eps
    "kernel_grad_mv": {F64: (1e-10, 1e-9), F32: (1e-5, 3e-5)},
    "a_matvec": {F64: (1e-10, 1e-9), F32: (1e-5, 1e-5)},
    "aux": {F64: (1e-12, None)},  # a_diag / a_column: O(M d), float64 only
}


def make_kernel(name: str, tensor_params: bool = False):
    """The kernel of case ``name`` of the shared table; ``tensor_params`` makes its parameters float64 leaf tensors."""
    return case(name).kernel(tensor_params)


def tensor_params(kernel) -> list[torch.Tensor]:
    return [q for q in kernel.scalar_params() if isinstance(q, torch.Tensor) and q.requires_grad]


def points(n, m, d, dtype, seed=0, scale=1.0, close=False):
    """x (n, d) and y (m, d), leaves in ``dtype``. ``close``: the last 4 rows of x are within 1e-5 of earlier rows
    of x and of y, far from the origin (+3): the pairs where the expansion ‖a‖² + ‖b‖² − 2aᵀb cancels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64) * scale
    y = torch.randn(m, d, generator=g, dtype=F64) * scale + 0.3
    if close:
        near = torch.cat([x[:2], y[:2]]) + 1e-5 * scale * torch.randn(4, d, generator=g, dtype=F64)
        x = torch.cat([x[:-4], near]) + 3.0
        y = y + 3.0
    return x.to(dtype).requires_grad_(), y.to(dtype).requires_grad_()


def _up(t: torch.Tensor) -> torch.Tensor:
    return t.detach().double().requires_grad_(t.requires_grad)


def _grads(out, inputs):
    live = [i for i in inputs if i.requires_grad]
    gs = iter(torch.autograd.grad(out, live, allow_unused=True))
    out = []
    for i in inputs:
        g = next(gs) if i.requires_grad else None
        out.append(torch.zeros_like(i) if g is None else g)
    return out


def _same(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(t.requires_grad)


def assert_grads(names, got, want, base, grel, what):
    """got/want/base: gradients from the backend, the float64 reference and (float32 only) the dense reference
    run in the input dtype, whose own error widens the tolerance."""
    for i, (name, a, b) in enumerate(zip(names, got, want)):
        scale = max(float(b.abs().max()), 1e-3)
        if base is not None:
            own = float((base[i].double() - b.double()).abs().max())
            scale = max(scale, 2.0 * own / grel)
        assert_close(a, b, scale, grel, f"{what} d/d{name}")


def assert_close(got, want, scale, rel, what):
    got, want = got.detach().double(), want.detach().double()
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = float((got - want).abs().max()) if got.numel() else 0.0
    tol = rel * float(scale) + 1e-300
    assert err <= tol, f"{what}: max error {err:.3e} > {tol:.3e} (scale {float(scale):.3e})"


def _stat_scales(x, y, kernel):
    """Scale of each statistic: Σ|k| (row-wise for row sums), Σk² for squared sums (float64 dense reference)."""
    a, b = x.detach().double(), y.detach().double()
    kxx = kernel.matrix(a, a, "xx").detach().abs()
    kyy = kernel.matrix(b, b, "yy").detach().abs()
    kxy = kernel.matrix(a, b, "xy").detach().abs()
    return {
        "sxx": kxx.sum(), "syy": kyy.sum(), "sxy": kxy.sum(), "dxx": kxx.diagonal().sum(),
        "dyy": kyy.diagonal().sum(), "rxx": kxx.sum(1).max(), "ryy": kyy.sum(1).max(), "rxy": kxy.sum(1).max(),
        "cxy": kxy.sum(0).max(), "qxx": (kxx**2).sum(), "qyy": (kyy**2).sum(), "qxy": (kxy**2).sum(),
    }


def _weights(st, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {f: torch.randn(getattr(st, f).shape, generator=g, dtype=F64) for f in FIELDS if getattr(st, f) is not None}


def check_block_stats(mod, kind, n, m, d, dtype, variance=False, grad=True, tensor_param=False, close=False, *,
                      truth=R, tol=TOLERANCES["block_stats"]):
    """Every field of block_stats and the gradient of a random combination of them (x, y, tensor params)."""
    kernel = make_kernel(kind, tensor_param)
    x, y = points(n, m, d, dtype, close=close)
    got = mod.block_stats(x, y, kernel, variance)
    xr, yr = _up(x), _up(y)
    want = truth.block_stats(xr, yr, kernel, variance)
    rel, grel = tol[dtype]
    scales = _stat_scales(x, y, kernel)
    for f in FIELDS:
        w = getattr(want, f)
        if w is None:
            assert getattr(got, f) is None, f
            continue
        assert getattr(got, f).dtype == F64, f"{f} must be float64"
        assert_close(getattr(got, f), w, max(float(scales[f]), 1e-30), rel, f"{kind} {f}")
    if not grad:
        return
    w = _weights(want)
    ps = tensor_params(kernel)

    def loss(st):
        return sum((getattr(st, f) * w[f]).sum() for f in w)

    gg = _grads(loss(got), [x, y, *ps])
    gw = _grads(loss(want), [xr, yr, *ps])
    base = None
    if dtype != F64:
        xb, yb = _same(x), _same(y)
        base = _grads(loss(truth.block_stats(xb, yb, kernel, variance)), [xb, yb, *ps])
    names = ["x", "y", *[f"param{i}" for i in range(len(ps))]]
    assert_grads(names, gg, gw, base, grel, kind)


def check_kernel_mv(mod, kind, n, m, d, dtype, width=None, grad=True, tensor_param=False, block="xy", close=False, *,
                    truth=R, tol=TOLERANCES["kernel_mv"]):
    kernel = make_kernel(kind, tensor_param)
    x, y = points(n, m, d, dtype, close=close)
    g = torch.Generator().manual_seed(2)
    shape = (m,) if width is None else (m, width)
    v = torch.randn(shape, generator=g, dtype=F64).requires_grad_()
    got = mod.kernel_mv(x, y, v, kernel, block)
    xr, yr = _up(x), _up(y)
    vr = v.detach().to(dtype).double().requires_grad_() if dtype != F64 else v
    want = truth.kernel_mv(xr, yr, vr, kernel, block)
    assert got.dtype == F64 and got.shape == want.shape
    kabs = kernel.matrix(xr.detach(), yr.detach(), block).detach().abs()
    scale = float((kabs @ vr.detach().abs().reshape(m, -1)).max())
    rel, grel = tol[dtype]
    assert_close(got, want, scale, rel, f"{kind} kernel_mv")
    if not grad:
        return
    wt = torch.randn(want.shape, generator=g, dtype=F64)
    ps = tensor_params(kernel)
    gg = _grads((got * wt).sum(), [x, y, v, *ps])
    gw = _grads((want * wt).sum(), [xr, yr, vr, *ps])
    base = None
    if dtype != F64:
        xb, yb, vb = _same(x), _same(y), _same(v)
        base = _grads((truth.kernel_mv(xb, yb, vb, kernel, block) * wt).sum(), [xb, yb, vb, *ps])
    names = ["x", "y", "v", *[f"param{i}" for i in range(len(ps))]]
    assert_grads(names, gg, gw, base, grel, f"{kind} kernel_mv")


def check_kernel_grad_mv(mod, kind, n, m, d, dtype, grad=True, tensor_param=False, close=False, *,
                         truth=R, tol=TOLERANCES["kernel_grad_mv"]):
    kernel = make_kernel(kind, tensor_param)
    x, y = points(n, m, d, dtype, close=close)
    g = torch.Generator().manual_seed(3)
    v = torch.randn(m, generator=g, dtype=F64).requires_grad_()
    got = mod.kernel_grad_mv(x, y, v, kernel)
    xr, yr = _up(x), _up(y)
    vr = v.detach().to(dtype).double().requires_grad_() if dtype != F64 else v
    want = truth.kernel_grad_mv(xr, yr, vr, kernel)
    assert got.dtype == F64 and got.shape == want.shape == (n, d)
    rel, grel = tol[dtype]
    assert_close(got, want, max(float(want.detach().abs().max()), 1e-12), rel, f"{kind} kernel_grad_mv")
    if not grad:
        return
    wt = torch.randn(want.shape, generator=g, dtype=F64)
    ps = tensor_params(kernel)
    gg = _grads((got * wt).sum(), [x, y, v, *ps])
    gw = _grads((want * wt).sum(), [xr, yr, vr, *ps])
    base = None
    if dtype != F64:
        xb, yb, vb = _same(x), _same(y), _same(v)
        base = _grads((truth.kernel_grad_mv(xb, yb, vb, kernel) * wt).sum(), [xb, yb, vb, *ps])
    names = ["x", "y", "v", *[f"param{i}" for i in range(len(ps))]]
    assert_grads(names, gg, gw, base, grel, f"{kind} kernel_grad_mv")  # float32: 3e-5, see TOLERANCES


def check_a_matvec(mod, kind, M, d, dtype, grad=True, tensor_param=False, wrt=("z", "u0", "u1"), *,
                   truth=R, tol=TOLERANCES["a_matvec"]):
    """``wrt``: the inputs that require a gradient (the others are constants)."""
    kernel = make_kernel(kind, tensor_param)
    g = torch.Generator().manual_seed(4)
    z = torch.randn(M, d, generator=g, dtype=F64).to(dtype).requires_grad_("z" in wrt)
    u0 = torch.randn(M, generator=g, dtype=F64).to(dtype).requires_grad_("u0" in wrt)
    u1 = torch.randn(M, d, generator=g, dtype=F64).to(dtype).requires_grad_("u1" in wrt)
    got = mod.a_matvec(z, u0, u1, kernel)
    zr, u0r, u1r = _up(z), _up(u0), _up(u1)
    want = truth.a_matvec(zr, u0r, u1r, kernel)
    rel, grel = tol[dtype]
    for part, a, b in zip(("top", "bottom"), got, want):
        assert a.dtype == dtype
        assert_close(a, b, max(float(b.abs().max()), 1e-3), rel, f"{kind} a_matvec {part}")
    if not grad:
        return
    w0 = torch.randn(M, generator=g, dtype=F64)
    w1 = torch.randn(M, d, generator=g, dtype=F64)
    ps = tensor_params(kernel)

    def loss(out):
        return (out[0].double() * w0).sum() + (out[1].double() * w1).sum()

    gg = _grads(loss(got), [z, u0, u1, *ps])
    gw = _grads(loss(want), [zr, u0r, u1r, *ps])
    base = None
    if dtype != F64:
        zb, u0b, u1b = _same(z), _same(u0), _same(u1)
        base = _grads(loss(truth.a_matvec(zb, u0b, u1b, kernel)), [zb, u0b, u1b, *ps])
    names = ["z", "u0", "u1", *[f"param{i}" for i in range(len(ps))]]
    assert_grads(names, gg, gw, base, grel, f"{kind} a_matvec")


def check_aux(mod, kind, M, d, dtype=F64, *, truth=R, tol=TOLERANCES["aux"]):
    """a_diag / a_column agree with the reference (they are O(M d))."""
    kernel = make_kernel(kind)
    rel = tol[dtype][0]
    z = torch.randn(M, d, generator=torch.Generator().manual_seed(5), dtype=F64).to(dtype)
    for a, b in zip(mod.a_diag(z, kernel), truth.a_diag(z, kernel)):
        assert_close(a, b, max(float(b.abs().max()), 1e-3), rel, "a_diag")
    for idx in (0, M - 1, M, M * (1 + d) - 1):
        for a, b in zip(mod.a_column(z, idx, kernel), truth.a_column(z, idx, kernel)):
            assert_close(a, b, max(float(b.abs().max()), 1e-3), rel, f"a_column {idx}")


# ------------------------------------------------------------------------------------------------ the test base

_IDS = {  # the parts of a case's id, in this order
    "kind": str,
    "shape": str,
    "dtype": str,
    "variance": lambda v: "variance" if v else "sums",
    "width": lambda v: "vector" if v is None else f"matrix{v}",
    "block": str,
    "wrt": lambda v: "wrt-" + "-".join(v),
    "close": lambda v: "close" if v else "",
    "grad": lambda v: "" if v else "values",
}


def grid(**axes) -> list:
    """Cases for one op of a suite: the product of the axes given as lists (kind, shape, dtype, variance, …), the
    other keywords held fixed. ``shape`` is (n, m, d) or (M, d); ``grad`` may be a function of the kind.
    Returns ``pytest.param`` of the check's keyword arguments, with ids from the named keys of ``_IDS``."""
    keys = [k for k, v in axes.items() if isinstance(v, list)]
    out = []
    for values in itertools.product(*(axes[k] for k in keys)):
        kw = {**{k: v for k, v in axes.items() if k not in keys}, **dict(zip(keys, values))}
        if callable(kw.get("grad")):
            kw["grad"] = kw["grad"](kw["kind"])
        ids = [f(kw[k]) for k, f in _IDS.items() if k in kw]
        shape = kw.pop("shape")
        kw.update(zip(("n", "m", "d") if len(shape) == 3 else ("M", "d"), shape))
        out.append(pytest.param(kw, id="-".join(i for i in ids if i)))
    return out


class OpSuite:
    """Base of every backend test class. A concrete class supplies ``ops`` ("build it": an object with the backend's
    op functions) and, per op it implements, ``<op>_cases`` (a list of :func:`grid` cases); it inherits the test
    of each op from the mixins below. ``truth`` (the dense reference) and ``tolerances`` (per op, per dtype:
    (values, gradients) relative tolerances) may be overridden per class."""

    ops = None
    truth = R
    tolerances = TOLERANCES

    def pytest_generate_tests(self, metafunc):
        if "case" in metafunc.fixturenames:
            op = metafunc.function.__name__.removeprefix("test_")
            metafunc.parametrize("case", getattr(metafunc.cls, f"{op}_cases"))

    def tol(self, op):
        return self.tolerances[op]


class BlockStatsSuite(OpSuite):
    block_stats_cases: list = []

    def test_block_stats(self, case):
        """Every field of block_stats and the gradient of a random combination of them (x, y, tensor params)."""
        check_block_stats(self.ops, **case, truth=self.truth, tol=self.tol("block_stats"))


class KernelMvSuite(OpSuite):
    kernel_mv_cases: list = []

    def test_kernel_mv(self, case):
        check_kernel_mv(self.ops, **case, truth=self.truth, tol=self.tol("kernel_mv"))


class KernelGradMvSuite(OpSuite):
    kernel_grad_mv_cases: list = []

    def test_kernel_grad_mv(self, case):
        check_kernel_grad_mv(self.ops, **case, truth=self.truth, tol=self.tol("kernel_grad_mv"))


class AMatvecSuite(OpSuite):
    a_matvec_cases: list = []

    def test_a_matvec(self, case):
        check_a_matvec(self.ops, **case, truth=self.truth, tol=self.tol("a_matvec"))


class AuxSuite(OpSuite):
    aux_cases: list = []

    def test_aux(self, case):
        """a_diag and a_column."""
        check_aux(self.ops, **case, truth=self.truth, tol=self.tol("aux"))


class BackendSuite(BlockStatsSuite, KernelMvSuite, KernelGradMvSuite, AMatvecSuite, AuxSuite):
    """Every op of a backend."""
