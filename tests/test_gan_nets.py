"""gan.nets and gan.spectral: shapes, per-sample critics, and the three spectral constraints against dense truths."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from gan.nets import build_models
from gan.spectral import SpectralNorm, spectral_norms, spectralize


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_dcgan_shapes_and_width(shape):
    g, f = build_models("dcgan", shape, z_dim=16, width=4, critic_dim=5)
    z = torch.rand(3, 16) * 2 - 1
    x = g(z)
    assert x.shape == (3, *shape) and float(x.detach().abs().max()) <= 1.0
    assert f(x).shape == (3, 5)
    convs = [m.out_channels for m in f.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [4, 8, 16]  # width filters in the smallest layer, doubled per layer
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in f.modules())


def test_critic_treats_samples_independently():
    _, f = build_models("dcgan", (1, 28, 28), width=4, critic_dim=2)
    x = torch.randn(4, 1, 28, 28)
    batch = f(x)
    single = torch.cat([f(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batch, single)


def test_mlp_shapes():
    g, f = build_models("mlp", (2,), z_dim=8, width=4, critic_dim=3)
    assert g(torch.zeros(5, 8)).shape == (5, 2) and f(torch.zeros(5, 2)).shape == (5, 3)


def test_build_models_validates():
    with pytest.raises(ValueError, match="arch must be one of"):
        build_models("stylegan", (1, 28, 28))
    with pytest.raises(ValueError, match="width must be an integer >= 1"):
        build_models("dcgan", (1, 28, 28), width=0)
    with pytest.raises(ValueError, match="dcgan supports 28x28 and 32x32"):
        build_models("dcgan", (1, 64, 64))
    from gan.nets import DCGANCritic

    with pytest.raises(ValueError, match="dcgan supports 28x28 and 32x32"):
        DCGANCritic((1, 30, 30))


def _conv_operator(conv: nn.Conv2d, in_shape):
    """Dense matrix of the convolution (without bias) as a linear map on flattened feature maps."""
    n = int(torch.tensor(in_shape).prod())
    basis = torch.eye(n, dtype=torch.float64).view(n, *in_shape)
    w = conv.weight.detach().double()
    out = nn.functional.conv2d(basis, w, stride=conv.stride, padding=conv.padding)  # (n, Cout, H', W')
    return out.reshape(n, -1).T  # (out_dim, in_dim)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 4, stride=2, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(3, 4, 3, stride=2,
                         padding=1), nn.Flatten(), nn.Linear(4 * 2 * 2, 2)).double()


def test_sn_matches_matrix_spectral_norm():
    net = _net()
    w_before = [m.weight.detach().clone() for m in net if isinstance(m, (nn.Conv2d, nn.Linear))]
    spectralize(net, "sn", torch.zeros(1, 2, 6, 6, dtype=torch.float64))
    est = spectral_norms(net, steps=300)
    for (name, sigma), w in zip(est.items(), w_before):
        truth = torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), 2)
        assert sigma == pytest.approx(float(truth), rel=1e-6), name
    net.eval()  # no more power-iteration updates
    for m in [m for m in net if isinstance(m, (nn.Conv2d, nn.Linear))]:
        eff = m.weight.detach()  # the normalised weight
        assert float(torch.linalg.matrix_norm(eff.reshape(eff.shape[0], -1), 2)) == pytest.approx(1.0, rel=1e-6)


def test_pico_matches_conv_operator_norm():
    net = _net()
    conv0 = net[0]
    truth = torch.linalg.matrix_norm(_conv_operator(conv0, (2, 6, 6)), 2)
    reshaped = torch.linalg.matrix_norm(conv0.weight.detach().reshape(3, -1), 2)
    assert abs(float(truth) - float(reshaped)) > 1e-3  # the two notions differ on this example
    spectralize(net, "pico", torch.zeros(1, 2, 6, 6, dtype=torch.float64))
    est = spectral_norms(net, steps=300)
    assert est["0"] == pytest.approx(float(truth), rel=1e-5)
    net.eval()  # the stored vectors are converged: the normalised operators have norm 1
    for conv, in_shape in ((net[0], (2, 6, 6)), (net[2], (3, 3, 3))):
        assert float(torch.linalg.matrix_norm(_conv_operator(conv, in_shape), 2)) == pytest.approx(1.0, rel=1e-5)
    lin = net[4].weight.detach()
    assert float(torch.linalg.matrix_norm(lin, 2)) == pytest.approx(1.0, rel=1e-5)


def test_spectral_param_learns_gamma():
    net = _net()
    spectralize(net, "spectral-param", torch.zeros(1, 2, 6, 6, dtype=torch.float64))
    gammas = [p for n, p in net.named_parameters() if n.endswith("gamma")]
    assert len(gammas) == 3 and all(float(g.detach()) == 1.0 for g in gammas)
    spectral_norms(net, steps=300)
    with torch.no_grad():
        gammas[2].fill_(2.5)
    net.eval()
    w = net[4].weight.detach()
    assert float(torch.linalg.matrix_norm(w, 2)) == pytest.approx(2.5, rel=1e-6)
    net.train()
    net(torch.randn(3, 2, 6, 6, dtype=torch.float64)).sum().backward()
    assert all(g.grad is not None and torch.isfinite(g.grad) for g in gammas)


def test_power_iteration_runs_once_per_forward_in_training_only():
    net = _net()
    spectralize(net, "sn", torch.zeros(1, 2, 6, 6, dtype=torch.float64))
    p = net[0].parametrizations.weight[0]
    u0 = p.u.clone()
    net(torch.randn(1, 2, 6, 6, dtype=torch.float64))
    u1 = p.u.clone()
    assert not torch.equal(u0, u1)
    net.eval()
    net(torch.randn(1, 2, 6, 6, dtype=torch.float64))
    assert torch.equal(p.u, u1)
    assert any(k.endswith("parametrizations.weight.0.u") for k in net.state_dict())


@pytest.mark.parametrize("mode", ["sn", "spectral-param", "pico"])
def test_normalised_weight_gradients_float64(mode):
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 2, 2, stride=2, padding=1).double()
    conv_spec = {"stride": conv.stride, "padding": conv.padding, "input_shape": (2, 3, 3)} if mode == "pico" else None
    sn = SpectralNorm(conv.weight, learn_gamma=mode == "spectral-param", conv=conv_spec).double()
    for _ in range(20):
        sn.power_iteration(conv.weight.detach())
    sn.eval()  # u, v fixed: the map W -> W / (u^T W v) is smooth
    w = conv.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(sn, (w,))
    assert torch.autograd.gradgradcheck(sn, (w,))


def test_gradient_penalty_through_spectral_critic():
    """Double backward (∇_x inside the loss) works through every constraint, repeatedly (no in-place errors)."""
    for mode in ("sn", "spectral-param", "pico"):
        _, f = build_models("dcgan", (1, 28, 28), width=2, critic_dim=1)
        spectralize(f, mode, torch.zeros(1, 1, 28, 28))
        for _ in range(2):
            x = torch.randn(3, 1, 28, 28, requires_grad=True)
            (g,) = torch.autograd.grad(f(x).sum(), x, create_graph=True)
            (g.flatten(1).norm(dim=1) - 1).pow(2).mean().backward()
        weights = [p for n, p in f.named_parameters() if n.endswith(("original", "gamma"))]
        assert len(weights) >= 4 and all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in weights)


def test_spectralize_validates():
    with pytest.raises(ValueError, match="sn mode must be one of"):
        spectralize(_net(), "weightnorm", torch.zeros(1, 2, 6, 6))
    net = nn.Sequential(nn.Conv2d(2, 2, 3, groups=2))
    with pytest.raises(ValueError, match="pico supports plain convolutions only"):
        spectralize(net, "pico", torch.zeros(1, 2, 6, 6))
    net = _net()
    assert spectralize(net, "none", torch.zeros(1, 2, 6, 6)) is net
    assert not parametrize.is_parametrized(net[0])


# ------------------------------------------------------------------------------------------------------ ResNet


def _count(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("side", [32, 64, 128, 160])
@pytest.mark.parametrize("arch", ["resnet", "resnet-dcgan5"])
def test_resnet_shapes(arch, side):
    torch.manual_seed(0)
    g, f = build_models(arch, (3, side, side), z_dim=8, width=2, critic_dim=3)
    x = g(torch.rand(2, 8) * 2 - 1)
    assert x.shape == (2, 3, side, side) and float(x.detach().abs().max()) <= 1.0
    assert f(x).shape == (2, 3)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in f.modules())  # per-sample critic


def test_resnet_layout_and_parameter_counts():
    g, f = build_models("resnet", (3, 64, 64))
    convs = [m for m in f.modules() if isinstance(m, nn.Conv2d)]
    # 1 + 4 blocks x (2 convs + 1 shortcut); 10 weight layers on the main path (1 + 8 + Linear) as in the paper
    assert len(convs) == 13 and sum(m.kernel_size == (3, 3) for m in convs) == 9
    assert [m.out_channels for m in f.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)] == \
        [128, 256, 512, 512]
    assert f.fc.in_features == 512 * 4 * 4
    # the counts listed in README "Training GANs" (width 64, z_dim 128)
    assert (_count(g), _count(f)) == (10_637_635, 7_488_961)
    g, f = build_models("resnet", (3, 160, 160), critic_dim=16)
    assert (_count(g), _count(f)) == (13_411_651, 8_299_984)
    _, f = build_models("resnet-dcgan5", (3, 160, 160))
    assert _count(f) == 17_440_385


def test_resnet_critic_treats_samples_independently():
    torch.manual_seed(0)
    _, f = build_models("resnet", (3, 32, 32), width=2, critic_dim=2)
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(f(x), torch.cat([f(x[i : i + 1]) for i in range(3)]))


def test_resnet_rejects_other_sizes():
    for arch in ("resnet", "resnet-dcgan5"):
        with pytest.raises(ValueError, match="resnet supports square images whose side is a multiple of 32"):
            build_models(arch, (3, 48, 48))
    with pytest.raises(ValueError, match="multiple of 32"):
        build_models("resnet", (1, 28, 28))


@pytest.mark.parametrize("mode", ["sn", "spectral-param", "pico"])
def test_spectral_modes_cover_every_resnet_critic_layer(mode):
    """spectralize parametrises the ResNet critic as it does DCGAN's: every Conv2d (3×3, shortcut 1×1) and the
    Linear; PICO records each convolution's own input shape (after the shortcut's mean pool)."""
    torch.manual_seed(0)
    _, f = build_models("resnet", (3, 32, 32), width=2, critic_dim=1)
    layers = [m for m in f.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    spectralize(f, mode, torch.zeros(1, 3, 32, 32))
    assert all(parametrize.is_parametrized(m, "weight") for m in layers)
    if mode == "pico":
        shortcut = f.features[2].shortcut[1]  # the first block's 1x1 conv sees the mean-pooled (2, 16, 16) input
        assert shortcut.parametrizations.weight[0].conv["input_shape"] == (2, 16, 16)
        assert shortcut.parametrizations.weight[0].v.shape == (1, 2, 16, 16)
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    (grad,) = torch.autograd.grad(f(x).sum(), x, create_graph=True)
    grad.pow(2).sum().backward()  # double backward through residual blocks and the constraint
    weights = [p for n, p in f.named_parameters() if n.endswith(("original", "gamma"))]  # biases may not reach ∇_x
    assert len(weights) == len(layers) * (2 if mode == "spectral-param" else 1)
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in weights)


def test_resnet_spectral_norm_bounds_each_layer():
    """After convergence of the power iteration, sn makes every reshaped weight of the ResNet critic norm 1."""
    torch.manual_seed(0)
    _, f = build_models("resnet", (3, 32, 32), width=2, critic_dim=1)
    f.double()
    spectralize(f, "sn", torch.zeros(1, 3, 32, 32, dtype=torch.float64))
    spectral_norms(f, steps=200)
    f.eval()
    for m in f.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach()
            assert float(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), 2)) == pytest.approx(1.0, rel=1e-6)
