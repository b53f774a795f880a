r"""MMD, Gradient-Constrained MMD and Scaled MMD between 1-D Gaussians (seed 001, App. F.1, Fig. 7).

P = N(0, 0.1²) and Q = N(µ, σ²) over a grid of (µ, σ); every distance uses λ = 1 and the Gaussian kernel
k_ψ(a, b) = exp(−ψ²(a − b)²/2) = K(ψa, ψb) (the deep kernel K ∘ φ_ψ with φ_ψ(x) = ψx of Example 1, i.e. an input-space
``rbf`` of bandwidth 1/ψ). Six panels, coloured by log₁₀ D(P, Q):

* MMD²_b with ψ = 0.1 (a wide kernel, bandwidth 10) and ψ = 10 (a narrow one, bandwidth 0.1) —
  ``kernelmmd.mmd2_biased``;
* GCMMD²_{P, k_ψ, λ} with the same two kernels (µ = P) — ``kernelmmd.gcmmd2``;
* the optimised SMMD², sup_ψ SMMD²_{P, k_ψ, λ} (``kernelmmd.smmd2``), and the optimised GCMMD², sup_ψ GCMMD², the
  supremum taken over ``--psis`` log-spaced ψ ∈ [10⁻², 10²].

Samples are deterministic: ``--points`` midpoint quantiles of each Gaussian, so Q = P gives exactly 0.
The paper's observations, checked (``tests/test_gan_experiments.py``) and written to ``gaussians.json``:

* for a fixed kernel SMMD ∝ MMD (the ratio is 1/(λ + 1 + ψ²) at every grid point), and SMMD ≤ GCMMD ≤ MMD²/λ;
* MMD∝SMMD and GCMMD behave similarly (rank correlation over the grid), and so do the optimised SMMD and GCMMD;
* optimising the MMD over ψ gives an essentially constant distance once P and Q are separated (near the value 2 of
  two disjoint point masses), while the optimised SMMD keeps growing with |µ|. The optimised GCMMD increases
  monotonically in |µ| too but, bounded by MMD²/λ ≤ 2 with λ = 1, flattens out from |µ| ≈ 1 on.

The default run's numbers: benchmarks/RESULTS.md, "Paper reproductions".

Outputs: ``gaussians.png`` (the six panels) and ``gaussians.json``.
"""

from __future__ import annotations

import math
import time

import torch

import kernelmmd

from .._cli import parse_checked
from . import base_parser, normal_quantiles, one_thread, output_dir, write_result

__all__ = ["P_STD", "LAM", "distances", "optimised", "grid_values", "rank_correlation", "run", "main"]

P_STD = 0.1
LAM = 1.0


def _sample(mean: float, std: float, points: int) -> torch.Tensor:
    return normal_quantiles(points, mean, std)[:, None]  # (points, 1)


def distances(x: torch.Tensor, y: torch.Tensor, psi: float, lam: float = LAM) -> dict[str, float]:
    """MMD²_b, SMMD²_{P,k_ψ,λ} and GCMMD²_{P,k_ψ,λ} between the samples x (of P, also µ's points) and y, for k_ψ."""
    params = {"kernel": "rbf", "sigma": 1.0 / psi}
    with torch.no_grad():
        mmd2 = float(kernelmmd.mmd2_biased(x, y, **params))
        smmd2 = float(kernelmmd.smmd2(x, y, z=x, lam=lam, **params))
        gcmmd2 = float(kernelmmd.gcmmd2(x, y, z=x, lam=lam, solver="dense", **params))
    return {"mmd2": mmd2, "smmd2": smmd2, "gcmmd2": gcmmd2}


def optimised(x: torch.Tensor, y: torch.Tensor, psis, lam: float = LAM) -> dict[str, float]:
    """sup over ``psis`` of each distance, and the maximising ψ."""
    best = {k: (-math.inf, None) for k in ("mmd2", "smmd2", "gcmmd2")}
    for psi in psis:
        for k, v in distances(x, y, float(psi), lam).items():
            if v > best[k][0]:
                best[k] = (v, float(psi))
    return {**{k: v for k, (v, _) in best.items()}, **{f"{k}_psi": p for k, (_, p) in best.items()}}


def grid_values(means, stds, psis, *, points: int = 64, fixed=(0.1, 10.0), lam: float = LAM) -> dict:
    """Every panel's values over the (σ, µ) grid: tensors of shape (len(stds), len(means))."""
    x = _sample(0.0, P_STD, points)
    names = [f"{d}_psi{p:g}" for p in fixed for d in ("mmd2", "smmd2", "gcmmd2")] + \
        ["opt_mmd2", "opt_smmd2", "opt_gcmmd2", "opt_smmd2_psi", "opt_gcmmd2_psi"]
    out = {n: torch.zeros(len(stds), len(means), dtype=torch.float64) for n in names}
    for i, s in enumerate(stds):
        for j, m in enumerate(means):
            y = _sample(float(m), float(s), points)
            for p in fixed:
                for k, v in distances(x, y, p, lam).items():
                    out[f"{k}_psi{p:g}"][i, j] = v
            o = optimised(x, y, psis, lam)
            for k in ("mmd2", "smmd2", "gcmmd2"):
                out[f"opt_{k}"][i, j] = o[k]
            out["opt_smmd2_psi"][i, j] = o["smmd2_psi"]
            out["opt_gcmmd2_psi"][i, j] = o["gcmmd2_psi"]
    return out


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two equally shaped tensors (no ties expected)."""
    ra = a.flatten().argsort().argsort().double()
    rb = b.flatten().argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra @ rb) / (ra.norm() * rb.norm()))


def _plot(means, stds, vals: dict, fixed, out) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(f"mmd2_psi{fixed[0]:g}", f"MMD, ψ = {fixed[0]:g}"), (f"mmd2_psi{fixed[1]:g}", f"MMD, ψ = {fixed[1]:g}"),
              (f"gcmmd2_psi{fixed[0]:g}", f"GCMMD, ψ = {fixed[0]:g}"),
              (f"gcmmd2_psi{fixed[1]:g}", f"GCMMD, ψ = {fixed[1]:g}"),
              ("opt_smmd2", "optimised SMMD (sup over ψ)"), ("opt_gcmmd2", "optimised GCMMD (sup over ψ)")]
    fig, axes = plt.subplots(3, 2, figsize=(9, 10))
    for ax, (key, title) in zip(axes.flat, panels):
        v = vals[key].clamp_min(1e-12).log10()
        im = ax.pcolormesh(means.numpy(), stds.numpy(), v.numpy(), shading="nearest", cmap="viridis")
        ax.set_yscale("log")
        ax.plot([0.0], [P_STD], "r*", ms=8)
        ax.set_title(title)
        ax.set_xlabel("µ of Q")
        ax.set_ylabel("σ of Q")
        fig.colorbar(im, ax=ax, label="log10 D(P, Q)")
    fig.suptitle("P = N(0, 0.1²), Q = N(µ, σ²), λ = 1 (red star: Q = P)")
    fig.tight_layout()
    fig.savefig(out / "gaussians.png", dpi=90)
    plt.close(fig)


def run(out, *, grid: int = 13, points: int = 48, n_psis: int = 13, plot: bool = True) -> dict:
    """Compute every panel over a ``grid`` × ``grid`` (µ, σ) grid, check the paper's claims and write the outputs."""
    out = output_dir(out)
    t0 = time.perf_counter()
    fixed = (0.1, 10.0)
    means = torch.linspace(-2.0, 2.0, grid, dtype=torch.float64)
    stds = torch.logspace(-1.5, 0.5, grid, dtype=torch.float64)
    psis = torch.logspace(-2.0, 2.0, n_psis, dtype=torch.float64)
    vals = grid_values(means, stds, psis, points=points, fixed=fixed)
    if plot:
        _plot(means, stds, vals, fixed, out)
    checks = {}
    for p in fixed:
        ratio = vals[f"smmd2_psi{p:g}"] / vals[f"mmd2_psi{p:g}"].clamp_min(1e-300)
        ok = vals[f"mmd2_psi{p:g}"] > 1e-12
        checks[f"smmd_over_mmd_psi{p:g}"] = {"min": float(ratio[ok].min()), "max": float(ratio[ok].max()),
                                             "expected": 1.0 / (LAM + 1.0 + p * p)}
        checks[f"smmd_le_gcmmd_psi{p:g}"] = bool((vals[f"smmd2_psi{p:g}"] <= vals[f"gcmmd2_psi{p:g}"] + 1e-12).all())
        checks[f"gcmmd_le_mmd_over_lam_psi{p:g}"] = bool(
            (vals[f"gcmmd2_psi{p:g}"] <= vals[f"mmd2_psi{p:g}"] / LAM + 1e-12).all())
        checks[f"rank_corr_smmd_gcmmd_psi{p:g}"] = rank_correlation(vals[f"smmd2_psi{p:g}"], vals[f"gcmmd2_psi{p:g}"])
    checks["rank_corr_opt_smmd_opt_gcmmd"] = rank_correlation(vals["opt_smmd2"], vals["opt_gcmmd2"])
    # along σ = 0.1-ish (the row closest to P's std): how each optimised distance grows with the separation |µ|
    row = int((stds.log() - math.log(P_STD)).abs().argmin())
    far = means.abs() >= 1.0
    profile = {k: [float(v) for v in vals[k][row]] for k in ("opt_mmd2", "opt_smmd2", "opt_gcmmd2")}
    checks["row_std"] = float(stds[row])
    checks["opt_mmd2_far_min_over_max"] = float(vals["opt_mmd2"][row][far].min() / vals["opt_mmd2"][row][far].max())
    for k in ("opt_smmd2", "opt_gcmmd2"):
        r = vals[k][row]
        right = r[means >= 0]  # µ = 0 … 2
        checks[f"{k}_increasing_in_mu"] = bool((right[1:] > right[:-1]).all())
        checks[f"{k}_far_min_over_max"] = float(r[far].min() / r[far].max())
    for k in ("opt_mmd2", "opt_smmd2", "opt_gcmmd2"):  # how flat each optimised distance is over the grid
        v = vals[k]
        checks[f"{k}_fraction_within_2x_of_max"] = float((v >= v.max() / 2).double().mean())
    result = {"experiment": "gaussians", "p": [0.0, P_STD], "lam": LAM, "points": points, "grid": grid,
              "psis": [float(p) for p in psis], "means": [float(m) for m in means], "stds": [float(s) for s in stds],
              "checks": checks, "profile_at_row_std": profile}
    return write_result(result, out / "gaussians.json", t0)


def main(argv: list[str] | None = None) -> int:
    p = base_parser("python -m gan.experiments.gaussians", "MMD, GCMMD and SMMD between 1-D Gaussians (seed 001, "
                    "App. F.1, Fig. 7).", "runs/experiments/gaussians")
    p.add_argument("--grid", type=int, default=13, help="grid points per axis (µ in [-2, 2], σ in [0.03, 3.2])")
    p.add_argument("--points", type=int, default=48, help="quantile points per Gaussian")
    p.add_argument("--psis", type=int, default=13, help="log-spaced ψ in [0.01, 100] for the optimised distances")
    args = parse_checked(p, argv, lambda a: a.grid < 3 or a.points < 2 or a.psis < 1,
                         "--grid must be >= 3, --points >= 2 and --psis >= 1")
    with one_thread():
        res = run(args.out, grid=args.grid, points=args.points, n_psis=args.psis)
    c = res["checks"]
    print(f"SMMD/MMD at fixed ψ: constant = 1/(λ+1+ψ²): ψ=0.1 {c['smmd_over_mmd_psi0.1']}, ψ=10 "
          f"{c['smmd_over_mmd_psi10']}")
    print(f"rank correlation of optimised SMMD and optimised GCMMD over the grid: "
          f"{c['rank_corr_opt_smmd_opt_gcmmd']:.3f}")
    print(f"at σ = {c['row_std']:.3g}, |µ| ≥ 1: min/max of optimised MMD {c['opt_mmd2_far_min_over_max']:.3f} "
          f"(≈ constant), SMMD {c['opt_smmd2_far_min_over_max']:.3f}, GCMMD {c['opt_gcmmd2_far_min_over_max']:.3f}")
    print(f"wrote {args.out}/gaussians.png, gaussians.json ({res['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
