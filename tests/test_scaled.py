"""SMMD (kernelmmd.scaled): Jacobian norms, σ-terms, smmd2 and the paper's losses against independent references.

σ⁻² is checked against λ + trace(A)/M with A built by autograd from a kernel function written in the test
(tests/_gcmmd_ref.py: ``kfun``, ``ref_blocks``); Jacobians against torch.func.jacrev per sample.
"""

import numpy as np
import pytest
import torch
from torch.func import functional_call, jacrev, vmap

import kernelmmd as km

from ._cases import TWICE, name_params
from ._gcmmd_ref import TOPS, deep_kfun, kfun, mlp, ref_blocks
from ._gcmmd_ref import gcmmd_data as _data

DT = torch.float64


def ref_jacobians(phi, x):
    """(n, s, D) per-sample Jacobians by torch.func (independent of kernelmmd's VJP loop)."""
    shape = x.shape[1:]
    one = lambda t: phi(t.reshape(1, *shape)).reshape(-1)  # noqa: E731
    return vmap(jacrev(one))(x.reshape(x.shape[0], -1))


def ref_sigma2_inv(k, z, lam):
    """λ + (1/M) Σ_l [k(z_l, z_l) + Σ_i ∂_i ∂_{i+d} k(z_l, z_l)] = λ + trace(A) / M."""
    return lam + torch.diagonal(ref_blocks(k, z)).sum() / z.shape[0]


def ref_mmd2(k, x, y, unbiased=False):
    gram = lambda P, Q: vmap(lambda a: vmap(lambda b: k(a, b))(Q))(P)  # noqa: E731
    kxx, kyy, kxy = gram(x, x), gram(y, y), gram(x, y)
    if not unbiased:
        return kxx.mean() + kyy.mean() - 2 * kxy.mean()
    n, m = len(x), len(y)
    off = lambda K, n: (K.sum() - K.diagonal().sum()) / (n * (n - 1))  # noqa: E731
    return off(kxx, n) + off(kyy, m) - 2 * kxy.mean()


# ---------------------------------------------------------------------------------------------------------------
# jacobian_sqnorm
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s", [1, 3])
def test_jacobian_sqnorm_matches_jacrev(s):
    x, _, _ = _data(n=7, d=5, seed=1)
    phi = mlp(5, s)
    got = km.jacobian_sqnorm(phi, x)
    want = (ref_jacobians(phi, x) ** 2).sum((1, 2))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    assert got.shape == (7,) and got.requires_grad  # create_graph=True: differentiable in φ's parameters


def test_jacobian_sqnorm_images_scalar_output():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 2, 5, 5, generator=g, dtype=DT)
    torch.manual_seed(0)
    phi = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(36, 1))
    phi = phi.double()
    got = km.jacobian_sqnorm(lambda t: phi(t)[:, 0], x)  # (n,) output
    torch.testing.assert_close(got, (ref_jacobians(phi, x) ** 2).sum((1, 2)), rtol=1e-12, atol=1e-14)
    out = km.jacobian_sqnorm(phi, x.numpy(), create_graph=False)
    assert isinstance(out, np.ndarray) and out.shape == (3,)


def test_jacobian_sqnorm_is_differentiable():
    """φ(x) = W x + b: ‖J‖²_F = ‖W‖²_F, so ∂/∂W Σ_n ‖J‖² = 2 n W; and φ(x) = Σ x³ gives a gradient in x."""
    lin = torch.nn.Linear(4, 2).double()
    x = torch.randn(6, 4, dtype=DT)
    val = km.jacobian_sqnorm(lin, x)
    torch.testing.assert_close(val, (lin.weight**2).sum().expand(6))
    val.sum().backward()
    torch.testing.assert_close(lin.weight.grad, 2 * 6 * lin.weight)
    assert not km.jacobian_sqnorm(lin, x, create_graph=False).requires_grad
    xg = x.clone().requires_grad_()
    v = km.jacobian_sqnorm(lambda t: (t**3).sum(1), xg)  # J = 3x², ‖J‖² = 9 Σ x⁴
    (gx,) = torch.autograd.grad(v.sum(), xg)
    torch.testing.assert_close(gx, 36 * x**3)


def test_jacobian_sqnorm_errors():
    x = torch.randn(4, 3)
    with pytest.raises(TypeError, match="phi must be callable"):
        km.jacobian_sqnorm(3.0, x)
    with pytest.raises(ValueError, match=r"phi\(x\) must return shape \(n,\) or \(n, s\) with n = 4"):
        km.jacobian_sqnorm(lambda t: t.sum(), x)
    with pytest.raises(TypeError, match=r"phi\(x\) must return a torch.Tensor"):
        km.jacobian_sqnorm(lambda t: 1.0, x)
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        km.jacobian_sqnorm(torch.nn.Linear(3, 1), torch.full((2, 3), float("nan")))


# ---------------------------------------------------------------------------------------------------------------
# sigma2_inv
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,params", name_params(*TWICE))
def test_sigma2_inv_closed_forms(name, params):
    _, _, z = _data(M=7, d=4, seed=3)
    got = km.sigma2_inv(name, z, lam=0.25, **params)
    want = ref_sigma2_inv(kfun(name, **params), z, 0.25)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-12)
    assert got.dtype == DT


def test_sigma2_inv_radial_is_constant_and_differentiable():
    z = torch.randn(5, 3)
    sig = torch.tensor(2.0, requires_grad=True)
    val = km.sigma2_inv(km.RBF(sig), z, lam=0.0)  # g(0) − 2 d g'(0) = 1 + d/σ²
    np.testing.assert_allclose(float(val.detach()), 1 + 3 / 4, rtol=1e-6)
    (g,) = torch.autograd.grad(val, sig)
    np.testing.assert_allclose(float(g), -2 * 3 / 8, rtol=1e-6)
    assert float(km.sigma2_inv("rbf", z.numpy(), lam=1.0, sigma=1.0)) == pytest.approx(5.0)


@pytest.mark.parametrize("s", [1, 3])
@pytest.mark.parametrize("top", list(TOPS))
def test_sigma2_inv_deep(top, s):
    _, _, z = _data(M=6, d=4, seed=4)
    phi = mlp(4, s, seed=s, width=8)
    ktop, ftop = TOPS[top]
    got = km.sigma2_inv(km.DeepKernel(phi, ktop), z, lam=0.1)
    want = ref_sigma2_inv(deep_kfun(phi, ftop), z, 0.1)
    np.testing.assert_allclose(float(got.detach()), float(want.detach()), rtol=1e-10)
    params = list(phi.parameters())
    ga = torch.autograd.grad(got, params, allow_unused=True)  # radial tops do not see the last bias
    gb = torch.autograd.grad(want, params, allow_unused=True)
    for p, a, b in zip(params, ga, gb):
        z0 = torch.zeros_like(p)
        torch.testing.assert_close(z0 if a is None else a, z0 if b is None else b, rtol=1e-8, atol=1e-12)


def test_sigma2_inv_errors():
    z = torch.randn(4, 2)
    for name in ("laplacian", "energy", "rbf_bounded"):
        with pytest.raises(ValueError, match="sigma2_inv needs a twice-differentiable kernel"):
            km.sigma2_inv(name, z)
    with pytest.raises(ValueError, match="sigma2_inv needs a twice-differentiable kernel"):
        km.sigma2_inv(km.DeepKernel(torch.nn.Linear(2, 1), "laplacian"), z)
    with pytest.raises(ValueError, match="lam must be a finite number >= 0, got -1.0"):
        km.sigma2_inv("rbf", z, lam=-1.0)


# ---------------------------------------------------------------------------------------------------------------
# smmd2
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
@pytest.mark.parametrize("name,params", name_params("rbf", "rq", "linear", "poly"))
def test_smmd2_input_space(name, params, estimator):
    x, y, z = _data(n=6, m=5, M=4, d=3, seed=5)
    k = kfun(name, **params)
    for zz in (z, None):
        got = km.smmd2(x, y, name, z=zz, lam=0.5, estimator=estimator, **params)
        want = ref_mmd2(k, x, y, estimator == "unbiased") / ref_sigma2_inv(k, x if zz is None else zz, 0.5)
        np.testing.assert_allclose(float(got), float(want), rtol=1e-10)


@pytest.mark.parametrize("top", ["rbf", "linear"])
def test_smmd2_deep_and_gradients(top):
    x, y, z = (t.requires_grad_() for t in _data(n=6, m=5, M=4, d=3, seed=6))
    phi = mlp(3, 2, seed=1, width=8)
    ktop, ftop = TOPS[top]
    kd, fk = km.DeepKernel(phi, ktop), deep_kfun(phi, ftop)
    params = list(phi.parameters())
    for zz in (z, None):
        zr = x if zz is None else zz
        got = km.smmd2(x, y, kd, z=zz, lam=0.3)
        want = ref_mmd2(fk, x, y) / ref_sigma2_inv(fk, zr, 0.3)
        np.testing.assert_allclose(float(got.detach()), float(want.detach()), rtol=1e-10)
        wrt = [x, y] + params + ([] if zz is None else [z])
        for a, b in zip(torch.autograd.grad(got, wrt), torch.autograd.grad(want, wrt)):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)


def test_smmd2_proportional_to_mmd_for_fixed_radial_kernel():
    x, y, _ = _data(seed=7)
    ratio = float(km.smmd2(x, y, "rbf", sigma=2.0, lam=1.0)) / float(km.mmd2_biased(x, y, "rbf", sigma=2.0))
    np.testing.assert_allclose(ratio, 1 / (1.0 + 1.0 + 3 / 4), rtol=1e-12)


def test_smmd2_errors():
    x, y, _ = _data()
    with pytest.raises(ValueError, match=r"estimator must be one of \['biased', 'unbiased'\], got 'linear'"):
        km.smmd2(x, y, "rbf", estimator="linear")
    with pytest.raises(ValueError, match="smmd2 needs a twice-differentiable kernel"):
        km.smmd2(x, y, "laplacian")
    with pytest.raises(ValueError, match="smmd2 needs a twice-differentiable kernel"):
        km.smmd2(x, y, km.DeepKernel(mlp(3, 1), "energy"))
    with pytest.raises(ValueError, match="lam must be a finite number >= 0"):
        km.smmd2(x, y, "rbf", lam=float("inf"))
    with pytest.raises(ValueError, match="x must have at least 2 points"):
        km.smmd2(x[:1], y, "rbf", estimator="unbiased")


# ---------------------------------------------------------------------------------------------------------------
# the paper's losses
# ---------------------------------------------------------------------------------------------------------------


def _conv_critic(s=1):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, stride=2, padding=1), torch.nn.LeakyReLU(0.2), torch.nn.Flatten(),
        torch.nn.Linear(36, s),
    ).double()


def _images(seed=8):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(6, 1, 6, 6, generator=g, dtype=DT), torch.rand(5, 1, 6, 6, generator=g, dtype=DT) * 0.7


def test_smmd_loss_matches_formula_and_gradients():
    xr, xf = _images()
    xf = xf.requires_grad_()  # generator output
    phi = _conv_critic()
    params = list(phi.parameters())
    got = km.smmd_loss(phi, xr, xf)
    names = [n for n, _ in phi.named_parameters()]

    def manual(*ps):
        net = lambda t: functional_call(phi, dict(zip(names, ps)), (t,))  # noqa: E731
        fr, ff = net(xr), net(xf)
        mmd = ref_mmd2(kfun("rbf", sigma=1.0), fr, ff, unbiased=True)
        jn = (ref_jacobians(net, xr) ** 2).sum((1, 2)).mean()
        return mmd / (1 + 10 * jn)

    want = manual(*params)
    np.testing.assert_allclose(float(got.detach()), float(want.detach()), rtol=1e-12)
    wrt = params + [xf]
    for a, b in zip(torch.autograd.grad(got, wrt), torch.autograd.grad(want, wrt)):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)
    # differentiated through the scale (no stop-gradient): finite differences in the critic's parameters
    ps = tuple(p.detach().clone().requires_grad_() for p in params)
    assert torch.autograd.gradcheck(
        lambda *ps: km.smmd_loss(lambda t: functional_call(phi, dict(zip(names, ps)), (t,)), xr, xf.detach()), ps
    )


def test_smmd_loss_options_and_no_grad():
    xr, xf = _images(9)
    phi = _conv_critic(s=3)
    a = km.smmd_loss(phi, xr, xf, scale=0.0, kernel=km.RQ(2.0))
    want = km.mmd2_unbiased(phi(xr), phi(xf), km.RQ(2.0)).detach()
    np.testing.assert_allclose(float(a.detach()), float(want), rtol=1e-12)
    b = km.smmd_loss(phi, xr, xf, sigma=2.0)
    with torch.no_grad():
        c = km.smmd_loss(phi, xr, xf, sigma=2.0)
    assert not c.requires_grad
    np.testing.assert_allclose(float(c), float(b.detach()), rtol=1e-12)
    f32 = km.smmd_loss(_conv_critic().float(), xr.float(), xf.float())
    assert f32.dtype == torch.float32


@pytest.mark.parametrize("loss", [km.smmd_loss, km.swgan_loss])
def test_frozen_critic_generator_step_skips_double_backward_graph(loss, monkeypatch):
    """Generator step (critic frozen, real batch without a graph): the Jacobian is taken without create_graph and
    the generator's gradient is unchanged; with trainable parameters (critic step) the graph is kept."""
    from kernelmmd import _estimator

    xr, xf = _images(8)
    xf = xf.requires_grad_()
    phi = _conv_critic()
    (want,) = torch.autograd.grad(loss(phi, xr, xf), xf)
    seen = []
    inner = _estimator.jacobian
    monkeypatch.setattr(_estimator, "jacobian", lambda f, x, cg: seen.append(cg) or inner(f, x, cg))
    phi.requires_grad_(False)
    (got,) = torch.autograd.grad(loss(phi, xr, xf), xf)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    assert seen == [False]
    loss(phi, xr.clone().requires_grad_(), xf)  # a real batch with a graph keeps it
    phi.requires_grad_(True)
    loss(phi, xr, xf)  # critic step
    loss(lambda t: phi(t), xr, xf)  # any callable: cannot tell, keeps it
    assert seen == [False, True, True, True]


def test_swgan_loss_matches_formula():
    xr, xf = _images(10)
    xf = xf.requires_grad_()
    phi = _conv_critic()
    params = list(phi.parameters())
    got = km.swgan_loss(phi, xr, xf, scale=3.0)
    fr, ff = phi(xr)[:, 0], phi(xf)[:, 0]
    jn = (ref_jacobians(phi, xr) ** 2).sum((1, 2)).mean()
    want = (fr.mean() - ff.mean()) / torch.sqrt(1 + 3.0 * ((fr**2).mean() + jn))
    np.testing.assert_allclose(float(got.detach()), float(want.detach()), rtol=1e-12)
    for a, b in zip(torch.autograd.grad(got, params + [xf]), torch.autograd.grad(want, params + [xf])):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)


def test_swgan_is_smmd_with_linear_top_up_to_sign():
    """App. E: linear top kernel, s = 1, µ = P, λ = 1: SMMD² (biased) = (Ē_P φ − Ē_Q φ)² / (1 + E_P[φ² + ‖J‖²]),
    which is the SWGAN loss² at scale 1."""
    xr, xf = _images(11)
    phi = _conv_critic()
    sw = km.swgan_loss(phi, xr, xf, scale=1.0).detach()
    sm = km.smmd2(xr, xf, km.DeepKernel(phi, "linear"), lam=1.0).detach()
    np.testing.assert_allclose(float(sw) ** 2, float(sm), rtol=1e-10)


def test_loss_errors():
    xr, xf = _images()
    phi = _conv_critic()
    with pytest.raises(TypeError, match="phi must be callable"):
        km.smmd_loss("critic", xr, xf)
    with pytest.raises(TypeError, match="must be torch.Tensors"):
        km.smmd_loss(phi, xr.numpy(), xf.numpy())
    with pytest.raises(TypeError, match=r"sigma=2.0 was given with a kernel object"):
        km.smmd_loss(phi, xr, xf, kernel=km.RBF(1.0), sigma=2.0)
    with pytest.raises(TypeError, match="kernel must act on critic outputs"):
        km.smmd_loss(phi, xr, xf, kernel=km.DeepKernel(phi, "rbf"))
    with pytest.raises(ValueError, match="smmd_loss needs a twice-differentiable kernel"):
        km.smmd_loss(phi, xr, xf, kernel="laplacian")
    with pytest.raises(TypeError, match="kernel 'rq' takes parameters"):
        km.smmd_loss(phi, xr, xf, kernel="rq")
    with pytest.raises(ValueError, match="scale must be a finite number >= 0"):
        km.smmd_loss(phi, xr, xf, scale=-1.0)
    with pytest.raises(ValueError, match="x_real must have at least 2 points"):
        km.smmd_loss(phi, xr[:1], xf)
    with pytest.raises(ValueError, match=r"x_fake has feature shape"):
        km.smmd_loss(phi, xr, xf[:, :, :3])
    with pytest.raises(ValueError, match=r"swgan_loss needs a scalar critic .* got outputs of shape \(6, 3\)"):
        km.swgan_loss(_conv_critic(s=3), xr, xf)
    with pytest.raises(ValueError, match="scale must be a finite number >= 0"):
        km.swgan_loss(phi, xr, xf, scale=float("nan"))
