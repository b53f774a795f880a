"""The files of a ``gan.train`` run directory: config.json, metrics.jsonl, sample grids, loss plots, the choice of
the checkpoint to resume from, and the per-process state dumps of the tests.

Process 0 writes everything (the other processes' calls return at once); every file but the appended metrics.jsonl
is written atomically (:func:`gan.checkpoint.atomic_path`). Where this sits in the package: docs/ARCHITECTURE.md,
section "GAN training".
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .config import RESUMABLE, Config
from .plots import save_image_grid, save_loss_curves, save_scatter

__all__ = ["RunConfigError", "REQUIRED_SETTINGS", "RANK_STATE_ENV", "read_run_config", "write_run_config",
           "of_this_run", "pick_checkpoint", "read_rows", "restart_metrics", "append_row", "save_samples",
           "plot_losses", "dump_rank_state"]


class RunConfigError(ValueError):
    """A run directory's ``config.json`` is not JSON, lacks keys, or holds unknown or invalid settings."""


#: settings a config.json must hold (every version of gan.train wrote them); newer ones default when absent
REQUIRED_SETTINGS = ("loss", "data", "toy", "steps", "batch_size", "critic_steps", "start_critic_steps", "lr", "clip",
                     "z_dim", "arch", "width", "sn", "seed")
#: environment variable naming a directory where every process writes its final state (a debugging and test aid)
RANK_STATE_ENV = "GAN_TRAIN_RANK_STATE_DIR"


# ---------------------------------------------------------------------------------------------------- config.json


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


def write_run_config(run) -> None:
    """``config.json``: the resolved configuration of a :class:`gan.run.Run` and what it was built with."""
    cfg = run.cfg
    resolved = {"config": dataclasses.asdict(cfg), "loss_params": run.loss.params(), "sample_shape": list(run.shape),
                "critic_dim": run.loss.critic_dim, "device": str(run.device), "torch": torch.__version__,
                "world_size": run.world, "effective_batch_size": run.world * cfg.batch_size}
    ckpt.atomic_write(Path(cfg.out) / "config.json", json.dumps(resolved, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------------- checkpoints


def of_this_run(settings: dict, config_json: Path):
    """A ``check`` for :func:`gan.checkpoint.newest_intact`: the checkpoint's settings equal the run's config.json
    (but for the :data:`gan.config.RESUMABLE` ones) — else it is another run's checkpoint, or config.json was
    edited."""
    def check(path, state):
        for k, v in state["config"].items():
            if k in RESUMABLE or k not in settings:
                continue
            if json.loads(json.dumps(v, default=str)) != json.loads(json.dumps(settings[k], default=str)):
                raise ckpt.CheckpointError(path, f"differs from the run's {config_json} (its {k} is {v!r}, "
                                                 f"config.json's {settings[k]!r}: another run's checkpoint, or an "
                                                 "edited config.json)")
    return check


def pick_checkpoint(cfg: Config, run_dir: Path) -> tuple[Path | None, dict | None]:
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
                      f"{', '.join(str(p) for p in removed)}", ckpt.DamagedFileWarning, stacklevel=4)
    if not cfg.resume:
        return None, None
    try:
        latest, state, damaged = ckpt.newest_intact(
            run_dir, check=of_this_run(dataclasses.asdict(cfg), run_dir / "config.json"))
    except FileNotFoundError:
        raise FileNotFoundError(f"--resume: no checkpoint in {run_dir / 'checkpoints'}") from None
    except ckpt.CheckpointError as e:
        raise ckpt.CheckpointError(e.path, e.reason, f"--resume: {e}; nothing to resume from (the files are left as "
                                   "they are; start a new run with another --out)") from None
    for e in damaged:
        moved = ckpt.set_aside(e.path)
        warnings.warn(f"{e}; renamed it to {moved.name} and resuming from the newest intact checkpoint, "
                      f"{latest.name}", ckpt.DamagedFileWarning, stacklevel=4)
    return latest, state


# ---------------------------------------------------------------------------------------------------------- metrics


def read_rows(path: Path, up_to: int) -> list[dict]:
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
                      ckpt.DamagedFileWarning, stacklevel=3)
    elif bad:
        warnings.warn(f"{path}: dropped {len(bad)} unreadable line(s) (line {', '.join(map(str, bad[:10]))}"
                      f"{', ...' if len(bad) > 10 else ''})", ckpt.DamagedFileWarning, stacklevel=3)
    return [r for r in rows if r.get("step", 0) <= up_to]


def restart_metrics(run) -> None:
    """Process 0: ``metrics.jsonl`` holds the rows up to the run's step (all of them dropped for a new run, the
    readable ones up to the checkpoint's step on resume); ``run.rows`` are those rows."""
    path = run.dir / "metrics.jsonl"
    run.rows = read_rows(path, run.step) if run.cfg.resume else []
    ckpt.atomic_write(path, "".join(json.dumps(r) + "\n" for r in run.rows))


def append_row(run, row: dict) -> None:
    """Keep ``row`` in ``run.rows`` and append it to ``metrics.jsonl`` (process 0 writes)."""
    run.rows.append(row)
    if run.rank != 0:
        return
    with open(run.dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


# ---------------------------------------------------------------------------------------------------------- figures


@torch.no_grad()
def save_samples(run) -> Path | None:
    """The fixed-noise sample grid (images) or scatter plot (2-D) of the current generator (process 0 only; None on
    the others)."""
    if run.rank != 0:
        return None
    was = run.G.training
    run.G.eval()
    fake = run.G(run.fixed_z)
    run.G.train(was)
    path = run.dir / "samples" / f"step_{run.step:08d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    if fake.ndim == 4:
        save_image_grid(fake, path)
    else:
        save_scatter(fake, run.fixed_real, path, title=f"{run.cfg.loss}, step {run.step}")
    return path


def plot_losses(run) -> None:
    """``losses.png`` of the rows so far (process 0)."""
    if run.rows and run.rank == 0:
        save_loss_curves(run.rows, run.dir / "losses.png", title=f"{run.cfg.loss} on {run.cfg.data}")


def dump_rank_state(run) -> None:
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
