"""Generators and critics, as a registry whose keys are the ``--arch`` choices (SPEC §10).

* ``dcgan`` — DCGAN for 28 × 28 (MNIST, Fashion-MNIST) and 32 × 32 (CIFAR-10) images, ``width`` filters in the
  smallest layer (64 in the papers), doubled per layer.

  Generator: z (z_dim) → Linear → (c₀·width, s, s) → [ConvTranspose 4×4 stride 2, BatchNorm, ReLU] × k →
  Conv 3×3 → tanh, with (s, k, c₀) = (7, 2, 4) for 28 × 28 and (4, 3, 8) for 32 × 32.

  Critic: [Conv stride 2, LeakyReLU(0.2)] × 3 (width, 2·width, 4·width filters; 28 → 14 → 7 → 4 or
  32 → 16 → 8 → 4) → Linear → ``out_dim`` features. No normalisation layers in the critic: its Jacobian and
  gradient penalties must be per-sample.
* ``mlp`` — two hidden layers of ``2·width`` units for the 2-D toys (generator output is linear).
* ``resnet`` — the paper's 10-layer ResNets (seed 001 §4, after Gulrajani et al. 2017, as in the authors'
  ``resnet5`` networks) for square images of side S = 32k (ImageNet 64 × 64, CelebA 160 × 160).

  Generator: z → Linear → (16·width, S/32, S/32) → 4 up-blocks [BN, ReLU, ×2 nearest upsampling, conv 3×3, BN,
  ReLU, conv 3×3; shortcut ×2 upsampling + conv 1×1] to 8, 4, 2, 1 × width filters → BN → ReLU →
  ConvTranspose 5×5 stride 2 → tanh (S/32 → S/16 → … → S).

  Critic: conv 3×3 (width) → LeakyReLU(0.2) → 4 down-blocks [ReLU, conv 3×3, ReLU, conv 3×3, 2×2 mean pool;
  shortcut mean pool + conv 1×1] to 2, 4, 8, 8 × width filters (S → S/16) → Linear → ``out_dim``. The authors' TF
  blocks put layer norm in the critic; here, as in the DCGAN critic and SN-GAN's ResNet critic, there is none, so
  that ``--sn`` bounds every layer (residual sums and mean pools are 1-Lipschitz-compatible: ≤ the sum of the norms).
* ``resnet-dcgan5`` — the paper's CelebA pair: the ResNet generator above with a 5-layer DCGAN critic
  ([conv 5×5 stride 2, LeakyReLU(0.2)] × 5 with 1, 2, 4, 8, 16 × width filters → Linear; no normalisation).

:func:`accelerate` applies the GPU speed settings (``--amp bf16``, ``--compile``, ``--channels-last``, TF32).

``out_dim`` is the critic's feature dimension s: 1 for SMMD / SWGAN / GCMMD / WGAN-GP, 16 for the MMD-GAN losses.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

__all__ = ["ARCHS", "DCGANGenerator", "DCGANCritic", "MLPGenerator", "MLPCritic", "ResNetGenerator", "ResNetCritic",
           "DCGAN5Critic", "UpBlock", "DownBlock", "AMP_MODES", "build_models", "accelerate", "set_tf32"]


def _dcgan_image(shape: tuple[int, int, int]) -> tuple[int, int]:
    """(channels, side) of a DCGAN image shape (C, 28, 28) or (C, 32, 32); ValueError for any other shape."""
    c, h, w = shape
    if h != w or h not in (28, 32):
        raise ValueError(f"dcgan supports 28x28 and 32x32 images, got shape {shape}")
    return c, h


class DCGANGenerator(nn.Module):
    """DCGAN generator for ``shape`` = (C, 28, 28) or (C, 32, 32); output in [-1, 1] (tanh)."""

    def __init__(self, shape: tuple[int, int, int], z_dim: int = 128, width: int = 64):
        super().__init__()
        c, h = _dcgan_image(shape)
        s, k, c0 = (7, 2, 4) if h == 28 else (4, 3, 8)
        ch = [c0 * width // 2**i for i in range(k + 1)]  # e.g. 256, 128, 64 for 28 x 28
        self.start = (ch[0], s, s)
        self.fc = nn.Sequential(nn.Linear(z_dim, ch[0] * s * s), nn.BatchNorm1d(ch[0] * s * s), nn.ReLU())
        ups = []
        for a, b in zip(ch[:-1], ch[1:]):
            ups += [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1), nn.BatchNorm2d(b), nn.ReLU()]
        self.ups = nn.Sequential(*ups)
        self.out = nn.Sequential(nn.Conv2d(ch[-1], c, 3, padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], *self.start)  # (n, c0*width, s, s)
        return self.out(self.ups(h))  # (n, C, H, W)


class DCGANCritic(nn.Module):
    """DCGAN critic φ: (n, C, 28|32, 28|32) → (n, out_dim)."""

    def __init__(self, shape: tuple[int, int, int], out_dim: int = 1, width: int = 64):
        super().__init__()
        c, h = _dcgan_image(shape)
        k3 = 3 if h == 28 else 4  # 7 -> 4 needs a 3x3 kernel, 8 -> 4 a 4x4 one
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),  # (n, w, H/2, W/2)
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),  # (n, 2w, H/4, W/4)
            nn.Conv2d(2 * width, 4 * width, k3, stride=2, padding=1), nn.LeakyReLU(0.2),  # (n, 4w, 4, 4)
            nn.Flatten(),
        )
        self.fc = nn.Linear(4 * width * 4 * 4, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))  # (n, out_dim)


class MLPGenerator(nn.Module):
    """z (z_dim) → 2 hidden ReLU layers of ``2·width`` → R^d (linear output)."""

    def __init__(self, shape: tuple[int, ...], z_dim: int = 128, width: int = 64):
        super().__init__()
        d, hid = math.prod(shape), 2 * width
        self.shape = tuple(shape)
        self.net = nn.Sequential(nn.Linear(z_dim, hid), nn.ReLU(), nn.Linear(hid, hid), nn.ReLU(), nn.Linear(hid, d))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(z.shape[0], *self.shape)


class MLPCritic(nn.Module):
    """R^d → 2 hidden LeakyReLU(0.2) layers of ``2·width`` → R^out_dim."""

    def __init__(self, shape: tuple[int, ...], out_dim: int = 1, width: int = 64):
        super().__init__()
        d, hid = math.prod(shape), 2 * width
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(d, hid), nn.LeakyReLU(0.2), nn.Linear(hid, hid),
                                 nn.LeakyReLU(0.2), nn.Linear(hid, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ------------------------------------------------------------------------------------------------------ ResNet


def _resnet_image(shape: tuple[int, ...], arch: str) -> tuple[int, int]:
    """(channels, side) of a ResNet image shape (C, S, S) with S a multiple of 32; ValueError otherwise."""
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] < 32 or shape[1] % 32:
        raise ValueError(f"{arch} supports square images whose side is a multiple of 32 (32, 64, 128, 160, ...), got "
                         f"shape {tuple(shape)}")
    return shape[0], shape[1]


class UpBlock(nn.Module):
    """Gulrajani et al.'s 'up' residual block: BN → ReLU → ×2 nearest upsampling → conv 3×3 (no bias) → BN → ReLU →
    conv 3×3, plus the shortcut ×2 upsampling → conv 1×1. (n, a, s, s) → (n, b, 2s, 2s)."""

    def __init__(self, a: int, b: int):
        super().__init__()
        self.main = nn.Sequential(nn.BatchNorm2d(a), nn.ReLU(), nn.Upsample(scale_factor=2),
                                  nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(),
                                  nn.Conv2d(b, b, 3, padding=1))
        self.shortcut = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(a, b, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.main(x)


class DownBlock(nn.Module):
    """Gulrajani et al.'s 'down' residual block without normalisation: ReLU → conv 3×3 (a → a) → ReLU → conv 3×3
    (a → b) → 2×2 mean pool, plus the shortcut 2×2 mean pool → conv 1×1. (n, a, s, s) → (n, b, s/2, s/2)."""

    def __init__(self, a: int, b: int):
        super().__init__()
        self.main = nn.Sequential(nn.ReLU(), nn.Conv2d(a, a, 3, padding=1), nn.ReLU(), nn.Conv2d(a, b, 3, padding=1),
                                  nn.AvgPool2d(2))
        self.shortcut = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(a, b, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.main(x)


class ResNetGenerator(nn.Module):
    """The paper's 10-layer ResNet generator (CelebA 160 × 160, ImageNet 64 × 64) for ``shape`` = (C, S, S), S a
    multiple of 32: z → Linear → (16·width, S/32, S/32) → 4 :class:`UpBlock` (16 → 8 → 4 → 2 → 1 × width) → BN →
    ReLU → ConvTranspose 5×5 stride 2 → tanh; output (n, C, S, S) in [-1, 1]."""

    def __init__(self, shape: tuple[int, int, int], z_dim: int = 128, width: int = 64):
        super().__init__()
        c, side = _resnet_image(shape, "resnet")
        s = side // 32
        self.start = (16 * width, s, s)
        self.fc = nn.Linear(z_dim, 16 * width * s * s)
        ch = [16 * width, 8 * width, 4 * width, 2 * width, width]
        self.blocks = nn.Sequential(*(UpBlock(a, b) for a, b in zip(ch[:-1], ch[1:])))  # S/32 -> S/2
        self.out = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(),
                                 nn.ConvTranspose2d(width, c, 5, stride=2, padding=2, output_padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], *self.start)  # (n, 16w, S/32, S/32)
        return self.out(self.blocks(h))  # (n, C, S, S)


class ResNetCritic(nn.Module):
    """The paper's 10-layer ResNet critic (ImageNet 64 × 64): conv 3×3 (width) → LeakyReLU(0.2) → 4
    :class:`DownBlock` (1 → 2 → 4 → 8 → 8 × width) → Linear → ``out_dim``; (n, C, S, S) → (n, out_dim). No
    normalisation layers (per-sample, as the DCGAN critic)."""

    def __init__(self, shape: tuple[int, int, int], out_dim: int = 1, width: int = 64):
        super().__init__()
        c, side = _resnet_image(shape, "resnet")
        ch = [width, 2 * width, 4 * width, 8 * width, 8 * width]
        self.features = nn.Sequential(nn.Conv2d(c, width, 3, padding=1), nn.LeakyReLU(0.2),
                                      *(DownBlock(a, b) for a, b in zip(ch[:-1], ch[1:])), nn.Flatten())
        self.fc = nn.Linear(8 * width * (side // 16) ** 2, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))  # (n, out_dim)


class DCGAN5Critic(nn.Module):
    """The paper's 5-layer DCGAN critic of its CelebA model (with :class:`ResNetGenerator`, ``--arch resnet-dcgan5``):
    [conv 5×5 stride 2, LeakyReLU(0.2)] × 5 (1, 2, 4, 8, 16 × width filters; S → S/32) → Linear → ``out_dim``."""

    def __init__(self, shape: tuple[int, int, int], out_dim: int = 1, width: int = 64):
        super().__init__()
        c, side = _resnet_image(shape, "resnet-dcgan5")
        ch = [c] + [width * 2**i for i in range(5)]
        layers = []
        for a, b in zip(ch[:-1], ch[1:]):
            layers += [nn.Conv2d(a, b, 5, stride=2, padding=2), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.fc = nn.Linear(16 * width * (side // 32) ** 2, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))  # (n, out_dim)


#: ``--arch`` name -> (generator class, critic class)
ARCHS: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "dcgan": (DCGANGenerator, DCGANCritic),
    "mlp": (MLPGenerator, MLPCritic),
    "resnet": (ResNetGenerator, ResNetCritic),
    "resnet-dcgan5": (ResNetGenerator, DCGAN5Critic),
}


def build_models(arch: str, shape: tuple[int, ...], *, z_dim: int = 128, width: int = 64,
                 critic_dim: int = 1) -> tuple[nn.Module, nn.Module]:
    """(generator, critic) of architecture ``arch`` for samples of ``shape`` ((C, H, W) or (d,)).

    Raises:
        ValueError: unknown ``arch``, or a shape the architecture does not support.

    Example:
        >>> g, f = build_models("dcgan", (1, 28, 28), width=8)
        >>> f(g(torch.rand(2, 128) * 2 - 1)).shape
        torch.Size([2, 1])
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {list(ARCHS)}, got {arch!r}")
    for name, v in (("z_dim", z_dim), ("width", width), ("critic_dim", critic_dim)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    gen_cls, critic_cls = ARCHS[arch]
    return gen_cls(shape, z_dim=z_dim, width=width), critic_cls(shape, out_dim=critic_dim, width=width)


# ------------------------------------------------------------------------------------------------ GPU speed settings

#: ``--amp`` choices: ``none`` (fp32) or ``bf16`` (autocast of the networks' forward passes)
AMP_MODES = ("none", "bf16")


def set_tf32(enabled: bool) -> None:
    """cuDNN convolutions (forward and backward) in TF32 or not (``--tf32`` / ``--no-tf32``), and cuDNN's autotuner on
    (the shapes of a run are fixed). Matmuls stay full fp32 globally — kernelmmd's among them; :func:`accelerate`
    turns TF32 on for the networks' own matmuls during their forward passes."""
    torch.backends.cudnn.allow_tf32 = bool(enabled)
    torch.backends.cudnn.benchmark = True


@contextlib.contextmanager
def _matmul_precision(precision: str | None):
    if precision is None:
        yield
        return
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


class _FastForward:
    """The forward of a network under :func:`accelerate` (set as the module's instance attribute ``forward``, so that
    ``state_dict`` keys, parametrisations and DistributedDataParallel wrapping stay exactly as without it)."""

    def __init__(self, net: nn.Module, device_type: str, amp: str, compile: bool, channels_last: bool, tf32: bool):
        eager = type(net).forward.__get__(net)
        dtype = torch.bfloat16 if amp == "bf16" else None

        def run(x):
            if dtype is None:
                return eager(x)
            with torch.autocast(device_type, dtype=dtype):
                return eager(x)

        self.run = run
        self.compiled = torch.compile(run) if compile else None
        self.channels_last = channels_last
        self.precision = "high" if tf32 and device_type == "cuda" else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # a leaf input that requires grad is one the caller differentiates with respect to, and then usually
        # differentiates that again (gradient penalties, SMMD's ∇φ, GCMMD's Jacobians): torch.compile has no double
        # backward, so those forward passes run eagerly (the same weights, the same maths)
        derivative = x.requires_grad and x.grad_fn is None
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        fn = self.run if self.compiled is None or derivative else self.compiled
        with _matmul_precision(self.precision):
            y = fn(x)
        return y.float()  # kernelmmd's statistics always see float32 features


def accelerate(net: nn.Module, *, device: torch.device | str, amp: str = "none", compile: bool = False,
               channels_last: bool = False, tf32: bool = True) -> nn.Module:
    """Run ``net`` faster on a GPU, in place (returns ``net``); weights, buffers and ``state_dict`` are unchanged.

    Args:
        net: a generator or critic, already on ``device`` (and spectrally parametrised where wanted).
        device: where it runs (TF32 applies on CUDA only).
        amp: ``"bf16"``: the forward pass under ``torch.autocast(dtype=torch.bfloat16)`` (weights, gradients and
            optimiser states stay float32); ``"none"``: float32.
        compile: ``torch.compile`` the forward pass. Forward passes whose input is a leaf that requires grad (where
            the loss takes derivatives with respect to the input and then differentiates them again) run eagerly,
            since compiled graphs have no double backward.
        channels_last: weights and 4-D inputs in the channels-last memory format (faster cuDNN convolutions).
        tf32: on CUDA, the network's matmuls in TF32 during its forward pass (see :func:`set_tf32` for convolutions).

    The output is always cast to float32, so that kernelmmd's statistics (float32 with float64 sums) never see
    bfloat16 features.

    Raises:
        ValueError: unknown ``amp``.
    """
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {list(AMP_MODES)}, got {amp!r}")
    device = torch.device(device)
    if amp == "none" and not compile and not channels_last and not (tf32 and device.type == "cuda"):
        return net
    if channels_last:
        net.to(memory_format=torch.channels_last)
    net.forward = _FastForward(net, device.type, amp, compile, channels_last, tf32)
    return net
