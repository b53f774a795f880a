"""Generators and critics, as a registry whose keys are the ``--arch`` choices (SPEC §10).

* ``dcgan`` — DCGAN for 28 × 28 (MNIST, Fashion-MNIST) and 32 × 32 (CIFAR-10) images, ``width`` filters in the
  smallest layer (64 in the papers), doubled per layer.

  Generator: z (z_dim) → Linear → (c₀·width, s, s) → [ConvTranspose 4×4 stride 2, BatchNorm, ReLU] × k →
  Conv 3×3 → tanh, with (s, k, c₀) = (7, 2, 4) for 28 × 28 and (4, 3, 8) for 32 × 32.

  Critic: [Conv stride 2, LeakyReLU(0.2)] × 3 (width, 2·width, 4·width filters; 28 → 14 → 7 → 4 or
  32 → 16 → 8 → 4) → Linear → ``out_dim`` features. No normalisation layers in the critic: its Jacobian and
  gradient penalties must be per-sample.
* ``mlp`` — two hidden layers of ``2·width`` units for the 2-D toys (generator output is linear).

``out_dim`` is the critic's feature dimension s: 1 for SMMD / SWGAN / GCMMD / WGAN-GP, 16 for the MMD-GAN losses.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ARCHS", "DCGANGenerator", "DCGANCritic", "MLPGenerator", "MLPCritic", "build_models"]


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


#: ``--arch`` name -> (generator class, critic class)
ARCHS: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "dcgan": (DCGANGenerator, DCGANCritic),
    "mlp": (MLPGenerator, MLPCritic),
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
