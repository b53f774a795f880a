r"""KID-adaptive learning rate (seed 001 §4, SPEC §9): decay the learning rates when the relative KID test stops showing
improvement.

Every ``every`` (2 000) generator steps the features of fresh generator samples Y are compared with those of the
samples Z saved ``lookback`` (20 000) steps earlier, against features X of real data, by the relative MMD test of
Bounliphone et al. with KID's cubic kernel (``kernelmmd.relative_mmd_test``: p = Φ(d̂/σ̂) with
d̂ = MMD²_u(X, Y) − MMD²_u(X, Z); a small p means the model improved). A p-value above ``alpha`` is a failure to show
improvement; after ``patience`` (3) consecutive failures every learning rate of the given optimisers is multiplied by
``factor`` (0.8).

The bookkeeping follows the authors' scorer (Scaled-MMD-GAN / MMD-GAN, ``utils/scorer.py``), where it was tested
and tuned, so that runs compare:

* a memory of saved sample features holds ``lookback // every`` (10) entries; until it is full, each evaluation only
  stores its features (decision ``"filling"``);
* once full, the new samples are tested against the *oldest* entry; on success the oldest entry is dropped, the new
  features appended and the failure count reset; on a failure the count grows and the memory is left as it is (the
  next evaluation is tested against the same old samples);
* at ``patience`` failures the rates decay, the memory keeps only its newest ``patience − 1`` entries plus the new
  features (``patience`` in all) and the count resets — so the next test comes ``lookback − patience·every`` steps
  later;
* the authors' threshold is ``alpha = 0.1`` and their memory holds 2 048 samples' features per entry.

Unlike the public MMD-GAN code, whose scheduler never ran with its shipped flags (the scores it needs were never
computed, SPEC §11 defect 4), this one is tested to fire on a stalled generator and to stay quiet on an improving one
(``tests/test_gan_schedule.py``).

Use in a training loop: :class:`KIDAdaptiveLR` holds the decision logic and state and works on features you pass in;
:class:`KIDScheduleCallback` plugs it into :func:`gan.train.train` as a callback (``on_step(run, step)``, state in the
checkpoint), sampling the generator with its own RNG so that training's random streams are untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

import kernelmmd

__all__ = ["KIDAdaptiveLR", "KIDScheduleCallback"]


def _check_int(name: str, v, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return v


class KIDAdaptiveLR:
    r"""The decision logic and state of the KID-adaptive learning-rate schedule (see the module docstring).

    Args:
        optimizers: the optimisers whose every param group's ``lr`` is decayed (e.g. generator and critic).
        every: generator steps between evaluations (paper: 2 000).
        lookback: steps between the compared sample sets (paper: 20 000); a multiple of ``every``.
        patience: consecutive failures that trigger a decay (paper: 3), 1 ≤ patience ≤ lookback / every.
        factor: decay factor in (0, 1) (paper: 0.8).
        alpha: p-values above ``alpha`` count as a failure to show improvement (authors' code: 0.1).
        max_samples: features kept per evaluation (authors: 2 048); more are truncated.
        min_lr: rates never decay below this.
        min_variance: floor of the test's variance estimate (``kernelmmd.relative_mmd_test``; the authors' 1e-5 makes
            the test conservative when the variance is tiny).

    Raises:
        ValueError: an empty optimiser list or a hyper-parameter outside the ranges above.

    Example:
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> sched = KIDAdaptiveLR([opt], every=1, lookback=1, patience=1)
        >>> x = torch.randn(200, 4)
        >>> sched.update(1, x, torch.randn(200, 4))["lr_decision"]  # first evaluation: only stored
        'filling'
    """

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer], *, every: int = 2000, lookback: int = 20000,
                 patience: int = 3, factor: float = 0.8, alpha: float = 0.1, max_samples: int = 2048,
                 min_lr: float = 0.0, min_variance: float = 1e-10):
        self.optimizers = list(optimizers)
        if not self.optimizers:
            raise ValueError("optimizers must contain at least one torch.optim.Optimizer, got an empty sequence")
        self.every = _check_int("every", every, 1)
        self.lookback = _check_int("lookback", lookback, 1)
        if lookback % every:
            raise ValueError(f"lookback must be a multiple of every = {every}, got {lookback}")
        self.memory_size = lookback // every
        self.patience = _check_int("patience", patience, 1)
        if patience > self.memory_size:
            raise ValueError(f"patience must be <= lookback / every = {self.memory_size}, got {patience}")
        if not (isinstance(factor, (int, float)) and 0 < factor < 1):
            raise ValueError(f"factor must be a number in (0, 1), got {factor!r}")
        if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
            raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}")
        self.max_samples = _check_int("max_samples", max_samples, 4)
        if not (isinstance(min_lr, (int, float)) and min_lr >= 0 and math.isfinite(min_lr)):
            raise ValueError(f"min_lr must be a finite number >= 0, got {min_lr!r}")
        self.factor, self.alpha, self.min_lr, self.min_variance = float(factor), float(alpha), float(min_lr), \
            float(min_variance)
        self.memory: list[tuple[int, torch.Tensor]] = []  # (step, features (n, d)), oldest first
        self.failures = 0
        self.decays = 0

    def due(self, step: int) -> bool:
        """Whether generator step ``step`` (counted from 1) is an evaluation step."""
        return step > 0 and step % self.every == 0

    @property
    def lrs(self) -> list[float]:
        """The current learning rate of every param group of every optimiser."""
        return [g["lr"] for opt in self.optimizers for g in opt.param_groups]

    def _decay(self) -> None:
        for opt in self.optimizers:
            for g in opt.param_groups:
                g["lr"] = max(g["lr"] * self.factor, self.min_lr)
        self.decays += 1

    def update(self, step: int, real_features, sample_features) -> dict:
        """One evaluation at ``step``: test, maybe decay, update the memory; returns the decision for the metrics log.

        Args:
            step: the generator step (stored with the features; not checked against :meth:`due`).
            real_features: (n, d) features of real data (the same set at every evaluation).
            sample_features: (m, d) features of current generator samples, or a callable returning them.

        Returns:
            dict with ``lr_decision`` (``"filling"``, ``"improved"``, ``"not_improved"`` or ``"decayed"``),
            ``lr_p_value`` (None while filling), ``lr_compared_step`` (the step of the older samples, or None),
            ``lr_failures``, ``lr_decays`` and ``lr`` (the first param group's rate after the decision).

        Raises:
            ValueError / TypeError: features that ``kernelmmd.relative_mmd_test`` rejects (shape, NaN, < 4 points).
        """
        y = sample_features() if callable(sample_features) else sample_features
        y = y.detach()[: self.max_samples].cpu()
        x = real_features.detach()[: self.max_samples].cpu()
        out = {"lr_decision": "filling", "lr_p_value": None, "lr_compared_step": None}
        if len(self.memory) < self.memory_size:
            self.memory.append((int(step), y))
        else:
            z_step, z = self.memory[0]
            dtype = torch.promote_types(x.dtype, torch.promote_types(y.dtype, z.dtype))
            res = kernelmmd.relative_mmd_test(x.to(dtype), y.to(dtype), z.to(dtype), min_variance=self.min_variance)
            out.update(lr_p_value=float(res.p_value), lr_compared_step=z_step, lr_statistic=float(res.statistic))
            if res.p_value > self.alpha:  # no confidence that Y is closer to X than Z is
                self.failures += 1
                if self.failures >= self.patience:
                    self._decay()
                    self.memory = (self.memory + [(int(step), y)])[-self.patience :]
                    self.failures = 0
                    out["lr_decision"] = "decayed"
                else:
                    out["lr_decision"] = "not_improved"
            else:
                self.memory = self.memory[1:] + [(int(step), y)]
                self.failures = 0
                out["lr_decision"] = "improved"
        out.update(lr_failures=self.failures, lr_decays=self.decays, lr=self.lrs[0])
        return out

    def state_dict(self) -> dict:
        """Memory (steps and features), failure and decay counts (optimiser rates live in the optimisers' state)."""
        return {"memory_steps": [s for s, _ in self.memory], "memory": [f for _, f in self.memory],
                "failures": self.failures, "decays": self.decays}

    def load_state_dict(self, state: dict) -> None:
        self.memory = [(int(s), f) for s, f in zip(state["memory_steps"], state["memory"])]
        self.failures = int(state["failures"])
        self.decays = int(state["decays"])


class KIDScheduleCallback:
    """:class:`KIDAdaptiveLR` as a :func:`gan.train.train` callback.

    At each evaluation step it draws ``n_samples`` generator samples (z ~ U[−1, 1]^z_dim from its own RNG, generator
    in eval mode, no gradients), featurises them with ``features`` and calls :meth:`KIDAdaptiveLR.update`; the real
    features are computed once, from ``real_images`` (or, when None, the run's whole in-memory dataset, or for 2-D
    toys ``n_samples`` fresh points). Both optimisers of the run (``run.opt_g``, ``run.opt_c``) are decayed.

    Args:
        features: callable mapping a batch of images in [−1, 1] to (b, d) features (a
            :class:`gan.features.FeatureExtractor`), or None for the flattened samples.
        n_samples: generator samples per evaluation (authors: 2 048).
        real_images: the real reference set, or None (see above).
        batch_size: generation / featurisation batch size.
        seed: seed of the callback's own noise RNG.
        **schedule: arguments of :class:`KIDAdaptiveLR` (every, lookback, patience, factor, alpha, ...).

    The returned dict of an evaluation step is merged into that step's metrics row; the state (schedule memory and
    the RNG) is saved in checkpoints through ``state_dict`` / ``load_state_dict``.
    """

    def __init__(self, features: Callable | None = None, *, n_samples: int = 2048, real_images=None,
                 batch_size: int = 256, seed: int = 0, **schedule):
        self.features = features
        self.n_samples = _check_int("n_samples", n_samples, 4)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.real_images = real_images
        self.real_features = None
        self.rng = torch.Generator().manual_seed(seed)
        self.schedule_args = schedule
        self.schedule: KIDAdaptiveLR | None = None
        self._pending: dict | None = None
        KIDAdaptiveLR([torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)], **schedule)  # validate now

    def _feats(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for i in range(0, x.shape[0], self.batch_size):
            b = x[i : i + self.batch_size]
            f = self.features(b) if self.features is not None else b.flatten(1)
            out.append(f.detach().float().cpu())
        return torch.cat(out)

    def _real(self, run) -> torch.Tensor:
        if self.real_images is not None:
            return self._feats(self.real_images)
        images = getattr(run.data, "images", None)
        if images is not None:  # the in-memory image set of gan.data.Batches (uint8)
            idx = torch.randperm(images.shape[0], generator=self.rng)[: self.n_samples].to(images.device)
            return self._feats(images[idx].float().div(127.5).sub(1.0))
        from .data import toy_sample

        return self._feats(toy_sample(self.n_samples, run.cfg.toy, generator=self.rng))

    @torch.no_grad()
    def _samples(self, run) -> torch.Tensor:
        was = run.G.training
        run.G.eval()
        try:
            out = []
            for i in range(0, self.n_samples, self.batch_size):
                z = run.noise(min(self.batch_size, self.n_samples - i), self.rng)
                out.append(self._feats(run.G(z)))
            return torch.cat(out)
        finally:
            run.G.train(was)

    def _ensure(self, run) -> KIDAdaptiveLR:
        if self.schedule is None:
            self.schedule = KIDAdaptiveLR([run.opt_g, run.opt_c], **self.schedule_args)
            if self._pending is not None:
                self.schedule.load_state_dict(self._pending)
                self._pending = None
        return self.schedule

    def on_step(self, run, step: int) -> dict | None:
        sched = self._ensure(run)
        if not sched.due(step):
            return None
        if self.real_features is None:
            self.real_features = self._real(run)
        return sched.update(step, self.real_features, lambda: self._samples(run))

    def state_dict(self) -> dict:
        sched = self.schedule.state_dict() if self.schedule is not None else self._pending
        return {"schedule": sched, "rng": self.rng.get_state(),
                "real_features": self.real_features}

    def load_state_dict(self, state: dict) -> None:
        self.rng.set_state(state["rng"])
        self.real_features = state.get("real_features")
        if state.get("schedule") is not None:
            if self.schedule is not None:
                self.schedule.load_state_dict(state["schedule"])
            else:
                self._pending = state["schedule"]
