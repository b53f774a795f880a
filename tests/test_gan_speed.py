"""GPU speed settings on the CPU (gan.nets.accelerate; --amp bf16, --compile, --channels-last, --no-tf32): bf16 losses
against fp32 within a stated tolerance, a compiled training step against the eager one, checkpoints unchanged."""

import copy
import importlib.util
import shutil

import pytest
import torch

from gan.losses import LOSSES, make_loss
from gan.nets import accelerate, build_models
from gan.run import Run
from gan.spectral import spectralize

from ._gan_helpers import tiny

#: bf16 autocast vs fp32: |L_bf16 − L_fp32| ≤ AMP_RTOL·|L_fp32| + AMP_ATOL. The absolute part is needed because
#: MMD² values are differences of O(1) kernel means: they keep bf16's absolute precision (~1e-3 of the kernel
#: scale), not its relative one. Measured here (16 cases per arch): |ΔL| ≤ 2.1e-4 for every MMD-type loss (e.g.
#: 1.8e-6 on ResNet SMMD values of 2e-5 = 8.6 %, 1.6e-4 on a DCGAN mmd-rep-b critic loss of 4.2e-4), 6.5e-4 on a
#: WGAN-GP critic loss of 9.4; ≤ 0.4 % relative wherever |L| ≥ 1e-2
AMP_RTOL, AMP_ATOL = 1e-2, 5e-4


def _losses(g, f, loss, z, real):
    fake = g(z)
    c, _ = loss.critic_loss(f, real, fake.detach(), torch.Generator().manual_seed(1))
    gl, _ = loss.generator_loss(f, real, fake)
    return float(c.detach()), float(gl.detach())


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_bf16_losses_match_fp32(arch):
    shape = (3, 32, 32)
    for name in LOSSES:
        loss = make_loss(name)
        torch.manual_seed(0)
        g, f = build_models(arch, shape, z_dim=16, width=8, critic_dim=loss.critic_dim)
        spectralize(f, loss.default_sn, torch.zeros(1, *shape))
        f.eval()  # no power-iteration updates: both copies see the same weights at every call
        g_amp, f_amp = copy.deepcopy(g), copy.deepcopy(f)
        for net in (g_amp, f_amp):
            accelerate(net, device="cpu", amp="bf16")
        z, real = torch.rand(16, 16) * 2 - 1, torch.rand(16, *shape) * 2 - 1
        assert f_amp(real).dtype == torch.float32  # kernelmmd sees float32 features
        want = _losses(g, f, loss, z, real)
        got = _losses(g_amp, f_amp, loss, z, real)
        for w, v in zip(want, got):
            assert abs(v - w) <= AMP_RTOL * abs(w) + AMP_ATOL, (arch, name, want, got)
            assert v != w  # bf16 did run


def test_accelerate_keeps_state_dict_and_validates():
    g, f = build_models("resnet", (3, 32, 32), z_dim=8, width=2)
    spectralize(f, "pico", torch.zeros(1, 3, 32, 32))
    keys = list(f.state_dict())
    accelerate(f, device="cpu", amp="bf16", channels_last=True)
    assert list(f.state_dict()) == keys
    w = f.features[0].parametrizations.weight.original
    assert w.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    (grad,) = torch.autograd.grad(f(x).sum(), x, create_graph=True)  # double backward under autocast
    grad.pow(2).sum().backward()
    assert bool(torch.isfinite(w.grad).all())
    assert accelerate(g, device="cpu") is g and "forward" not in vars(g)  # nothing asked on a CPU: untouched
    with pytest.raises(ValueError, match="amp must be one of"):
        accelerate(g, device="cpu", amp="fp16")


def _steps(tmp_path, name, **kw):
    cfg = tiny(tmp_path / name, loss="smmd", critic_steps=1, start_critic_steps=1, batch_size=16, **kw).resolved()
    run = Run(cfg, verbose=False)
    outs = [run.iteration() for _ in range(2)]
    return run, [{k: float(v) for k, v in out.items() if torch.is_tensor(v)} for out in outs]


@pytest.mark.skipif(importlib.util.find_spec("torch._inductor") is None or shutil.which("c++") is None,
                    reason="torch.compile's inductor backend needs torch._inductor and a C++ compiler")
def test_compiled_step_matches_eager(tmp_path):
    """One SMMD generator step (critic update + generator update, MLP on 2-D data) with --compile: the compiled
    forward passes (fakes, generator) and the eager ones (∇φ on the real batch, which needs double backward) give
    the losses and updated weights of the eager run."""
    eager, want = _steps(tmp_path, "eager")
    compiled, got = _steps(tmp_path, "compiled", compile=True)
    assert compiled.D.forward.compiled is not None and compiled.G.forward.compiled is not None
    for w, g in zip(want, got):  # step 2's losses also check step 1's updates
        assert w.keys() == g.keys()
        for k in w:
            assert g[k] == pytest.approx(w[k], rel=1e-4, abs=1e-7), k
    # Adam moves an entry by up to ~lr whatever its gradient's size: entries whose gradient is ~0 in exact
    # arithmetic (SMMD is blind to the critic's last bias) may step differently on rounding noise
    lr = eager.cfg.lr
    for a, b in ((eager.G, compiled.G), (eager.D, compiled.D)):
        for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(q, p, rtol=1e-4, atol=2.5 * lr, msg=n)


def test_run_with_folder_resnet_bf16_channels_last(tmp_path):
    """--data folder + --arch resnet + --amp bf16 + --channels-last + --no-tf32 through Run: one finite step."""
    import numpy as np
    from PIL import Image

    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(4):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(root / f"{i}.png")
    cfg = tiny(tmp_path / "run", loss="mmd", data="folder", data_dir=str(root), image_size=32, width=2, batch_size=2,
               critic_steps=1, start_critic_steps=1, workers=0, amp="bf16", channels_last=True, tf32=False).resolved()
    assert cfg.arch == "resnet" and cfg.sn == "sn"
    run = Run(cfg, verbose=False)
    out = run.iteration()
    assert run.shape == (3, 32, 32) and out["data_skipped"] == 0
    assert all(bool(torch.isfinite(v)) for v in out.values() if torch.is_tensor(v))
