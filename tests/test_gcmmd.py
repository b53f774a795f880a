"""GCMMD² (kernelmmd.gcmmd2): every solver against an independent float64 reference, gradients, bounds, errors.

The reference is tests/_gcmmd_ref.py (no kernelmmd code), differentiated directly by autograd: the test reference for
the envelope gradients. Deep kernels use k(a, b) = K(φ(a), φ(b)) with the same φ module.
"""

import math
import warnings

import numpy as np
import pytest
import torch
from torch.func import functional_call

import kernelmmd as km
from kernelmmd import ops
from kernelmmd.ops import reference

from ._cases import TWICE, case, name_params
from ._gcmmd_ref import TOPS, deep_kfun, kfun, mlp, ref_gcmmd2
from ._gcmmd_ref import gcmmd_data as _data

DT = torch.float64


KERNELS = [tuple(case(i)) for i in TWICE]  # (name, params) of the twice-differentiable kinds
EXACT = {"dense": {}, "ichol": {}, "cg": {"tol": 1e-13, "max_iter": 2000}}


# ---------------------------------------------------------------------------------------------------------------
# values
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", list(EXACT))
@pytest.mark.parametrize("name,params", name_params(*TWICE))
def test_solvers_agree_with_reference(name, params, solver):
    x, y, z = _data()
    want, mmd2b, pbar = ref_gcmmd2(kfun(name, **params), x, y, z, 0.3)
    got, info = km.gcmmd2(x, y, z=z, kernel=name, lam=0.3, solver=solver, return_info=True, **params, **EXACT[solver])
    assert got.dtype == DT and got.ndim == 0
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6 if solver == "cg" else 1e-9)
    np.testing.assert_allclose(info.mmd2_biased, float(mmd2b), rtol=1e-12)
    np.testing.assert_allclose(info.pbar, float(pbar), rtol=1e-8)
    assert info.solver == solver and info.size == 6 * 4 and info.M == 6 and info.d == 3
    if solver == "ichol":
        assert info.rank <= info.size and info.trace_residual < 1e-12
    if solver == "cg":
        assert info.converged and info.residual <= 1e-13


@pytest.mark.parametrize("d", [1, 4])
def test_default_z_is_x_and_numpy(d):
    x, y, _ = _data(n=7, m=6, d=d, seed=3)
    want, _, _ = ref_gcmmd2(kfun("rbf", sigma=0.9), x, y, x, 0.5)
    got = km.gcmmd2(x, y, kernel="rbf", sigma=0.9, lam=0.5)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-9)
    got_np = km.gcmmd2(x.numpy(), y.numpy(), kernel="rbf", sigma=0.9, lam=0.5)
    assert isinstance(got_np, float)
    np.testing.assert_allclose(got_np, float(want), rtol=1e-9)


def test_float32_close_to_float64():
    x, y, z = _data(seed=4)
    want = km.gcmmd2(x, y, z=z, kernel="rbf", sigma=1.0, lam=1.0)
    for solver in ("dense", "ichol", "cg"):
        got = km.gcmmd2(x.float(), y.float(), z=z.float(), kernel="rbf", sigma=1.0, lam=1.0, solver=solver)
        assert got.dtype == torch.float32
        np.testing.assert_allclose(float(got), float(want), rtol=1e-4)


def test_median_bandwidth_resolved_on_x_and_y():
    x, y, z = _data(seed=5)
    sig = km.bandwidth(x, y)
    np.testing.assert_allclose(
        float(km.gcmmd2(x, y, z=z, kernel="rbf", sigma="median")), float(km.gcmmd2(x, y, z=z, kernel="rbf", sigma=sig))
    )


def test_ichol_error_decreases_with_rank_and_bounds_from_above():
    x, y, z = _data(n=8, m=8, M=8, d=4, seed=6)
    kw = dict(kernel="rbf", sigma=1.5, lam=0.05)
    exact = float(km.gcmmd2(x, y, z=z, solver="dense", **kw))
    N = 8 * 5
    errs = []
    for rank in (1, 2, 4, 8, 16, 24, 32, N):
        val, info = km.gcmmd2(x, y, z=z, solver="ichol", max_rank=rank, return_info=True, **kw)
        assert info.rank == rank
        assert float(val) >= exact - 1e-12  # the surrogate at an approximate w gives an upper bound
        errs.append(float(val) - exact)
    assert all(b <= a + 1e-12 for a, b in zip(errs, errs[1:])), errs
    assert errs[0] > 1e-3 and errs[-1] <= 1e-9 * exact


def test_ichol_tol_stops_early():
    x, y, z = _data(n=8, m=8, M=8, d=4, seed=6)
    _, info = km.gcmmd2(x, y, z=z, kernel="rbf", sigma=1.5, lam=0.05, solver="ichol", tol=1e-3, return_info=True)
    assert info.rank < info.size and info.trace_residual <= 1e-3


def test_ichol_reads_only_diag_and_pivot_columns(monkeypatch):
    """ichol: one a_diag call, one a_column per pivot, one a_matvec (the envelope surrogate), never dense A."""
    x, y, z = _data(seed=7)
    calls = {}
    real = ops.routine

    def counting(op, backend):
        fn = real(op, backend)

        def wrapped(*a, **k):
            calls[op] = calls.get(op, 0) + 1
            return fn(*a, **k)

        return wrapped

    def forbidden(*a, **k):
        raise AssertionError("ichol must not materialise A")

    monkeypatch.setattr(ops, "routine", counting)
    monkeypatch.setattr(reference, "dense_blocks", forbidden)
    val, info = km.gcmmd2(x, y, z=z, kernel="rbf", sigma=1.3, lam=0.3, solver="ichol", max_rank=10, return_info=True)
    assert calls["a_diag"] == 1 and calls["a_column"] == info.rank == 10 and calls["a_matvec"] == 1
    assert set(calls) == {"a_diag", "a_column", "a_matvec", "block_stats", "kernel_mv", "kernel_grad_mv"}
    calls.clear()
    km.gcmmd2(x, y, z=z, kernel="rbf", sigma=1.3, lam=0.3, solver="cg", precond=None)
    assert "a_column" not in calls and calls["a_matvec"] >= 2


@pytest.mark.parametrize("precond", [None, "jacobi", "ichol"])
def test_cg_preconditioners_agree(precond):
    x, y, z = _data(n=6, m=6, M=7, d=5, seed=8)
    kw = dict(kernel=km.RBF(0.7), lam=0.02)
    exact = float(km.gcmmd2(x, y, z=z, solver="dense", **kw))
    val, info = km.gcmmd2(x, y, z=z, solver="cg", precond=precond, tol=1e-10, max_iter=1000, return_info=True, **kw)
    assert info.converged
    np.testing.assert_allclose(float(val), exact, rtol=1e-6)
    if precond == "ichol":
        assert info.rank == 42  # min(N, 100) = N here: exact preconditioner
        assert info.iterations <= 2


def test_cg_warns_when_not_converged():
    x, y, z = _data(seed=9)
    with pytest.warns(km.ConvergenceWarning, match="did not converge"):
        val, info = km.gcmmd2(x, y, z=z, kernel="rbf", sigma=1.0, lam=1e-3, solver="cg", max_iter=2, return_info=True)
    assert info.iterations == 2 and not info.converged
    exact = float(km.gcmmd2(x, y, z=z, kernel="rbf", sigma=1.0, lam=1e-3))
    assert float(val) >= exact  # still an upper bound, never negative


def test_auto_choices_and_dense_limit():
    x, y, z = _data(seed=10)
    _, info = km.gcmmd2(x, y, z=z, kernel="rbf", return_info=True)
    assert info.solver == "dense"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        val, info = km.gcmmd2(x, y, z=z, kernel="rbf", dense_max_size=10, return_info=True)
    assert info.solver == "cg" and info.converged
    np.testing.assert_allclose(float(val), float(km.gcmmd2(x, y, z=z, kernel="rbf")), rtol=1e-6)
    with pytest.raises(ValueError, match=r"solver='dense' materialises the 24 x 24 matrix A .* dense_max_size = 10"):
        km.gcmmd2(x, y, z=z, kernel="rbf", solver="dense", dense_max_size=10)
    phi = mlp(3, 1)
    _, info = km.gcmmd2(x, y, z=z, kernel=km.DeepKernel(phi, "rbf"), return_info=True)
    assert info.solver == "feature" and info.size == 6 * 2 and info.s == 1 and info.d == 3
    with pytest.raises(ValueError, match="solver='dense' materialises the 24 x 24"):
        km.gcmmd2(x, y, z=z, kernel=km.DeepKernel(phi, "rbf"), solver="dense", dense_max_size=10)


# ---------------------------------------------------------------------------------------------------------------
# bounds: GCMMD² ≥ 0, ≤ MMD²_b / λ, SMMD² ≤ GCMMD² (Proposition 4 of Arbel et al. 2018)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_nonnegative_and_bounds_on_random_problems(seed):
    """Prop. 4 (seed 001): ‖f‖_{S(µ),k,λ} ≤ σ⁻¹_{µ,k,λ}‖f‖_H for every f, so the SMMD ball lies inside the GCMMD ball
    and SMMD_{µ,k,λ}(P, Q) ≤ GCMMD_{µ,k,λ}(P, Q) for the same µ (here µ̂ on Z), k and λ. Checked on the squares with
    SMMD² = σ² MMD²_b (the plug-in value for P̂, Q̂, the same ‖η̂‖² GCMMD² uses)."""
    rng = np.random.default_rng(seed)
    name, params = KERNELS[seed % len(KERNELS)]
    n, m, M, d = (int(v) for v in rng.integers(2, 9, size=4))
    x, y, z = _data(n=n, m=m, M=M, d=d, seed=100 + seed, shift=float(rng.uniform(0, 1.5)))
    if seed % 2:
        y = x.clone()[:m] if m <= n else y  # include P̂ = Q̂-like problems
    lam = float(10 ** rng.uniform(-3, 1))
    zz = None if seed % 3 == 0 else z
    g = km.gcmmd2(x, y, z=zz, kernel=name, lam=lam, **params)
    s = km.smmd2(x, y, name, z=zz, lam=lam, **params)
    b = km.mmd2_biased(x, y, name, **params)
    assert float(g) >= 0
    assert float(s) <= float(g) * (1 + 1e-9) + 1e-12
    assert float(g) <= float(b) / lam * (1 + 1e-9) + 1e-12


@pytest.mark.parametrize("top,s", [("rbf", 1), ("linear", 3)])
def test_smmd_below_gcmmd_deep(top, s):
    x, y, z = _data(n=6, m=6, M=5, d=4, seed=11)
    for seed in range(3):
        kd = km.DeepKernel(mlp(4, s, seed=seed), top)
        for lam in (1e-2, 1.0):
            g = km.gcmmd2(x, y, z=z, kernel=kd, lam=lam)
            sm = km.smmd2(x, y, kd, z=z, lam=lam)
            assert 0 <= float(sm.detach()) <= float(g.detach()) * (1 + 1e-9)


def test_gcmmd_zero_when_samples_equal():
    x, _, z = _data(seed=12)
    assert abs(float(km.gcmmd2(x, x.clone(), z=z, kernel="rbf", lam=0.1))) < 1e-14


# ---------------------------------------------------------------------------------------------------------------
# gradients: envelope identity vs differentiating the dense solve; finite differences
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", list(EXACT))
@pytest.mark.parametrize("name", ["rbf", "rq", "poly"])
def test_gradients_match_dense_autograd(name, solver):
    x, y, z = (t.requires_grad_() for t in _data(seed=13))
    p = {"rbf": {"sigma": 1.3}, "rq": {"alpha": 0.7}, "poly": {"gamma": 0.4, "coef0": 1.0}}[name]
    pt = {k: torch.tensor(v, dtype=DT, requires_grad=True) for k, v in p.items()}
    lam = torch.tensor(0.3, dtype=DT, requires_grad=True)
    ref_p = dict(pt, degree=3) if name == "poly" else pt
    want = ref_gcmmd2(kfun(name, **ref_p), x, y, z, lam)[0]
    wrt = [x, y, z, lam, *pt.values()]
    gw = torch.autograd.grad(want, wrt)
    kern = {"rbf": km.RBF, "rq": km.RQ, "poly": lambda **q: km.Poly(degree=3, **q)}[name](**pt)
    got = km.gcmmd2(x, y, z=z, kernel=kern, lam=lam, solver=solver, **EXACT[solver])
    gg = torch.autograd.grad(got, wrt)
    for a, b in zip(gg, gw):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("solver", list(EXACT))
def test_gradcheck_finite_differences(solver):
    x, y, z = _data(n=4, m=3, M=3, d=2, seed=14)
    kw = dict(kernel="rbf", sigma=1.1, lam=0.2, solver=solver, **EXACT[solver])

    def f(x, y, z):
        return km.gcmmd2(x, y, z=z, **kw)

    assert torch.autograd.gradcheck(f, (x.requires_grad_(), y.requires_grad_(), z.requires_grad_()), atol=1e-6)
    assert torch.autograd.gradcheck(lambda x, y: km.gcmmd2(x, y, **kw), (x, y), atol=1e-6)  # z = x


def test_no_graph_without_grad_inputs():
    x, y, z = _data(seed=15)
    assert not km.gcmmd2(x, y, z=z, kernel="rbf").requires_grad
    with torch.no_grad():
        assert not km.gcmmd2(x.requires_grad_(), y, z=z, kernel="rbf").requires_grad


# ---------------------------------------------------------------------------------------------------------------
# deep kernels: feature solver vs dense vs reference
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("d,s", [(3, 1), (3, 3), (50, 1), (50, 3)])
@pytest.mark.parametrize("top", list(TOPS))
def test_feature_solver_matches_dense_and_reference(top, d, s):
    M = 4 if d == 50 else 6
    x, y, z = _data(n=5, m=4, M=M, d=d, seed=16 + d + s)
    phi = mlp(d, s, seed=s, width=8)
    ktop, ftop = TOPS[top]
    kd = km.DeepKernel(phi, ktop)
    got, info = km.gcmmd2(x, y, z=z, kernel=kd, lam=0.2, solver="feature", return_info=True)
    assert info.size == M * (1 + s) and info.s == s and info.d == d
    dense = km.gcmmd2(x, y, z=z, kernel=kd, lam=0.2, solver="dense")
    want = ref_gcmmd2(deep_kfun(phi, ftop), x, y, z, 0.2)[0]
    np.testing.assert_allclose(float(got.detach()), float(want.detach()), rtol=1e-6)
    np.testing.assert_allclose(float(dense.detach()), float(want.detach()), rtol=1e-6)


@pytest.mark.parametrize("solver", ["feature", "dense"])
@pytest.mark.parametrize("s", [1, 3])
def test_deep_gradients_match_reference(solver, s):
    x, y, z = (t.requires_grad_() for t in _data(n=5, m=4, M=5, d=3, seed=20 + s))
    phi = mlp(3, s, seed=s, width=8)
    params = list(phi.parameters())
    ktop, ftop = TOPS["rbf"]
    for zz in (z, None):
        zr = x if zz is None else zz
        want = ref_gcmmd2(deep_kfun(phi, ftop), x, y, zr, 0.2)[0]
        wrt = [x, y] + ([] if zz is None else [z]) + params
        gw = torch.autograd.grad(want, wrt)
        got = km.gcmmd2(x, y, z=zz, kernel=km.DeepKernel(phi, ktop), lam=0.2, solver=solver)
        gg = torch.autograd.grad(got, wrt)
        for a, b in zip(gg, gw):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("solver", ["feature", "dense"])
def test_deep_gradients_in_top_parameter_and_lambda(solver):
    x, y, z = _data(seed=28)
    phi = mlp(3, 2, width=8)
    sig = torch.tensor(0.9, dtype=DT, requires_grad=True)
    lam = torch.tensor(0.2, dtype=DT, requires_grad=True)
    got = km.gcmmd2(x, y, z=z, kernel=km.DeepKernel(phi, km.RBF(sig)), lam=lam, solver=solver)
    top = lambda a, b: torch.exp(-((a - b) ** 2).sum() / (2 * sig**2))  # noqa: E731
    want = ref_gcmmd2(deep_kfun(phi, top), x, y, z, lam)[0]
    for a, b in zip(torch.autograd.grad(got, [sig, lam]), torch.autograd.grad(want, [sig, lam])):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-12)


def test_deep_no_graph_when_nothing_requires_grad():
    x, y, z = _data(seed=29)
    phi = mlp(3, 1)
    with torch.no_grad():
        assert not km.gcmmd2(x, y, z=z, kernel=km.DeepKernel(phi, "rbf")).requires_grad
    for p in phi.parameters():
        p.requires_grad_(False)
    assert not km.gcmmd2(x, y, z=z, kernel=km.DeepKernel(phi, "rbf")).requires_grad


def test_feature_gradcheck_in_critic_parameters():
    """Finite differences in φ's parameters: the critic-training gradient (through J, built with create_graph)."""
    x, y, _ = _data(n=4, m=4, d=3, seed=24)
    phi = mlp(3, 1, width=4)
    names = [n for n, _ in phi.named_parameters()]

    def f(*ps):
        net = lambda t: functional_call(phi, dict(zip(names, ps)), (t,))  # noqa: E731
        return km.gcmmd2(x, y, kernel=km.DeepKernel(net, "rbf", sigma=1.0), lam=0.1, solver="feature")

    ps = tuple(p.detach().clone().requires_grad_() for p in phi.parameters())
    assert torch.autograd.gradcheck(f, ps, atol=1e-6)


def test_feature_solver_on_images_and_conv_critic():
    g = torch.Generator().manual_seed(25)
    x = torch.rand(4, 1, 4, 4, generator=g, dtype=DT)
    y = torch.rand(3, 1, 4, 4, generator=g, dtype=DT) * 0.8
    torch.manual_seed(0)
    phi = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, stride=2, padding=1), torch.nn.Softplus(), torch.nn.Flatten(), torch.nn.Linear(12, 1)
    ).double()
    kd = km.DeepKernel(phi, "rbf", sigma=0.5)
    got, info = km.gcmmd2(x, y, kernel=kd, lam=0.05, return_info=True)
    assert info.solver == "feature" and info.d == 16 and info.size == 8
    top = lambda a, b: torch.exp(-((a - b) ** 2).sum() / 0.5)  # noqa: E731  rbf, σ = 0.5
    want = ref_gcmmd2(deep_kfun(phi, top), x, y, x, 0.05)[0]
    np.testing.assert_allclose(float(got.detach()), float(want.detach()), rtol=1e-6)
    dense = km.gcmmd2(x, y, kernel=kd, lam=0.05, solver="dense").detach()
    np.testing.assert_allclose(float(dense), float(want.detach()), rtol=1e-6)
    (-got).backward()  # a critic step
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in phi.parameters())


def test_feature_solver_rank_deficient_jacobian():
    """A critic whose Jacobian vanishes at some points (dead ReLU) — L_l = 0 there; still exact."""
    x, y, z = _data(n=5, m=4, M=6, d=3, seed=26)
    torch.manual_seed(1)
    lin = torch.nn.Linear(3, 2).double()
    phi = torch.nn.Sequential(lin, torch.nn.ReLU(), torch.nn.Linear(2, 2)).double()
    with torch.no_grad():
        lin.bias.fill_(-0.5)
    kd = km.DeepKernel(phi, "rbf")
    got = km.gcmmd2(x, y, z=z, kernel=kd, lam=0.1, solver="feature")
    want = km.gcmmd2(x, y, z=z, kernel=kd, lam=0.1, solver="dense")
    np.testing.assert_allclose(float(got.detach()), float(want.detach()), rtol=1e-8)


def test_feature_critic_training_increases_gcmmd():
    x, y, _ = _data(n=16, m=16, d=2, seed=27, shift=1.0)
    phi = mlp(2, 1, seed=3, width=8)
    kd = km.DeepKernel(phi, "rbf")
    opt = torch.optim.Adam(phi.parameters(), lr=1e-2)
    start = float(km.gcmmd2(x, y, kernel=kd, lam=0.1).detach())
    for _ in range(15):
        opt.zero_grad()
        (-km.gcmmd2(x, y, kernel=kd, lam=0.1)).backward()
        opt.step()
    assert float(km.gcmmd2(x, y, kernel=kd, lam=0.1).detach()) > start


# ---------------------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["laplacian", "energy", "rbf_bounded"])
def test_rejects_non_twice_differentiable_kernels(name):
    x, y, z = _data()
    with pytest.raises(ValueError, match="needs a twice-differentiable kernel"):
        km.gcmmd2(x, y, z=z, kernel=name)
    with pytest.raises(ValueError, match="needs a twice-differentiable kernel"):
        km.gcmmd2(x, y, z=z, kernel=km.DeepKernel(mlp(3, 1), name))


def test_argument_errors():
    x, y, z = _data()
    kd = km.DeepKernel(mlp(3, 1), "rbf")
    with pytest.raises(ValueError, match=r"solver must be one of \['auto', 'dense', 'feature', 'ichol', 'cg'\]"):
        km.gcmmd2(x, y, kernel="rbf", solver="lu")
    with pytest.raises(ValueError, match=r"precond must be one of \[None, 'jacobi', 'ichol'\], got 'ilu'"):
        km.gcmmd2(x, y, kernel="rbf", solver="cg", precond="ilu")
    with pytest.raises(ValueError, match="lam must be a finite number > 0, got 0.0"):
        km.gcmmd2(x, y, kernel="rbf", lam=0.0)
    with pytest.raises(ValueError, match="max_rank must be an integer >= 1"):
        km.gcmmd2(x, y, kernel="rbf", solver="ichol", max_rank=0)
    with pytest.raises(ValueError, match="max_iter must be an integer >= 1"):
        km.gcmmd2(x, y, kernel="rbf", solver="cg", max_iter=0)
    with pytest.raises(ValueError, match="tol must be a finite number >= 0"):
        km.gcmmd2(x, y, kernel="rbf", solver="ichol", tol=-1.0)
    with pytest.raises(ValueError, match="tol must be a finite number > 0"):
        km.gcmmd2(x, y, kernel="rbf", solver="cg", tol=0.0)
    with pytest.raises(ValueError, match="dense_max_size must be an integer >= 1"):
        km.gcmmd2(x, y, kernel="rbf", dense_max_size=0)
    with pytest.raises(ValueError, match="solver='feature' needs a DeepKernel"):
        km.gcmmd2(x, y, kernel="rbf", solver="feature")
    for solver in ("ichol", "cg"):
        with pytest.raises(ValueError, match=f"solver='{solver}' is for kernels on R\\^d"):
            km.gcmmd2(x, y, kernel=kd, solver=solver)
    with pytest.raises(ValueError, match=r"z has feature shape \(2,\) but x has \(3,\)"):
        km.gcmmd2(x, y, z=z[:, :2], kernel="rbf")
    with pytest.raises(TypeError, match="kernel 'rbf' takes parameters"):
        km.gcmmd2(x, y, kernel="rbf", alpha=1.0)
    with pytest.raises(ValueError, match=r"phi\(x\) must return shape \(n,\) or \(n, s\)"):
        km.gcmmd2(x, y, kernel=km.DeepKernel(lambda t: t.sum(), "rbf"))


def test_info_fields():
    x, y, z = _data()
    val, info = km.gcmmd2(x, y, z=z, kernel="rbf", lam=0.5, return_info=True)
    assert isinstance(info, km.GCMMDInfo) and info.backend == "torch" and info.lam == 0.5
    np.testing.assert_allclose((info.mmd2_biased - info.pbar) / 0.5, float(val), rtol=1e-12)
    assert math.isfinite(info.pbar) and info.rank is None and info.iterations is None
