r"""The two-parameter MMD-GAN of seed 002 (Wang et al.), App. A.2 / Fig. S1: where MMD-rbf and MMD-rep settle.

Generator G(z) = w₁z with z ~ P_Z = U(−1, 1), discriminator D(x) = w₂x², Gaussian kernel of bandwidth σ = 0.5 on
the scores, k(a, b) = exp(−(D(a) − D(b))² / (2σ²)). Both models train the generator on MMD²_u; the discriminator
minimises

* MMD-rbf: L_D^att = −MMD²_u = −(E k(x, x') + E k(y, y') − 2 E k(x, y));
* MMD-rep: L_D^{rep,1} = E k(x, x') − E k(y, y')  (SPEC §7 with λ = 1),

with x ~ P_X and y = G(z). The three kernel means come from one ``kernelmmd.kernel_means`` call (U-statistics) on
deterministic samples: ``--points`` midpoint quantiles of P_X and of P_Z, so the expectations are those of the
distributions up to a quadrature error that shrinks with ``--points``. Plain simultaneous gradient descent,
w₁ ← w₁ − lr_G ∂L_G/∂w₁ and w₂ ← w₂ − lr_D ∂L_D/∂w₂.

For P_X = N(0, 1) (not realisable by any w₁) the paper reports that both models settle at w₁ ≈ 1.55 (Fig. S1 (c):
(1.55, 0.74) for MMD-rbf; (d): (1.55, 0.32) for MMD-rep). Here MMD-rep settles there and MMD-rbf a few per cent
lower in w₁, as an independent quadrature of the same population losses does too (numbers: benchmarks/RESULTS.md,
"Paper reproductions"). (Both are invariant to σ: the kernel depends on w₂/σ only.)
For P_X = U(−1, 1) (realisable) the equilibria lie on w₁ = ±1.

Outputs: ``repulsive_toy.png`` (streamlines of the gradient field over (w₁, w₂) with the trajectories, panels as
Fig. S1 (a)–(d)) and ``repulsive_toy.json`` (final (w₁, w₂) per model, data and start point, and the gradient norm
there).
"""

from __future__ import annotations

import time

import torch

import kernelmmd

from .._cli import parse_checked
from . import base_parser, normal_quantiles, one_thread, output_dir, uniform_quantiles, write_result

__all__ = ["MODELS", "DATA", "STARTS", "SIGMA", "samples", "losses", "field", "trajectory", "run", "main"]

MODELS = ("mmd-rbf", "mmd-rep")
DATA = ("normal", "uniform")
SIGMA = 0.5
#: start points (w₁, w₂)
STARTS = ((1.0, 1.0), (2.0, 0.5), (1.2, 0.3))


def samples(data: str, points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x ~ P_X, z ~ P_Z): ``points`` midpoint quantiles each, float64 of shape (points,)."""
    if data == "normal":
        x = normal_quantiles(points)
    elif data == "uniform":
        x = uniform_quantiles(points)
    else:
        raise ValueError(f"data must be one of {list(DATA)}, got {data!r}")
    return x, uniform_quantiles(points)


def losses(model: str, w1: torch.Tensor, w2: torch.Tensor, x: torch.Tensor, z: torch.Tensor):
    """(L_G, L_D): the generator's MMD²_u and the discriminator's loss (both minimised), 0-d tensors."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {list(MODELS)}, got {model!r}")
    dx = w2 * x**2  # (n,) scores of real samples
    dy = w2 * (w1 * z) ** 2  # (n,) scores of generated samples
    kxx, kyy, kxy = kernelmmd.kernel_means(dx, dy, kernel="rbf", sigma=SIGMA)
    mmd2 = kxx + kyy - 2.0 * kxy
    loss_d = -mmd2 if model == "mmd-rbf" else kxx - kyy
    return mmd2, loss_d


def field(model: str, w1: float, w2: float, x: torch.Tensor, z: torch.Tensor) -> tuple[float, float]:
    """(−∂L_G/∂w₁, −∂L_D/∂w₂) at (w₁, w₂)."""
    a = torch.tensor(float(w1), dtype=torch.float64, requires_grad=True)
    b = torch.tensor(float(w2), dtype=torch.float64, requires_grad=True)
    loss_g, loss_d = losses(model, a, b, x, z)
    (ga,) = torch.autograd.grad(loss_g, a, retain_graph=True)
    (gb,) = torch.autograd.grad(loss_d, b)
    return -float(ga), -float(gb)


def trajectory(model: str, w1: float, w2: float, x: torch.Tensor, z: torch.Tensor, *, lr_g: float = 1.0,
               lr_d: float = 0.3, steps: int = 600) -> torch.Tensor:
    """Simultaneous gradient descent from (w₁, w₂); returns the path, shape (steps + 1, 2)."""
    path = torch.empty(steps + 1, 2, dtype=torch.float64)
    path[0] = torch.tensor([w1, w2], dtype=torch.float64)
    for t in range(steps):
        d1, d2 = field(model, w1, w2, x, z)
        w1, w2 = w1 + lr_g * d1, w2 + lr_d * d2
        path[t + 1] = torch.tensor([w1, w2], dtype=torch.float64)
    return path


def _plot(paths: dict, fields: dict, out) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(fields)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        g1, g2, u, v = fields[key]
        speed = (u**2 + v**2).sqrt()
        ax.streamplot(g1.numpy(), g2.numpy(), u.numpy(), v.numpy(), color=speed.log10().numpy(), cmap="viridis",
                      density=0.9, linewidth=0.8)
        for path in paths[key]:
            ax.plot(path[:, 0], path[:, 1], color="tab:red", lw=1.2)
            ax.plot(path[0, 0], path[0, 1], "o", color="tab:red", ms=4)
            ax.plot(path[-1, 0], path[-1, 1], "*", color="k", ms=9)
        model, data = key
        ax.set_title(f"{model}, P_X = {'N(0,1)' if data == 'normal' else 'U(-1,1)'}")
        ax.set_xlabel("w1 (generator)")
        ax.set_ylabel("w2 (discriminator)")
        ax.set_xlim(float(g1[0]), float(g1[-1]))
        ax.set_ylim(float(g2[0]), float(g2[-1]))
    fig.tight_layout()
    fig.savefig(out / "repulsive_toy.png", dpi=90)
    plt.close(fig)


def run(out, *, points: int = 200, steps: int = 400, lr_g: float = 1.0, lr_d: float = 0.3, grid: int = 12,
        models=MODELS, data=DATA, starts=STARTS, plot: bool = True, tail: int = 50) -> dict:
    """Run every (model, data, start) trajectory (and the streamline plots); returns the JSON-ready summary.

    The settled point is the mean of the last ``tail`` iterates (robust to a residual small cycle); ``spread`` is
    their largest deviation from it and ``grad_norm`` the norm of the field there.
    """
    out = output_dir(out)
    t0 = time.perf_counter()
    results, paths, fields = [], {}, {}
    for d in data:
        x, z = samples(d, points)
        for model in models:
            key = (model, d)
            paths[key] = []
            for w1, w2 in starts:
                path = trajectory(model, w1, w2, x, z, lr_g=lr_g, lr_d=lr_d, steps=steps)
                paths[key].append(path)
                last = path[-min(tail, len(path)) :]
                settled = last.mean(0)
                g = field(model, float(settled[0]), float(settled[1]), x, z)
                results.append({
                    "model": model, "data": d, "start": [w1, w2],
                    "w1": float(settled[0]), "w2": float(settled[1]),
                    "spread": float((last - settled).abs().max()),
                    "grad_norm": float(torch.tensor(g).norm()),
                })
            if plot:
                g1 = torch.linspace(0.05, 2.5, grid, dtype=torch.float64)
                g2 = torch.linspace(0.05, 1.5, grid, dtype=torch.float64)
                u = torch.zeros(grid, grid, dtype=torch.float64)
                v = torch.zeros(grid, grid, dtype=torch.float64)
                for i in range(grid):
                    for j in range(grid):
                        u[i, j], v[i, j] = field(model, float(g1[j]), float(g2[i]), x, z)
                fields[key] = (g1, g2, u, v)
    if plot:
        _plot(paths, fields, out)
    summary = {}
    for model in models:
        for d in data:
            rows = [r for r in results if r["model"] == model and r["data"] == d and r["w2"] > 0.05]
            if rows:  # the non-trivial equilibrium (w₂ = 0 is the trivial one the paper mentions for MMD-rep)
                summary[f"{model}/{d}"] = {"w1": sum(r["w1"] for r in rows) / len(rows),
                                           "w2": sum(r["w2"] for r in rows) / len(rows)}
    result = {"experiment": "repulsive_toy", "sigma": SIGMA, "points": points, "steps": steps, "lr_g": lr_g,
              "lr_d": lr_d, "paper_w1": 1.55, "settled": summary, "runs": results}
    return write_result(result, out / "repulsive_toy.json", t0)


def main(argv: list[str] | None = None) -> int:
    p = base_parser("python -m gan.experiments.repulsive_toy", "The two-parameter MMD-GAN of seed 002 App. A.2: "
                    "G(z) = w1 z, D(x) = w2 x^2, rbf sigma = 0.5; MMD-rbf and MMD-rep.",
                    "runs/experiments/repulsive_toy")
    p.add_argument("--points", type=int, default=200, help="quantile points of P_X and of P_Z")
    p.add_argument("--steps", type=int, default=400, help="gradient steps per trajectory")
    p.add_argument("--lr-g", type=float, default=1.0, help="generator step size")
    p.add_argument("--lr-d", type=float, default=0.3, help="discriminator step size")
    p.add_argument("--grid", type=int, default=12, help="streamline grid points per axis")
    args = parse_checked(p, argv,
                         lambda a: a.points < 2 or a.steps < 1 or a.grid < 2 or not (a.lr_g > 0 and a.lr_d > 0),
                         "--points and --grid must be >= 2, --steps >= 1, --lr-g and --lr-d > 0")
    with one_thread():
        res = run(args.out, points=args.points, steps=args.steps, lr_g=args.lr_g, lr_d=args.lr_d, grid=args.grid)
    for key, v in res["settled"].items():
        print(f"{key:18s} settles at w1 = {v['w1']:.3f}, w2 = {v['w2']:.3f}")
    print("paper (seed 002, Fig. S1 c/d): w1 ≈ 1.55 for both models on P_X = N(0, 1)")
    print(f"wrote {args.out}/repulsive_toy.png, repulsive_toy.json ({res['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
