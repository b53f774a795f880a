"""Generic solvers (kernelmmd.solvers) against dense float64 linear algebra: pivoted Cholesky, Woodbury, CG."""

import numpy as np
import pytest
import torch

import kernelmmd as km
from kernelmmd.solvers import conjugate_gradient, pivoted_cholesky, woodbury_solve

DT = torch.float64


def _psd(N, rank, seed=0, scale=None):
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(rank, N, generator=g, dtype=DT)
    if scale is not None:
        B = B * scale
    return B.T @ B  # (N, N), rank ≤ rank


class _Counter:
    def __init__(self, A):
        self.A, self.calls = A, []

    def __call__(self, i):
        self.calls.append(i)
        return self.A[:, i].clone()


@pytest.mark.parametrize("N,r", [(1, 1), (7, 3), (33, 33), (40, 12)])
def test_pivoted_cholesky_exact_at_full_rank(N, r):
    A = _psd(N, r, seed=N)
    col = _Counter(A)
    f = pivoted_cholesky(torch.diagonal(A).clone(), col, max_rank=N, tol=1e-12)
    assert f.rank == r  # stops at the exact rank (residual trace ≤ tol · trace)
    assert col.calls == f.pivots.tolist() and len(set(col.calls)) == r  # only pivot columns, each once
    torch.testing.assert_close(f.R.T @ f.R, A, rtol=1e-10, atol=1e-10 * float(A.diagonal().max()))
    assert f.trace_residual <= 1e-12 * f.trace


def test_pivoted_cholesky_residual_psd_and_decreasing():
    A = _psd(30, 30, seed=1, scale=torch.logspace(0, -4, 30, dtype=DT)[:, None])  # decaying spectrum
    res = []
    for rank in (1, 2, 4, 8, 16, 30):
        f = pivoted_cholesky(lambda: torch.diagonal(A).clone(), lambda i: A[:, i], max_rank=rank)
        E = A - f.R.T @ f.R
        assert float(torch.linalg.eigvalsh(E).min()) > -1e-10  # A − RᵀR ⪰ 0
        np.testing.assert_allclose(f.trace_residual, float(E.diagonal().clamp_min(0).sum()), rtol=1e-8, atol=1e-12)
        res.append(f.trace_residual)
    assert all(b <= a for a, b in zip(res, res[1:])) and res[-1] < 1e-9 * res[0]


def test_pivoted_cholesky_pivots_are_greedy_and_tol_stops():
    A = torch.diag(torch.tensor([1.0, 5.0, 3.0, 0.5], dtype=DT))
    f = pivoted_cholesky(torch.diagonal(A), lambda i: A[:, i], max_rank=4)
    assert f.pivots.tolist() == [1, 2, 0, 3]
    g = pivoted_cholesky(torch.diagonal(A), lambda i: A[:, i], max_rank=4, tol=0.2)  # stop once residual ≤ 1.9
    assert g.rank == 2 and g.trace_residual <= 0.2 * g.trace


def test_pivoted_cholesky_zero_matrix_and_rank_cap():
    A = torch.zeros(5, 5, dtype=DT)
    f = pivoted_cholesky(torch.diagonal(A), lambda i: A[:, i], max_rank=3)
    assert f.rank == 0 and f.R.shape == (0, 5)
    B = _psd(4, 4)
    assert pivoted_cholesky(torch.diagonal(B), lambda i: B[:, i], max_rank=100).rank == 4


def test_pivoted_cholesky_errors():
    A = _psd(4, 4)
    d = torch.diagonal(A)
    with pytest.raises(TypeError, match="diag must be a torch.Tensor"):
        pivoted_cholesky([1.0, 2.0], lambda i: A[:, i], 2)
    with pytest.raises(ValueError, match=r"diag must have shape \(N,\)"):
        pivoted_cholesky(A, lambda i: A[:, i], 2)
    with pytest.raises(TypeError, match="column must be a callable"):
        pivoted_cholesky(d, A, 2)
    with pytest.raises(ValueError, match="max_rank must be an integer >= 1"):
        pivoted_cholesky(d, lambda i: A[:, i], 0)
    with pytest.raises(TypeError, match="max_rank must be an integer"):
        pivoted_cholesky(d, lambda i: A[:, i], 2.5)
    with pytest.raises(ValueError, match="tol must be a finite number >= 0"):
        pivoted_cholesky(d, lambda i: A[:, i], 2, tol=-1.0)
    with pytest.raises(ValueError, match=r"column\(\d\) must return a tensor of shape \(4,\)"):
        pivoted_cholesky(d, lambda i: A[:2, i], 2)


@pytest.mark.parametrize("ell", [0, 1, 5, 12])
@pytest.mark.parametrize("batch", [False, True])
def test_woodbury_matches_dense_solve(ell, batch):
    g = torch.Generator().manual_seed(ell)
    N, c = 12, 0.37
    R = torch.randn(ell, N, generator=g, dtype=DT)
    v = torch.randn(N, 3, generator=g, dtype=DT) if batch else torch.randn(N, generator=g, dtype=DT)
    want = torch.linalg.solve(R.T @ R + c * torch.eye(N, dtype=DT), v)
    torch.testing.assert_close(woodbury_solve(R, c, v), want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(woodbury_solve(R.float(), torch.tensor(c), v.float()), want, rtol=1e-4, atol=1e-4)


def test_woodbury_errors():
    R, v = torch.randn(2, 5, dtype=DT), torch.randn(5, dtype=DT)
    with pytest.raises(TypeError, match="R and v must be torch.Tensors"):
        woodbury_solve(R.numpy(), 1.0, v)
    with pytest.raises(ValueError, match=r"R must have shape \(rank, N\)"):
        woodbury_solve(R[0], 1.0, v)
    with pytest.raises(ValueError, match=r"v must have shape \(5,\) or \(5, B\)"):
        woodbury_solve(R, 1.0, v[:3])
    with pytest.raises(ValueError, match="c must be a finite number > 0"):
        woodbury_solve(R, 0.0, v)


def _spd(N, cond, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(N, N, generator=g, dtype=DT))
    ev = torch.logspace(0, np.log10(cond), N, dtype=DT)
    return (Q * ev) @ Q.T


@pytest.mark.parametrize("N,cond", [(1, 1.0), (8, 10.0), (40, 1e4)])
def test_cg_solves_spd(N, cond):
    A = _spd(N, cond, seed=N)
    b = torch.randn(N, dtype=DT, generator=torch.Generator().manual_seed(1))
    res = conjugate_gradient(lambda u: A @ u, b, tol=1e-12, max_iter=10 * N)
    assert res.converged and res.residual <= 1e-12 and res.iterations <= 10 * N
    torch.testing.assert_close(res.x, torch.linalg.solve(A, b), rtol=1e-8, atol=1e-8)


def test_cg_preconditioner_and_start_point():
    N = 50
    D = torch.logspace(0, 6, N, dtype=DT)
    A = torch.diag(D) + 1e-3 * _spd(N, 10.0)  # badly scaled, nearly diagonal
    b = torch.ones(N, dtype=DT)
    plain = conjugate_gradient(lambda u: A @ u, b, tol=1e-10, max_iter=500)
    pre = conjugate_gradient(lambda u: A @ u, b, tol=1e-10, max_iter=500, precond=lambda r: r / A.diagonal())
    assert pre.converged and pre.iterations < plain.iterations
    x = torch.linalg.solve(A, b)
    warm = conjugate_gradient(lambda u: A @ u, b, tol=1e-10, x0=x)
    assert warm.iterations == 0 and warm.converged
    torch.testing.assert_close(pre.x, x, rtol=1e-7, atol=1e-12)


def test_cg_zero_rhs():
    res = conjugate_gradient(lambda u: 2 * u, torch.zeros(3, dtype=DT))
    assert res.converged and res.iterations == 0 and bool((res.x == 0).all())


def test_cg_warns_when_not_converged():
    A = _spd(30, 1e6)
    b = torch.ones(30, dtype=DT)
    with pytest.warns(km.ConvergenceWarning, match="did not converge"):
        res = conjugate_gradient(lambda u: A @ u, b, tol=1e-12, max_iter=2)
    assert not res.converged and res.iterations == 2 and res.residual > 1e-12
    with pytest.warns(km.ConvergenceWarning, match="not positive definite"):
        res = conjugate_gradient(lambda u: -u, b)
    assert not res.converged


def test_cg_errors():
    b = torch.ones(3, dtype=DT)
    with pytest.raises(TypeError, match="matvec must be a callable"):
        conjugate_gradient(torch.eye(3), b)
    with pytest.raises(TypeError, match="precond must be None or a callable"):
        conjugate_gradient(lambda u: u, b, precond=1.0)
    with pytest.raises(TypeError, match="b must be a torch.Tensor"):
        conjugate_gradient(lambda u: u, [1.0, 2.0])
    with pytest.raises(ValueError, match=r"b must have shape \(N,\)"):
        conjugate_gradient(lambda u: u, torch.ones(3, 2))
    with pytest.raises(ValueError, match="tol must be a finite number > 0"):
        conjugate_gradient(lambda u: u, b, tol=0.0)
    with pytest.raises(ValueError, match="max_iter must be an integer >= 1"):
        conjugate_gradient(lambda u: u, b, max_iter=0)
    with pytest.raises(ValueError, match=r"x0 must have the shape of b"):
        conjugate_gradient(lambda u: u, b, x0=torch.ones(2, dtype=DT))
    with pytest.raises(ValueError, match=r"matvec must return a tensor of shape \(3,\)"):
        conjugate_gradient(lambda u: u[:2], b)
