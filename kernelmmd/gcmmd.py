r"""Gradient-Constrained MMD (GCMMD, SPEC §6): four solvers and envelope-theorem gradients.

With µ̂ the empirical measure on Z = {z_l}_{l=1..M} and η̂ the empirical witness (SPEC §4),

.. math::
    v = \begin{bmatrix}\hat\eta(Z)\\ \nabla\hat\eta(Z)\end{bmatrix},\quad
    \bar P = v^\top (A + M\lambda I)^{-1} v,\quad
    \mathrm{GCMMD}^2 = \frac{\|\hat\eta\|^2_{\mathcal H} - \bar P}{\lambda},\quad
    \|\hat\eta\|^2_{\mathcal H} = \mathrm{MMD}^2_b(X, Y),

where A = [[K, Gᵀ], [G, H]] is the M(1+d) × M(1+d) derivative-block matrix over Z (SPEC §2). It is the squared
supremum of E_P̂ f − E_Q̂ f over f with ‖f‖²_{L2(µ̂)} + ‖∇f‖²_{L2(µ̂)} + λ‖f‖²_H ≤ 1 (Arbel et al. 2018, Prop. 3).

**Solvers** (``solver=``): ``"dense"`` (materialise A, Cholesky; refuses systems larger than ``dense_max_size``),
``"ichol"`` (pivoted incomplete Cholesky from diag(A) and pivot columns, then Woodbury), ``"cg"`` (matrix-free
preconditioned conjugate gradient on products A·u), and ``"feature"`` for deep kernels K ∘ φ — exact, of size
M(1+s) instead of M(1+d): with a_l = φ(z_l), J_l = ∇φ(z_l) ∈ R^{s×d}, C the feature-space block matrix of K over
{a_l}, w_0 = [η̂_f(a); ∇η̂_f(a)] and L_l L_lᵀ = J_l J_lᵀ (L = blockdiag(I_M, L_1, …, L_M)),

.. math::
    \bar P = (L^\top w_0)^\top (L^\top C L + M\lambda I)^{-1} (L^\top w_0).

**Gradients** (in x, y, z, tensor kernel parameters, λ and φ's parameters) use the envelope identity
:math:`\bar P = \max_w 2w^\top v - w^\top(A + M\lambda I)w`: the maximiser w* is computed without autograd, and the
returned value is the surrogate :math:`2w^{*\top}v(\theta) - w^{*\top}(A(\theta) + M\lambda I)w^*` evaluated
differentiably with the ``kernel_mv`` / ``kernel_grad_mv`` / ``a_matvec`` ops (through :mod:`kernelmmd.ops`, so
fused backends plug in). Its value is P̄ at the exact w*, and its gradient is ∂P̄/∂θ. No factorisation or CG
iteration is ever differentiated. For the iterative/approximate solvers (``ichol`` below full rank, ``cg`` before
exact convergence) the surrogate at the approximate w is a lower bound on P̄ whose error is *quadratic* in the
error of w, so the GCMMD² returned is an upper bound on the exact one and is never negative; the gradient error is
linear in the error of w. Second derivatives through :func:`gcmmd2` are those of the surrogate with w* frozen (not
the exact second derivatives of P̄).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from . import _range, ops
from ._deprecation import old_positional_order
from ._estimator import block_stats, check_twice, features_and_jacobian, mmd2_v, out_dtype, witness_weights
from ._validate import as_samples, check_bool, check_int, check_nonnegative, check_positive, to_output
from .errors import ConvergenceWarning, user_stacklevel
from .kernels import DeepKernel, DotKernel, Kernel, RadialKernel, get_kernel, phi_features
from .solvers import conjugate_gradient, pivoted_cholesky, woodbury_solve

__all__ = ["GCMMDInfo", "gcmmd2", "DENSE_MAX_SIZE", "ICHOL_DEFAULT_RANK", "SOLVERS"]

#: default limit on the system size M(1+d) of the ``dense`` solver (A is materialised: 4096² float64 = 128 MiB)
DENSE_MAX_SIZE = 4096
#: default rank limit of the ``ichol`` solver (R has rank × M(1+d) float64 entries: 400 MiB at M = 64, d = 784)
ICHOL_DEFAULT_RANK = 1024
SOLVERS = ("auto", "dense", "feature", "ichol", "cg")
_PRECONDS = (None, "jacobi", "ichol")


@dataclass
class GCMMDInfo:
    """Diagnostics of one :func:`gcmmd2` call.

    Attributes:
        solver: the solver used ("dense", "feature", "ichol" or "cg"; ``auto`` resolved).
        size: size of the linear system solved: M(1+d) for dense/ichol/cg, M(1+s) for feature.
        M: number of points in Z. d: input dimension (numel of one sample). s: feature dimension (deep kernels).
        lam: λ.
        mmd2_biased: ‖η̂‖²_H = MMD²_b(X, Y).
        pbar: the P̄ estimate (the envelope surrogate's value).
        rank: ichol: rank reached (also the rank of the cg ``ichol`` preconditioner).
        trace_residual: ichol: trace(A − RᵀR) / trace(A).
        iterations, residual, converged: cg: iterations run, final relative residual, whether tol was reached.
        backend: backend used for the ops.
    """

    solver: str
    size: int
    M: int
    d: int
    lam: float
    mmd2_biased: float
    pbar: float
    s: int | None = None
    rank: int | None = None
    trace_residual: float | None = None
    iterations: int | None = None
    residual: float | None = None
    converged: bool | None = None
    backend: str = ""


def _needs_grad(*things) -> bool:
    if not torch.is_grad_enabled():
        return False
    for t in things:
        if isinstance(t, torch.Tensor) and t.requires_grad:
            return True
    return False


def _as_float(v) -> float:
    return float(v.detach()) if isinstance(v, torch.Tensor) else float(v)


def _kernel_tensors(k: Kernel) -> list:
    return [p for p in k.scalar_params() if isinstance(p, torch.Tensor)]


def _witness_at(z, x, y, k, backend):
    """v = [η̂(z) (M,); ∇η̂(z) (M, d)] through the kernel_mv / kernel_grad_mv ops (float64)."""
    pool, w = witness_weights(x, y)  # (n + m, d), (n + m,)
    v0 = ops.dispatch("kernel_mv", backend, z, pool)(z, pool, w, k)
    v1 = ops.dispatch("kernel_grad_mv", backend, z, pool)(z, pool, w, k)
    return v0.double(), v1.double()


def _a_matvec(z, u0, u1, k, backend):
    """A·[u0; u1] through the a_matvec op, computed in z's dtype, returned in float64."""
    t0, t1 = ops.dispatch("a_matvec", backend, z)(z, u0.to(z.dtype), u1.to(z.dtype), k)
    return t0.double(), t1.double()


def _surrogate(w0, w1, v0, v1, Aw0, Aw1, c):
    """2 wᵀv − wᵀ(A + cI)w for w = [w0; w1] held fixed (value P̄ at w*, gradient ∂P̄/∂θ)."""
    wv = w0 @ v0 + (w1 * v1).sum()
    wAw = w0 @ Aw0 + (w1 * Aw1).sum()
    return 2.0 * wv - wAw - c * (w0 @ w0 + (w1 * w1).sum())


def _dense_solve(A: torch.Tensor, v: torch.Tensor, c: float) -> torch.Tensor:
    A = A.clone()
    A.diagonal().add_(c)
    L = torch.linalg.cholesky(A)
    return torch.cholesky_solve(v[:, None], L)[:, 0]


def _check_dense_size(N: int, limit: int) -> None:
    if N > limit:
        raise ValueError(
            f"solver='dense' materialises the {N} x {N} matrix A (M(1+d) = {N}), larger than dense_max_size = "
            f"{limit}; use solver='ichol' or 'cg' (or 'feature' for a DeepKernel), or raise dense_max_size"
        )


# --------------------------------------------------------------------------------------------------------------
# input-space kernels: dense / ichol / cg
# --------------------------------------------------------------------------------------------------------------


def _solve_input(zt, k, v0, v1, c, solver, max_rank, tol, max_iter, precond, dense_max_size, backend, info):
    """w* ≈ (A + cI)⁻¹ v without autograd, for a kernel on R^d. Returns (w0 (M,), w1 (M, d)) float64."""
    M, d = zt.shape
    N = M * (1 + d)
    v = torch.cat([v0, v1.reshape(-1)])  # (N,)
    split = lambda u: (u[:M], u[M:].reshape(M, d))  # noqa: E731

    if solver == "dense":
        _check_dense_size(N, dense_max_size)
        K, G, H = ops.routine("dense_blocks", "torch")(zt, k)
        A = torch.cat([torch.cat([K, G.T], 1), torch.cat([G, H], 1)], 0).double()  # (N, N)
        return split(_dense_solve(A, v, c))

    diag_op = ops.dispatch("a_diag", backend, zt)
    col_op = ops.dispatch("a_column", backend, zt)

    def diag():
        t0, t1 = diag_op(zt, k)
        return torch.cat([t0.double(), t1.double().reshape(-1)])

    def column(i):
        t0, t1 = col_op(zt, i, k)
        return torch.cat([t0.double(), t1.double().reshape(-1)])

    if solver == "ichol":
        rank = min(N, ICHOL_DEFAULT_RANK) if max_rank is None else max_rank
        f = pivoted_cholesky(diag, column, rank, 0.0 if tol is None else tol)
        info.rank, info.trace_residual = f.rank, f.trace_residual / f.trace if f.trace > 0 else 0.0
        return split(woodbury_solve(f.R, c, v))

    # cg
    def matvec(u):
        a0, a1 = _a_matvec(zt, u[:M], u[M:].reshape(M, d), k, backend)
        return torch.cat([a0, a1.reshape(-1)]) + c * u

    pre = None
    if precond == "jacobi":
        dd = diag() + c
        pre = lambda r: r / dd  # noqa: E731
    elif precond == "ichol":
        f = pivoted_cholesky(diag, column, min(N, 100 if max_rank is None else max_rank), 0.0)
        info.rank, info.trace_residual = f.rank, f.trace_residual / f.trace if f.trace > 0 else 0.0
        pre = lambda r: woodbury_solve(f.R, c, r)  # noqa: E731
    res = conjugate_gradient(matvec, v, 1e-8 if tol is None else tol, max_iter, pre, warn=False)
    info.iterations, info.residual, info.converged = res.iterations, res.residual, res.converged
    if not res.converged:
        warnings.warn(
            f"gcmmd2(solver='cg') did not converge: relative residual {res.residual:.3g} > tol = "
            f"{1e-8 if tol is None else tol:g} after {res.iterations} iterations; the value returned is an upper bound "
            "on GCMMD² (raise max_iter, loosen tol, or use precond='ichol')",
            ConvergenceWarning,
            stacklevel=user_stacklevel(),
        )
    return split(res.x)


def _gcmmd_input(xt, yt, zt, k, lam, solver, max_rank, tol, max_iter, precond, dense_max_size, backend, info):
    M, d = zt.shape
    c = M * lam
    info.backend = ops.select_backend(backend, zt, op="a_matvec")
    grad = _needs_grad(xt, yt, zt, lam, *_kernel_tensors(k))
    with torch.set_grad_enabled(grad):
        mmd2b = mmd2_v(block_stats(xt, yt, k, backend=backend))
        v0, v1 = _witness_at(zt, xt, yt, k, backend)  # (M,), (M, d)
    with torch.no_grad():
        cf = _as_float(c)
        w0, w1 = _solve_input(
            zt.detach(), k, v0.detach(), v1.detach(), cf, solver, max_rank, tol, max_iter, precond,
            dense_max_size, backend, info,
        )
    with torch.set_grad_enabled(grad):
        Aw0, Aw1 = _a_matvec(zt, w0, w1, k, backend)
        pbar = _surrogate(w0, w1, v0, v1, Aw0, Aw1, c)
    return mmd2b, pbar


# --------------------------------------------------------------------------------------------------------------
# deep kernels K ∘ φ: feature (exact, M(1+s)) and dense (reference)
# --------------------------------------------------------------------------------------------------------------


def _sqrt_psd(Nm: torch.Tensor) -> torch.Tensor:
    """Symmetric PSD square roots of a batch (M, s, s) of Gram matrices J Jᵀ (eigenvalues clamped at 0)."""
    if Nm.shape[-1] == 1:
        return Nm.clamp_min(0.0).sqrt()
    ev, V = torch.linalg.eigh(Nm)
    return (V * ev.clamp_min(0.0).sqrt()[:, None, :]) @ V.transpose(1, 2)


def _feature_solve(a, J, e0, u, top, c):
    """Exact w* = (A + cI)⁻¹ v for A = B C Bᵀ, v = B w0 by the M(1+s) system (SPEC §6, feature solver).

    Returns (w0* (M,), w1* (M, D)) float64 in input space: w* = B q with q = (w0 − C L y) / c and
    (Lᵀ C L + cI) y = Lᵀ w0.
    """
    M, s = a.shape
    K, G, H = (b.double() for b in ops.routine("dense_blocks", "torch")(a, top))  # (M, M), (M s, M), (M s, M s)
    Jd = J.double()  # (M, s, D)
    Lb = _sqrt_psd(Jd @ Jd.transpose(1, 2))  # (M, s, s), L_l L_lᵀ = J_l J_lᵀ, symmetric
    Lbig = torch.block_diag(*Lb)  # (M s, M s)
    GL = Lbig.T @ G  # (M s, M)   L̃ᵀ G
    HL = Lbig.T @ H @ Lbig  # (M s, M s)
    S = torch.cat([torch.cat([K, GL.T], 1), torch.cat([GL, HL], 1)], 0)  # Lᵀ C L, (M(1+s), M(1+s))
    rhs = torch.cat([e0, (Lbig.T @ u.reshape(-1))])  # Lᵀ w0
    yv = _dense_solve(S, rhs, c)
    y0, y1 = yv[:M], yv[M:]
    Ly1 = Lbig @ y1  # (M s,)
    CLy0 = K @ y0 + G.T @ Ly1  # (M,)
    CLy1 = G @ y0 + H @ Ly1  # (M s,)
    q0 = (e0 - CLy0) / c
    q1 = (u.reshape(-1) - CLy1) / c
    w1 = torch.einsum("lsd,ls->ld", Jd, q1.reshape(M, s))  # (M, D)  J_lᵀ q1_l
    return q0, w1


def _deep_dense_solve(a, J, e0, u, top, c):
    """Reference: materialise A = B C Bᵀ (M(1+D) square) and solve."""
    M, s = a.shape
    D = J.shape[2]
    K, G, H = (b.double() for b in ops.routine("dense_blocks", "torch")(a, top))
    Jd = J.double()
    G4 = G.reshape(M, s, M)  # G[(l, r), l']
    H4 = H.reshape(M, s, M, s)  # H[(l, r), (l', r')]
    AG = torch.einsum("lrd,lrm->ldm", Jd, G4).reshape(M * D, M)  # Σ_r J[l, r, i] G[(l, r), l']
    AH = torch.einsum("lrd,lrmq,mqe->ldme", Jd, H4, Jd).reshape(M * D, M * D)
    A = torch.cat([torch.cat([K, AG.T], 1), torch.cat([AG, AH], 1)], 0)
    v = torch.cat([e0, torch.einsum("lrd,lr->ld", Jd, u).reshape(-1)])
    w = _dense_solve(A, v, c)
    return w[:M], w[M:].reshape(M, D)


def _gcmmd_deep(xt, yt, zt, z_is_x, kd, lam, solver, dense_max_size, backend, info):
    phi = kd.phi
    params = list(phi.parameters()) if isinstance(phi, torch.nn.Module) else None
    grad = torch.is_grad_enabled() and (
        params is None
        or any(p.requires_grad for p in params)
        or _needs_grad(xt, yt, zt, lam, *_kernel_tensors(kd.top))
    )
    with torch.set_grad_enabled(grad):
        az, J = features_and_jacobian(phi, zt, grad, "x" if z_is_x else "z")  # (M, s), (M, s, D)
        ax = az if z_is_x else phi_features(phi, xt, "x")
        ay = phi_features(phi, yt, "y")
        af, axf, ayf = az.double(), ax.double(), ay.double()
        top = kd.top.resolve(axf.detach(), ayf.detach())
        check_twice(top, "gcmmd2")
        M, s = af.shape
        D = J.shape[2]
        info.s, info.d = s, D
        info.backend = ops.select_backend(backend, af, op="a_matvec")
        c = M * lam
        mmd2b = mmd2_v(block_stats(axf, ayf, top, backend=backend))
        e0, u = _witness_at(af, axf, ayf, top, backend)  # (M,), (M, s)
    with torch.no_grad():
        cf = _as_float(c)
        if solver == "feature":
            info.size = M * (1 + s)
            w0, w1 = _feature_solve(af.detach(), J.detach(), e0.detach(), u.detach(), top, cf)
        else:  # dense
            info.size = M * (1 + D)
            _check_dense_size(info.size, dense_max_size)
            w0, w1 = _deep_dense_solve(af.detach(), J.detach(), e0.detach(), u.detach(), top, cf)
    with torch.set_grad_enabled(grad):
        p1 = torch.einsum("lsd,ld->ls", J.double(), w1)  # J_l(θ) w1*_l, (M, s)
        Cp0, Cp1 = _a_matvec(af, w0, p1, top, backend)
        wv = w0 @ e0 + (p1 * u).sum()  # w*ᵀ v(θ) = w0ᵀ η̂_f(a) + Σ_l (J_l w1_l)ᵀ ∇η̂_f(a_l)
        wAw = w0 @ Cp0 + (p1 * Cp1).sum()  # w*ᵀ A(θ) w* = pᵀ C(θ) p
        pbar = 2.0 * wv - wAw - c * (w0 @ w0 + (w1 * w1).sum())
    return mmd2b, pbar, ax.dtype


# --------------------------------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------------------------------


@old_positional_order(
    ("z", "kernel", "lam", "solver"),
    lambda args: args[0] is None or isinstance(args[0], (torch.Tensor, np.ndarray)),
    "gcmmd2(x, y, kernel='rbf', *, z=None, lam=1.0, solver='auto', ...)",
)
def gcmmd2(
    x,
    y,
    kernel="rbf",
    *,
    z=None,
    lam=1.0,
    solver: str = "auto",
    max_rank: int | None = None,
    tol: float | None = None,
    max_iter: int | None = None,
    precond: str | None = "jacobi",
    dense_max_size: int = DENSE_MAX_SIZE,
    backend: str = "auto",
    return_info: bool = False,
    **params,
):
    r"""Gradient-Constrained MMD², :math:`\mathrm{GCMMD}^2_{\hat\mu,k,\lambda}(\hat P, \hat Q)` (SPEC §6).

    .. math::
        \mathrm{GCMMD}^2 = \frac1\lambda\Bigl(\mathrm{MMD}^2_b(X, Y) - v^\top (A + M\lambda I)^{-1} v\Bigr),
        \qquad v = \begin{bmatrix}\hat\eta(Z)\\ \nabla\hat\eta(Z)\end{bmatrix}

    the squared supremum of E_P̂ f − E_Q̂ f over the RKHS ball ‖f‖²_{L2(µ̂)} + ‖∇f‖²_{L2(µ̂)} + λ‖f‖²_H ≤ 1, µ̂ the
    empirical measure on Z (default Z = X, i.e. µ = P̂). Always ≥ 0 (a rounding-level negative difference is returned
    as 0), ≤ MMD²_b / λ, and ≥ ``smmd2`` for the same Z, λ (Proposition 4 of Arbel et al.). See the module notes for
    the solvers and the envelope-theorem gradients.

    ``solver="auto"``: ``"feature"`` for a :class:`~kernelmmd.DeepKernel`; for a kernel on R^d, ``"dense"`` when
    the system size M(1+d) ≤ ``dense_max_size``, else ``"cg"`` (matrix-free, exact to ``tol``). The threshold is
    this argument, not a hidden constant; pass ``solver=`` explicitly for reproducible choices.

    Signature: ``(x, y, kernel, *, z, lam, solver, ...)`` like every other estimator (and :func:`kernelmmd.smmd2`).
    The old order ``gcmmd2(x, y, z, kernel, lam, solver)`` is deprecated: a call whose third positional argument
    is a tensor, a numpy array or None is read in that order, with a ``FutureWarning``.

    Args:
        x: samples of P, (n, d) (any (n, ...) for a deep kernel, e.g. images). y: samples of Q, same feature shape.
        kernel: a twice-differentiable kernel (rbf, mix_rbf, rq, mix_rq, linear, poly; name or object) or a
            :class:`~kernelmmd.DeepKernel` on top of one.
        z: points of µ̂, (M, d); default x (µ = P̂). Keyword-only.
        lam: λ > 0 (float or scalar tensor; tensors are differentiated).
        solver: ``"auto"``, ``"dense"``, ``"feature"`` (deep kernels only), ``"ichol"`` or ``"cg"``
            (kernels on R^d only).
        max_rank: ichol: rank limit (default min(M(1+d), :data:`ICHOL_DEFAULT_RANK` = 1024): exact for systems up
            to that size; the factor takes max_rank · M(1+d) float64s); cg with ``precond="ichol"``: the
            preconditioner's rank (default 100).
        tol: ichol: stop when trace(A − RᵀR) ≤ tol · trace(A) (default 0); cg: relative residual (default 1e-8).
        max_iter: cg iteration limit (default M(1+d)).
        precond: cg preconditioner: ``"jacobi"`` (default, diag(A) + Mλ), ``"ichol"`` (rank-``max_rank`` pivoted
            Cholesky + Woodbury) or ``None``.
        dense_max_size: largest system size M(1+d) that ``"dense"`` materialises (default
            :data:`DENSE_MAX_SIZE` = 4096) and below which ``"auto"`` picks it.
        backend: ops backend (see :mod:`kernelmmd.ops`).
        return_info: also return a :class:`GCMMDInfo`.
        **params: kernel parameters when ``kernel`` is a name (``sigma="median"`` is resolved on (x, y)).

    Returns:
        0-d tensor (float for numpy inputs), differentiable in x, y, z, tensor kernel parameters, λ and φ's
        parameters; or ``(value, GCMMDInfo)``.

    Raises:
        ValueError: λ ≤ 0; unknown solver/precond; ``"feature"`` with a kernel on R^d or ``"ichol"``/``"cg"`` with a
            DeepKernel; ``"dense"`` above ``dense_max_size``; a kernel that is not twice differentiable (laplacian,
            energy, rbf_bounded); bad shapes, NaN/Inf, mismatched feature shapes.
        TypeError: bad argument types.

    Warns:
        ConvergenceWarning: ``cg`` stopped before reaching ``tol``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(20, 2, generator=g, dtype=torch.float64)
        >>> y = torch.randn(20, 2, generator=g, dtype=torch.float64) + 1
        >>> val, info = gcmmd2(x, y, kernel="rbf", lam=1.0, sigma=1.0, return_info=True)
        >>> info.solver, info.size, bool(val >= 0)
        ('dense', 60, True)
    """
    return_info = check_bool("return_info", return_info)
    if not isinstance(solver, str) or solver not in SOLVERS:
        raise ValueError(f"solver must be one of {list(SOLVERS)}, got {solver!r}")
    if precond not in _PRECONDS:
        raise ValueError(f"precond must be one of {list(_PRECONDS)}, got {precond!r}")
    check_positive("lam", lam)
    if max_rank is not None:
        check_int("max_rank", max_rank, minimum=1)
    if max_iter is not None:
        check_int("max_iter", max_iter, minimum=1)
    if tol is not None:
        check_nonnegative("tol", tol)
    check_int("dense_max_size", dense_max_size, minimum=1)
    k = get_kernel(kernel, **params)
    deep = isinstance(k, DeepKernel)
    named = [("x", x), ("y", y)] + ([] if z is None else [("z", z)])
    smp = as_samples(*named, any_shape=deep)
    xt, yt = smp.tensors[:2]
    zt = xt if z is None else smp.tensors[2]
    lam_f = _as_float(lam)
    info = GCMMDInfo(solver="", size=0, M=zt.shape[0], d=0, lam=lam_f, mmd2_biased=0.0, pbar=0.0, backend=backend)

    if deep:
        if solver in ("ichol", "cg"):
            raise ValueError(
                f"solver={solver!r} is for kernels on R^d; a DeepKernel uses 'feature' (exact, size M(1+s)) or 'dense'"
            )
        check_twice(k.top, "gcmmd2")
        info.solver = "feature" if solver == "auto" else solver
        mmd2b, pbar, dt = _gcmmd_deep(xt, yt, zt, z is None, k, lam, info.solver, dense_max_size, backend, info)
        plan = _range.Plan(torch.float64, out_dtype(torch.empty(0, dtype=dt)), "features")  # float64 throughout
    else:
        if solver == "feature":
            raise ValueError(
                "solver='feature' needs a DeepKernel(phi, top); for a kernel on R^d use 'dense', 'ichol' or 'cg'"
            )
        ts = (xt, yt, zt)
        if xt.dtype in (torch.float16, torch.bfloat16):
            ts = tuple(t.float() for t in ts)
        xt, yt, zt = ts
        k = k.resolve(xt, yt)
        check_twice(k, "gcmmd2")
        # compute dtype: float64 where float32 cannot hold t, g, g', g'' (kernelmmd._range); the result is cast back
        zs = (zt,) if z is not None else ()
        (xt, yt, *zs), k, plan = _range.compute((xt, yt, *zs), k, max(smp.amax), orders=(0, 1, 2))
        zt = zs[0] if z is not None else xt
        if not isinstance(k, (RadialKernel, DotKernel)):  # pragma: no cover - _check_twice covers it
            raise ValueError(f"gcmmd2 needs a radial or dot-product kernel, got {k!r}")
        M, d = zt.shape
        N = M * (1 + d)
        info.d, info.size = d, N
        info.solver = solver if solver != "auto" else ("dense" if N <= dense_max_size else "cg")
        mmd2b, pbar = _gcmmd_input(
            xt, yt, zt, k, lam, info.solver, max_rank, tol, max_iter, precond, dense_max_size, backend, info
        )
    # pbar ≤ MMD²_b exactly (a quadratic form of (A + MλI)⁻¹ ≤ ‖η̂‖²): a negative difference is rounding (seen:
    # −5.5e-36 on P̂ = Q̂ problems), and GCMMD² ≥ 0 is promised (a sqrt of it must never give NaN)
    value = (mmd2b - pbar).clamp_min(0.0) / lam
    info.mmd2_biased, info.pbar = float(mmd2b.detach()), float(pbar.detach())
    out = to_output(plan.result(value), smp.numpy)
    return (out, info) if return_info else out
