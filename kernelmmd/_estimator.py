r"""Estimator plumbing shared by :mod:`~kernelmmd.mmd`, :mod:`~kernelmmd.scaled`, :mod:`~kernelmmd.gcmmd`,
:mod:`~kernelmmd.two_sample` and :mod:`~kernelmmd.scores` (private; see docs/ARCHITECTURE.md, "Data flow of one call").

* inputs: :func:`prepare` (validation, a deep kernel's features, half → float32, kernel resolution, compute dtype);
* block sums: :func:`block_stats` (the ``block_stats`` op through the dispatch table, with ``precision``);
* statistics from block sums (float64, last-axis inner products, so a leading axis of replicates works too):
  :func:`mmd2_u`, :func:`mmd2_v`, the H1 variance :func:`mmd2_variance_h1`, the exactly unbiased
  :func:`mmd2_u_variance` and :func:`relative_variance` built from the moments of the Hoeffding decomposition;
* the witness as one weighted kernel sum: :func:`witness_weights`;
* deep kernels K ∘ φ: :func:`check_twice`, :func:`out_dtype`, :func:`features_and_jacobian` (per-sample Jacobians).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import _range, ops
from ._validate import as_samples, check_choice
from .kernels import DeepKernel, DotKernel, Kernel, RadialKernel, get_kernel, phi_features
from .ops.types import BlockStats

__all__ = [
    "Prepared",
    "prepare",
    "PRECISIONS",
    "block_stats",
    "mmd2_u",
    "mmd2_v",
    "mmd2_variance_h1",
    "mmd2_u_variance",
    "relative_variance",
    "witness_weights",
    "check_twice",
    "out_dtype",
    "jacobian",
    "features_and_jacobian",
]


# ------------------------------------------------------------------------------------------------------ inputs
@dataclass
class Prepared:
    """Validated tensors (features, for a deep kernel), the resolved top-level kernel and the output mode."""

    tensors: tuple[torch.Tensor, ...]  # in the compute dtype (float64 where float32 cannot hold the values)
    kernel: Kernel  # resolved, tensor parameters cast to the compute dtype
    numpy: bool
    dtype: torch.dtype  # the output dtype: float32 for float32 / half inputs, float64 for float64
    plan: _range.Plan | None = None

    def out(self, value: torch.Tensor) -> torch.Tensor:
        """A result in the output dtype (warns if a float64 computation's result overflows float32)."""
        return value.to(self.dtype) if self.plan is None else self.plan.result(value)


def prepare(named, kernel, params, *, min_points: int = 1, resolve_on: int = 2, orders=(0, 1)) -> Prepared:
    """Validate inputs, apply a deep kernel's feature map, upcast half precision and resolve the kernel.

    ``named`` is a sequence of ``(argument name, array)``; the first ``resolve_on`` sets are pooled to resolve
    data-dependent kernel parameters (``sigma="median"``, ``gamma=None``).

    Then :func:`kernelmmd._range.compute` picks the compute dtype: float32 tensors whose squared distances, inner
    products or kernel profile (orders ``orders``) leave float32's range are computed in float64 (``tensors`` and
    tensor kernel parameters cast differentiably) and the results cast back (``Prepared.out``); where float64 cannot
    hold them either, one :class:`~kernelmmd.NumericalWarning`. ``Prepared.dtype`` is the output dtype.
    """
    k = get_kernel(kernel, **params)
    deep = isinstance(k, DeepKernel)
    s = as_samples(*named, min_points=min_points, any_shape=deep)
    ts = s.tensors
    if deep:
        ts = tuple(k.features(t, name) for (name, _), t in zip(named, ts))
        k = k.top
    if ts[0].dtype in (torch.float16, torch.bfloat16):
        ts = tuple(t.float() for t in ts)
    pool = ts[:resolve_on]
    k = k.resolve(pool[0], torch.cat(pool[1:]) if len(pool) > 1 else None)
    amax = None if deep else max(s.amax, default=None)  # features: one reduction in _range
    ts, k, plan = _range.compute(ts, k, amax, orders=orders, what="features" if deep else "inputs")
    return Prepared(ts, k, s.numpy, plan.out, plan)


# -------------------------------------------------------------------------------------------------- block sums
#: ``precision`` values: exact fp32 products everywhere, or tensor-core products on the triton backend
PRECISIONS = ops.PRECISIONS


def block_stats(x, y, kernel: Kernel, *, variance: bool = False, backend: str = "auto",
                precision: str = "ieee") -> BlockStats:
    """The fused block statistics of SPEC §3 through the selected backend (inputs already prepared).

    ``precision`` other than ``"ieee"`` (TF32 / split-TF32 tensor-core products) exists only on the triton
    backend; any other backend raises ``ValueError`` for it rather than silently computing something else.
    """
    check_choice("precision", precision, PRECISIONS)
    if precision == "ieee":
        return ops.dispatch("block_stats", backend, x, y)(x, y, kernel, variance=variance)
    b = ops.select_backend(backend, x, y, op="block_stats")  # the resolved name is part of the message below
    if b != "triton":
        raise ValueError(
            f"precision={precision!r} (tensor-core products) needs the triton backend, but backend={backend!r} "
            f"resolved to {b!r} for these tensors; use precision='ieee' or backend='triton' with CUDA tensors"
        )
    return ops.routine("block_stats", b)(x, y, kernel, variance=variance, precision=precision)


# ------------------------------------------------------------------------------------ statistics from block sums
def mmd2_u(st: BlockStats) -> torch.Tensor:
    """MMD²_u (U-statistic: diagonals excluded) from block sums."""
    n, m = st.n, st.m
    return st.sxx / (n * (n - 1)) + st.syy / (m * (m - 1)) - 2.0 * st.sxy / (n * m)


def mmd2_v(st: BlockStats) -> torch.Tensor:
    """MMD²_b (V-statistic: diagonals included) from block sums."""
    n, m = st.n, st.m
    return (st.sxx + st.dxx) / (n * n) + (st.syy + st.dyy) / (m * m) - 2.0 * st.sxy / (n * m)


def mmd2_variance_h1(st: BlockStats) -> torch.Tensor:
    """The H1 variance estimator of Sutherland et al. 2017 (SPEC §3), n = m."""
    m = st.m
    rxx, ryy, rxy, cxy = st.rxx, st.ryy, st.rxy, st.cxy
    sxx, syy, sxy = st.sxx, st.syy, st.sxy
    return (
        2.0 / (m**2 * (m - 1) ** 2) * (2 * rxx @ rxx - st.qxx + 2 * ryy @ ryy - st.qyy)
        - (4.0 * m - 6) / (m**3 * (m - 1) ** 3) * (sxx**2 + syy**2)
        + 4.0 * (m - 2) / (m**3 * (m - 1) ** 2) * (rxy @ rxy + cxy @ cxy)
        - 4.0 * (m - 3) / (m**3 * (m - 1) ** 2) * st.qxy
        - (8.0 * m - 12) / (m**5 * (m - 1)) * sxy**2
        + 8.0 / (m**3 * (m - 1)) * ((sxx + syy) * sxy / m - rxx @ rxy - ryy @ cxy)
    )


def _dot(a, b):
    """Inner product over the last axis (so the estimators below also take a leading batch of replicates)."""
    return (a * b).sum(-1)


class _Moments:
    """Unbiased estimates of the population moments of one kernel block, from its row sums and squared sums.

    Within-sample block over Y (size m, zero diagonal): ``theta`` = E k(y, y'), ``mu2`` = E_y μ_Y(y)²,
    ``theta2`` = (E k(y, y'))², ``k2`` = E k(y, y')². Cross block X × Y (n × m): ``theta`` = E k(x, y),
    ``mu2_row`` = E_x μ_Y(x)², ``mu2_col`` = E_y μ_X(y)², ``theta2``, ``k2``. μ_Y(a) = E_y k(a, y).
    Each is a U-statistic over distinct indices, hence exactly unbiased.
    """

    @staticmethod
    def within(r, s, q, m):
        return dict(
            theta=s / (m * (m - 1)),
            mu2=(_dot(r, r) - q) / (m * (m - 1) * (m - 2)),
            theta2=(s * s - 4.0 * _dot(r, r) + 2.0 * q) / (m * (m - 1) * (m - 2) * (m - 3)),
            k2=q / (m * (m - 1)),
        )

    @staticmethod
    def cross(a, b, s, q, n, m):
        return dict(
            theta=s / (n * m),
            mu2_row=(_dot(a, a) - q) / (n * m * (m - 1)),
            mu2_col=(_dot(b, b) - q) / (n * (n - 1) * m),
            theta2=(s * s - _dot(a, a) - _dot(b, b) + q) / (n * (n - 1) * m * (m - 1)),
            k2=q / (n * m),
        )


def _var_u(w, m):
    """Var of the within-sample U-statistic: (4(m−2) ζ₁ + 2 ζ₂) / (m(m−1))."""
    zeta1, zeta2 = w["mu2"] - w["theta2"], w["k2"] - w["theta2"]
    return (4.0 * (m - 2) * zeta1 + 2.0 * zeta2) / (m * (m - 1))


def _var_v(c, n, m):
    """Var of the cross mean V = Σ_ij k(x_i, y_j)/(nm): (σ² + (m−1) ξ_x + (n−1) ξ_y) / (nm)."""
    sigma2 = c["k2"] - c["theta2"]
    xi_x, xi_y = c["mu2_row"] - c["theta2"], c["mu2_col"] - c["theta2"]
    return (sigma2 + (m - 1) * xi_x + (n - 1) * xi_y) / (n * m)


def _cov_uv(r, s_within, c_cross, s_cross, m, n):
    """Cov(U_Y, V_XY) = 2 Cov_y(μ_Y(y), μ_X(y)) / m, with r the within row sums and c_cross the cross sums over y."""
    e_prod = _dot(r, c_cross) / (m * (m - 1) * n)  # E_y μ_Y(y) μ_X(y)
    theta_prod = (s_within * s_cross - 2.0 * _dot(r, c_cross)) / (m * (m - 1) * (m - 2) * n)  # θ_Y θ_XY
    return 2.0 * (e_prod - theta_prod) / m


def mmd2_u_variance(st: BlockStats) -> torch.Tensor:
    r"""Exactly unbiased estimate of Var(MMD²_u) for any n, m ≥ 4 (derived here; checked against Monte Carlo).

    MMD²_u = U_X + U_Y − 2V with U the within-sample U-statistics and V the cross mean; by Hoeffding,
    Var = Var U_X + Var U_Y + 4 Var V − 4 Cov(U_X, V) − 4 Cov(U_Y, V) (U_X ⟂ U_Y), each term a linear
    combination of population moments that :class:`_Moments` estimates without bias.
    """
    n, m = st.n, st.m
    wx = _Moments.within(st.rxx, st.sxx, st.qxx, n)
    wy = _Moments.within(st.ryy, st.syy, st.qyy, m)
    c = _Moments.cross(st.rxy, st.cxy, st.sxy, st.qxy, n, m)
    return (
        _var_u(wx, n)
        + _var_u(wy, m)
        + 4.0 * _var_v(c, n, m)
        - 4.0 * _cov_uv(st.rxx, st.sxx, st.rxy, st.sxy, n, m)
        - 4.0 * _cov_uv(st.ryy, st.syy, st.cxy, st.sxy, m, n)
    )


def relative_variance(sy: BlockStats, sz: BlockStats) -> torch.Tensor:
    r"""Exactly unbiased estimate of Var(d̂), d̂ = MMD²_u(X, Y) − MMD²_u(X, Z), for n ≥ 2 and m, M ≥ 4.

    The U_X terms cancel, so d̂ = U_Y − U_Z − 2V_XY + 2V_XZ and, Y and Z being independent,

    Var d̂ = Var U_Y + Var U_Z + 4 Var V_XY + 4 Var V_XZ − 4 Cov(U_Y, V_XY) − 4 Cov(U_Z, V_XZ)
            − 8 Cov(V_XY, V_XZ),   Cov(V_XY, V_XZ) = Cov_x(μ_Y(x), μ_Z(x)) / n.

    The leading order is 4/m Var_y(μ_Y − μ_X) + 4/M Var_z(μ_Z − μ_X) + 4/n Var_x(μ_Y − μ_Z), the variance used by
    Bounliphone et al. 2016; the remaining second-order terms make the estimate exact at every sample size.
    """
    n, m, M = sy.n, sy.m, sz.m
    wy = _Moments.within(sy.ryy, sy.syy, sy.qyy, m)
    wz = _Moments.within(sz.ryy, sz.syy, sz.qyy, M)
    cy = _Moments.cross(sy.rxy, sy.cxy, sy.sxy, sy.qxy, n, m)
    cz = _Moments.cross(sz.rxy, sz.cxy, sz.sxy, sz.qxy, n, M)
    e_yz = _dot(sy.rxy, sz.rxy) / (n * m * M)  # E_x μ_Y(x) μ_Z(x)
    theta_yz = (sy.sxy * sz.sxy - _dot(sy.rxy, sz.rxy)) / (n * (n - 1) * m * M)  # θ_XY θ_XZ
    return (
        _var_u(wy, m)
        + _var_u(wz, M)
        + 4.0 * _var_v(cy, n, m)
        + 4.0 * _var_v(cz, n, M)
        - 4.0 * _cov_uv(sy.ryy, sy.syy, sy.cxy, sy.sxy, m, n)
        - 4.0 * _cov_uv(sz.ryy, sz.syy, sz.cxy, sz.sxy, M, n)
        - 8.0 * (e_yz - theta_yz) / n
    )


# ----------------------------------------------------------------------------------------------------- witness
def witness_weights(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The witness η̂ = Σ_j w_j k(·, s_j) as one weighted sum: s = [x; y] (n + m, d), w = [1/n …; −1/m …] float64."""
    n, m = x.shape[0], y.shape[0]
    w = torch.cat([x.new_full((n,), 1.0 / n, dtype=torch.float64), y.new_full((m,), -1.0 / m, dtype=torch.float64)])
    return torch.cat([x, y]), w  # (n + m, d), (n + m,)


# ------------------------------------------------------------------------------------------ deep kernels K ∘ φ
_TWICE = "rbf, mix_rbf, rq, mix_rq, linear, poly"


def check_twice(k: Kernel, what: str) -> None:
    """k (a top kernel or an input-space kernel) must be radial or dot and twice differentiable."""
    if not k.twice_differentiable or not isinstance(k, (RadialKernel, DotKernel)):
        raise ValueError(
            f"{what} needs a twice-differentiable kernel ({_TWICE}, or a DeepKernel on top of one); got {k!r}, "
            "which is not twice differentiable at coincident points (MMD only)"
        )


def out_dtype(t: torch.Tensor) -> torch.dtype:
    """Result dtype: float64 stays float64, everything else (float32, half precision) is returned as float32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _leaf_like(x: torch.Tensor) -> torch.Tensor:
    """x itself when it already carries a graph (so gradients reach its producer), else a detached copy that
    requires grad (so ∇_x φ(x) exists)."""
    return x if x.requires_grad else x.detach().requires_grad_(True)


def jacobian(f: torch.Tensor, x: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """Per-sample Jacobians J[n, r, :] = ∇_x φ_r(x_n), shape (n, s, D) with D = x[0].numel().

    s vector-Jacobian products (one backward pass each; a single one for s = 1).
    """
    n, s = f.shape
    rows = []
    for r in range(s):
        (g,) = torch.autograd.grad(f[:, r].sum(), x, create_graph=create_graph, retain_graph=True, allow_unused=True)
        if g is None:  # φ_r does not depend on x
            g = torch.zeros_like(x)
        rows.append(g.reshape(n, -1))  # (n, D)
    return torch.stack(rows, 1)  # (n, s, D)


def features_and_jacobian(phi, x: torch.Tensor, create_graph: bool,
                          arg: str = "x") -> tuple[torch.Tensor, torch.Tensor]:
    """(φ(x) (n, s), J (n, s, D)), both differentiable when ``create_graph``; ``arg`` names x in φ's messages."""
    with torch.enable_grad():
        xr = _leaf_like(x)
        f = phi_features(phi, xr, arg)
        return f, jacobian(f, xr, create_graph)
