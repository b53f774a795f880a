"""Shared checks for the fused/tiled backends: a backend module supplies the ops, the dense torch reference
(:mod:`kernelmmd.ops.reference`, itself tested against the independent numpy reference in
``tests/reference_np.py``) is the truth. Used by ``test_tiled.py`` and ``test_keops.py``.

Tolerances: float64 inputs must agree to ~1e-10 relative to the scale of the quantity (rounding only); float32
inputs are compared with the float64 reference evaluated on the same (float32-rounded) points, to 1e-6 relative
to the scale of the kernel sums (Σ|k| over the block for sums, per row for row sums). float32 gradients: within
1e-5 relative to the largest reference gradient entry, or within twice the error of the dense reference itself
run in float32 (Liger's method: a low-precision result is judged against the precision's own error), whichever
is larger: gradients that cancel (e.g. derivative blocks at d = 50, where the kernel is almost diagonal) are
as accurate as float32 arithmetic allows, not more.
"""

from __future__ import annotations

import torch

import kernelmmd as km
from kernelmmd.ops import reference as R

FIELDS = ("sxx", "syy", "sxy", "dxx", "dyy", "rxx", "ryy", "rxy", "cxy", "qxx", "qyy", "qxy")
F64 = torch.float64


def make_kernel(name: str, tensor_params: bool = False):
    """A kernel of each kind with non-default parameters; ``tensor_params`` makes them float64 leaf tensors."""

    def p(v):
        return torch.tensor(v, dtype=F64, requires_grad=True) if tensor_params else v

    return {
        "rbf": lambda: km.RBF(p(1.3)),
        "mix_rbf": lambda: km.MixRBF([p(0.6), p(2.0)]),
        "rq": lambda: km.RQ(p(0.7)),
        "mix_rq": lambda: km.MixRQ([p(0.5), p(2.0)]),
        "rbf_bounded": lambda: km.RBFBounded(p(1.1), 0.5, 3.0),
        "laplacian": lambda: km.Laplacian(p(1.2)),
        "energy": lambda: km.Energy(),
        "linear": lambda: km.Linear(),
        "poly": lambda: km.Poly(3, p(0.4), p(0.8)),
    }[name]()


KINDS = ("rbf", "mix_rbf", "rq", "mix_rq", "rbf_bounded", "laplacian", "energy", "linear", "poly")
TWICE = ("rbf", "mix_rbf", "rq", "mix_rq", "linear", "poly")


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
    kxx = kernel.matrix(a, a, "xx").abs()
    kyy = kernel.matrix(b, b, "yy").abs()
    kxy = kernel.matrix(a, b, "xy").abs()
    return {
        "sxx": kxx.sum(), "syy": kyy.sum(), "sxy": kxy.sum(), "dxx": kxx.diagonal().sum(),
        "dyy": kyy.diagonal().sum(), "rxx": kxx.sum(1).max(), "ryy": kyy.sum(1).max(), "rxy": kxy.sum(1).max(),
        "cxy": kxy.sum(0).max(), "qxx": (kxx**2).sum(), "qyy": (kyy**2).sum(), "qxy": (kxy**2).sum(),
    }


def _weights(st, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {f: torch.randn(getattr(st, f).shape, generator=g, dtype=F64) for f in FIELDS if getattr(st, f) is not None}


def check_block_stats(mod, kind, n, m, d, dtype, variance, grad=True, tensor_param=False, close=False):
    """Every field of block_stats and the gradient of a random combination of them (x, y, tensor params)."""
    kernel = make_kernel(kind, tensor_param)
    x, y = points(n, m, d, dtype, close=close)
    got = mod.block_stats(x, y, kernel, variance)
    xr, yr = _up(x), _up(y)
    want = R.block_stats(xr, yr, kernel, variance)
    rel = 1e-10 if dtype == F64 else 1e-6
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
        base = _grads(loss(R.block_stats(xb, yb, kernel, variance)), [xb, yb, *ps])
    names = ["x", "y", *[f"param{i}" for i in range(len(ps))]]
    assert_grads(names, gg, gw, base, 1e-9 if dtype == F64 else 1e-5, kind)


def check_kernel_mv(mod, kind, n, m, d, dtype, width=None, grad=True, tensor_param=False, block="xy", close=False):
    kernel = make_kernel(kind, tensor_param)
    x, y = points(n, m, d, dtype, close=close)
    g = torch.Generator().manual_seed(2)
    shape = (m,) if width is None else (m, width)
    v = torch.randn(shape, generator=g, dtype=F64).requires_grad_()
    got = mod.kernel_mv(x, y, v, kernel, block)
    xr, yr = _up(x), _up(y)
    vr = v.detach().to(dtype).double().requires_grad_() if dtype != F64 else v
    want = R.kernel_mv(xr, yr, vr, kernel, block)
    assert got.dtype == F64 and got.shape == want.shape
    kabs = kernel.matrix(xr.detach(), yr.detach(), block).abs()
    scale = float((kabs @ vr.detach().abs().reshape(m, -1)).max())
    rel = 1e-10 if dtype == F64 else 1e-6
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
        base = _grads((R.kernel_mv(xb, yb, vb, kernel, block) * wt).sum(), [xb, yb, vb, *ps])
    names = ["x", "y", "v", *[f"param{i}" for i in range(len(ps))]]
    assert_grads(names, gg, gw, base, 1e-9 if dtype == F64 else 1e-5, f"{kind} kernel_mv")


def check_kernel_grad_mv(mod, kind, n, m, d, dtype, grad=True, tensor_param=False, close=False):
    kernel = make_kernel(kind, tensor_param)
    x, y = points(n, m, d, dtype, close=close)
    g = torch.Generator().manual_seed(3)
    v = torch.randn(m, generator=g, dtype=F64).requires_grad_()
    got = mod.kernel_grad_mv(x, y, v, kernel)
    xr, yr = _up(x), _up(y)
    vr = v.detach().to(dtype).double().requires_grad_() if dtype != F64 else v
    want = R.kernel_grad_mv(xr, yr, vr, kernel)
    assert got.dtype == F64 and got.shape == want.shape == (n, d)
    rel = 1e-10 if dtype == F64 else 1e-5
    assert_close(got, want, max(float(want.abs().max()), 1e-12), rel, f"{kind} kernel_grad_mv")
    if not grad:
        return
    wt = torch.randn(want.shape, generator=g, dtype=F64)
    ps = tensor_params(kernel)
    gg = _grads((got * wt).sum(), [x, y, v, *ps])
    gw = _grads((want * wt).sum(), [xr, yr, vr, *ps])
    base = None
    if dtype != F64:
        xb, yb, vb = _same(x), _same(y), _same(v)
        base = _grads((R.kernel_grad_mv(xb, yb, vb, kernel) * wt).sum(), [xb, yb, vb, *ps])
    names = ["x", "y", "v", *[f"param{i}" for i in range(len(ps))]]
    # float32: the parameter gradients of ∇k pass through h″ of float32 pair arguments (poly d/dγ on torch 2.14:
    # 1.4e-5 of the largest entry, the dense float32 reference 4e-7): 3e-5, still ~250 float32 eps
    assert_grads(names, gg, gw, base, 1e-9 if dtype == F64 else 3e-5, f"{kind} kernel_grad_mv")


def check_a_matvec(mod, kind, M, d, dtype, grad=True, tensor_param=False, wrt=("z", "u0", "u1")):
    """``wrt``: the inputs that require a gradient (the others are constants)."""
    kernel = make_kernel(kind, tensor_param)
    g = torch.Generator().manual_seed(4)
    z = torch.randn(M, d, generator=g, dtype=F64).to(dtype).requires_grad_("z" in wrt)
    u0 = torch.randn(M, generator=g, dtype=F64).to(dtype).requires_grad_("u0" in wrt)
    u1 = torch.randn(M, d, generator=g, dtype=F64).to(dtype).requires_grad_("u1" in wrt)
    got = mod.a_matvec(z, u0, u1, kernel)
    zr, u0r, u1r = _up(z), _up(u0), _up(u1)
    want = R.a_matvec(zr, u0r, u1r, kernel)
    rel = 1e-10 if dtype == F64 else 1e-5
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
        base = _grads(loss(R.a_matvec(zb, u0b, u1b, kernel)), [zb, u0b, u1b, *ps])
    names = ["z", "u0", "u1", *[f"param{i}" for i in range(len(ps))]]
    assert_grads(names, gg, gw, base, 1e-9 if dtype == F64 else 1e-5, f"{kind} a_matvec")


def check_aux(mod, kind, M, d):
    """a_diag / a_column agree with the reference (they are O(M d))."""
    kernel = make_kernel(kind)
    z = torch.randn(M, d, generator=torch.Generator().manual_seed(5), dtype=F64)
    for a, b in zip(mod.a_diag(z, kernel), R.a_diag(z, kernel)):
        assert_close(a, b, max(float(b.abs().max()), 1e-3), 1e-12, "a_diag")
    for idx in (0, M - 1, M, M * (1 + d) - 1):
        for a, b in zip(mod.a_column(z, idx, kernel), R.a_column(z, idx, kernel)):
            assert_close(a, b, max(float(b.abs().max()), 1e-3), 1e-12, f"a_column {idx}")
