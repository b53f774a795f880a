"""Score a trained generator: ``python -m gan.evaluate RUN_DIR [--samples 10000]`` → KID, FID in RUN_DIR/scores.json.

Reads the run's ``config.json`` and latest checkpoint (as written by :mod:`gan.train`), draws ``--samples``
generator samples (z ~ U[−1, 1]^z_dim, generator in eval mode) and as many real images (a seeded random subset of the
training set, all of it when smaller; for ``--data folder`` runs a random subset of the image tree read by
:func:`gan.data.load_folder_images` with the run's ``--image-size`` and ``--crop``, exactly as for training),
featurises both, and reports (SPEC §9):

* KID over subsets — mean ± std of MMD²_u with the cubic kernel over ``--subsets`` (100) random subsets of
  ``--subset-size`` (1000) points, the papers' protocol (``kernelmmd.kid(..., subsets=100)``);
* the exact KID — MMD²_u over all pairs, and the standard deviation of that estimate
  (``kernelmmd.kid(..., subsets=None)``);
* FID (``kernelmmd.fid``).

Features (``--features auto``): MNIST / Fashion-MNIST use the LeNet of ``python -m gan.features --data DATA``
(penultimate layer), CIFAR-10 and image folders (CelebA, ImageNet) the Inception-v3 pool3 features via torch-fidelity,
the 2-D toys the points themselves; see :mod:`gan.features` for where weights come from (a local file, never a
download: ``--feature-weights``, ``$KERNELMMD_INCEPTION_WEIGHTS`` or torch.hub's cache). ``--init`` scores the
generator at initialisation instead (the run's seed, as :class:`gan.run.Run` builds it) and writes
``scores_init.json``: the yardstick for "KID fell by ×k".

The checkpoint is the newest one whose SHA-256 checksum verifies (:mod:`gan.checkpoint`): damaged newer ones are
skipped with a warning naming each; ``--checkpoint FILE`` uses exactly that file or fails. A KID subset size that
covers all generated samples or all real images makes the std over subsets meaningless (0 when it covers both): a
warning says so. Exit statuses: 0 scores written; 2 bad options or unusable input (no / damaged config.json or
checkpoints, a ``--checkpoint`` that is not a checkpoint, missing or damaged data or feature weights, a ``--device``
this machine lacks), one ``error:`` line on stderr and no traceback. ``scores.json`` is written atomically.

Python use: :func:`evaluate_generator` (any generator, real images and feature extractor) and :func:`evaluate_run`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

import kernelmmd

from ._cli import HelpFormatter, check_device, one_line_warnings, parse_checked
from .artefacts import read_run_config
from .checkpoint import atomic_write
from .data import DataNotFoundError, load_folder_images, load_images, toy_sample
from .features import DEFAULT_FEATURES, FeaturesUnavailable, default_features, featurize, load_feature_extractor  # noqa: F401
from .run import initial_generator, load_checkpointed_generator

__all__ = ["evaluate_generator", "evaluate_run", "score_run", "default_features", "initial_generator", "main"]

def _z_dim(generator: nn.Module) -> int:
    for m in generator.modules():
        if isinstance(m, nn.Linear):
            return m.in_features
    raise ValueError("z_dim could not be inferred (the generator has no nn.Linear layer); pass z_dim=")


@torch.no_grad()
def _generate(generator: nn.Module, n: int, z_dim: int, *, batch_size: int, seed: int, device, progress: bool):
    was = generator.training
    generator.eval()
    rng = torch.Generator().manual_seed(seed)
    out = []
    try:
        with tqdm(total=n, disable=not progress, desc="generating", unit="img", dynamic_ncols=True) as bar:
            for i in range(0, n, batch_size):
                b = min(batch_size, n - i)
                z = (torch.rand(b, z_dim, generator=rng) * 2.0 - 1.0).to(device)  # z ~ U[−1, 1]^z_dim
                out.append(generator(z).cpu())
                bar.update(b)
    finally:
        generator.train(was)
    return torch.cat(out)


def evaluate_generator(generator: nn.Module, real_images: torch.Tensor, feature_extractor, n_samples: int = 10000, *,
                       z_dim: int | None = None, subsets: int = 100, subset_size: int = 1000, batch_size: int = 500,
                       seed: int = 0, device="cpu", progress: bool = True) -> dict:
    r"""KID (over subsets and exact) and FID of ``generator`` against ``real_images``.

    .. math::
        \mathrm{KID} = \mathrm{MMD}^2_u\bigl(f(X_{real}), f(G(Z))\bigr),\ k(a, b) = (a^\top b / d + 1)^3

    .. math::
        \mathrm{FID} = \|\mu_r - \mu_g\|^2 + \operatorname{tr}(\Sigma_r + \Sigma_g - 2(\Sigma_r\Sigma_g)^{1/2})

    Args:
        generator: maps z (b, z_dim) to samples (b, ...) in [−1, 1]; evaluated in eval mode without gradients.
        real_images: the real reference set (N, ...) (uint8 images or floats in [−1, 1]); all of it is used.
        feature_extractor: callable mapping a batch to (b, d) features (e.g. from
            :func:`gan.features.load_feature_extractor`).
        n_samples: generated samples, ≥ 4.
        z_dim: latent dimension (default: ``in_features`` of the generator's first ``nn.Linear``).
        subsets, subset_size: the KID subset protocol (``subset_size`` is capped at min(N, n_samples)).
        batch_size: generation / featurisation batch size. seed: latent noise and KID subsets.
        device: where the generator runs. progress: tqdm bars while generating and featurising.

    Returns:
        dict: ``kid_mean``, ``kid_std`` (over subsets), ``kid_subsets``, ``kid_subset_size``, ``kid_exact``,
        ``kid_exact_std``, ``fid``, ``n_real``, ``n_fake``, ``feature_dim``, ``seconds``.

    Warns:
        UserWarning: the (capped) subset size equals the number of generated samples or of real images: every
        subset then holds all of them, so ``kid_std`` is 0 (both) or reflects only the other set's subsampling.

    Raises:
        ValueError: ``n_samples`` < 4 or fewer than 4 real images, bad ``subsets`` / ``subset_size`` / ``batch_size``,
        features that kernelmmd rejects (NaN/Inf, mismatched dimensions).

    Example:
        >>> g = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Tanh())
        >>> s = evaluate_generator(g, torch.rand(50, 2) * 2 - 1, lambda x: x, 50, subset_size=20, progress=False)
        >>> sorted(s)[:3]
        ['feature_dim', 'fid', 'kid_exact']
    """
    for name, v, lo in (("n_samples", n_samples, 4), ("subsets", subsets, 1), ("subset_size", subset_size, 2),
                        ("batch_size", batch_size, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    if real_images.shape[0] < 4:
        raise ValueError(f"real_images must hold at least 4 samples, got {real_images.shape[0]}")
    t0 = time.perf_counter()
    z_dim = z_dim if z_dim is not None else _z_dim(generator)
    fake = _generate(generator, n_samples, z_dim, batch_size=batch_size, seed=seed, device=device, progress=progress)
    fake_f = featurize(feature_extractor, fake, batch_size=batch_size, progress=progress, desc="featurising fake")
    real_f = featurize(feature_extractor, real_images, batch_size=batch_size, progress=progress,
                       desc="featurising real")
    real_f, fake_f = real_f.double(), fake_f.double()
    ss = min(subset_size, real_f.shape[0], fake_f.shape[0])
    whole = [what for what, n in (("generated samples", fake_f.shape[0]), ("real images", real_f.shape[0])) if n == ss]
    if whole and subsets > 1:
        if len(whole) == 2:
            effect = "every subset is the whole of both sets, so the std over subsets is 0 (up to rounding) and " \
                "meaningless"
        else:
            effect = "the std over subsets only reflects the subsampling of the other set and understates the " \
                "uncertainty"
        warnings.warn(f"KID subset size {ss}{' (capped)' if ss < subset_size else ''} equals the number of "
                      f"{' and of '.join(whole)}: {effect}; use a smaller subset size (e.g. {max(2, ss // 2)}, "
                      f"--subset-size) or more samples (--samples > {ss})", UserWarning, stacklevel=2)
    sub = kernelmmd.kid(real_f, fake_f, subsets=subsets, subset_size=ss, seed=seed)
    exact = kernelmmd.kid(real_f, fake_f, subsets=None)
    return {"kid_mean": sub.mean, "kid_std": sub.std, "kid_subsets": subsets, "kid_subset_size": ss,
            "kid_exact": exact.mean, "kid_exact_std": exact.std, "fid": kernelmmd.fid(real_f, fake_f),
            "n_real": int(real_f.shape[0]), "n_fake": int(fake_f.shape[0]), "feature_dim": int(real_f.shape[1]),
            "seconds": round(time.perf_counter() - t0, 2)}


def _real_images(cfg, n: int, seed: int, data_dir) -> torch.Tensor:
    if cfg.data == "gaussians-2d":
        return toy_sample(n, cfg.toy, generator=torch.Generator().manual_seed(seed + 1))
    if cfg.data == "folder":  # a random subset of the tree, preprocessed as for training (--image-size, --crop)
        return load_folder_images(data_dir if data_dir is not None else cfg.data_dir, cfg.image_size or 64, cfg.crop,
                                  limit=n, seed=seed + 1, workers=cfg.workers).images
    images = load_images(cfg.data, data_dir if data_dir is not None else cfg.data_dir, verbose=False).images
    if images.shape[0] > n:
        idx = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed + 1))[:n]
        images = images[idx]
    return images  # uint8 (n, C, H, W)


def evaluate_run(run_dir: str | os.PathLike, *, samples: int = 10000, checkpoint=None, init: bool = False,
                 features: str = "auto", feature_weights=None, data_dir=None, subsets: int = 100,
                 subset_size: int = 1000, batch_size: int = 500, seed: int = 0, device="cpu",
                 progress: bool = True) -> dict:
    """Score a run directory (latest checkpoint, a given ``checkpoint``, or the initial generator with ``init``) and
    write ``scores.json`` (``scores_init.json`` with ``init``) into it; returns the written dict.

    Without ``checkpoint`` the newest intact checkpoint is used; newer damaged ones are skipped with a
    :class:`gan.checkpoint.DamagedFileWarning` naming each.

    Raises:
        FileNotFoundError: no config.json / checkpoint. gan.data.DataNotFoundError: no real data.
        gan.features.FeaturesUnavailable: missing feature weights / torch-fidelity. gan.checkpoint.CheckpointError
        (a ValueError): ``checkpoint`` damaged or not a checkpoint, or no intact one. gan.artefacts.RunConfigError (a
        ValueError): damaged or invalid config.json. ValueError: bad arguments (a device this machine lacks).
    """
    run_dir = Path(run_dir)
    check_device(str(device), "device")
    saved, _ = read_run_config(run_dir)
    data = saved["config"]["data"]
    name = default_features(data) if features == "auto" else features
    fx = load_feature_extractor(name, weights=feature_weights, data=data, device=device,
                                data_dir=data_dir if data_dir is not None else saved["config"].get("data_dir"),
                                progress=progress)
    if init:
        gen, cfg = initial_generator(run_dir, device)
        step, ckpt_path = 0, None
    else:
        gen, cfg, ckpt_path, state = load_checkpointed_generator(run_dir, device=device, checkpoint=checkpoint,
                                                                 stacklevel=4)
        step = int(state["step"])
        del state
    real = _real_images(cfg, samples, seed, data_dir)
    scores = evaluate_generator(gen, real, fx, samples, z_dim=cfg.z_dim, subsets=subsets, subset_size=subset_size,
                                batch_size=batch_size, seed=seed, device=device, progress=progress)
    out = {"run_dir": str(run_dir), "loss": cfg.loss, "data": cfg.data, "step": step,
           "checkpoint": str(ckpt_path) if ckpt_path is not None else None, "features": name,
           "feature_source": fx.source, "seed": seed, **scores}
    path = run_dir / ("scores_init.json" if init else "scores.json")
    atomic_write(path, json.dumps(out, indent=2, allow_nan=False) + "\n")
    return out


def score_run(run_dir: str | os.PathLike, *, samples: int = 5000, checkpoint=None, seed: int = 0, device="cpu",
              progress: bool = True) -> dict:
    """The main job's closing scores: the exact all-pairs KID (``kernelmmd.kid(..., subsets=None)``, LeNet or the
    data's default features) of ``samples`` generated images against as many real ones (all of them when fewer),
    for the newest intact checkpoint (or ``checkpoint``) and for the generator at initialisation; writes
    RUN_DIR/scores.json.

    Returns:
        The written dict: :func:`evaluate_run`'s keys for the last checkpoint, plus ``kid`` / ``kid_sd`` (the exact
        KID and the standard deviation of that estimate), ``kid_init`` / ``kid_init_sd`` and ``fid_init`` (the same
        for the initial generator), and ``kid_ratio`` = kid / kid_init.
    """
    run_dir = Path(run_dir)
    check_device(str(device), "device")
    saved, _ = read_run_config(run_dir)
    data = saved["config"]["data"]
    fx = load_feature_extractor(default_features(data), data=data, device=device,
                                data_dir=saved["config"].get("data_dir"), progress=progress)
    gen, cfg, ckpt_path, state = load_checkpointed_generator(run_dir, device=device, checkpoint=checkpoint,
                                                             stacklevel=3)
    step = int(state["step"])
    del state
    gen0, _ = initial_generator(run_dir, device)
    real = _real_images(cfg, samples, seed, None)
    n = min(samples, real.shape[0])
    kw = dict(z_dim=cfg.z_dim, subset_size=min(1000, max(2, n // 2)), seed=seed, device=device, progress=progress)
    end = evaluate_generator(gen, real, fx, samples, **kw)
    init = evaluate_generator(gen0, real, fx, samples, **kw)
    out = {"run_dir": str(run_dir), "loss": cfg.loss, "data": cfg.data, "step": step, "checkpoint": str(ckpt_path),
           "features": fx.name, "feature_source": fx.source, "seed": seed,
           "kid": end["kid_exact"], "kid_sd": end["kid_exact_std"], "kid_init": init["kid_exact"],
           "kid_init_sd": init["kid_exact_std"], "kid_ratio": end["kid_exact"] / init["kid_exact"],
           "fid_init": init["fid"], **end}
    atomic_write(run_dir / "scores.json", json.dumps(out, indent=2, allow_nan=False) + "\n")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gan.evaluate", formatter_class=HelpFormatter,
                                description="KID (mean ± std over subsets, and exact) and FID of a trained run; "
                                "written to RUN_DIR/scores.json and printed.")
    p.add_argument("run_dir", help="run directory written by python -m gan.train")
    p.add_argument("--samples", type=int, default=10000, help="generated samples (and at most as many real ones)")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint file (default: the newest intact checkpoint of the run)")
    p.add_argument("--init", action="store_true", help="score the generator at initialisation -> scores_init.json")
    p.add_argument("--features", choices=["auto", "lenet", "inception", "identity"], default="auto",
                   help="feature extractor (auto: lenet for mnist/fashion-mnist, inception for cifar10 and "
                   "--data folder, identity for 2-D toys)")
    p.add_argument("--feature-weights", default=None, help="LeNet weights file (default: where `python -m "
                   "gan.features` saves them) or Inception-v3 weights file (default: $KERNELMMD_INCEPTION_WEIGHTS "
                   "or torch.hub's cache; never downloaded, see the README's \"Inception weights on a machine "
                   "without internet\")")
    p.add_argument("--data-dir", default=None, help="real data directory (default: the run's --data-dir; for a "
                   "--data folder run, a tree of images read with the run's --image-size and --crop)")
    p.add_argument("--subsets", type=int, default=100, help="KID subsets")
    p.add_argument("--subset-size", type=int, default=1000, help="points per KID subset")
    p.add_argument("--batch-size", type=int, default=500, help="generation / featurisation batch size")
    p.add_argument("--seed", type=int, default=0, help="seed of the latent noise, real subset and KID subsets")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return p


def _fmt(v: float) -> str:
    return f"{v:.4g}" if math.isfinite(v) else str(v)


def main(argv: list[str] | None = None) -> int:
    args = parse_checked(build_parser(), argv,
                         lambda a: a.samples < 4 or a.subsets < 1 or a.subset_size < 2 or a.batch_size < 1,
                         "--samples must be >= 4, --subsets >= 1, --subset-size >= 2 and --batch-size >= 1",
                         device=True)
    try:
        with one_line_warnings():
            s = evaluate_run(args.run_dir, samples=args.samples, checkpoint=args.checkpoint, init=args.init,
                             features=args.features, feature_weights=args.feature_weights, data_dir=args.data_dir,
                             subsets=args.subsets, subset_size=args.subset_size, batch_size=args.batch_size,
                             seed=args.seed, device=args.device, progress=args.progress)
    except (OSError, DataNotFoundError, FeaturesUnavailable, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    what = "initial generator" if args.init else f"step {s['step']}"
    print(f"{s['loss']} on {s['data']} ({what}), {s['n_fake']} generated vs {s['n_real']} real, {s['features']} "
          f"features ({s['feature_dim']}-d):")
    print(f"  KID (×10³) {1e3 * s['kid_mean']:.3f} ± {1e3 * s['kid_std']:.3f} over {s['kid_subsets']} subsets of "
          f"{s['kid_subset_size']};  exact {1e3 * s['kid_exact']:.3f} ± {1e3 * s['kid_exact_std']:.3f}")
    print(f"  FID {_fmt(s['fid'])}")
    print(f"wrote {Path(args.run_dir) / ('scores_init.json' if args.init else 'scores.json')} ({s['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
