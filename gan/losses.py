r"""GAN losses as a registry whose keys are the ``--loss`` choices (SPEC §5–7).

Every loss is an object with

* ``critic_loss(critic, real, fake, rng) -> (loss, terms)``: what the critic's optimiser **minimises** — the
  negative of the discrepancy the critic maximises, plus penalties;
* ``generator_loss(critic, real, fake) -> (loss, terms)``: what the generator's optimiser minimises;
* ``critic_dim`` (the critic's output dimension s) and ``default_sn`` (the ``--sn`` used when none is given).

``real`` and ``fake`` are batches (n, C, H, W) or (n, d); in ``critic_loss`` ``fake`` is detached, in
``generator_loss`` it carries the generator's graph. ``terms`` are detached 0-d tensors for logging. All kernel
maths comes from :mod:`kernelmmd`'s public API; this module only combines its results.

=============  =================================================================================  ===  ============
key            critic maximises (generator minimises the same unless stated)                      s    default --sn
=============  =================================================================================  ===  ============
``smmd``       ``kernelmmd.smmd_loss``: MMD²_u(φ(X), φ(Y)) / (1 + 10 Ê_P‖∇φ‖²_F), K = rbf σ=1       1    none
``swgan``      ``kernelmmd.swgan_loss``: (Ê_Pφ − Ê_Qφ) / √(1 + 10 (Ê_P φ² + Ê_P ‖∇φ‖²_F))          1    none
``gcmmd``      ``kernelmmd.gcmmd2`` with µ = P (z = real), rbf σ=1 on φ, λ=1, feature solver      1    none
``mmd``        MMD²_u(φ(X), φ(Y)), mix_rbf σ ∈ {1, 2, 4, 8, 16} (Li et al. 2017)                    16   sn
``mmd-gp``     MMD²_u with mix_rq α ∈ {0.2, 0.5, 1, 2, 5}, minus λ_GP E(‖∇_x̃ η̂(φ(x̃))‖ − 1)²  (λ=1)  16   none
``mmd-rep``    −L_D^{rep,λ} = −[λ Ek(x,x') − (λ−1) Ek(x,y) − Ek(y,y')], rbf σ=1, λ=1; G: MMD²_u      16   pico
``mmd-rep-b``  as mmd-rep with RBF-B in the critic only (real pairs min(t, 4), fake pairs max(t, 0.25))  16   pico
``wgan-gp``    E f(X) − E f(Y) − 10 E(‖∇f(x̃)‖ − 1)²; generator minimises −E f(Y)                   1    none
=============  =================================================================================  ===  ============

Gradient penalties (:func:`gradient_penalty`) use x̃ uniform on segments between real and fake points and the
per-sample norm over the *whole* input (all of C·H·W), not one tensor axis (SPEC §11, defect 2).
"""

from __future__ import annotations

import math

import torch

import kernelmmd

__all__ = ["LOSSES", "LOSS_OPTIONS", "GANLoss", "Discrepancy", "SMMD", "SWGAN", "GCMMD", "MMD", "MMDGP", "Repulsive",
           "WGANGP", "make_loss", "loss_for", "gradient_penalty", "interpolate"]


def interpolate(real: torch.Tensor, fake: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """x̃ = α·real + (1 − α)·fake with one α ~ U[0, 1] per sample (drawn from ``rng``, a CPU generator)."""
    alpha = torch.rand(real.shape[0], generator=rng).to(real.device, real.dtype)
    alpha = alpha.view(-1, *([1] * (real.ndim - 1)))  # (n, 1, 1, 1) for images
    return alpha * real.detach() + (1.0 - alpha) * fake.detach()


def gradient_penalty(f, x: torch.Tensor) -> torch.Tensor:
    r"""Mean over samples of :math:`(\|\nabla_{x_i} f(x_i)\|_2 - 1)^2`, the norm taken over all of a sample's
    entries (C·H·W for images). Differentiable (``create_graph=True``) in ``f``'s parameters.

    Args:
        f: maps a batch (n, ...) to per-sample scalars (n,); samples must not interact (no batch norm).
        x: the points x̃, (n, ...).

    Example:
        >>> x = torch.ones(3, 1, 2, 2)
        >>> float(gradient_penalty(lambda t: t.flatten(1).sum(1), x))  # ‖∇‖ = 2 for 4 entries
        1.0
    """
    x = x.detach().requires_grad_(True)
    out = f(x)  # (n,)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)  # (n, ...)
    norms = torch.linalg.vector_norm(grad.flatten(1), dim=1)  # (n,): over C·H·W, not one axis
    return ((norms - 1.0) ** 2).mean()


def _features(critic, x):
    f = critic(x)
    return f.reshape(f.shape[0], -1)  # (n, s)


def _number(name: str, value, *, ge: float | None = None, gt: float | None = None) -> float:
    """``float(value)``, or a ValueError unless it is a finite number (>= ``ge`` / > ``gt`` when given)."""
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    if not (ok and (ge is None or value >= ge) and (gt is None or value > gt)):
        bound = f" >= {ge}" if ge is not None else f" > {gt}" if gt is not None else ""
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return float(value)


def _api(name: str):
    fn = getattr(kernelmmd, name, None)
    if fn is None:
        raise RuntimeError(f"this loss needs kernelmmd.{name}, which the installed kernelmmd does not provide")
    return fn


class GANLoss:
    """Base class of the registry entries (see the module docstring for the conventions)."""

    name = ""
    critic_dim = 1
    default_sn = "none"

    def critic_loss(self, critic, real, fake, rng: torch.Generator):
        raise NotImplementedError

    def generator_loss(self, critic, real, fake):
        raise NotImplementedError

    def params(self) -> dict:
        """The loss's hyper-parameters (saved in config.json)."""
        return {}


class Discrepancy(GANLoss):
    """A loss whose critic maximises a discrepancy ``_value(critic, real, fake)`` that the generator minimises; the
    value is logged as ``term``."""

    term = ""

    def _value(self, critic, real, fake):
        raise NotImplementedError

    def critic_loss(self, critic, real, fake, rng):
        value = self._value(critic, real, fake)
        return -value, {self.term: value.detach()}

    def generator_loss(self, critic, real, fake):
        value = self._value(critic, real, fake)
        return value, {self.term: value.detach()}


class SMMD(Discrepancy):
    """Scaled MMD (SPEC §5) through ``kernelmmd.smmd_loss``; ``scale`` is the 10 of the paper's loss."""

    name = term = "smmd"
    _fn = "smmd_loss"

    def __init__(self, scale: float = 10.0):
        self.scale = _number("scale", scale, ge=0)

    def params(self):
        return {"scale": self.scale}

    def _value(self, critic, real, fake):
        return _api(self._fn)(critic, real, fake, scale=self.scale)


class SWGAN(SMMD):
    """Scaled Wasserstein loss (SPEC §5, seed 001 App. E) through ``kernelmmd.swgan_loss``."""

    name = term = "swgan"
    _fn = "swgan_loss"


class GCMMD(Discrepancy):
    """Gradient-constrained MMD² (SPEC §6) with µ = P̂ (z = the real batch): ``kernelmmd.gcmmd2`` with the deep
    kernel rbf(σ = 1) ∘ φ, λ = ``lam`` (kernelmmd's default 1) and the exact ``"feature"`` solver."""

    name = "gcmmd"
    term = "gcmmd2"

    def __init__(self, lam: float = 1.0, solver: str = "feature"):
        self.lam, self.solver = _number("lam", lam, gt=0), solver

    def params(self):
        return {"lam": self.lam, "solver": self.solver}

    def _value(self, critic, real, fake):
        kernel = kernelmmd.DeepKernel(critic, "rbf", sigma=1.0)
        return _api("gcmmd2")(real, fake, z=None, kernel=kernel, lam=self.lam, solver=self.solver)  # z = x: µ = P


class MMD(Discrepancy):
    """MMD-GAN (Li et al. 2017): both players use MMD²_u on critic features (s = 16)."""

    name = "mmd"
    term = "mmd2"
    critic_dim = 16
    default_sn = "sn"

    def __init__(self, kernel: kernelmmd.Kernel | None = None):
        self.kernel = kernel if kernel is not None else kernelmmd.MixRBF((1.0, 2.0, 4.0, 8.0, 16.0))

    def params(self):
        return {"kernel": repr(self.kernel)}

    def _value(self, critic, real, fake):
        return kernelmmd.mmd2_unbiased(_features(critic, real), _features(critic, fake), kernel=self.kernel)


class MMDGP(MMD):
    r"""MMD-GAN-GP (Bińkowski et al. 2018): critic loss −MMD²_u + λ_GP E(‖∇_x̃ η̂(φ(x̃))‖ − 1)², where η̂ is the
    witness of the batch's features (``kernelmmd.witness``), mix_rq kernel, s = 16."""

    name = "mmd-gp"
    default_sn = "none"

    def __init__(self, gp_weight: float = 1.0, kernel: kernelmmd.Kernel | None = None):
        super().__init__(kernel if kernel is not None else kernelmmd.MixRQ((0.2, 0.5, 1.0, 2.0, 5.0)))
        self.gp_weight = _number("gp_weight", gp_weight, ge=0)

    def params(self):
        return {"kernel": repr(self.kernel), "gp_weight": self.gp_weight}

    def critic_loss(self, critic, real, fake, rng):
        fr, ff = _features(critic, real), _features(critic, fake)  # (n, s), (m, s)
        value = kernelmmd.mmd2_unbiased(fr, ff, kernel=self.kernel)
        # the penalty differentiates ∇_x̃ η̂ once more: the dense backend supports any order, the fused CUDA ones
        # refuse a double backward (and 2 × 64 × 64 kernel values are nothing to fuse)
        witness = lambda x: kernelmmd.witness(fr, ff, _features(critic, x), kernel=self.kernel,  # noqa: E731
                                              backend="torch")
        penalty = gradient_penalty(witness, interpolate(real, fake, rng))
        return -value + self.gp_weight * penalty, {"mmd2": value.detach(), "gp": penalty.detach()}


class Repulsive(GANLoss):
    r"""Repulsive MMD-GAN (Wang et al., seed 002): the critic minimises

    .. math:: L_D^{rep,\lambda} = \lambda\, E k(x, x') - (\lambda - 1)\, E k(x, y) - E k(y, y')

    (x real, y fake; the weights (λ, 1 − λ, −1) sum to zero), the generator minimises MMD²_u; kernel rbf σ = 1. With
    ``bounded=True`` (MMD-rep-b) the critic's kernel is RBF-B — real pairs use min(t, 4), fake pairs max(t, 0.25)
    — and the generator keeps the plain Gaussian.
    """

    name = "mmd-rep"
    critic_dim = 16
    default_sn = "pico"

    def __init__(self, lam: float = 1.0, bounded: bool = False, lower: float = 0.25, upper: float = 4.0):
        self.lam, self.bounded = _number("lam", lam), bool(bounded)
        self.kernel = kernelmmd.RBF(1.0)
        self.critic_kernel = (kernelmmd.RBFBounded(1.0, lower, upper, xx="upper", yy="lower", xy=None)
                              if bounded else self.kernel)
        if bounded:
            self.name = "mmd-rep-b"

    @property
    def weights(self) -> tuple[float, float, float]:
        """Weights of (E k(x, x'), E k(x, y), E k(y, y')) in L_D; they sum to zero."""
        return (self.lam, 1.0 - self.lam, -1.0)

    def params(self):
        return {"lam": self.lam, "critic_kernel": repr(self.critic_kernel), "generator_kernel": repr(self.kernel)}

    def critic_loss(self, critic, real, fake, rng):
        kxx, kyy, kxy = kernelmmd.kernel_means(_features(critic, real), _features(critic, fake),
                                               kernel=self.critic_kernel)
        wxx, wxy, wyy = self.weights
        loss = wxx * kxx + wxy * kxy + wyy * kyy
        return loss, {"L_D": loss.detach(), "kxx": kxx.detach(), "kyy": kyy.detach(), "kxy": kxy.detach()}

    def generator_loss(self, critic, real, fake):
        value = kernelmmd.mmd2_unbiased(_features(critic, real), _features(critic, fake), kernel=self.kernel)
        return value, {"mmd2": value.detach()}


class WGANGP(GANLoss):
    """WGAN-GP baseline: critic loss E f(fake) − E f(real) + λ_GP E(‖∇f(x̃)‖ − 1)² (λ_GP = 10); generator −E f(fake)."""

    name = "wgan-gp"

    def __init__(self, gp_weight: float = 10.0):
        self.gp_weight = _number("gp_weight", gp_weight, ge=0)

    def params(self):
        return {"gp_weight": self.gp_weight}

    def critic_loss(self, critic, real, fake, rng):
        gap = _features(critic, real).mean() - _features(critic, fake).mean()
        penalty = gradient_penalty(lambda x: _features(critic, x)[:, 0], interpolate(real, fake, rng))
        return -gap + self.gp_weight * penalty, {"wasserstein": gap.detach(), "gp": penalty.detach()}

    def generator_loss(self, critic, real, fake):
        mean_fake = _features(critic, fake).mean()
        return -mean_fake, {"f_fake": mean_fake.detach()}


#: ``--loss`` name -> (constructor, {CLI hyper-parameter option -> constructor argument})
LOSSES: dict[str, tuple] = {
    "smmd": (SMMD, {"scale": "scale"}),
    "swgan": (SWGAN, {"scale": "scale"}),
    "gcmmd": (GCMMD, {"gc_lam": "lam"}),
    "mmd": (MMD, {}),
    "mmd-gp": (MMDGP, {"gp_weight": "gp_weight"}),
    "mmd-rep": (Repulsive, {"rep_lam": "lam"}),
    "mmd-rep-b": (lambda **kw: Repulsive(bounded=True, **kw), {"rep_lam": "lam"}),
    "wgan-gp": (WGANGP, {"gp_weight": "gp_weight"}),
}


#: the CLI hyper-parameter options of the losses (the keys of the registry's option maps)
LOSS_OPTIONS = ("scale", "gc_lam", "gp_weight", "rep_lam")


def make_loss(name: str, **options) -> GANLoss:
    """Build the loss ``name`` from its registry entry; ``options`` are CLI hyper-parameters (``scale``,
    ``gc_lam``, ``gp_weight``, ``rep_lam``), None meaning the loss's default.

    Raises:
        ValueError: unknown ``name``, or a hyper-parameter the loss does not take (given as not None).

    Example:
        >>> make_loss("mmd-rep-b", rep_lam=0.5).weights
        (0.5, 0.5, -1.0)
    """
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)}, got {name!r}")
    ctor, accepted = LOSSES[name]
    kwargs = {}
    for key, value in options.items():
        if value is None:
            continue
        if not any(key in acc for _, acc in LOSSES.values()):
            raise ValueError(f"unknown loss option {key!r}; loss options are {', '.join(LOSS_OPTIONS)}")
        if key not in accepted:
            takers = sorted(k for k, (_, acc) in LOSSES.items() if key in acc)
            raise ValueError(f"--{key.replace('_', '-')} applies only to --loss {', '.join(takers)}, got --loss {name}")
        kwargs[accepted[key]] = value
    return ctor(**kwargs)


def loss_for(cfg) -> GANLoss:
    """The loss of a run's configuration (a :class:`gan.config.Config`): ``make_loss(cfg.loss, ...)`` with its
    hyper-parameter options."""
    return make_loss(cfg.loss, **{k: getattr(cfg, k) for k in LOSS_OPTIONS})
