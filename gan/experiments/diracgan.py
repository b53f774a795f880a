r"""DiracGAN (seed 001, Example 1; Fig. 1 and App. B, Fig. 5): parameter-space vector fields and trajectories.

P = δ₀ and Q_θ = δ_θ on R; the critic's kernel is k_ψ = K ∘ φ_ψ with φ_ψ(x) = ψx and K Gaussian of bandwidth 1,
so (SPEC §10)

.. math:: \mathrm{MMD}^2_{k_\psi}(\delta_0, \delta_\theta) = 2\bigl(1 - e^{-\psi^2\theta^2/2}\bigr).

The generator moves θ to decrease the loss, the critic moves ψ to increase its objective, by simultaneous gradient
steps (the vector field :math:`v(\theta, \psi) = (-\partial_\theta L_G, \partial_\psi L_C)`). Losses, each computed
by kernelmmd on the one-point samples X = {0}, Y = {θ}:

* ``mmd``: L_C = L_G = MMD²_b(X, Y) (``kernelmmd.mmd2_biased`` with the deep kernel).
* ``mmd-gp``: L_C = MMD² − λ_GP E_P (‖∇η̂(x)‖ − 1)², L_G = MMD² (Bińkowski et al.: the penalty on the witness η̂,
  its gradient by ``kernelmmd.witness_grad``, taken under P as in App. B), λ_GP = 1.
* ``smmd``: L = SMMD²_{P, k_ψ, λ} = MMD² / (λ + 1 + ψ²) (``kernelmmd.smmd2`` with µ = P). For φ_ψ(x) = ψx the
  Jacobian is ψ everywhere, so this is also Fig. 1 (b)'s µ = Uniform(0, θ).
* ``gcmmd``: L = GCMMD²_{µ, k_ψ, λ} (``kernelmmd.gcmmd2``), λ = 1, with µ (``--gcmmd-mu``): ``uniform`` (default) —
  Uniform(0, θ), the WGAN-GP measure of Fig. 1 (b), as ``--mu-points`` midpoint quantiles of the segment, held
  fixed within each step (not differentiated, like WGAN-GP's interpolates); ``normal`` — App. B's N(0, 10²) as
  ``--mu-points`` midpoint quantiles; ``p`` — µ = P.

The paper's observation, checked by ``tests/test_gan_experiments.py``: from a far start point (C: θ = 4, ψ = 4,
where ψθ = 16 and the MMD gradient is e^{-128}-small) the MMD does not move at all, while SMMD and GCMMD first shrink
ψ (widen the kernel) until a signal appears and then drive θ to 0.

The default run (lr 0.2, 600 steps, written to ``diracgan.json``; its numbers are in benchmarks/RESULTS.md, "Paper
reproductions"): MMD converges from A, drifts from B with ψ growing (the critic sharpens the kernel faster than θ
moves) and stalls at C; MMD-GP converges from A, ends short of 0 from B and stalls at C; SMMD and GCMMD converge
from A, B and C. With larger steps the MMD is unstable near θ = 0 once ψ has grown. Other choices of GCMMD's µ: with
App. B's µ = N(0, 10²) GCMMD also leaves C (ψ shrinks, θ starts moving) but with simultaneous steps it then circles
around θ = 0 instead of settling, and with µ = P (one point) it stalls at C like the MMD: a constraint on f and ∇f at 0
alone says nothing about the kernel between 0 and θ.

Outputs: ``diracgan_fields.png`` (one panel per loss: normalised vector field over (θ, 1/ψ) as in Fig. 1, coloured by
log₁₀ of its magnitude, and the three trajectories), ``diracgan_theta.png`` (|θ| along each trajectory) and
``diracgan.json``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

import kernelmmd

from .._cli import parse_checked
from . import base_parser, normal_quantiles, one_thread, output_dir, uniform_quantiles, write_result

__all__ = ["LOSSES", "STARTS", "Setup", "critic_objective", "generator_objective", "field", "trajectory", "run",
           "main"]

LOSSES = ("mmd", "mmd-gp", "smmd", "gcmmd")
#: start points (θ, ψ): A near the optimum, B at a moderate distance, C far (sharp kernel, no MMD gradient)
STARTS = {"A": (1.0, 1.0), "B": (3.0, 1.0), "C": (4.0, 4.0)}


@dataclass
class Setup:
    """Constants of the losses (see the module docstring)."""

    lam: float = 1.0  # λ of SMMD and GCMMD
    gp_weight: float = 1.0  # λ_GP of MMD-GP
    mu: str = "uniform"  # GCMMD's µ: "uniform" (Uniform(0, θ)), "normal" (N(0, mu_std²)) or "p" (P = δ₀)
    mu_std: float = 10.0  # µ = N(0, mu_std²) for mu = "normal"
    mu_points: int = 16  # quantile points representing µ (uniform, normal)


def _kernel(psi: torch.Tensor) -> kernelmmd.DeepKernel:
    return kernelmmd.DeepKernel(lambda x: psi * x, "rbf", sigma=1.0)  # k_ψ = K ∘ φ_ψ, φ_ψ(x) = ψx


def _samples(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.zeros(1, 1, dtype=theta.dtype)  # P = δ₀
    return x, theta.reshape(1, 1)  # Q = δ_θ


MUS = ("uniform", "normal", "p")


def _mu(theta: torch.Tensor, setup: Setup) -> torch.Tensor:
    """Points (M, 1) representing GCMMD's µ (not differentiated)."""
    dt = theta.dtype
    if setup.mu == "uniform":
        return uniform_quantiles(setup.mu_points, 0.0, 1.0, dtype=dt)[:, None] * theta.detach()  # U(0, θ)
    if setup.mu == "normal":
        return normal_quantiles(setup.mu_points, 0.0, setup.mu_std, dtype=dt)[:, None]
    if setup.mu == "p":
        return torch.zeros(1, 1, dtype=dt)
    raise ValueError(f"mu must be one of {list(MUS)}, got {setup.mu!r}")


def _value(name: str, theta: torch.Tensor, psi: torch.Tensor, setup: Setup) -> torch.Tensor:
    """The discrepancy of loss ``name`` (without a penalty)."""
    x, y = _samples(theta)
    k = _kernel(psi)
    if name in ("mmd", "mmd-gp"):
        return kernelmmd.mmd2_biased(x, y, k)
    if name == "smmd":
        return kernelmmd.smmd2(x, y, k, z=x, lam=setup.lam)  # µ = P
    if name == "gcmmd":
        return kernelmmd.gcmmd2(x, y, z=_mu(theta, setup), kernel=k, lam=setup.lam)
    raise ValueError(f"loss must be one of {list(LOSSES)}, got {name!r}")


def generator_objective(name: str, theta: torch.Tensor, psi: torch.Tensor, setup: Setup | None = None) -> torch.Tensor:
    """What the generator minimises over θ (0-d tensor, differentiable)."""
    return _value(name, theta, psi, setup or Setup())


def critic_objective(name: str, theta: torch.Tensor, psi: torch.Tensor, setup: Setup | None = None) -> torch.Tensor:
    """What the critic maximises over ψ (0-d tensor, differentiable): the discrepancy, minus MMD-GP's penalty."""
    setup = setup or Setup()
    value = _value(name, theta, psi, setup)
    if name == "mmd-gp":
        x, y = _samples(theta)
        # input-space ∇_x η̂(x) of the deep kernel k_ψ = rbf∘φ_ψ (kernelmmd applies the chain rule, J = ψ)
        grad = kernelmmd.witness_grad(x, y, x, _kernel(psi))  # (1, 1): ∇η̂ at the samples of P
        norm = torch.linalg.vector_norm(grad, dim=1)  # (1,)
        value = value - setup.gp_weight * ((norm - 1.0) ** 2).mean()
    return value


def field(name: str, theta: float, psi: float, setup: Setup | None = None) -> tuple[float, float]:
    """The vector field (−∂θ L_G, ∂ψ L_C) at (θ, ψ)."""
    th = torch.tensor(float(theta), dtype=torch.float64, requires_grad=True)
    ps = torch.tensor(float(psi), dtype=torch.float64, requires_grad=True)
    if name != "mmd-gp":  # one objective for both players
        g_theta, g_psi = torch.autograd.grad(generator_objective(name, th, ps, setup), (th, ps))
        return -float(g_theta), float(g_psi)
    (g_theta,) = torch.autograd.grad(generator_objective(name, th, ps.detach(), setup), th)
    (g_psi,) = torch.autograd.grad(critic_objective(name, th.detach(), ps, setup), ps)
    return -float(g_theta), float(g_psi)


def trajectory(name: str, theta0: float, psi0: float, *, lr: float = 0.2, steps: int = 600,
               setup: Setup | None = None) -> torch.Tensor:
    """Simultaneous gradient steps θ ← θ − lr ∂θ L_G, ψ ← ψ + lr ∂ψ L_C; returns the path (steps + 1, 2) of (θ, ψ)."""
    path = torch.empty(steps + 1, 2, dtype=torch.float64)
    th, ps = float(theta0), float(psi0)
    path[0] = torch.tensor([th, ps], dtype=torch.float64)
    for t in range(steps):
        d_th, d_ps = field(name, th, ps, setup)
        th, ps = th + lr * d_th, ps + lr * d_ps
        path[t + 1] = torch.tensor([th, ps], dtype=torch.float64)
    return path


def _plot(paths: dict, setup: Setup, grid: int, out) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thetas = torch.linspace(-5.0, 5.0, grid, dtype=torch.float64)
    inv_psis = torch.linspace(0.1, 2.5, grid, dtype=torch.float64)  # vertical axis 1/ψ as in Fig. 1
    fig, axes = plt.subplots(1, len(LOSSES), figsize=(4.2 * len(LOSSES), 4))
    colours = {"A": "tab:green", "B": "tab:orange", "C": "tab:red"}
    for ax, name in zip(axes, LOSSES):
        u = torch.zeros(grid, grid, dtype=torch.float64)
        v = torch.zeros(grid, grid, dtype=torch.float64)
        for i, ip in enumerate(inv_psis):
            for j, th in enumerate(thetas):
                d_th, d_ps = field(name, float(th), 1.0 / float(ip), setup)
                u[i, j], v[i, j] = d_th, -d_ps * float(ip) ** 2  # d(1/ψ)/dt = −ψ̇/ψ²
        norm = torch.hypot(u, v)  # no underflow of u² for the e^{-100}-small MMD gradients
        safe = torch.where(norm > 0, norm, torch.ones_like(norm))
        ax.quiver(thetas, inv_psis, u / safe, v / safe, norm.clamp_min(1e-300).log10(), cmap="viridis", scale=30,
                  width=0.004)
        for label, path in paths[name].items():
            ax.plot(path[:, 0], 1.0 / path[:, 1], color=colours[label], lw=1.5)
            ax.plot(path[0, 0], 1.0 / path[0, 1], "o", color=colours[label], ms=5)
            ax.annotate(label, (float(path[0, 0]), 1.0 / float(path[0, 1])), textcoords="offset points",
                        xytext=(4, 4), color=colours[label])
        ax.set_xlim(-5, 5)
        ax.set_ylim(0, 2.6)
        ax.set_xlabel("θ")
        ax.set_ylabel("1/ψ")
        ax.set_title(name.upper())
    fig.suptitle("DiracGAN: arrows = directions of (−∂θL_G, ∂ψL_C), colour = log10 magnitude; lines = trajectories")
    fig.tight_layout()
    fig.savefig(out / "diracgan_fields.png", dpi=90)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(LOSSES), figsize=(4.2 * len(LOSSES), 3), sharey=True)
    for ax, name in zip(axes, LOSSES):
        for label, path in paths[name].items():
            ax.semilogy(path[:, 0].abs().clamp_min(1e-12), color=colours[label], label=label)
        ax.set_title(name.upper())
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("|θ|")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "diracgan_theta.png", dpi=90)
    plt.close(fig)


def run(out, *, steps: int = 600, lr: float = 0.2, grid: int = 15, starts: dict | None = None,
        losses=LOSSES, setup: Setup | None = None, plot: bool = True, tol: float = 0.05) -> dict:
    """Run the trajectories (and draw the figures); returns the JSON-ready summary.

    For every loss and start point: the final (θ, ψ), whether it converged (|θ| < ``tol``) and whether it stalled
    (θ moved by less than 1e-6 in total).
    """
    setup = setup or Setup()
    starts = starts or STARTS
    out = output_dir(out)
    t0 = time.perf_counter()
    paths, summary = {}, {}
    for name in losses:
        paths[name] = {}
        summary[name] = {}
        for label, (th0, ps0) in starts.items():
            path = trajectory(name, th0, ps0, lr=lr, steps=steps, setup=setup)
            paths[name][label] = path
            th, ps = float(path[-1, 0]), float(path[-1, 1])
            summary[name][label] = {
                "start": [th0, ps0], "final_theta": th, "final_psi": ps,
                "converged": abs(th) < tol, "stalled": abs(th - th0) < 1e-6,
                "steps_to_converge": next((int(i) for i in range(len(path)) if abs(float(path[i, 0])) < tol), None),
            }
    if plot and tuple(losses) == LOSSES:
        _plot(paths, setup, grid, out)
    result = {"experiment": "diracgan", "setup": asdict(setup), "lr": lr, "steps": steps, "tol": tol,
              "results": summary}
    return write_result(result, out / "diracgan.json", t0)


def main(argv: list[str] | None = None) -> int:
    p = base_parser("python -m gan.experiments.diracgan", "DiracGAN vector fields and trajectories (seed 001, "
                    "Example 1, Fig. 1 / App. B) for MMD, MMD-GP, SMMD and GCMMD.", "runs/experiments/diracgan")
    p.add_argument("--steps", type=int, default=600, help="gradient steps per trajectory")
    p.add_argument("--lr", type=float, default=0.2, help="step size of both players")
    p.add_argument("--grid", type=int, default=15, help="vector-field arrows per axis")
    p.add_argument("--gcmmd-mu", choices=list(MUS), default="uniform",
                   help="GCMMD's µ: Uniform(0, θ) (Fig. 1 (b)), N(0, 10²) (App. B) or P")
    p.add_argument("--mu-points", type=int, default=16, help="GCMMD: quantile points representing µ")
    args = parse_checked(p, argv, lambda a: a.steps < 1 or a.grid < 2 or a.mu_points < 1 or not a.lr > 0,
                         "--steps and --mu-points must be >= 1, --grid >= 2 and --lr > 0")
    setup = Setup(mu=args.gcmmd_mu, mu_points=args.mu_points)
    with one_thread():
        res = run(args.out, steps=args.steps, lr=args.lr, grid=args.grid, setup=setup)
    for name, rows in res["results"].items():
        cells = ", ".join(f"{k}: θ {v['start'][0]:g} → {v['final_theta']:.3g}"
                          + (" (converged)" if v["converged"] else " (stalled)" if v["stalled"] else "")
                          for k, v in rows.items())
        print(f"{name:7s} {cells}")
    print(f"wrote {args.out}/diracgan_fields.png, diracgan_theta.png, diracgan.json ({res['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
