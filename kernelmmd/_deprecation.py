"""Signature changes with a deprecation period: calls in the old positional order keep working, with a warning."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence

__all__ = ["old_positional_order"]


def old_positional_order(old: Sequence[str], is_old: Callable[[tuple], bool], new: str):
    """Decorator for ``f(x, y, ...)`` whose arguments after ``x, y`` changed order.

    A call whose extra positional arguments ``args`` satisfy ``is_old(args)`` is read in the ``old`` order
    (``old[i]`` is the name the i-th extra positional argument had), with a ``FutureWarning`` showing the ``new``
    signature; every other call goes to ``f`` unchanged (so Python's own errors name bad arguments). The wrapper
    keeps ``f``'s name, docstring and signature (``inspect.signature`` follows ``__wrapped__``).
    """

    def deco(func):
        @functools.wraps(func)
        def wrapper(x, y, *args, **kwargs):
            if not (args and is_old(args)):
                return func(x, y, *args, **kwargs)
            name = func.__name__
            if len(args) > len(old):
                raise TypeError(
                    f"{name}() takes at most {2 + len(old)} positional arguments in its old order "
                    f"(x, y, {', '.join(old)}), got {2 + len(args)}; the signature is now {new}"
                )
            moved = dict(zip(old, args))
            twice = sorted(set(moved) & set(kwargs))
            if twice:
                raise TypeError(f"{name}() got multiple values for {', '.join(twice)} (read in the old positional "
                                f"order x, y, {', '.join(old)}); the signature is now {new}")
            given = ", ".join(moved)
            warnings.warn(
                f"{name}(x, y, {given}) with {given} given by position is deprecated and was read in the old order "
                f"(x, y, {', '.join(old)}); the signature is now {new}: pass "
                f"{', '.join(f'{k}=...' for k in moved if k != 'kernel')} by keyword. "
                "The old order will stop working in a future release.",
                FutureWarning,
                stacklevel=2,
            )
            return func(x, y, **moved, **kwargs)

        return wrapper

    return deco
