"""gan.losses: every registry entry against an independent float64 computation, and its sign conventions
(the critic's optimiser raises what the critic should maximise; the generator's lowers its loss)."""

import math

import pytest
import torch
from torch import nn

import kernelmmd
from gan import losses as gl
from gan.train import build_parser

ALL = ["smmd", "swgan", "gcmmd", "mmd", "mmd-gp", "mmd-rep", "mmd-rep-b", "wgan-gp"]


def critic(s, d=2, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 8), nn.LeakyReLU(0.2), nn.Linear(8, s)).double()


def batches(n=12, d=2, seed=1, shift=1.0):
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(n, d, generator=g, dtype=torch.float64)
    fake = torch.randn(n, d, generator=g, dtype=torch.float64) * 0.5 + shift
    return real, fake


# ------------------------------------------------------------------------------------------- independent truths


def sqd(a, b):
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)  # (n, m)


def offdiag_mean(k):
    n = k.shape[0]
    return (k.sum() - k.diagonal().sum()) / (n * (n - 1))


def mmd2_u(kxx, kyy, kxy):
    return offdiag_mean(kxx) + offdiag_mean(kyy) - 2 * kxy.mean()


def rbf(t):
    return torch.exp(-t / 2.0)


def mix_rq(t, alphas=(0.2, 0.5, 1.0, 2.0, 5.0)):
    return sum((1 + t / (2 * a)) ** (-a) for a in alphas)


def mix_rbf(t, sigmas=(1.0, 2.0, 4.0, 8.0, 16.0)):
    return sum(torch.exp(-t / (2 * s * s)) for s in sigmas)


def manual_gp(f, x):
    """Per-sample loop: each sample's gradient on its own, norm over all of its entries."""
    total = 0.0
    for i in range(x.shape[0]):
        xi = x[i : i + 1].detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(xi).sum(), xi, create_graph=True)
        total = total + (torch.sqrt((g**2).sum()) - 1) ** 2
    return total / x.shape[0]


def interp_like(real, fake, seed):
    alpha = torch.rand(real.shape[0], generator=torch.Generator().manual_seed(seed)).to(real.dtype)
    alpha = alpha.view(-1, *([1] * (real.ndim - 1)))
    return alpha * real + (1 - alpha) * fake


# ------------------------------------------------------------------------------------------- values


def test_registry_keys_are_the_cli_choices():
    assert list(gl.LOSSES) == ALL
    action = next(a for a in build_parser()._actions if a.dest == "loss")
    assert list(action.choices) == ALL


def test_scaled_losses_are_kernelmmd_calls_with_the_right_signs():
    f = critic(1)
    real, fake = batches()
    for name, fn in (("smmd", kernelmmd.smmd_loss), ("swgan", kernelmmd.swgan_loss)):
        loss = gl.make_loss(name)
        ref = fn(f, real, fake, scale=10.0)
        c, terms = loss.critic_loss(f, real, fake, torch.Generator())
        g, _ = loss.generator_loss(f, real, fake)
        torch.testing.assert_close(c, -ref)
        torch.testing.assert_close(g, ref)
        torch.testing.assert_close(terms[name], ref)


def test_smmd_value_independent():
    """SMMD = MMD²_u(φ(X), φ(Y)) / (1 + 10 E_P ‖∇φ‖²) for a linear critic, whose gradient is its weight."""
    lin = nn.Linear(2, 1).double()
    real, fake = batches()
    fr, ff = lin(real), lin(fake)
    mmd = mmd2_u(rbf(sqd(fr, fr)), rbf(sqd(ff, ff)), rbf(sqd(fr, ff)))
    expected = mmd / (1 + 10 * (lin.weight**2).sum())
    got, _ = gl.make_loss("smmd").generator_loss(lin, real, fake)
    torch.testing.assert_close(got, expected.detach())


def test_gcmmd_is_kernelmmd_gcmmd2_with_mu_p():
    f = critic(1)
    real, fake = batches()
    loss = gl.make_loss("gcmmd", gc_lam=0.5)
    ref = kernelmmd.gcmmd2(real, fake, z=real, kernel=kernelmmd.DeepKernel(f, "rbf", sigma=1.0), lam=0.5)
    c, _ = loss.critic_loss(f, real, fake, torch.Generator())
    g, _ = loss.generator_loss(f, real, fake)
    torch.testing.assert_close(c, -ref)
    torch.testing.assert_close(g, ref)
    assert float(ref.detach()) >= 0


def test_mmd_value_independent():
    f = critic(16)
    real, fake = batches()
    fr, ff = f(real), f(fake)
    ref = mmd2_u(mix_rbf(sqd(fr, fr)), mix_rbf(sqd(ff, ff)), mix_rbf(sqd(fr, ff)))
    loss = gl.make_loss("mmd")
    c, _ = loss.critic_loss(f, real, fake, torch.Generator())
    g, _ = loss.generator_loss(f, real, fake)
    torch.testing.assert_close(c, -ref)
    torch.testing.assert_close(g, ref)


def test_mmd_gp_value_independent_on_images():
    """Critic loss −MMD²_u + 1·E(‖∇_x̃ η̂(φ(x̃))‖ − 1)², the norm over all of C·H·W, mix_rq kernel."""
    f = critic(16, d=2 * 3 * 3)
    g = torch.Generator().manual_seed(5)
    real = torch.randn(6, 2, 3, 3, generator=g, dtype=torch.float64)
    fake = torch.randn(6, 2, 3, 3, generator=g, dtype=torch.float64) + 0.5
    fr, ff = f(real), f(fake)
    mmd = mmd2_u(mix_rq(sqd(fr, fr)), mix_rq(sqd(ff, ff)), mix_rq(sqd(fr, ff)))

    def eta(x):
        a = f(x)
        return mix_rq(sqd(a, fr)).mean(1) - mix_rq(sqd(a, ff)).mean(1)

    gp = manual_gp(eta, interp_like(real, fake, seed=7))
    c, terms = gl.make_loss("mmd-gp").critic_loss(f, real, fake, torch.Generator().manual_seed(7))
    torch.testing.assert_close(terms["gp"], gp.detach())
    torch.testing.assert_close(c, -mmd + gp)


def test_mmd_gp_witness_uses_a_twice_differentiable_backend(monkeypatch):
    """The fused CUDA backends refuse a double backward; the GP's witness must ask for the dense one."""
    seen = []
    original = kernelmmd.witness

    def spy(*args, **kwargs):
        seen.append(kwargs.get("backend"))
        return original(*args, **kwargs)

    monkeypatch.setattr(kernelmmd, "witness", spy)
    real, fake = batches()
    gl.make_loss("mmd-gp").critic_loss(critic(16), real, fake, torch.Generator())
    assert seen and all(b == "torch" for b in seen)


def test_gradient_penalty_norm_is_over_the_whole_sample():
    torch.manual_seed(0)
    w = torch.randn(3, 4, 5, dtype=torch.float64)
    f = lambda x: (torch.tanh(x) * w).flatten(1).sum(1)  # noqa: E731  per-sample, non-linear
    x = torch.randn(4, 3, 4, 5, dtype=torch.float64)
    ours = gl.gradient_penalty(f, x)
    torch.testing.assert_close(ours, manual_gp(f, x))
    # the defect of the public code (norm over one tensor axis) gives a different number
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(xg).sum(), xg)
    one_axis = ((grad.norm(dim=1) - 1) ** 2).mean()
    assert abs(float(one_axis) - float(ours)) > 1e-3


def test_interpolate_is_on_segments():
    real, fake = torch.zeros(50, 3), torch.ones(50, 3)
    x = gl.interpolate(real, fake, torch.Generator().manual_seed(0))
    assert bool((x[:, 0:1] == x).all())  # one alpha per sample
    assert 0 <= float(x.min()) and float(x.max()) <= 1 and float(x.std()) > 0.1


@pytest.mark.parametrize("lam", [-1.0, 0.0, 0.5, 1.0, 2.0])
def test_repulsive_weights_and_value(lam):
    f = critic(16)
    real, fake = batches()
    loss = gl.make_loss("mmd-rep", rep_lam=lam)
    assert sum(loss.weights) == 0.0
    fr, ff = f(real), f(fake)
    kxx, kyy, kxy = offdiag_mean(rbf(sqd(fr, fr))), offdiag_mean(rbf(sqd(ff, ff))), rbf(sqd(fr, ff)).mean()
    expected = lam * kxx - (lam - 1) * kxy - kyy
    c, _ = loss.critic_loss(f, real, fake, torch.Generator())
    torch.testing.assert_close(c, expected)
    if lam == -1.0:  # the usual attractive loss −MMD²_u
        torch.testing.assert_close(c, -mmd2_u(rbf(sqd(fr, fr)), rbf(sqd(ff, ff)), rbf(sqd(fr, ff))))
    g, _ = loss.generator_loss(f, real, fake)
    torch.testing.assert_close(g, mmd2_u(rbf(sqd(fr, fr)), rbf(sqd(ff, ff)), rbf(sqd(fr, ff))))


def test_rbf_bounded_only_in_the_critic_loss():
    f = nn.Flatten()  # features = inputs, so the pair distances are under the test's control
    g = torch.Generator().manual_seed(0)
    real = torch.randn(16, 3, generator=g, dtype=torch.float64) * 1.2  # real pairs on both sides of b_u = 4
    fake = torch.randn(16, 3, generator=g, dtype=torch.float64) * 0.15  # most fake pairs below b_l = 0.25
    t_rr, t_ff, t_rf = sqd(real, real), sqd(fake, fake), sqd(real, fake)
    off = ~torch.eye(16, dtype=torch.bool)
    assert 0.2 < float((t_rr[off] > 4).double().mean()) < 0.9 and float((t_ff[off] < 0.25).double().mean()) > 0.5
    lam = 0.5
    kxx = offdiag_mean(rbf(t_rr.clamp(max=4.0)))  # real pairs: min(t, b_u)
    kyy = offdiag_mean(rbf(t_ff.clamp(min=0.25)))  # fake pairs: max(t, b_l)
    kxy = rbf(t_rf).mean()  # cross pairs: plain
    bounded, plain = gl.make_loss("mmd-rep-b", rep_lam=lam), gl.make_loss("mmd-rep", rep_lam=lam)
    c_b, _ = bounded.critic_loss(f, real, fake, torch.Generator())
    torch.testing.assert_close(c_b, lam * kxx - (lam - 1) * kxy - kyy)
    c_p, _ = plain.critic_loss(f, real, fake, torch.Generator())
    assert abs(float(c_b) - float(c_p)) > 1e-2  # the bounds change the critic loss ...
    g_b, _ = bounded.generator_loss(f, real, fake)
    torch.testing.assert_close(g_b, plain.generator_loss(f, real, fake)[0])  # ... but not the generator's
    torch.testing.assert_close(g_b, mmd2_u(rbf(t_rr), rbf(t_ff), rbf(t_rf)))


def test_wgan_gp_value_independent():
    f = critic(1)
    real, fake = batches()
    gp = manual_gp(lambda x: f(x)[:, 0], interp_like(real, fake, seed=3))
    c, terms = gl.make_loss("wgan-gp").critic_loss(f, real, fake, torch.Generator().manual_seed(3))
    torch.testing.assert_close(c, f(fake).mean() - f(real).mean() + 10 * gp)
    g, _ = gl.make_loss("wgan-gp").generator_loss(f, real, fake)
    torch.testing.assert_close(g, -f(fake).mean())


# ------------------------------------------------------------------------------------------- sign conventions


@pytest.mark.parametrize("name", ALL)
def test_critic_maximises_and_generator_minimises(name):
    loss = gl.make_loss(name)
    f = critic(loss.critic_dim, seed=2)
    real, fake = batches(n=16, seed=3, shift=0.7)
    rng = torch.Generator().manual_seed(0)

    def objective():  # what the critic should raise: the discrepancy without penalties
        c, terms = loss.critic_loss(f, real, fake, torch.Generator().manual_seed(0))
        key = {"smmd": "smmd", "swgan": "swgan", "gcmmd": "gcmmd2", "mmd": "mmd2", "mmd-gp": "mmd2",
               "wgan-gp": "wasserstein"}.get(name)
        return float(terms[key]) if key else -float(c)  # repulsive: the critic lowers L_D

    before = objective()
    opt = torch.optim.Adam(f.parameters(), lr=1e-2)
    for _ in range(25):
        c, _ = loss.critic_loss(f, real, fake, rng)
        opt.zero_grad()
        c.backward()
        opt.step()
    assert objective() > before

    y = fake.clone().requires_grad_(True)
    opt_y = torch.optim.Adam([y], lr=2e-2)
    g0 = float(loss.generator_loss(f, real, y)[0].detach())
    for _ in range(25):
        g, _ = loss.generator_loss(f, real, y)
        opt_y.zero_grad()
        g.backward()
        opt_y.step()
    assert float(loss.generator_loss(f, real, y)[0].detach()) < g0


# ------------------------------------------------------------------------------------------- errors


def test_make_loss_errors():
    with pytest.raises(ValueError, match="loss must be one of"):
        gl.make_loss("hinge")
    with pytest.raises(ValueError, match="--rep-lam applies only to --loss mmd-rep, mmd-rep-b, got --loss smmd"):
        gl.make_loss("smmd", rep_lam=0.5)
    with pytest.raises(ValueError, match="unknown loss option 'temperature'"):
        gl.make_loss("smmd", temperature=1.0)
    assert gl.make_loss("smmd", rep_lam=None).scale == 10.0


@pytest.mark.parametrize("name, option, value, message", [
    ("smmd", "scale", -1.0, "scale must be a finite number >= 0"),
    ("gcmmd", "gc_lam", 0.0, "lam must be a finite number > 0"),
    ("mmd-gp", "gp_weight", -2.0, "gp_weight must be a finite number >= 0"),
    ("wgan-gp", "gp_weight", math.inf, "gp_weight must be a finite number >= 0"),
    ("mmd-rep", "rep_lam", math.nan, "lam must be a finite number"),
])
def test_hyper_parameters_validated(name, option, value, message):
    with pytest.raises(ValueError, match=message):
        gl.make_loss(name, **{option: value})


def test_missing_kernelmmd_function_is_a_clear_error(monkeypatch):
    monkeypatch.delattr(kernelmmd, "smmd_loss")
    real, fake = batches()
    with pytest.raises(RuntimeError, match="needs kernelmmd.smmd_loss"):
        gl.make_loss("smmd").critic_loss(critic(1), real, fake, torch.Generator())
