"""gradcheck and gradgradcheck (float64) of every differentiable estimator on the dense torch backend."""

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import kernelmmd as km

SMOOTH = [("rbf", {"sigma": 1.1}), ("mix_rbf", {"sigmas": [0.6, 1.9]}), ("rq", {"alpha": 0.8}),
          ("mix_rq", {"alphas": [0.5, 2.0]}), ("linear", {}), ("poly", {"degree": 3, "gamma": 0.5})]


def _xy(n=5, m=6, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, dtype=torch.float64, generator=g).requires_grad_(True)
    y = (torch.randn(m, d, dtype=torch.float64, generator=g) + 0.4).requires_grad_(True)
    return x, y


@pytest.mark.parametrize("name,params", SMOOTH, ids=[k for k, _ in SMOOTH])
def test_gradcheck_estimators(name, params):
    x, y = _xy()
    for f in (km.mmd2_unbiased, km.mmd2_biased):
        assert gradcheck(lambda a, b, f=f: f(a, b, name, **params), (x, y))
        assert gradgradcheck(lambda a, b, f=f: f(a, b, name, **params), (x, y))
    xs, ys = _xy(6, 6)
    assert gradcheck(lambda a, b: km.mmd2_and_variance(a, b, name, **params), (xs, ys))
    assert gradgradcheck(lambda a, b: km.mmd2_and_variance(a, b, name, **params)[1], (xs, ys))
    assert gradcheck(lambda a, b: km.mmd2_linear(a, b, name, **params), (xs, ys))
    assert gradcheck(lambda a, b: km.mmd2_block(a, b, name, block_size=3, **params), (xs, ys))


@pytest.mark.parametrize("name,params", SMOOTH, ids=[k for k, _ in SMOOTH])
def test_gradcheck_witness(name, params):
    x, y = _xy()
    t = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda a, b, c: km.witness(a, b, c, name, **params), (x, y, t))
    assert gradgradcheck(lambda a, b, c: km.witness(a, b, c, name, **params), (x, y, t))
    assert gradcheck(lambda a, b, c: km.witness_grad(a, b, c, name, **params), (x, y, t))
    # witness_grad is the gradient of witness
    (g,) = torch.autograd.grad(km.witness(x, y, t, name, **params).sum(), t)
    torch.testing.assert_close(g, km.witness_grad(x, y, t, name, **params))


@pytest.mark.parametrize("name,params", SMOOTH, ids=[k for k, _ in SMOOTH])
def test_gradcheck_derivative_products(name, params):
    g = torch.Generator().manual_seed(2)
    z = torch.randn(4, 2, dtype=torch.float64, generator=g).requires_grad_(True)
    u0 = torch.randn(4, dtype=torch.float64, generator=g).requires_grad_(True)
    u1 = torch.randn(4, 2, dtype=torch.float64, generator=g).requires_grad_(True)
    assert gradcheck(lambda a, b, c: km.a_matvec(a, b, c, name, **params), (z, u0, u1))
    assert gradgradcheck(lambda a, b, c: km.a_matvec(a, b, c, name, **params), (z, u0, u1))


@pytest.mark.parametrize("name,params", [("laplacian", {"sigma": 1.0}), ("energy", {}), ("rbf_bounded", {})])
def test_gradcheck_non_smooth_kernels_away_from_kinks(name, params):
    x, y = _xy()
    assert gradcheck(lambda a, b: km.mmd2_unbiased(a, b, name, **params), (x, y))


def test_gradcheck_kernel_parameters():
    x, y = _xy()
    x, y = x.detach(), y.detach()
    s = torch.tensor([0.7, 1.6], dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda p: km.mmd2_unbiased(x, y, km.MixRBF(p)), (s,))
    assert gradgradcheck(lambda p: km.mmd2_unbiased(x, y, km.MixRBF(p)), (s,))
    a = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda p: km.mmd2_and_variance(x[:5], y[:5], km.RQ(p)), (a,))
    g = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    c = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda p, q: km.mmd2_unbiased(x, y, km.Poly(3, p, q)), (g, c))


def test_gradgradcheck_at_coincident_points():
    # the mixed second derivative at a = b is -2 g'(0) I: double backward must see it
    x = torch.tensor([[0.0, 1.0], [0.5, -0.2], [1.0, 1.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[0.0, 1.0], [1.0, 1.0], [2.0, 0.0]], dtype=torch.float64, requires_grad=True)
    assert gradgradcheck(lambda a, b: km.mmd2_unbiased(a, b, "rbf"), (x, y))


def test_witness_grad_deep_kernel_is_the_input_space_gradient():
    """For k = rbf∘φ, witness_grad is ∇_t η̂(t) in the input space (T, 2, 3) — not the feature-space (T, s) gradient —
    and is differentiable in t and φ's parameters (as a gradient penalty needs)."""
    torch.manual_seed(0)
    phi = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    phi = phi.double()
    x, y = torch.randn(7, 2, 3, dtype=torch.float64), torch.randn(5, 2, 3, dtype=torch.float64) + 0.5
    t = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    kern = km.DeepKernel(phi, "rbf", sigma=1.3)
    g = km.witness_grad(x, y, t, kern)
    assert g.shape == t.shape
    # independent reference: autograd of the explicitly written witness of rbf(φ(·), φ(·))
    def eta(tt):
        ft, fx, fy = phi(tt), phi(x), phi(y)
        k = lambda a, b: torch.exp(-torch.cdist(a, b) ** 2 / (2 * 1.3**2))  # noqa: E731
        return k(ft, fx).mean(1) - k(ft, fy).mean(1)

    (want,) = torch.autograd.grad(eta(t).sum(), t)
    torch.testing.assert_close(g, want, rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda tt: km.witness_grad(x, y, tt, kern), (t,))
    # the penalty's gradient with respect to φ's parameters matches the reference's
    w = phi[1].weight
    (gp,) = torch.autograd.grad(km.witness_grad(x, y, t, kern).square().sum(), w)
    (gp_ref,) = torch.autograd.grad(
        torch.autograd.grad(eta(t).sum(), t, create_graph=True)[0].square().sum(), w
    )
    torch.testing.assert_close(gp, gp_ref, rtol=1e-10, atol=1e-12)
    # outside grad mode the result carries no graph
    with torch.no_grad():
        assert not km.witness_grad(x, y, t, kern).requires_grad
