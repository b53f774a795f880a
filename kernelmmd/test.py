"""Command line two-sample test: ``python -m kernelmmd.test A B [options]``.

A and B are ``.npy``, ``.csv`` (comma-separated numbers, an optional header line) or ``.pt`` (a tensor saved with
``torch.save``) files holding arrays of shape (n, d) (or (n,) for one-dimensional data). Runs the permutation test of
:func:`kernelmmd.mmd_test` and prints the statistic, the p-value and the kernel (``--json`` for one JSON object).

Exit codes: 0 on success (whatever the p-value), 2 on bad usage or unreadable / malformed input (message on stderr).

Example::

    python -m kernelmmd.test real.npy fake.npy --kernel rbf --sigma median --permutations 1000 --seed 0
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

__all__ = ["main", "load_samples"]

_SUFFIXES = (".npy", ".csv", ".pt")


class InputError(Exception):
    """A user-facing problem with the input files (reported on stderr with exit code 2)."""


def load_samples(path: str) -> np.ndarray:
    """Read an (n, d) float array from a .npy, .csv or .pt file; raise :class:`InputError` with a clear message."""
    p = pathlib.Path(path)
    suffix = p.suffix.lower()
    if suffix not in _SUFFIXES:
        raise InputError(f"{path}: unsupported file type {p.suffix or '(none)'!r}; use one of {list(_SUFFIXES)}")
    if not p.is_file():
        raise InputError(f"{path}: no such file")
    try:
        if suffix == ".npy":
            a = np.load(p, allow_pickle=False)
        elif suffix == ".csv":
            a = _load_csv(p)
        else:
            import torch

            t = torch.load(p, map_location="cpu", weights_only=True)
            if not isinstance(t, torch.Tensor):
                raise InputError(f"{path}: expected a saved torch.Tensor, found {type(t).__name__}")
            a = t.detach().to(torch.float64 if not t.is_floating_point() else t.dtype).numpy()
    except InputError:
        raise
    except Exception as e:  # any parse failure of a user file becomes a clear message, not a traceback
        raise InputError(f"{path}: cannot read {suffix} file ({type(e).__name__}: {e})") from None
    a = np.asarray(a)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise InputError(f"{path}: expected real numbers, found dtype {a.dtype}")
    if a.ndim not in (1, 2):
        raise InputError(f"{path}: expected an array of shape (n, d) or (n,), found shape {a.shape}")
    if a.shape[0] < 2:
        raise InputError(f"{path}: need at least 2 samples (rows), found {a.shape[0]}")
    if not np.isfinite(a).all():
        raise InputError(f"{path}: contains NaN or Inf values")
    return a if np.issubdtype(a.dtype, np.floating) else a.astype(np.float64)


def _load_csv(p: pathlib.Path) -> np.ndarray:
    try:
        return np.loadtxt(p, delimiter=",", ndmin=2)
    except ValueError:
        return np.loadtxt(p, delimiter=",", ndmin=2, skiprows=1)  # a header line


def _number_or_heuristic(v: str):
    if v in ("median", "mean"):
        return v
    try:
        return float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'median' / 'mean', got {v!r}") from None


def _parse_param(v: str):
    if "=" not in v:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {v!r}")
    name, value = v.split("=", 1)
    try:
        return name, json.loads(value)  # numbers, lists ("[1, 2, 4]"), null
    except json.JSONDecodeError:
        return name, value  # a bare word such as median


def _parser() -> argparse.ArgumentParser:
    from .kernels import KERNELS
    from .ops import BACKENDS

    ap = argparse.ArgumentParser(
        prog="python -m kernelmmd.test",
        description="Kernel two-sample permutation test (MMD^2_u) between the samples in files A and B.",
    )
    ap.add_argument("a", metavar="A", help="samples of P: .npy, .csv or .pt file of shape (n, d)")
    ap.add_argument("b", metavar="B", help="samples of Q: .npy, .csv or .pt file of shape (m, d)")
    ap.add_argument("--kernel", default="rbf", choices=sorted(k for k in KERNELS if k != "rbf_bounded"))
    ap.add_argument(
        "--sigma",
        type=_number_or_heuristic,
        default=None,
        help="bandwidth for rbf/laplacian: a number, 'median' (default) or 'mean'",
    )
    ap.add_argument(
        "--param",
        type=_parse_param,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="other kernel parameter, repeatable (e.g. --param alpha=0.5, --param 'sigmas=[1, 2, 4]')",
    )
    ap.add_argument("--permutations", type=int, default=1000, help="number of permutations B (default 1000)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: not reproducible)")
    ap.add_argument("--backend", default="auto", choices=list(BACKENDS))
    ap.add_argument("--batch-size", type=int, default=None, help="permutations per fused pass")
    ap.add_argument("--alpha", type=float, default=0.05, help="level for the reject/accept line (default 0.05)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    ap.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tqdm progress bar (default: when stderr is a terminal; silently off if tqdm is not installed)",
    )
    return ap


def _progress_bar(total: int, enabled):
    """A tqdm bar over permutations, or None (disabled, not a terminal, or tqdm missing: it is optional)."""
    if enabled is False:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="perm", desc="permutations", disable=None if enabled is None else False)


def main(argv=None) -> int:
    """Entry point; returns the exit code (0 success, 2 usage or input error)."""
    ap = _parser()
    args = ap.parse_args(argv)
    if args.permutations < 1:
        ap.error(f"--permutations must be >= 1, got {args.permutations}")
    if args.seed is not None and args.seed < 0:
        ap.error(f"--seed must be >= 0, got {args.seed}")
    if not 0.0 < args.alpha < 1.0:
        ap.error(f"--alpha must be in (0, 1), got {args.alpha}")
    params = dict(args.param)
    if args.sigma is not None:
        params["sigma"] = args.sigma
    elif args.kernel in ("rbf", "laplacian") and "sigma" not in params:
        params["sigma"] = "median"
    try:
        a, b = load_samples(args.a), load_samples(args.b)
        da = 1 if a.ndim == 1 else a.shape[1]
        db = 1 if b.ndim == 1 else b.shape[1]
        if da != db:
            raise InputError(
                f"dimension mismatch: {args.a} has d = {da} features per sample but {args.b} has d = {db}"
            )
        if a.dtype != b.dtype:
            a, b = a.astype(np.float64), b.astype(np.float64)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from .kernels import get_kernel
    from .two_sample import mmd_test

    try:
        kernel = get_kernel(args.kernel, **params)
    except (TypeError, ValueError) as e:
        print(f"error: --kernel {args.kernel}: {e}", file=sys.stderr)
        return 2
    bar = _progress_bar(args.permutations, args.progress)
    try:
        res = mmd_test(
            a,
            b,
            kernel,
            n_permutations=args.permutations,
            seed=args.seed,
            backend=args.backend,
            batch_size=args.batch_size,
            callback=bar.update if bar is not None else None,
        )
    except (TypeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.close()
    out = {
        "statistic": res.statistic,
        "p_value": res.p_value,
        "kernel": repr(res.kernel),
        "n": res.n,
        "m": res.m,
        "d": da,
        "n_permutations": res.n_permutations,
        "seed": args.seed,
        "reject": res.reject(args.alpha),
        "alpha": args.alpha,
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"statistic (MMD^2_u): {res.statistic:.6g}")
        print(f"p-value: {res.p_value:.6g} ({res.n_permutations} permutations)")
        print(f"kernel: {res.kernel!r}")
        print(f"samples: n = {res.n}, m = {res.m}, d = {da}")
        verdict = "reject" if out["reject"] else "do not reject"
        print(f"at alpha = {args.alpha:g}: {verdict} H0 (P = Q)")
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through subprocess in tests/test_cli.py
    sys.exit(main())
