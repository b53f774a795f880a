"""Reproductions of the papers' small, checkable experiments; each is one command writing PNGs and a JSON of numbers.

* ``python -m gan.experiments.diracgan [--out DIR]`` — DiracGAN parameter-space vector fields and trajectories for
  the MMD, MMD-GP, SMMD and GCMMD losses (seed 001, Example 1, Fig. 1 and App. B).
* ``python -m gan.experiments.gaussians [--out DIR]`` — MMD, GCMMD and SMMD between 1-D Gaussians (seed 001, Fig. 7).
* ``python -m gan.experiments.repulsive_toy [--out DIR]`` — the two-parameter MMD-GAN of seed 002, App. A.2, with
  P_X = N(0, 1), P_Z = U(−1, 1): where MMD-rbf and MMD-rep settle.

All kernel maths goes through :mod:`kernelmmd`'s public functions; this package only sets up the toy problems, runs
the gradient dynamics and draws the figures (matplotlib, Agg backend). The helpers here are shared by the three
scripts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time
from pathlib import Path

import torch

__all__ = ["normal_quantiles", "uniform_quantiles", "write_json", "write_result", "output_dir", "base_parser",
           "finite_or_none", "one_thread"]


def normal_quantiles(n: int, mean: float = 0.0, std: float = 1.0, dtype=torch.float64) -> torch.Tensor:
    """n points at the midpoint quantiles ``(i + 1/2) / n`` of N(mean, std²), shape (n,): a deterministic sample whose
    empirical measure converges to the Gaussian (every run and every test sees the same points)."""
    u = (torch.arange(n, dtype=dtype) + 0.5) / n
    return mean + std * torch.special.ndtri(u)


def uniform_quantiles(n: int, low: float = -1.0, high: float = 1.0, dtype=torch.float64) -> torch.Tensor:
    """n points at the midpoint quantiles of U(low, high), shape (n,)."""
    u = (torch.arange(n, dtype=dtype) + 0.5) / n
    return low + (high - low) * u


def finite_or_none(v: float) -> float | None:
    """JSON has no NaN/Inf: such values are written as null."""
    return float(v) if math.isfinite(float(v)) else None


def write_json(obj: dict, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON (NaN/Inf rejected) and return the path."""
    path = Path(path)
    path.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")
    return path


def write_result(result: dict, path: str | os.PathLike, t0: float) -> dict:
    """Add ``"seconds"`` (the time since ``t0 = time.perf_counter()``, last key) to an experiment's ``result``, write
    it to ``path`` (:func:`write_json`) and return it."""
    result["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(result, path)
    return result


def output_dir(out: str | os.PathLike) -> Path:
    """Create (if needed) and return the output folder."""
    p = Path(out)
    p.mkdir(parents=True, exist_ok=True)
    return p


def base_parser(prog: str, description: str, default_out: str) -> argparse.ArgumentParser:
    """The options every experiment takes (``--out``); scripts add their own."""
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=default_out, help="output folder for the PNGs and the JSON of numbers")
    return p


@contextlib.contextmanager
def one_thread():
    """Run the block with one torch thread (restored afterwards). The experiments evaluate thousands of tiny kernel
    sums (≤ 400 points in R¹): threads only add OpenMP synchronisation, which on a CPU shared with other jobs can
    make them several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
