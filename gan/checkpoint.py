"""Checkpoints: atomic, checksummed writes, keep-the-last-few, every RNG a run draws from, and damage detection.

A checkpoint is one ``torch.save`` dict written to ``RUN_DIR/checkpoints/ckpt_<step>.pt`` through a temporary file
``.ckpt_<step>.pt.tmp-<pid>`` in the same directory, flushed and fsynced, then ``os.replace``d into place: a crash or
a signal at any moment leaves either the previous file or the complete new one. Only plain containers, numbers,
strings and tensors are stored (the numpy RNG state is converted), so checkpoints load with
``torch.load(weights_only=True)``.

Integrity: the ``torch.save`` payload is followed by a fixed-length trailer line holding its SHA-256 and length,
``\\n#gan-checkpoint sha256=<64 hex> size=<16 digits>\\n`` (``torch.load`` ignores bytes after the zip archive, so a
plain ``torch.load(path, weights_only=True)`` still reads the file; the saved dict has one extra key,
``"checksum": "sha256-trailer"``, that :func:`load` removes). :func:`load` verifies the length and the hash before
unpickling anything, so truncation at any byte, an extension, or a flipped byte anywhere is detected — including the
dangerous case of altered bytes that ``torch.load`` would read without complaint. A file without a trailer is loaded
as an older checkpoint (written before checksums existed) unless its payload carries the ``"checksum"`` key, which
means its trailer was cut off or damaged. Every failure is a :class:`CheckpointError` (a ``ValueError``) naming the
file and what is wrong with it; :func:`newest_intact` walks back from the newest checkpoint to the newest intact one.

Stale temporary files of a killed writer (``.<name>.tmp-<pid>`` of a process that no longer runs) are removed by
:func:`remove_stale_temp_files`; :func:`atomic_path` / :func:`atomic_write` give every other output of a run (JSON,
PNG) the same temp + fsync + ``os.replace`` treatment.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import re
import stat
from pathlib import Path

import numpy as np
import torch

__all__ = ["checkpoint_dir", "list_checkpoints", "latest_checkpoint", "save_atomic", "load", "prune",
           "rng_state", "set_rng_state", "CheckpointError", "DamagedFileWarning", "newest_intact", "set_aside",
           "remove_stale_temp_files", "atomic_path", "atomic_write", "REQUIRED_KEYS"]

_NAME = re.compile(r"^ckpt_(\d+)\.pt$")
_TEMP = re.compile(r"^\..+\.tmp-(\d+)$")
_MAGIC = b"\n#gan-checkpoint sha256="
_TRAILER = re.compile(rb"\n#gan-checkpoint sha256=([0-9a-f]{64}) size=(\d{16})\n")
_TRAILER_LEN = len(_MAGIC) + 64 + len(b" size=") + 16 + 1
_MARK = "checksum"
#: keys every checkpoint written by gan.train holds (since the first version)
REQUIRED_KEYS = ("step", "config", "generator", "critic", "opt_g", "opt_c", "data", "noise_rng", "penalty_rng", "rng",
                 "fixed_z")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: truncated, altered (checksum mismatch), not a checkpoint at all, or
    not one of this run. ``path`` is the file, ``reason`` what is wrong with it."""

    def __init__(self, path, reason: str, message: str | None = None):
        super().__init__(message if message is not None else f"checkpoint {path} {reason}")
        self.path, self.reason = Path(path), reason

    def __reduce__(self):
        return type(self), (self.path, self.reason, str(self))


class DamagedFileWarning(UserWarning):
    """A damaged file of a run was skipped or repaired (a checkpoint, a metrics line) or a stale temporary file
    removed; the message names the file."""


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint file of the run, oldest first (temporary and set-aside files are ignored;
    the files are not verified: see :func:`newest_intact`)."""
    d = checkpoint_dir(run_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path`` (``.<name>.tmp-<pid>``) to write to; on success its contents are
    fsynced and it replaces ``path`` (``os.replace``), on an exception it is removed. Readers never see a partly
    written ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (str: UTF-8) to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def save_atomic(state: dict, run_dir: str | os.PathLike, step: int) -> Path:
    """Write ``state`` as the checkpoint of ``step`` atomically (temp file + fsync + ``os.replace``), followed by
    the SHA-256 trailer (module docstring)."""
    d = checkpoint_dir(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"ckpt_{step:08d}.pt"
    buf = io.BytesIO()
    torch.save({**state, _MARK: "sha256-trailer"}, buf)
    payload = buf.getbuffer()
    trailer = _MAGIC + hashlib.sha256(payload).hexdigest().encode() + b" size=" + b"%016d" % len(payload) + b"\n"
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(payload)
        f.write(trailer)
    return path


def _first_line(e: BaseException) -> str:
    """``Type: first sentence of the message`` on one line, at most about 120 characters."""
    text = str(e).strip().splitlines()
    line = text[0].split(". ")[0] if text else ""
    line = line if len(line) <= 100 else line[:97] + "..."
    return f"{type(e).__name__}: {line}" if line else type(e).__name__


def _torch_load(source, path: Path, map_location):
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever torch.load raises on bad bytes, report it as a damaged file
        raise CheckpointError(path, f"is truncated, damaged or not a checkpoint (torch.load: {_first_line(e)})") \
            from None


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    """The checkpoint at ``path``, verified (length and SHA-256 of the trailer; older files without a trailer are
    loaded as they are) and checked to hold a gan.train checkpoint's keys.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: anything else that makes it unusable (a directory, empty, truncated, altered, not a
            checkpoint); the message names the file and the damage.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(path, "is a directory, not a checkpoint file")
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the open forever
            raise CheckpointError(path, "is not a regular file (a FIFO, socket or device), not a checkpoint file")
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise CheckpointError(path, "is empty (0 bytes: truncated)")
            tail = b""
            if size >= _TRAILER_LEN:
                f.seek(size - _TRAILER_LEN)
                tail = f.read(_TRAILER_LEN)
            m = _TRAILER.fullmatch(tail)
            if m is not None:
                n = int(m.group(2))
                if n != size - _TRAILER_LEN:
                    raise CheckpointError(path, f"is truncated or extended (its checksum trailer records "
                                                f"{n + _TRAILER_LEN} bytes, the file has {size})")
                f.seek(0)
                payload = f.read(n)
    except OSError as e:
        raise CheckpointError(path, f"cannot be read ({_first_line(e)})") from None
    if m is not None:
        digest = hashlib.sha256(payload).hexdigest()
        if digest != m.group(1).decode():
            raise CheckpointError(path, "fails its SHA-256 checksum (its bytes were altered after it was written)")
        state = _torch_load(io.BytesIO(payload), path, map_location)
    else:
        state = _torch_load(path, path, map_location)
        if isinstance(state, dict) and _MARK in state:
            raise CheckpointError(path, "lost its SHA-256 checksum trailer (truncated or altered)")
    if not isinstance(state, dict):
        raise CheckpointError(path, f"is not a gan.train checkpoint (it holds a {type(state).__name__}, not a dict)")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(path, f"is not a gan.train checkpoint (no {', '.join(missing)})")
    if isinstance(state["step"], bool) or not isinstance(state["step"], int) or state["step"] < 0 or \
            not isinstance(state["config"], dict) or not isinstance(state["generator"], dict):
        raise CheckpointError(path, "is not a gan.train checkpoint (bad 'step', 'config' or 'generator' entry)")
    z, z_dim = state["fixed_z"], state["config"].get("z_dim")
    if not isinstance(z, torch.Tensor) or z.ndim != 2 or (isinstance(z_dim, int) and z.shape[1] != z_dim):
        raise CheckpointError(path, "is damaged (its 'fixed_z' is not a (n, z_dim) tensor)")
    for part in ("generator", "critic"):
        bad = next((k for k, v in state[part].items() if isinstance(v, torch.Tensor) and v.is_floating_point()
                    and not bool(torch.isfinite(v).all())), None) if isinstance(state[part], dict) else None
        if bad is not None:  # save never writes these (training stops on non-finite weights first)
            raise CheckpointError(path, f"is damaged (non-finite values in the {part}'s {bad!r})")
    state.pop(_MARK, None)
    return state


def newest_intact(run_dir: str | os.PathLike, map_location="cpu", check=None) -> tuple[Path, dict,
                                                                                      list[CheckpointError]]:
    """The newest checkpoint of the run that :func:`load` accepts, that holds the step its name says, and that
    ``check(path, state)`` (if given; it raises :class:`CheckpointError`, e.g. for another run's checkpoint) accepts:
    (path, state, the errors of the newer, damaged ones, newest first). The caller decides how to report those (a
    warning naming each file).

    Raises:
        FileNotFoundError: the run has no checkpoint file.
        CheckpointError: every checkpoint is damaged (one line naming each file and its damage).
    """
    found = list_checkpoints(run_dir)
    if not found:
        raise FileNotFoundError(f"no checkpoint in {checkpoint_dir(run_dir)}")
    damaged: list[CheckpointError] = []
    for step, p in reversed(found):
        try:
            state = load(p, map_location)
            if state["step"] != step:  # a copied or renamed file: resuming it would redo or skip steps
                raise CheckpointError(p, f"holds step {state['step']}, not the step {step} of its name (renamed or "
                                         "copied?)")
            if check is not None:
                check(p, state)
            return p, state, damaged
        except (CheckpointError, FileNotFoundError) as e:  # FileNotFoundError: removed meanwhile
            damaged.append(e if isinstance(e, CheckpointError) else CheckpointError(p, "disappeared"))
    detail = "; ".join(f"{e.path.name} {e.reason.split(' (')[0]}" for e in damaged)
    d = checkpoint_dir(run_dir)
    raise CheckpointError(d, f"holds no intact checkpoint: {detail}", f"no intact checkpoint in {d}: {detail}")


def set_aside(path: str | os.PathLike) -> Path:
    """Rename a damaged checkpoint to ``<name>.damaged`` (``.damaged-2``, ... if taken), out of the way of
    :func:`list_checkpoints` and :func:`prune`, and return the new path."""
    path = Path(path)
    target, k = path.with_name(path.name + ".damaged"), 1
    while target.exists():
        k += 1
        target = path.with_name(f"{path.name}.damaged-{k}")
    os.replace(path, target)
    return target


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process writes nothing while it resumes: its own leftovers are stale
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True  # a live process of another user
    except (ProcessLookupError, OverflowError, ValueError):
        return False  # no such process (or an impossible pid)
    return True


def remove_stale_temp_files(run_dir: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (``.<name>.tmp-<pid>``) that killed writers left in the run directory, its
    ``checkpoints/`` and ``samples/`` (those of processes still running are kept); returns the removed paths."""
    run_dir = Path(run_dir)
    removed = []
    for d in (run_dir, checkpoint_dir(run_dir), run_dir / "samples"):
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            m = _TEMP.match(p.name)
            if m and p.is_file() and not _running(int(m.group(1))):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def prune(run_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints."""
    for _, p in list_checkpoints(run_dir)[:-keep]:
        p.unlink(missing_ok=True)


def rng_state() -> dict:
    """The global torch (CPU and CUDA), numpy and python RNG states, as plain objects."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
