"""Train an MMD-type GAN: ``python -m gan.train --loss smmd --data mnist`` (``torchrun ... -m gan.train`` for several
processes), or :func:`train` from Python. This module is the training loop and the command line; the options are
:class:`gan.config.Config`, a run and its updates :class:`gan.run.Run`, the run directory's files
:mod:`gan.artefacts`.

What a run does and writes, resuming, damaged files and several processes: README.md, "Training GANs"; how the
modules fit together and how a step flows between processes: docs/ARCHITECTURE.md, "GAN training". Exit statuses of
``python -m gan.train``: 0 done; 1 a non-finite loss (the last good checkpoint is kept); 2 bad options or unusable
input, one ``error:`` line on stderr and no traceback; 128 + signal number after SIGINT / SIGTERM (a checkpoint was
saved).
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from ._cli import one_line_warnings
from .artefacts import (
    RANK_STATE_ENV,
    REQUIRED_SETTINGS,
    RunConfigError,
    append_row,
    dump_rank_state,
    pick_checkpoint,
    plot_losses,
    read_run_config,
    restart_metrics,
    save_samples,
    write_run_config,
)
from .config import DEFAULT_STEPS, RESUMABLE, Config, apply_preset, build_parser, config_for_resume, explicit_options
from .run import STREAMS, NonFiniteLossError, Run, clip_per_tensor, critic_steps_at, kid_callback, load_generator

# the names below were all defined here before the split into config / run / artefacts; they stay importable
__all__ = ["Config", "NonFiniteLossError", "RunConfigError", "Run", "train", "build_parser", "main",
           "critic_steps_at", "clip_per_tensor", "load_generator", "read_run_config", "DEFAULT_STEPS", "RESUMABLE",
           "REQUIRED_SETTINGS", "RANK_STATE_ENV", "STREAMS"]


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
        the last checkpoint), ``run_dir``, ``world_size``, ``last`` (the last metrics row) and ``scores`` (the
        closing KID of ``--score-samples`` as written to scores.json, or None: see :func:`_score`).

    Raises:
        ValueError: invalid settings. FileNotFoundError / DataNotFoundError: missing data or run to resume.
        FileExistsError: ``cfg.out`` already holds checkpoints and ``cfg.resume`` is false.
        NonFiniteLossError: a NaN/Inf loss or weights (no checkpoint is written after it); under torchrun on every
            process when it happened on any.

    Example:
        >>> summary = train(Config(loss="mmd", data="gaussians-2d", steps=2, out="/tmp/run"))  # doctest: +SKIP
    """
    cfg = _resolve(cfg, explicit)
    owns_group = not distributed.is_distributed()
    info = distributed.init_from_env(cfg.device)
    try:
        loop = _setup(cfg, info, tuple(callbacks), verbose)
        _run_loop(loop)
        summary = _finish(loop)
    finally:
        if owns_group:
            distributed.cleanup()
    summary["scores"] = _score(loop) if loop.stopping() is None and loop.run.rank == 0 else None
    return summary


# ----------------------------------------------------------------------------------------------------------- setup


def _resolve(cfg: Config, explicit: set[str] | None) -> Config:
    """The resolved configuration of the run: ``cfg``, or with ``cfg.resume`` the saved one of ``cfg.out`` with the
    settings named in ``explicit`` (default: the non-default ones) taken from ``cfg``."""
    if explicit is None:
        default = Config()
        explicit = {f.name for f in dataclasses.fields(Config) if getattr(cfg, f.name) != getattr(default, f.name)}
    if not cfg.resume:
        cfg = apply_preset(cfg, explicit)
    if cfg.resume:
        cfg = cfg.resolved()
        if not (Path(cfg.out) / "config.json").is_file():
            raise FileNotFoundError(f"--resume: no config.json in {cfg.out}; nothing to resume (start without "
                                    "--resume)")
        cfg = config_for_resume(cfg, explicit, read_run_config(cfg.out)[0]["config"])
    return cfg.resolved()


@dataclass
class _Loop:
    """What the loop carries from step to step besides the :class:`Run`."""

    run: Run
    callbacks: tuple
    verbose: bool  # print messages and the progress bar (process 0 only)
    sync_lrs: bool  # every process takes process 0's learning rates after the callbacks
    path: Path | None  # the last checkpoint on disk
    saved_step: int | None  # its step
    signal: int | None = None  # the signal this process received
    agreed: int | None = None  # the signal every process stops on (several processes)
    bar: tqdm | None = None
    t0: float = 0.0  # start of the current metrics row's interval
    images: int = 0  # images through both networks since t0 (this process)

    def stopping(self) -> int | None:
        return self.signal if self.run.world == 1 else self.agreed


def _setup(cfg: Config, info: distributed.DistInfo, callbacks: tuple, verbose: bool) -> _Loop:
    """The run, restored from its checkpoint on resume, with its run directory, metrics.jsonl and config.json."""
    world, rank0 = distributed.world_size(), distributed.is_main()
    verbose = verbose and rank0
    latest, state = _agreed_checkpoint(cfg, world, rank0)
    if rank0:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
    run = Run(cfg, verbose=verbose, device=info.device if info.backend else None)
    sync_lrs = world > 1 and (cfg.kid_lr or any(getattr(cb, "main_only", False) for cb in callbacks))
    callbacks = _with_kid_callback(cfg, run, callbacks)
    if cfg.resume:
        _restore(run, latest, state, callbacks)
    if rank0:
        restart_metrics(run)
        write_run_config(run)
    if verbose and cfg.resume:
        print(f"resumed from {latest} at generator step {run.step}")
    return _Loop(run, callbacks, verbose, sync_lrs, path=latest, saved_step=run.step if cfg.resume else None)


def _agreed_checkpoint(cfg: Config, world: int, rank0: bool) -> tuple[Path | None, dict | None]:
    """Process 0 picks the checkpoint to resume from (:func:`gan.artefacts.pick_checkpoint`; the others get its path,
    and its state on process 0); an error there stops every process. Resuming needs the run directory on a file
    system every process sees."""
    latest, state, error = None, None, None
    if rank0:
        try:
            latest, state = pick_checkpoint(cfg, Path(cfg.out))
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
    return latest, state


def _with_kid_callback(cfg: Config, run: Run, callbacks: tuple) -> tuple:
    """``callbacks`` and, with ``--kid-lr``, the KID callback after them (so that checkpointed callback states keep
    their order). It runs on process 0; the others take its learning rates (``sync_lrs``)."""
    if not cfg.kid_lr:
        return callbacks
    kid, error = None, None
    if distributed.is_main():
        try:
            kid = kid_callback(cfg, run)
        except Exception as e:  # noqa: BLE001 - reported on every process by _agree
            error = e
    run._agree(error)
    return callbacks if kid is None else (*callbacks, kid)


def _restore(run: Run, latest: Path, state: dict | None, callbacks: tuple) -> None:
    """Load the checkpoint process 0 picked (its verified ``state`` there, read from ``latest`` on the others; on the
    CPU: RNG states must stay there, modules and optimisers move their tensors to their device). An error on any
    process stops all of them."""
    def restore():
        loaded = state if state is not None else ckpt.load(latest)
        try:
            run.load_state_dict(loaded, callbacks)
        except (AttributeError, KeyError, IndexError, RuntimeError, TypeError, ValueError) as e:
            raise ckpt.CheckpointError(latest, f"does not fit the run in {run.dir} (did its config.json or the "
                                       f"code change?): {ckpt._first_line(e)}") from None

    run._agreed(restore)


# ------------------------------------------------------------------------------------------------------------ loop


def _run_loop(loop: _Loop) -> None:
    """Generator steps until ``--steps`` or a signal; on a signal, a checkpoint and samples of the last step."""
    run, cfg = loop.run, loop.run.cfg
    with _signal_handlers(loop), tqdm(total=cfg.steps, initial=run.step, disable=not (loop.verbose and cfg.progress),
                                      dynamic_ncols=True, desc=f"{cfg.loss}") as loop.bar:
        loop.t0, loop.images = time.perf_counter(), 0
        while run.step < cfg.steps and loop.stopping() is None:
            _step(loop)
        if loop.stopping() is not None:
            if loop.saved_step != run.step:  # not already saved at this step
                _checkpoint(loop)
            save_samples(run)
            plot_losses(run)


@contextlib.contextmanager
def _signal_handlers(loop: _Loop):
    """Within the block SIGINT / SIGTERM set ``loop.signal`` (the loop finishes the step and saves a checkpoint); a
    second SIGINT aborts at once. Outside the main thread there is no signal handling."""
    def on_signal(signum, frame):
        if loop.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        loop.signal = signum
        if distributed.is_main():
            print(f"\nreceived {signal.Signals(signum).name}: finishing generator step {loop.run.step + 1}, then "
                  "saving a checkpoint (Ctrl-C again aborts without saving)", file=sys.stderr, flush=True)

    previous = {}
    for s in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[s] = signal.signal(s, on_signal)
        except ValueError:  # not the main thread
            pass
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _step(loop: _Loop) -> None:
    """One generator step: the updates, the callbacks, the agreement between processes, then the outputs due."""
    run, cfg = loop.run, loop.run.cfg
    out = run.iteration()
    loop.images += (out["critic_steps"] + 1) * cfg.batch_size
    extra = _callbacks(loop)
    loop.bar.update(1)
    log = run.step % cfg.log_every == 0 or run.step == cfg.steps or bool(extra)
    columns = {}
    if run.world > 1:
        log, out, columns = _agree_step(loop, out, log)
    if log:
        _log_row(loop, out, {**columns, **extra})
    if run.step % cfg.sample_every == 0 or run.step == cfg.steps:
        save_samples(run)
        plot_losses(run)
    if run.step % cfg.checkpoint_every == 0 or run.step == cfg.steps:
        _checkpoint(loop)


def _callbacks(loop: _Loop) -> dict:
    """Run the callbacks (``main_only`` ones on process 0) and share process 0's learning rates; their columns."""
    run, extra = loop.run, {}
    for cb in loop.callbacks:
        if run.rank == 0 or not getattr(cb, "main_only", False):
            extra.update(cb.on_step(run, run.step) or {})
    if loop.sync_lrs:
        run.sync_learning_rates()
    return extra


def _agree_step(loop: _Loop, out: dict, log: bool) -> tuple[bool, dict, dict]:
    """Several processes: averaged losses, a common decision to log and to stop (:meth:`Run.agree_step`)."""
    log, out, columns, loop.agreed = loop.run.agree_step(out, log, loop.signal)
    if loop.agreed is not None and loop.signal is None and loop.run.rank == 0:
        print(f"\nanother process received {signal.Signals(loop.agreed).name}: stopping after generator step "
              f"{loop.run.step}", file=sys.stderr, flush=True)
    return log, out, columns


def _log_row(loop: _Loop, out: dict, more: dict) -> None:
    """A metrics row: the step's losses, learning rates, throughput since the last row, and ``more`` columns."""
    run = loop.run
    dt = time.perf_counter() - loop.t0
    row = {"step": run.step, **{k: (float(v) if torch.is_tensor(v) else v) for k, v in out.items()},
           "lr_g": run.opt_g.param_groups[0]["lr"], "lr_c": run.opt_c.param_groups[0]["lr"],
           "images_per_s": run.world * loop.images / dt if dt > 0 else float("nan"), "world_size": run.world, **more}
    append_row(run, row)
    loop.bar.set_postfix(critic=f"{row['critic_loss']:.4g}", gen=f"{row['generator_loss']:.4g}",
                         img_s=f"{row['images_per_s']:.0f}")
    loop.t0, loop.images = time.perf_counter(), 0


def _checkpoint(loop: _Loop) -> None:
    loop.path, loop.saved_step = loop.run.save_checkpoint(loop.callbacks), loop.run.step


# ---------------------------------------------------------------------------------------------------------- finish


def _finish(loop: _Loop) -> dict:
    """The per-process state dump (``$GAN_TRAIN_RANK_STATE_DIR``), the last message, and :func:`train`'s summary."""
    run, path, interrupted = loop.run, loop.path, loop.stopping()
    dump_rank_state(run)
    if loop.verbose:
        if interrupted is not None:
            print(f"stopped by {signal.Signals(interrupted).name} at generator step {run.step}; checkpoint {path}; "
                  f"continue with --resume --out {run.dir}")
        else:
            print(f"done: {run.step} generator steps; outputs in {run.dir} (checkpoint {path})")
    return {"step": run.step, "interrupted": interrupted, "checkpoint": str(path) if path else None,
            "run_dir": str(run.dir), "world_size": run.world, "last": run.rows[-1] if run.rows else None}


#: the closing scores need at least this many real images (fewer make KID / FID meaningless, e.g. the tests' files)
SCORE_MIN_IMAGES = 1000


def _score(loop: _Loop) -> dict | None:
    """The closing scores of ``--score-samples`` (mnist / fashion-mnist): the exact KID of the last checkpoint and of
    the initial generator, printed and written to RUN_DIR/scores.json (:func:`gan.evaluate.score_run`). A failure
    (e.g. features that cannot be built) is a warning: the training itself succeeded."""
    run, cfg = loop.run, loop.run.cfg
    n_real = getattr(run.data, "images", None)
    if not cfg.score_samples or cfg.data not in ("mnist", "fashion-mnist") or n_real is None \
            or n_real.shape[0] < SCORE_MIN_IMAGES:
        return None
    from .evaluate import score_run
    from .features import FeaturesUnavailable

    t0 = time.perf_counter()
    try:
        s = score_run(run.dir, samples=cfg.score_samples, device=run.device, progress=loop.verbose and cfg.progress)
    except (OSError, ValueError, FeaturesUnavailable) as e:
        warnings.warn(f"the closing KID could not be computed ({e}); score the run later with `python -m "
                      f"gan.evaluate {run.dir}`", UserWarning, stacklevel=2)
        return None
    if loop.verbose:
        print(f"KID (exact, all pairs, {s['n_fake']} samples vs {s['n_real']} real digits, LeNet features): "
              f"{s['kid']:.4g} ± {s['kid_sd']:.2g} after {s['step']} steps; {s['kid_init']:.4g} ± "
              f"{s['kid_init_sd']:.2g} at initialisation (ratio {s['kid_ratio']:.3f}); FID {s['fid']:.3g} "
              f"(init {s['fid_init']:.3g}); {time.perf_counter() - t0:.0f} s -> {run.dir / 'scores.json'}")
    return s


# ------------------------------------------------------------------------------------------------------------- CLI


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
            summary = train(cfg, explicit=explicit_options(parser, argv))
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
