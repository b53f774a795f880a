"""Input checks shared by every public function, so that messages read the same everywhere.

Every check raises ``TypeError`` (wrong kind of object) or ``ValueError`` (right kind, bad value) with a
message that names the argument, what was given and what is accepted.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "Samples",
    "as_samples",
    "as_generator",
    "check_positive",
    "check_nonnegative",
    "check_finite",
    "check_bool",
    "check_int",
    "check_choice",
    "check_same_size",
    "to_output",
]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass
class Samples:
    """Validated inputs of a two-sample call: tensors of shape (n, d) plus how to return results."""

    tensors: tuple[torch.Tensor, ...]
    numpy: bool  # True when the inputs were numpy arrays: results are returned as numpy / float
    #: max |coordinate| of each tensor (from the same reduction as the finiteness check; 0.0 for meta tensors):
    #: ``_range`` decides the compute dtype from it
    amax: tuple[float, ...] = ()


def _to_tensor(name: str, a) -> tuple[torch.Tensor, bool]:
    if isinstance(a, torch.Tensor):
        return a, False
    if isinstance(a, np.ndarray):
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise TypeError(f"{name} must hold real numbers, got a numpy array of dtype {a.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(a))
        if not t.is_floating_point():
            t = t.to(torch.float64)
        return t, True
    raise TypeError(
        f"{name} must be a torch.Tensor or a numpy.ndarray of shape (n, d) or (n,), got {type(a).__name__}"
    )


def amax(t: torch.Tensor) -> float:
    """max |t| as a float by one reduction and one host sync; NaN if t holds a NaN, inf if it holds an inf."""
    if t.is_meta or t.numel() == 0:
        return 0.0
    lo, hi = torch.aminmax(t.detach().reshape(-1))
    return float(torch.maximum(hi, -lo))  # aminmax propagates NaN; maximum too


def _check_one(name: str, t: torch.Tensor, *, min_points: int, any_shape: bool = False) -> torch.Tensor:
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must be a real floating-point tensor, got dtype {t.dtype}")
    if not t.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), got dtype {t.dtype}"
        )
    if any_shape:
        if t.ndim == 0:
            raise ValueError(f"{name} must have a leading batch dimension (n, ...), got a 0-d tensor")
    elif t.ndim == 1:
        t = t.unsqueeze(1)  # (n,) -> (n, 1): n points in R^1
    elif t.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d) or (n,), got {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(t.shape)}")
    if t.shape[0] < min_points:
        raise ValueError(
            f"{name} must have at least {min_points} points for this estimator, got {t.shape[0]}"
        )
    return t


def _check_finite(name: str, t: torch.Tensor) -> float:
    """Raise for NaN / Inf entries; return max |t| (one reduction, one sync: the same pass does both)."""
    a = amax(t)
    if not math.isfinite(a):
        raise ValueError(f"{name} contains NaN or Inf values")
    return a


def as_samples(*named, min_points: int = 1, same_dim: bool = True, any_shape: bool = False) -> Samples:
    """Validate point sets given as ``("x", x), ("y", y), ...``.

    Converts numpy arrays to tensors, reshapes (n,) to (n, 1), and checks shape, emptiness, finiteness,
    number of points, feature dimension, device and dtype agreement.
    """
    out = []
    amaxes = []
    any_numpy = False
    for name, a in named:
        t, was_np = _to_tensor(name, a)
        any_numpy |= was_np
        t = _check_one(name, t, min_points=min_points, any_shape=any_shape)
        amaxes.append(_check_finite(name, t))
        out.append((name, t))
    name0, t0 = out[0]
    for name, t in out[1:]:
        if same_dim and t.shape[1:] != t0.shape[1:]:
            raise ValueError(
                f"{name} has feature shape {tuple(t.shape[1:])} but {name0} has {tuple(t0.shape[1:])}; "
                "all samples must live in the same R^d"
            )
        if t.device != t0.device:
            raise ValueError(f"{name} is on device {t.device} but {name0} is on {t0.device}; put both on one device")
        if t.dtype != t0.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {name0} has {t0.dtype}; convert both to one dtype")
    return Samples(tuple(t for _, t in out), any_numpy, tuple(amaxes))


def as_generator(seed) -> torch.Generator:
    """A CPU generator: from an int seed, passed through, or freshly (non-deterministically) seeded for None.

    Random draws happen on the CPU so that a seed gives the same permutations on every device.
    """
    if seed is None:
        g = torch.Generator()
        g.seed()
        return g
    if isinstance(seed, torch.Generator):
        if seed.device.type != "cpu":
            raise ValueError(f"seed must be an int, None or a CPU torch.Generator, got a generator on {seed.device}")
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int >= 0, None or a torch.Generator, got {type(seed).__name__} {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be an int >= 0, None or a torch.Generator, got {seed}")
    return torch.Generator().manual_seed(int(seed))


def to_output(value: torch.Tensor, numpy: bool):
    """Return ``value`` as given, or as a float / numpy array when the caller passed numpy arrays."""
    if not numpy:
        return value
    value = value.detach().cpu()
    if value.ndim == 0:
        return float(value)
    return value.numpy()


def _as_float(name: str, value) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must be a real number, got a tensor of dtype {value.dtype}: {value!r}")
        return float(value.detach())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def check_positive(name: str, value) -> None:
    """``value`` (number or scalar tensor) must be finite and > 0."""
    v = _as_float(name, value)
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number > 0, got {v}")


def check_finite(name: str, value) -> float:
    """``value`` (number or scalar tensor) must be a finite real number (any sign); returns it as a float."""
    v = _as_float(name, value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite real number, got {v}")
    return v


def check_bool(name: str, value) -> bool:
    """``value`` must be True or False (a numpy bool too), not a string or a number that happens to be truthy."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def check_nonnegative(name: str, value) -> None:
    v = _as_float(name, value)
    if not (v >= 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number >= 0, got {v}")


def check_int(name: str, value, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")


def check_same_size(x: torch.Tensor, y: torch.Tensor, what: str) -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{what} needs n == m, got x with {x.shape[0]} points and y with {y.shape[0]}")


def is_float_dtype(dtype: torch.dtype) -> bool:
    return dtype in _FLOAT_DTYPES
