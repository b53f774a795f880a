"""Kernel definitions: profile derivatives, parameter derivatives, derivative blocks, numerics."""

import math

import pytest
import torch

import kernelmmd as km

RADIAL = [km.RBF(1.3), km.MixRBF([0.7, 2.0]), km.RQ(0.6), km.MixRQ([0.2, 1.0, 5.0])]
DOT = [km.Linear(), km.Poly(3, 0.4, 1.0), km.Poly(2, 1.5, 0.2)]


def _d(f, t):
    t = t.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(t).sum(), t)
    return g


@pytest.mark.parametrize("k", RADIAL + DOT, ids=repr)
def test_profile_derivatives_match_autograd(k):
    t = torch.linspace(0.0, 6.0, 25, dtype=torch.float64)
    if isinstance(k, km.DotKernel):
        t = t - 3.0
    for order in range(3):
        torch.testing.assert_close(_d(lambda s, o=order: k.profile(s, o), t), k.profile(t, order + 1))


@pytest.mark.parametrize("k", [km.Laplacian(0.9), km.Energy()], ids=repr)
def test_non_smooth_profiles_first_derivative(k):
    t = torch.linspace(0.01, 6.0, 25, dtype=torch.float64)
    torch.testing.assert_close(_d(lambda s: k.profile(s, 0), t), k.profile(t, 1))
    assert float(k.profile(torch.zeros(1, dtype=torch.float64), 1)) == 0.0  # subgradient at coincidence
    with pytest.raises(ValueError, match="not twice differentiable"):
        k.profile(t, 2)


def test_rbf_closed_form_derivatives():
    s = 1.7
    k = km.RBF(s)
    t = torch.tensor([0.0, 0.3, 2.0], dtype=torch.float64)
    g = torch.exp(-t / (2 * s * s))
    torch.testing.assert_close(k.profile(t, 1), -g / (2 * s**2))
    torch.testing.assert_close(k.profile(t, 2), g / (4 * s**4))
    torch.testing.assert_close(k.profile(t, 3), -g / (8 * s**6))


def test_rq_closed_form_derivatives():
    a = 0.8
    t = torch.tensor([0.0, 0.3, 2.0], dtype=torch.float64)
    u = 1 + t / (2 * a)
    k = km.RQ(a)
    torch.testing.assert_close(k.profile(t, 1), -0.5 * u ** (-a - 1))
    torch.testing.assert_close(k.profile(t, 2), (a + 1) / (4 * a) * u ** (-a - 2))
    torch.testing.assert_close(k.profile(t, 3), -(a + 1) * (a + 2) / (8 * a * a) * u ** (-a - 3))


@pytest.mark.parametrize(
    "make",
    [
        lambda p: km.RBF(p[0]),
        lambda p: km.MixRBF([p[0], p[1]]),
        lambda p: km.RQ(p[0]),
        lambda p: km.MixRQ([p[0], p[1]]),
        lambda p: km.Laplacian(p[0]),
        lambda p: km.Poly(3, p[0], p[1]),
    ],
    ids=["rbf", "mix_rbf", "rq", "mix_rq", "laplacian", "poly"],
)
def test_param_grads_match_autograd(make):
    base = torch.tensor([0.9, 1.7], dtype=torch.float64)
    t = torch.linspace(0.05, 4.0, 9, dtype=torch.float64)
    k = make(base)
    analytic = k.param_grads(t)
    for i, g in enumerate(analytic):
        p = base.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(make(p).profile(t, 0).sum(), p)
        # per-element derivative: compare sums (autograd through a scalar) and shapes
        assert float(grad[i]) == pytest.approx(float(g.sum()), rel=1e-10)


def test_scalar_params_and_kind_ids_are_unique():
    ids = [cls.kind_id for cls in (km.RBF, km.MixRBF, km.RQ, km.MixRQ, km.Laplacian, km.Energy, km.Linear, km.Poly)]
    assert len(set(ids)) == len(ids)
    assert km.RBFBounded.kind_id == km.RBF.kind_id


@pytest.mark.parametrize("k", RADIAL + DOT, ids=repr)
def test_derivative_blocks_match_autograd(k):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 3, dtype=torch.float64, generator=g)
    K, G, H = km.derivative_blocks(z, k)
    M, d = z.shape

    def kab(a, b):
        return k.matrix(a[None], b[None])[0, 0]

    for l in range(M):
        for lp in range(M):
            jac = torch.autograd.functional.jacobian(lambda a, lp=lp: kab(a, z[lp]), z[l])
            torch.testing.assert_close(G[l * d : (l + 1) * d, lp], jac)
            hess = torch.autograd.functional.jacobian(
                lambda b, l=l: torch.autograd.functional.jacobian(lambda a: kab(a, b), z[l], create_graph=True), z[lp]
            )  # hess[i, j] = ∂_i ∂_{j+d} k
            torch.testing.assert_close(H[l * d : (l + 1) * d, lp * d : (lp + 1) * d], hess)
    A = torch.cat([torch.cat([K, G.T], 1), torch.cat([G, H], 1)], 0)
    torch.testing.assert_close(A, A.T)
    assert float(torch.linalg.eigvalsh(A).min()) > -1e-9  # PSD


@pytest.mark.parametrize("k", RADIAL + DOT, ids=repr)
def test_a_products_diag_columns_match_dense(k):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(5, 3, dtype=torch.float64, generator=g)
    K, G, H = km.derivative_blocks(z, k)
    A = torch.cat([torch.cat([K, G.T], 1), torch.cat([G, H], 1)], 0)
    u0, u1 = torch.randn(5, dtype=torch.float64, generator=g), torch.randn(5, 3, dtype=torch.float64, generator=g)
    full = A @ torch.cat([u0, u1.reshape(-1)])
    top, bottom = km.a_matvec(z, u0, u1, k)
    torch.testing.assert_close(top, full[:5])
    torch.testing.assert_close(bottom.reshape(-1), full[5:])
    torch.testing.assert_close(km.g_matvec(z, u0, k).reshape(-1), G @ u0)
    torch.testing.assert_close(km.gt_matvec(z, u1, k), G.T @ u1.reshape(-1))
    torch.testing.assert_close(km.h_matvec(z, u1, k).reshape(-1), H @ u1.reshape(-1))
    dt, db = km.a_diagonal(z, k)
    torch.testing.assert_close(torch.cat([dt, db.reshape(-1)]), torch.diagonal(A))
    for idx in (0, 4, 5, 9, 19):
        ct, cb = km.a_column(z, idx, k)
        torch.testing.assert_close(torch.cat([ct, cb.reshape(-1)]), A[:, idx])


def test_squared_distances_never_negative_and_zero_on_diagonal():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g) * 1e3 + 1e4  # large offset: cancellation-prone
    t = km.kernels.sqdist(x, x)
    assert float(t.min()) >= 0.0
    assert float(torch.diagonal(t).abs().max()) == 0.0


@pytest.mark.parametrize("name", ["rbf", "rq", "mix_rbf", "laplacian", "energy", "linear", "poly"])
def test_no_nan_value_or_gradient_at_coincident_points(name):
    x = torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, -1.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[0.0, 1.0], [1.0, 1.0]], dtype=torch.float64, requires_grad=True)
    v = km.mmd2_unbiased(x, y, name)
    gx, gy = torch.autograd.grad(v, (x, y))
    assert torch.isfinite(v) and torch.isfinite(gx).all() and torch.isfinite(gy).all()
    w = km.witness_grad(x.detach(), y.detach(), x.detach(), name)
    assert torch.isfinite(w).all()


def test_median_sigma_resolves_and_repr():
    k = km.RBF(sigma="median")
    x = torch.randn(10, 2)
    r = k.resolve(x)
    assert isinstance(r.sigma, float) and r.sigma > 0
    assert "RBF(sigma='median')" == repr(k)
    assert km.bandwidth(torch.zeros(4, 2)) == 1.0  # degenerate sample falls back to 1


def test_bandwidth_subsamples_deterministically():
    x = torch.randn(3000, 2, generator=torch.Generator().manual_seed(0))
    assert km.bandwidth(x, max_points=500) == km.bandwidth(x, max_points=500)
    assert km.bandwidth(x, max_points=500) == pytest.approx(km.bandwidth(x, max_points=3000), rel=0.05)


def test_rbf_bounded_blocks():
    k = km.RBFBounded(sigma=1.0, lower=0.25, upper=4.0)
    a = torch.zeros(1, 1, dtype=torch.float64)
    b = torch.full((1, 1), 3.0, dtype=torch.float64)
    assert float(k.matrix(a, a, "xx")) == pytest.approx(math.exp(-0.125))  # max(0, 0.25)
    assert float(k.matrix(a, b, "xy")) == pytest.approx(math.exp(-2.0))  # min(9, 4)
    rep = km.RBFBounded(xx="upper", yy="lower", xy=None)
    assert float(rep.matrix(a, b, "xy")) == pytest.approx(math.exp(-4.5))
    assert rep.block_bounds("xx") == (0.0, 4.0)


def test_trainable_parameters_receive_gradients():
    sigma = torch.tensor(1.2, dtype=torch.float64, requires_grad=True)
    alphas = torch.tensor([0.5, 2.0], dtype=torch.float64, requires_grad=True)
    x, y = torch.randn(6, 2, dtype=torch.float64), torch.randn(7, 2, dtype=torch.float64) + 1
    (gs,) = torch.autograd.grad(km.mmd2_unbiased(x, y, km.RBF(sigma)), sigma)
    (ga,) = torch.autograd.grad(km.mmd2_unbiased(x, y, km.MixRQ(alphas)), alphas)
    assert torch.isfinite(gs) and gs != 0 and torch.isfinite(ga).all() and (ga != 0).all()
    assert torch.autograd.gradcheck(lambda s: km.mmd2_unbiased(x, y, km.RBF(s)), (sigma,))
