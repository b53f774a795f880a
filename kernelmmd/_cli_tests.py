r"""The tests behind ``python -m kernelmmd.test A B --test NAME`` (private; the command line is :mod:`kernelmmd.test`).

:data:`TESTS` maps each ``--test`` choice to a :class:`Choice`: the options it takes, its default number of resamples,
how it is run and how its result is reported (one JSON object and the text lines). The command line parses, loads the
files, and leaves the rest to the chosen entry.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

#: options each test takes besides the common ones (A, B, --test, --permutations, --seed, --alpha, --json, --progress)
_KERNEL = ("kernel", "sigma", "param")
_AGG = ("kernels", "bandwidths", "backend", "batch_size")


def _finite_or_none(v):
    v = float(v)
    return v if math.isfinite(v) else None


def _floats(values) -> list:
    return [_finite_or_none(v) for v in values]


@dataclass(frozen=True)
class Choice:
    """One ``--test`` choice. ``run(a, b, args, callback)`` returns the library's result; ``report(res, args)``
    returns ``(fields for the JSON object, text lines before the verdict, reason it cannot decide or None)``."""

    options: tuple[str, ...]
    permutations: int
    run: Callable
    report: Callable
    progress: Callable | None = None  # total resamples for the progress bar (None: no bar)


# ---------------------------------------------------------------------------------------------------- permutation
def _kernel(args, default: str):
    """(name, params) of ``--kernel`` / ``--sigma`` / ``--param`` (rbf / laplacian / l1_laplacian: sigma="median" by
    default)."""
    name = args.kernel or default
    params = dict(args.param or [])
    if args.sigma is not None:
        params["sigma"] = args.sigma
    elif name in ("rbf", "laplacian", "l1_laplacian") and "sigma" not in params:
        params["sigma"] = "median"
    return name, params


def _permutation_run(a, b, args, callback):
    from .kernels import get_kernel
    from .two_sample import mmd_test

    name, params = _kernel(args, "rbf")
    try:
        kernel = get_kernel(name, **params)
    except (TypeError, ValueError) as e:
        raise ValueError(f"--kernel {name}: {e}") from None
    return mmd_test(a, b, kernel, n_permutations=args.permutations, seed=args.seed, backend=args.backend or "auto",
                    batch_size=args.batch_size, callback=callback)


def _undecided(res) -> str | None:
    if not math.isfinite(res.statistic):
        return f"statistic is {'NaN' if math.isnan(res.statistic) else f'{res.statistic:+}'}"
    if math.isnan(res.p_value):
        return "p-value is NaN (some permuted statistics are not finite)"
    return None


def _single_report(res, args):
    """mmd_test / optimized_mmd_test: one kernel, one statistic MMD²_u, one p-value."""
    out = {"statistic": _finite_or_none(res.statistic), "p_value": _finite_or_none(res.p_value),
           "kernel": repr(res.kernel), "n_permutations": res.n_permutations, "reject": bool(res.reject(args.alpha))}
    lines = [f"statistic (MMD^2_u): {res.statistic:.6g}", f"p-value: {res.p_value:.6g} ({res.n_permutations} "
             "permutations)", f"kernel: {res.kernel!r}"]
    return out, lines, _undecided(res)


# ------------------------------------------------------------------------------------------------------ optimized
def _optimized_run(a, b, args, callback):
    from .two_sample import optimized_mmd_test
    from .two_sample.optimized import NAMES

    name = args.kernel or "ard"
    if name not in NAMES:
        raise ValueError(f"--kernel {name}: --test optimized takes one of {list(NAMES)}")
    kw = {k: v for k, v in (("steps", args.steps), ("lr", args.lr), ("train_fraction", args.train_fraction))
          if v is not None}
    return optimized_mmd_test(a, b, name, n_permutations=args.permutations, seed=args.seed,
                              backend=args.backend or "auto", **kw)


def _optimized_report(res, args):
    out, lines, why = _single_report(res, args)
    lines.insert(0, "test: kernel optimised on a training split, permutation test on the held-out points")
    return out, lines, why


# --------------------------------------------------------------------------------------------- mmdagg, mmdfuse
def _families(args) -> tuple[str, ...]:
    return tuple(k.strip() for k in (args.kernels or "laplace,gaussian").split(",") if k.strip())


def _agg_kwargs(args) -> dict:
    kw = dict(kernels=_families(args), seed=args.seed, backend=args.backend or "auto", batch_size=args.batch_size)
    if args.bandwidths is not None:
        kw["n_bandwidths"] = args.bandwidths
    return kw


def _mmdagg_run(a, b, args, callback):
    from .two_sample import mmdagg_test

    kw = _agg_kwargs(args)
    if args.weights is not None:
        kw["weights"] = args.weights
    return mmdagg_test(a, b, alpha=args.alpha, n_permutations=args.permutations, callback=callback,
                       n_correction=args.correction if args.correction is not None else 2000, **kw)


def _kernel_list(res) -> list[str]:
    return [f"{f}(lambda={float(b):.4g})" for f, b in zip(res.families, res.bandwidths)]


def _mmdagg_report(res, args):
    hits = res.rejected_by
    out = {"statistic": None, "p_value": None, "reject": bool(res.reject), "method": res.method,
           "n_permutations": res.n_permutations, "n_correction": res.n_correction, "u": _finite_or_none(res.u),
           "kernels": _kernel_list(res), "statistics": _floats(res.statistics), "p_values": _floats(res.p_values),
           "thresholds": _floats(res.thresholds), "rejected_by": [f"{f}(lambda={b:.4g})" for f, b in hits]}
    lines = [f"test: MMDAgg ({res.method}, {len(res.families)} kernels: "
             + ", ".join(f"{f} x{res.families.count(f)}" for f in dict.fromkeys(res.families)) + ")",
             f"resamples: {res.n_permutations} for the quantiles + {res.n_correction} for the level correction "
             f"(u = {res.u:.4g})",
             f"rejected by {len(hits)} of {len(res.families)} single tests"
             + (": " + ", ".join(out["rejected_by"]) if hits else "")]
    why = "the statistics or resampled statistics are not finite" if math.isnan(res.u) else None
    return out, lines, why


def _mmdfuse_run(a, b, args, callback):
    from .two_sample import mmdfuse_test

    return mmdfuse_test(a, b, alpha=args.alpha, n_permutations=args.permutations, callback=callback,
                        **_agg_kwargs(args))


def _mmdfuse_report(res, args):
    out = {"statistic": _finite_or_none(res.statistic), "p_value": _finite_or_none(res.p_value),
           "reject": bool(res.reject), "n_permutations": res.n_permutations, "kernels": _kernel_list(res)}
    lines = [f"test: MMD-FUSE ({len(res.families)} kernels)", f"statistic (FUSE): {res.statistic:.6g}",
             f"p-value: {res.p_value:.6g} ({res.n_permutations} permutations)"]
    why = None
    if not math.isfinite(res.statistic) or math.isnan(res.p_value):
        why = "the FUSE statistic or a permuted one is not finite"
    return out, lines, why


TESTS = {
    "permutation": Choice(_KERNEL + ("backend", "batch_size"), 1000, _permutation_run, _single_report,
                          lambda args: args.permutations),
    "mmdagg": Choice(_AGG + ("weights", "correction"), 2000, _mmdagg_run, _mmdagg_report,
                     lambda args: args.permutations + (args.correction or 2000)),
    "mmdfuse": Choice(_AGG, 2000, _mmdfuse_run, _mmdfuse_report, lambda args: args.permutations),
    "optimized": Choice(("kernel", "backend", "steps", "lr", "train_fraction"), 1000, _optimized_run,
                        _optimized_report),
}
