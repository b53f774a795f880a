"""Small helpers shared by the ``gan`` command lines (``gan.train``, ``gan.evaluate``, ``gan.features``).

Exit statuses of every ``gan`` command: 0 done; 2 bad options or unusable input (missing / damaged data, config.json
or checkpoint, a device that is not there), reported as one ``error: ...`` line on stderr, never a traceback;
``gan.train`` adds 1 (non-finite loss) and 128 + signal number (stopped by SIGINT / SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import warnings

import torch

__all__ = ["HelpFormatter", "check_device", "one_line_warnings", "parse_checked"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends ``(default: X)`` to an option's help exactly when the help text does not already state the default
    and there is one to show (not None, not a flag): every default appears once."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, argparse.SUPPRESS) and action.option_strings and action.nargs != 0 \
                and "default" not in text:
            text += " (default: %(default)s)"
        return text


def check_device(name: str, option: str = "--device") -> torch.device:
    """``torch.device(name)``, or a ValueError with one clear line for a malformed name or a CUDA device that this
    machine does not have."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{option} {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{option} {name}: no CUDA device is available on this machine (use {option} cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{option} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type not in ("cpu",):
        backend = getattr(torch.backends, device.type, None)
        if backend is None or not getattr(backend, "is_available", lambda: False)():
            raise ValueError(f"{option} {name}: device type {device.type!r} is not available on this machine "
                             f"(use {option} cpu)")
    return device


def parse_checked(parser: argparse.ArgumentParser, argv: list[str] | None, invalid, message: str, *,
                  device: bool = False) -> argparse.Namespace:
    """``parser.parse_args(argv)``; exit 2 with argparse's usage error ``message`` when ``invalid(args)``, and with
    one ``error:`` line when ``device`` and ``args.device`` is not a device of this machine (:func:`check_device`)."""
    args = parser.parse_args(argv)
    if invalid(args):
        parser.error(message)
    if device:
        try:
            check_device(args.device)
        except ValueError as e:
            parser.exit(2, f"error: {e}\n")
    return args


@contextlib.contextmanager
def one_line_warnings():
    """Within the block, warnings that are printed print as one ``warning: MESSAGE`` line (no source line). Only the
    formatting changes: filters, and whoever records warnings (``pytest.warns``, ``catch_warnings``), are unaffected."""
    previous = warnings.formatwarning
    warnings.formatwarning = lambda message, category, filename, lineno, line=None: f"warning: {message}\n"
    try:
        yield
    finally:
        warnings.formatwarning = previous
