"""Typed warnings: numerical trouble, performance trouble and backend fallbacks are never silent."""

from __future__ import annotations

__all__ = ["KernelMMDWarning", "NumericalWarning", "BackendFallbackWarning", "ConvergenceWarning"]


class KernelMMDWarning(UserWarning):
    """Base class of every warning kernelmmd emits."""


class NumericalWarning(KernelMMDWarning):
    """A result may be inaccurate (ill-conditioning, dropped points, cancellation)."""


class BackendFallbackWarning(KernelMMDWarning):
    """``backend="auto"`` could not use the backend it would have chosen (a package is missing)."""


class ConvergenceWarning(NumericalWarning):
    """An iterative solver stopped before reaching its tolerance."""
