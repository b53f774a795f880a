"""PNG outputs of a run: sample grids (images), scatter plots (2-D toys) and loss curves (matplotlib, Agg).

Every PNG is written atomically (temporary file, fsync, ``os.replace``): a killed process never leaves a partly
written image behind.
"""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .checkpoint import atomic_path  # noqa: E402

__all__ = ["image_grid", "save_image_grid", "save_scatter", "save_loss_curves"]


def image_grid(images: torch.Tensor, nrow: int = 8, pad: int = 2) -> torch.Tensor:
    """Tile images (n, C, H, W) with values in [-1, 1] into one (H', W', C) float array in [0, 1]."""
    n, c, h, w = images.shape
    ncol = math.ceil(n / nrow)
    grid = torch.ones(c, ncol * (h + pad) + pad, nrow * (w + pad) + pad)
    x = ((images.detach().float().cpu() + 1.0) / 2.0).clamp(0.0, 1.0)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = x[i]
    return grid.permute(1, 2, 0)  # (H', W', C)


def save_image_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 8) -> None:
    """Save a grid of images (n, C, H, W) in [-1, 1] as a PNG (grayscale for C = 1)."""
    grid = image_grid(images, nrow).numpy()
    with atomic_path(path) as tmp:
        if grid.shape[2] == 1:
            plt.imsave(tmp, grid[:, :, 0], cmap="gray", vmin=0.0, vmax=1.0, format="png")
        else:
            plt.imsave(tmp, grid, format="png")


def save_scatter(fake: torch.Tensor, real: torch.Tensor, path: str | os.PathLike, title: str = "") -> None:
    """Scatter plot of 2-D real (grey) and generated (red) points."""
    fig, ax = plt.subplots(figsize=(4, 4))
    r, f = real.detach().cpu(), fake.detach().cpu()
    ax.scatter(r[:, 0], r[:, 1], s=4, c="0.6", label="real")
    ax.scatter(f[:, 0], f[:, 1], s=4, c="tab:red", label="generated")
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path) -> None:
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)


def save_loss_curves(rows: list[dict], path: str | os.PathLike, title: str = "") -> None:
    """Plot ``critic_loss`` and ``generator_loss`` of the metrics rows against ``step``."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    steps = [r["step"] for r in rows]
    for ax, key in zip(axes, ("critic_loss", "generator_loss")):
        ax.plot(steps, [r.get(key, float("nan")) for r in rows], lw=1)
        ax.set_xlabel("generator step")
        ax.set_title(key.replace("_", " "))
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
