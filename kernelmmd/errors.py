"""Typed warnings: numerical trouble, performance trouble and backend fallbacks are never silent."""

from __future__ import annotations

import os
import sys
import warnings

__all__ = ["KernelMMDWarning", "NumericalWarning", "BackendFallbackWarning", "ConvergenceWarning", "warn"]

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


class KernelMMDWarning(UserWarning):
    """Base class of every warning kernelmmd emits."""


class NumericalWarning(KernelMMDWarning):
    """A result may be inaccurate (ill-conditioning, dropped points, cancellation)."""


class BackendFallbackWarning(KernelMMDWarning):
    """``backend="auto"`` could not use the backend it would have chosen (a package is missing)."""


class ConvergenceWarning(NumericalWarning):
    """An iterative solver stopped before reaching its tolerance."""


def user_stacklevel() -> int:
    """The ``stacklevel`` (for a ``warnings.warn`` in the caller of this function) of the first frame outside the
    kernelmmd package: however deep inside kernelmmd a warning is raised, it points at the user's line."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def warn(message: str, category: type[Warning] = NumericalWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the user's line (the first frame outside kernelmmd)."""
    warnings.warn(message, category, stacklevel=user_stacklevel())
