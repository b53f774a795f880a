r"""Kernels optimised for test power (Sutherland et al., ICLR 2017; Liu et al., ICML 2020; SPEC §14):
:func:`optimize_kernel` (gradient ascent on J = MMD²_u / √(V̂ + reg) over a kernel's parameters) and
:func:`optimized_mmd_test` (optimise on a training split, permutation test on the disjoint remainder)."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .. import _range
from .._estimator import block_stats, mmd2_u, mmd2_u_variance, prepare
from .._validate import as_generator, as_samples, check_choice, check_int, check_nonnegative, check_positive
from ..errors import NumericalWarning, user_stacklevel
from ..kernels import ARD, RBF, RQ, DeepKernel, Kernel, Laplacian, MixRBF, MixRQ, MMDDKernel, bandwidth, get_kernel
from ..ops.types import BlockStats
from ._common import MMDTestResult, check_train_fraction
from .permutation import mmd_test

__all__ = ["OptimizedKernel", "OptimizedTestResult", "optimize_kernel", "optimized_mmd_test"]

#: ``optimizer=`` choices
OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}
#: kernel names accepted by :func:`optimize_kernel` (``"rbf"`` / ``"laplacian"`` start from the median heuristic,
#: ``"ard"`` from ℓ_i = the median-heuristic bandwidth for every coordinate)
NAMES = ("rbf", "laplacian", "rq", "mix_rbf", "mix_rq", "ard")


# ------------------------------------------------------------------------------------------------- result types
@dataclass
class OptimizedKernel:
    r"""Outcome of :func:`optimize_kernel`.

    Attributes:
        kernel: the optimised kernel (a new object; tensor parameters detached, a deep kernel's φ a copy), taken
            at ``best_step`` (``keep="best"``) or after the last step (``keep="last"``).
        objective: J(θ_t) = MMD²_u / √(max(V̂, 0) + reg) for t = 0 … steps (t = 0: the starting kernel; entry t
            is evaluated before update t + 1), float64 tensor of shape (steps + 1,) — shorter if stopped early.
        mmd2, variance: MMD²_u and the unbiased variance estimate V̂ at each of those steps, same shape.
        best_step: argmax of ``objective``.
        initial_kernel: the starting kernel, resolved (``sigma="median"`` replaced by its value).
    """

    kernel: Kernel
    objective: torch.Tensor
    mmd2: torch.Tensor
    variance: torch.Tensor
    best_step: int
    initial_kernel: Kernel | None = None


@dataclass
class OptimizedTestResult(MMDTestResult):
    """:class:`MMDTestResult` of :func:`optimized_mmd_test`, plus ``optimization``: the :class:`OptimizedKernel`
    learned on the training split (``kernel`` is its optimised kernel)."""

    optimization: OptimizedKernel | None = field(default=None)


# --------------------------------------------------------------------------------------------- parametrisation
class _Params:
    """Unconstrained leaf tensors θ and the map θ ↦ kernel (positive parameters as exp, ε as a sigmoid).

    ``build()`` returns a kernel whose tensor parameters are differentiable functions of the leaves; ``snapshot()``
    a detached copy (deep kernels: φ deep-copied).
    """

    def __init__(self, kernel: Kernel, dtype: torch.dtype, device: torch.device):
        self.dtype, self.device = dtype, device
        self.leaves: list[torch.Tensor] = []
        self.module = None  # a deep kernel's φ copy (an nn.Module), whose parameters are trained too
        self._build = self._parametrise(kernel, top_level=True)

    def _leaf(self, value) -> torch.Tensor:
        t = torch.as_tensor(value, dtype=self.dtype, device=self.device).detach().clone().requires_grad_(True)
        self.leaves.append(t)
        return t

    def _log(self, value) -> torch.Tensor:
        v = torch.as_tensor(value, dtype=torch.float64).detach()
        return self._leaf(v.log())

    def _parametrise(self, k: Kernel, top_level: bool, scale_free: bool = False) -> Callable[[], Kernel]:
        """``scale_free``: the kernel is an ARD base at unit scale (its σ / σ_r stay fixed: ℓ carries the scale)."""
        if isinstance(k, MMDDKernel):
            phi = self._copy_phi(k.phi)
            ls_phi, ls_q = self._log(_value(k.sigma_phi)), self._log(_value(k.sigma_q))
            eps = torch.as_tensor(_value(k.eps), dtype=torch.float64)
            logit = self._leaf((eps / (1 - eps)).log())
            return lambda: MMDDKernel(phi, sigma_phi=ls_phi.exp(), sigma_q=ls_q.exp(), eps=torch.sigmoid(logit))
        if isinstance(k, ARD):
            ell = self._log(k.lengthscales.detach())
            top = self._parametrise(k.top, top_level=False, scale_free=True)
            return lambda: ARD(ell.exp(), base=top())
        if isinstance(k, DeepKernel):
            phi = self._copy_phi(k.phi)
            top = self._parametrise(k.top, top_level=False)
            return lambda: DeepKernel(phi, top())
        if type(k) in (RBF, Laplacian):
            if scale_free:
                return lambda: k
            s = self._log(_value(k.sigma))
            return lambda: type(k)(s.exp())
        if type(k) is MixRBF:
            if scale_free:
                return lambda: k
            ls = self._log(torch.tensor([_value(s) for s in k.sigmas], dtype=torch.float64))
            return lambda: MixRBF(list(ls.exp().unbind()))
        if type(k) is RQ:
            a = self._log(_value(k.alpha))
            return lambda: RQ(a.exp())
        if type(k) is MixRQ:
            la = self._log(torch.tensor([_value(a) for a in k.alphas], dtype=torch.float64))
            return lambda: MixRQ(list(la.exp().unbind()))
        if top_level:
            raise TypeError(
                f"kernel must be one of {list(NAMES)}, or an RBF, Laplacian, RQ, MixRBF, MixRQ, ARD, DeepKernel or "
                f"MMDDKernel object (kernels with parameters to optimise), got {k!r}"
            )
        return lambda: k  # a deep kernel's fixed top (e.g. Linear): only φ is trained

    def _copy_phi(self, phi):
        if isinstance(phi, torch.nn.Module):
            phi = copy.deepcopy(phi)
            self.module = phi
            self.leaves.extend(p for p in phi.parameters() if p.requires_grad)
        return phi

    def build(self) -> Kernel:
        return self._build()

    def snapshot(self) -> Kernel:
        """The current kernel with detached parameters and (deep kernels) a frozen copy of φ."""
        with torch.no_grad():
            k = self._build()
        k = k._map_tensors(lambda v: v.detach().clone())
        if self.module is not None:
            phi = copy.deepcopy(self.module)
            for p in phi.parameters():
                p.requires_grad_(False)
            k = copy.copy(k)
            vars(k)["phi"] = phi
        return k


def _value(v) -> float:
    return float(v.detach()) if isinstance(v, torch.Tensor) else float(v)


def _start(kernel, xt: torch.Tensor, yt: torch.Tensor) -> Kernel:
    """The starting kernel, its data-dependent parameters resolved on the pooled training sample."""
    if isinstance(kernel, str):
        if kernel not in NAMES:
            raise ValueError(f"kernel must be one of {list(NAMES)} or a Kernel object, got {kernel!r}")
        if kernel in ("rbf", "laplacian"):
            kernel = get_kernel(kernel, sigma="median")
        elif kernel == "ard":
            d = xt[0].numel()
            sigma = bandwidth(xt.reshape(len(xt), -1).detach(), yt.reshape(len(yt), -1).detach(), "median")
            return ARD(torch.full((d,), sigma, dtype=torch.float64))
        else:
            kernel = get_kernel(kernel)
    elif not isinstance(kernel, Kernel):
        raise TypeError(f"kernel must be a kernel name (str) or a Kernel object, got {type(kernel).__name__}")
    if isinstance(kernel, MMDDKernel):
        return kernel
    if isinstance(kernel, DeepKernel):
        with torch.no_grad():
            fx, fy = kernel.features(xt, "x"), kernel.features(yt, "y")
        out = copy.copy(kernel)
        vars(out)["top"] = kernel.top.resolve(fx, fy)
        return out
    return kernel.resolve(xt, yt)


# ---------------------------------------------------------------------------------------------------- objective
def _stats(x: torch.Tensor, y: torch.Tensor, k: Kernel, backend) -> BlockStats:
    """Block statistics (with variance terms) of ``k`` on (x, y), differentiable, through the fused ops."""
    if not isinstance(k, MMDDKernel):
        p = prepare([("x", x), ("y", y)], k, {}, min_points=4)
        return block_stats(*p.tensors, p.kernel, variance=True, backend=backend)
    return _mmdd_stats(x, y, k, backend)


def _mmdd_stats(x, y, k: MMDDKernel, backend) -> BlockStats:
    r"""MMD-D's statistics from three unit-scale Gaussian passes: k = w₁G₁ + w₂G₂ (G₁ on [φ/σ_φ, a/σ_q], G₂ on
    a/σ_q) is linear in (G₁, G₂), so sums and row sums combine linearly, and k² = w₁²G₁² + 2w₁w₂G₁G₂ + w₂²G₂² with
    G₁G₂ = G₃ on [φ/σ_φ, √2 a/σ_q] (exponents add), so the squared sums need the plain sums of G₃."""
    px, py = k.gaussian_parts(x, "x"), k.gaussian_parts(y, "y")
    unit = RBF(1.0)
    st = []
    for j, (fx, fy) in enumerate(zip(px, py)):
        ts, kk, _ = _range.compute((fx, fy), unit, what="features")
        st.append(block_stats(*ts, kk, variance=j < 2, backend=backend))
    s1, s2, s3 = st
    w1, w2 = k.weights()

    def lin(a, b):
        return w1 * a + w2 * b

    return BlockStats(
        n=s1.n, m=s1.m,
        sxx=lin(s1.sxx, s2.sxx), syy=lin(s1.syy, s2.syy), sxy=lin(s1.sxy, s2.sxy),
        dxx=lin(s1.dxx, s2.dxx), dyy=lin(s1.dyy, s2.dyy),
        rxx=lin(s1.rxx, s2.rxx), ryy=lin(s1.ryy, s2.ryy), rxy=lin(s1.rxy, s2.rxy), cxy=lin(s1.cxy, s2.cxy),
        qxx=w1 * w1 * s1.qxx + 2 * w1 * w2 * s3.sxx + w2 * w2 * s2.qxx,
        qyy=w1 * w1 * s1.qyy + 2 * w1 * w2 * s3.syy + w2 * w2 * s2.qyy,
        qxy=w1 * w1 * s1.qxy + 2 * w1 * w2 * s3.sxy + w2 * w2 * s2.qxy,
    )


def _criterion(x, y, kernel: Kernel, *, reg: float = 1e-8, backend="auto"):
    r"""(J, MMD²_u, V̂) for one kernel on (x, y), differentiable (tensors): J = MMD²_u / √(max(V̂, 0) + reg), V̂
    the exactly unbiased variance estimate (``mmd2_variance_unbiased``'s). Inputs already validated, n, m ≥ 4."""
    st = _stats(x, y, kernel, backend)
    mmd2, var = mmd2_u(st), mmd2_u_variance(st)
    return mmd2 / (var.clamp_min(0.0) + reg).sqrt(), mmd2, var


# ----------------------------------------------------------------------------------------------------- optimise
def optimize_kernel(
    x,
    y,
    kernel="rbf",
    *,
    steps: int = 200,
    lr: float = 0.05,
    reg: float = 1e-8,
    optimizer: str = "adam",
    batch_size: int | None = None,
    keep: str = "best",
    seed=None,
    backend="auto",
    callback: Callable[[int, float], None] | None = None,
) -> OptimizedKernel:
    r"""Learn a kernel's parameters by maximising the test-power criterion (Sutherland et al. 2017, SPEC §14).

    .. math::
        J(\theta) = \frac{\mathrm{MMD}^2_u(X, Y; k_\theta)}{\sqrt{\max(\hat V_\theta, 0) + \text{reg}}}

    The asymptotic power of the permutation test is :math:`\Phi(\sqrt{N}\,\mathrm{MMD}^2/\sqrt{V} - c_\alpha /
    (\sqrt{N}\sqrt{V}))`, so for large samples maximising J maximises power. V̂ is the exactly unbiased variance
    estimate of :func:`~kernelmmd.mmd2_variance_unbiased` (moments of the Hoeffding decomposition, valid for any
    n, m ≥ 4, so n ≠ m needs no subsampling), computed with MMD²_u from one fused ``block_stats`` pass per step
    (no n × m matrix above ``Auto.dense_max_pairs``; any backend) and differentiated by autograd.

    Parameters (θ, unconstrained; each step is one ``optimizer`` update of −J):

    * RBF / Laplacian: log σ; MixRBF: log σ_r; RQ: log α; MixRQ: log α_r;
    * :class:`~kernelmmd.ARD`: log ℓ_i (and the base's log α / α_r; σ of the base stays 1: ℓ carries the scale);
    * :class:`~kernelmmd.DeepKernel`: φ's parameters (a deep copy of the ``nn.Module``; those with
      ``requires_grad``) and the top kernel's as above;
    * :class:`~kernelmmd.MMDDKernel`: φ's parameters, log σ_φ, log σ_q and logit ε (ε = sigmoid, so ε ∈ (0, 1));
      its statistics come from three fused unit-scale RBF passes.

    The user's kernel (and φ) is never modified. Sutherland et al. use reg = 1e-8 (the ``min_variance`` of
    :func:`select_kernel`); J is at most ≈ MMD²/√reg when V̂ ≈ 0, so keep reg well below the typical V̂.

    Args:
        x: (n, d) samples of P (any (n, ...) shape a deep kernel's φ takes), y: (m, d) samples of Q, n, m ≥ 4.
        kernel: ``"rbf"`` / ``"laplacian"`` (start at the median heuristic), ``"rq"``, ``"mix_rbf"``,
            ``"mix_rq"`` (default parameters), ``"ard"`` (ℓ_i = median heuristic for all i, RBF base) or a kernel
            object of the types above (``sigma="median"`` resolved on the pooled training sample).
        steps: number of updates ≥ 0. lr: learning rate > 0. reg: ≥ 0, added to V̂.
        optimizer: ``"adam"`` or ``"sgd"``.
        batch_size: None (full batch: every step uses all points) or an int ≥ 4: each step uses a fresh random
            subset of min(batch_size, n) points of x and min(batch_size, m) of y (stochastic ascent; J is then a
            minibatch estimate, so ``keep="last"`` is usually the better choice).
        keep: ``"best"`` (the parameters with the largest J seen, J evaluated at θ_0 … θ_steps) or ``"last"``.
        seed: int ≥ 0, CPU ``torch.Generator`` or None: the minibatches (unused with the full batch).
        backend: as in :func:`~kernelmmd.mmd2_unbiased`.
        callback: called as ``callback(step, J)`` after each evaluation of J (step 0 … steps).

    Returns:
        :class:`OptimizedKernel`: the optimised kernel (new object, parameters detached) and the history of J,
        MMD²_u and V̂. If J becomes NaN or infinite the optimisation stops there (NumericalWarning) and the
        best kernel so far is returned.

    Raises:
        TypeError, ValueError: bad inputs (shapes, NaN, fewer than 4 points), a kernel without parameters to
        optimise (Energy, Linear, Poly, RBFBounded), a criterion J that is not finite for the starting kernel,
        ``steps`` / ``batch_size`` not an int in range, ``lr`` ≤ 0,
        ``reg`` < 0, unknown ``optimizer`` or ``keep``, non-callable ``callback``.

    Example:
        >>> import torch, kernelmmd
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(200, 5, generator=g, dtype=torch.float64)
        >>> y = torch.randn(200, 5, generator=g, dtype=torch.float64)
        >>> y[:, 0] += 1.0  # only coordinate 0 differs
        >>> res = kernelmmd.optimize_kernel(x, y, "ard", steps=100, lr=0.1)
        >>> int(res.kernel.lengthscales.argmin())
        0
        >>> bool(res.objective[res.best_step] > res.objective[0])
        True
    """
    xt, yt, _ = _check_inputs(x, y, kernel)
    steps, lr, reg, batch_size = _check_training(steps, lr, reg, optimizer, keep, batch_size)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    gen = as_generator(seed) if batch_size is not None else None
    return _optimize(xt, yt, kernel, steps, lr, reg, optimizer, batch_size, keep, gen, backend, callback)


def _check_training(steps, lr, reg, optimizer, keep, batch_size) -> tuple[int, float, float, int | None]:
    """The optimisation arguments of :func:`optimize_kernel` and :func:`optimized_mmd_test`: (steps, lr, reg,
    batch_size) checked and converted (ints, floats; batch_size None or ≥ 4)."""
    steps = check_int("steps", steps, minimum=0)
    check_positive("lr", lr)
    check_nonnegative("reg", reg)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_choice("keep", keep, ("best", "last"))
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, minimum=4)
    return steps, float(lr), float(reg), batch_size


def _check_inputs(x, y, kernel):
    deep = isinstance(kernel, DeepKernel)
    s = as_samples(("x", x), ("y", y), min_points=4, any_shape=deep)
    xt, yt = s.tensors
    if xt.dtype in (torch.float16, torch.bfloat16):
        xt, yt = xt.float(), yt.float()
    return xt, yt, s.numpy


def _optimize(xt, yt, kernel, steps, lr, reg, optimizer, batch_size, keep, gen, backend, callback):
    k0 = _start(kernel, xt, yt)
    params = _Params(k0, xt.dtype, xt.device)
    if not params.leaves:
        raise ValueError(f"kernel {k0!r} has no trainable parameters (φ has none that require grad)")
    opt = OPTIMIZERS[optimizer](params.leaves, lr=lr)
    n, m = xt.shape[0], yt.shape[0]
    hist: list[tuple[float, float, float]] = []
    best, best_kernel = -math.inf, None
    for step in range(steps + 1):
        xb, yb = xt, yt
        if batch_size is not None:
            xb = xt[torch.randperm(n, generator=gen)[:batch_size].to(xt.device)]
            yb = yt[torch.randperm(m, generator=gen)[:batch_size].to(yt.device)]
        opt.zero_grad(set_to_none=True)
        j, mmd2, var = _criterion(xb, yb, params.build(), reg=reg, backend=backend)
        jv = float(j.detach())
        if not math.isfinite(jv) and step == 0:
            raise ValueError(
                f"optimize_kernel: the criterion J is {jv} for the starting kernel {k0!r} on these inputs "
                f"(MMD²_u = {float(mmd2.detach())}, V̂ = {float(var.detach())}); rescale the inputs, choose other "
                "starting parameters or raise reg"
            )
        if not math.isfinite(jv):
            warnings.warn(
                f"optimize_kernel: the criterion J is {jv} at step {step} (MMD²_u = {float(mmd2.detach())}, "
                f"V̂ = {float(var.detach())}); stopped there, keeping the best kernel of steps 0..{step - 1}. Lower "
                "lr, raise reg, or rescale the inputs",
                NumericalWarning,
                stacklevel=user_stacklevel(),
            )
            break
        hist.append((jv, float(mmd2.detach()), float(var.detach())))
        if keep == "last" or jv > best:
            best, best_kernel = jv, params.snapshot()
        if callback is not None:
            callback(step, jv)
        if step < steps:
            (-j).backward()
            opt.step()
    h = torch.tensor(hist, dtype=torch.float64).reshape(-1, 3)
    best_step = len(hist) - 1 if keep == "last" else int(torch.argmax(h[:, 0]))
    return OptimizedKernel(best_kernel, h[:, 0], h[:, 1], h[:, 2], best_step, initial_kernel=k0)


# --------------------------------------------------------------------------------------------------------- test
def optimized_mmd_test(
    x,
    y,
    kernel="ard",
    *,
    train_fraction: float = 0.5,
    steps: int = 200,
    lr: float = 0.05,
    reg: float = 1e-8,
    optimizer: str = "adam",
    batch_size: int | None = None,
    keep: str = "best",
    n_permutations: int = 1000,
    seed=None,
    backend="auto",
) -> OptimizedTestResult:
    r"""Split test with an optimised kernel (Sutherland et al. 2017; Liu et al. 2020): learn, then test.

    Both samples are shuffled (``seed``); the first ⌊train_fraction · n⌋ points of x and ⌊train_fraction · m⌋ of
    y train the kernel with :func:`optimize_kernel` (maximising MMD²_u / √(V̂ + reg)); :func:`mmd_test` with that
    fixed kernel then tests the remaining points only. The kernel is a function of the training points alone,
    which are independent of the test points, so the permutation test keeps its level exactly (testing on the
    training points would not). An MMD-D kernel is tested by the dense ``"torch"`` backend when ``backend="auto"``
    (its top kernel has no fused form; see :class:`~kernelmmd.MMDDKernel`); its training stays fused.

    Args:
        x, y: samples (n, d), (m, d) (any (n, ...) shape a deep kernel takes); m ≠ n allowed.
        kernel: as in :func:`optimize_kernel` (default ``"ard"``).
        train_fraction: in (0, 1); the training parts need ≥ 4 points per sample, the test parts ≥ 2.
        steps, lr, reg, optimizer, batch_size, keep: as in :func:`optimize_kernel`.
        n_permutations, backend: as in :func:`mmd_test`. seed: fixes the split, the minibatches and the
            permutations (int ≥ 0, CPU ``torch.Generator`` or None).

    Returns:
        :class:`OptimizedTestResult`: the test on the held-out points (``n``, ``m`` their sizes), ``kernel`` the
        optimised kernel and ``optimization`` its :class:`OptimizedKernel` (history of J).

    Raises:
        TypeError, ValueError: as :func:`optimize_kernel` and :func:`mmd_test`; ``train_fraction`` outside (0, 1)
        or leaving too few points on either side.

    Example:
        >>> import torch, kernelmmd
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(200, 10, generator=g, dtype=torch.float64)
        >>> y = torch.randn(200, 10, generator=g, dtype=torch.float64)
        >>> y[:, :2] += 0.7
        >>> res = kernelmmd.optimized_mmd_test(x, y, "ard", steps=50, lr=0.1, n_permutations=200, seed=0)
        >>> res.n, res.m, res.reject(0.05)
        (100, 100, True)
    """
    xt, yt, numpy_in = _check_inputs(x, y, kernel)
    check_train_fraction(train_fraction)
    n, m = xt.shape[0], yt.shape[0]
    n_tr, m_tr = int(float(train_fraction) * n), int(float(train_fraction) * m)
    if min(n_tr, m_tr) < 4 or n - n_tr < 2 or m - m_tr < 2:
        raise ValueError(
            f"train_fraction = {train_fraction} splits (n={n}, m={m}) into ({n_tr}, {m_tr}) training and "
            f"({n - n_tr}, {m - m_tr}) test points; training needs at least 4 per sample, testing 2"
        )
    B = check_int("n_permutations", n_permutations, minimum=1)
    steps, lr, reg, batch_size = _check_training(steps, lr, reg, optimizer, keep, batch_size)
    gen = as_generator(seed)
    px, py = torch.randperm(n, generator=gen).to(xt.device), torch.randperm(m, generator=gen).to(yt.device)
    opt = _optimize(xt[px[:n_tr]], yt[py[:m_tr]], kernel, steps, lr, reg, optimizer, batch_size, keep, gen,
                    backend, None)
    k = opt.kernel
    test_backend = "torch" if isinstance(k, MMDDKernel) and backend == "auto" else backend
    res = mmd_test(xt[px[n_tr:]], yt[py[m_tr:]], k, n_permutations=B, seed=gen, backend=test_backend)
    null = res.null_samples.numpy() if numpy_in and isinstance(res.null_samples, torch.Tensor) else res.null_samples
    return OptimizedTestResult(
        statistic=res.statistic, p_value=res.p_value, kernel=k, method=res.method, n=res.n, m=res.m,
        null_samples=null, n_permutations=B, optimization=opt,
    )
