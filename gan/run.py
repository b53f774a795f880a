"""One training run of ``gan.train``: the builders (loss, networks, the ``--kid-lr`` callback, a saved generator),
the named seeds of its random streams, and :class:`Run` — the state of a run and its critic / generator updates.

Where this sits in the package and how a step flows between processes: docs/ARCHITECTURE.md, section "GAN training".
"""

from __future__ import annotations

import dataclasses
import os
import signal
import warnings
from pathlib import Path

import torch

from . import checkpoint as ckpt
from . import distributed
from .artefacts import of_this_run, read_run_config
from .config import Config, kid_schedule_args
from .data import DataNotFoundError, load_folder_images, make_batches, toy_sample
from .features import FeaturesUnavailable, default_features, load_feature_extractor
from .losses import GANLoss, loss_for
from .nets import accelerate, build_models, set_tf32
from .spectral import spectralize

__all__ = ["Run", "NonFiniteLossError", "critic_steps_at", "clip_per_tensor", "build_networks", "kid_callback",
           "load_generator", "load_checkpointed_generator", "initial_generator", "STREAMS", "DATA_SEED", "NOISE_SEED",
           "PENALTY_SEED", "FIXED_Z_SEED", "FIXED_REAL_SEED", "KID_SEED"]

#: offsets added to ``--seed`` for each random stream of a run (the initial weights use ``--seed`` itself); the
#: per-process streams (data, noise, penalty) are then spread over processes by ``gan.distributed.rank_seed``
DATA_SEED = 1  # order of the real batches
NOISE_SEED = 2  # z of the training updates
PENALTY_SEED = 3  # interpolation weights of gradient penalties
FIXED_Z_SEED = 4  # the fixed z of the sample grids (the same on every process)
FIXED_REAL_SEED = 5  # the reference points of 2-D scatter plots
KID_SEED = 6  # the --kid-lr callback's own noise (training's streams stay untouched)


def build_networks(cfg: Config, shape: tuple, loss: GANLoss):
    """(generator, critic) of ``cfg`` for samples of ``shape``, initialised from the global RNG (seed it first)."""
    return build_models(cfg.arch, tuple(shape), z_dim=cfg.z_dim, width=cfg.width, critic_dim=loss.critic_dim)


def kid_callback(cfg: Config, run: Run):
    """The KID-adaptive learning-rate callback of ``--kid-lr`` (features as ``gan.evaluate`` picks them; for
    ``--data folder`` the real reference set is ``--kid-samples`` images of the tree, preprocessed as for training)."""
    from .schedule import KIDScheduleCallback

    name = cfg.kid_features or default_features(cfg.data)
    try:
        fx = load_feature_extractor(name, weights=cfg.kid_feature_weights, data=cfg.data, device=run.device,
                                    data_dir=cfg.data_dir, progress=cfg.progress)
    except FeaturesUnavailable as e:
        raise ValueError(f"--kid-lr: {e}") from None
    real = None
    if cfg.data == "folder":  # FolderBatches holds no images in memory: a random subset of the tree, as for training
        try:
            real = load_folder_images(cfg.data_dir, cfg.image_size or 64, cfg.crop, limit=cfg.kid_samples,
                                      seed=cfg.seed + KID_SEED, workers=cfg.workers).images  # uint8 (n, 3, S, S)
        except (DataNotFoundError, ValueError) as e:
            raise ValueError(f"--kid-lr: {e}") from None
    return KIDScheduleCallback(fx, n_samples=cfg.kid_samples, real_images=real, seed=cfg.seed + KID_SEED,
                               **kid_schedule_args(cfg))


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
        self.loss = loss_for(cfg)
        # every process draws its own batches, z and penalty weights (rank_seed(s) = s on process 0)
        self.data, self.shape = make_batches(cfg.data, batch_size=cfg.batch_size,
                                             seed=distributed.rank_seed(cfg.seed + DATA_SEED), device=self.device,
                                             data_dir=cfg.data_dir, toy_layout=cfg.toy, image_size=cfg.image_size,
                                             crop=cfg.crop, workers=cfg.workers, verbose=verbose and self.rank == 0)
        self.G, self.D = build_networks(cfg, self.shape, self.loss)
        spectralize(self.D, cfg.sn, torch.zeros(1, *self.shape))
        self.G.to(self.device)
        self.D.to(self.device)
        if self.device.type == "cuda":
            set_tf32(cfg.tf32)
        for net in (self.G, self.D):  # --amp, --compile, --channels-last, TF32 (state_dict keys unchanged)
            accelerate(net, device=self.device, amp=cfg.amp, compile=cfg.compile, channels_last=cfg.channels_last,
                       tf32=cfg.tf32)
        # buffers are synchronised once per generator step (iteration), not at every DDP forward
        self.G_ddp = distributed.wrap(self.G, self.device, forward_buffer_sync=False)
        self.D_ddp = distributed.wrap(self.D, self.device, forward_buffer_sync=False)
        distributed.broadcast_buffers(self.G, self.D)
        adam = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        self.opt_g = torch.optim.Adam(self.G.parameters(), **adam)
        self.opt_c = torch.optim.Adam(self.D.parameters(), **adam)
        self.noise_rng = torch.Generator().manual_seed(distributed.rank_seed(cfg.seed + NOISE_SEED))
        self.penalty_rng = torch.Generator().manual_seed(distributed.rank_seed(cfg.seed + PENALTY_SEED))
        self.fixed_z = self.noise(64, torch.Generator().manual_seed(cfg.seed + FIXED_Z_SEED))
        # a fixed reference set for the scatter plots of 2-D data (not drawn from the training stream)
        fixed_real = torch.Generator().manual_seed(cfg.seed + FIXED_REAL_SEED)
        self.fixed_real = toy_sample(500, cfg.toy, generator=fixed_real) if cfg.data == "gaussians-2d" else None
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
        if hasattr(self.data, "skipped"):  # --data folder: unreadable image files skipped so far
            out["data_skipped"] = len(self.data.skipped)
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
    g, cfg, _, _ = load_checkpointed_generator(run_dir, device=device, checkpoint=checkpoint)
    return g, cfg


def load_checkpointed_generator(run_dir, *, device="cpu", checkpoint=None, stacklevel: int = 3):
    """(generator, Config, checkpoint path, checkpoint state): :func:`load_generator` with what ``gan.evaluate``
    also reports."""
    if checkpoint is not None:
        path = Path(checkpoint)
        state = ckpt.load(path)
        saved, _ = read_run_config(run_dir)
    else:
        saved, _ = read_run_config(run_dir)
        try:
            path, state, damaged = ckpt.newest_intact(
                run_dir, check=of_this_run(saved["config"], Path(run_dir) / "config.json"))
        except FileNotFoundError:
            raise FileNotFoundError(f"no checkpoint in {Path(run_dir) / 'checkpoints'}") from None
        for e in damaged:
            warnings.warn(f"{e}; using the newest intact checkpoint, {path.name}", ckpt.DamagedFileWarning,
                          stacklevel=stacklevel)
    try:
        cfg = Config(**state["config"])
        g, _ = build_networks(cfg, saved["sample_shape"], loss_for(cfg))
        g.load_state_dict(state["generator"])
    except (KeyError, RuntimeError, TypeError, ValueError) as e:
        raise ckpt.CheckpointError(path, f"does not fit the run in {run_dir}: {ckpt._first_line(e)}") from None
    return g.to(device).eval(), cfg, path, state


# ---------------------------------------------------------------------------------------------------------- CLI


def initial_generator(run_dir: str | os.PathLike, device="cpu"):
    """The run's generator at initialisation (step 0), rebuilt from ``config.json`` with the run's seed the way
    :class:`Run` builds it (``torch.manual_seed(seed)``, then :func:`build_networks`); returns (generator, cfg)."""
    saved, _ = read_run_config(run_dir)
    cfg = Config(**saved["config"])
    loss = loss_for(cfg)
    torch.manual_seed(cfg.seed)
    g, _ = build_networks(cfg, saved["sample_shape"], loss)
    return g.to(device).eval(), cfg
