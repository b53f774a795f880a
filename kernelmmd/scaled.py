r"""Scaled MMD (SMMD, SPEC §5): the σ-terms, per-sample Jacobian norms, ``smmd2`` and the paper's GAN losses.

For a measure µ, a kernel k on :math:`\mathbb{R}^d` and λ ≥ 0 (Arbel et al. 2018, Proposition 4),

.. math::
    \sigma^{-2}_{\mu,k,\lambda} = \lambda + \mathbb{E}_\mu k(x, x) + \sum_{i=1}^d \mathbb{E}_\mu\,
    \partial_i\partial_{i+d} k(x, x), \qquad
    \mathrm{SMMD}^2_{\mu,k,\lambda}(P, Q) = \sigma^2_{\mu,k,\lambda}\,\mathrm{MMD}^2_k(P, Q),

and :math:`\|f\|_{S(\mu),k,\lambda} \le \sigma^{-1}_{\mu,k,\lambda}\|f\|_{\mathcal H}` for every f, so
SMMD ≤ GCMMD (:func:`kernelmmd.gcmmd2`) for the same µ, k, λ. E_µ is the mean over the points Z.

Closed forms (SPEC §5), with :math:`J(z) = \nabla\varphi(z) \in \mathbb{R}^{s\times d}` and :math:`a = \varphi(z)`:

* radial k = g(‖a − b‖²) on R^d: λ + g(0) − 2d g'(0) (a constant: SMMD ∝ MMD for a fixed kernel);
* dot k = h(aᵀb) on R^d: λ + E[h(‖z‖²) + d h'(‖z‖²) + h''(‖z‖²) ‖z‖²];
* deep K ∘ φ, radial K: λ + g(0) + 2|g'(0)| E‖J‖²_F;
* deep K ∘ φ, dot K: λ + E[h + h' ‖J‖²_F + h'' ‖Jᵀa‖²] at ‖a‖² (linear K: λ + E[‖φ‖² + ‖J‖²_F], SWGAN).

Only twice-differentiable kernels are accepted (rbf, mix_rbf, rq, mix_rq, linear, poly, or a deep kernel on top of
one): laplacian, energy and rbf_bounded raise ``ValueError``.

The per-sample Jacobian rows of a critic φ assume that φ treats samples independently (no batch norm in training
mode, no cross-sample layers): ``∇_x Σ_n φ_r(x_n)`` then holds every sample's gradient in one backward pass
(``kernelmmd._estimator.features_and_jacobian``, shared with GCMMD; see docs/ARCHITECTURE.md, section "SMMD and GCMMD").
"""

from __future__ import annotations

import torch

from . import _range, ops
from ._deprecation import old_positional_order
from ._estimator import block_stats, check_twice, features_and_jacobian, mmd2_u, mmd2_v, out_dtype
from ._validate import as_samples, check_bool, check_nonnegative, to_output
from .kernels import DeepKernel, Kernel, RadialKernel, get_kernel, phi_features

__all__ = ["jacobian_sqnorm", "sigma2_inv", "smmd2", "smmd_loss", "swgan_loss"]

def _scale_needs_graph(phi, x: torch.Tensor) -> bool:
    """Whether the Jacobian term of a loss can carry gradient: grad mode is on and either ``x`` has a graph or φ is
    not an ``nn.Module`` whose parameters are all frozen. In a generator step (critic ``requires_grad_(False)``, real
    batch without a graph) it cannot, and the double-backward graph is not built."""
    if not torch.is_grad_enabled():
        return False
    if x.requires_grad or not isinstance(phi, torch.nn.Module):
        return True
    return any(p.requires_grad for p in phi.parameters())


def jacobian_sqnorm(phi, x, *, create_graph: bool = True):
    r"""Per-sample squared Frobenius norm of the critic's Jacobian, :math:`\|\nabla\varphi(x_n)\|_F^2`.

    .. math::
        \|\nabla\varphi(x_n)\|_F^2 = \sum_{r=1}^{s}\sum_{i} \bigl(\partial_{x_i}\varphi_r(x_n)\bigr)^2

    One backward pass for a scalar critic (s = 1), s vector-Jacobian products for s > 1. Samples must be
    processed independently by φ (see the module notes). With ``create_graph=True`` (default) the result is
    differentiable in φ's parameters (critic training) and in x.

    Args:
        phi: callable mapping (n, ...) inputs to (n,) or (n, s) outputs (e.g. an ``nn.Module`` critic).
        x: inputs, shape (n, ...), e.g. images (n, C, H, W); tensor or numpy array.
        create_graph: keep the graph of the gradient (needed to train through the norm).

    Returns:
        shape (n,), in φ's output dtype (numpy in → numpy out).

    Raises:
        TypeError: ``phi`` not callable or not returning a tensor; ``x`` not a float tensor/array.
        ValueError: ``x`` empty / NaN / 0-d; ``phi(x)`` not of shape (n,) or (n, s).

    Example:
        >>> import torch
        >>> w = torch.tensor([3.0, 4.0])
        >>> jacobian_sqnorm(lambda x: x @ w, torch.randn(5, 2)).tolist()
        [25.0, 25.0, 25.0, 25.0, 25.0]
    """
    if not callable(phi):
        raise TypeError(f"phi must be callable (e.g. an nn.Module), got {type(phi).__name__}")
    create_graph = check_bool("create_graph", create_graph)
    s = as_samples(("x", x), any_shape=True)
    (xt,) = s.tensors
    _, J = features_and_jacobian(phi, xt, create_graph)
    J = J.to(out_dtype(J))  # a half-precision critic: the squares summed and returned in float32
    return to_output((J * J).sum((1, 2)), s.numpy)


def _sigma2_inv_input(k: Kernel, z: torch.Tensor, lam) -> torch.Tensor:
    """σ⁻² for a kernel on R^d, from its profile (closed forms of SPEC §5); float64 0-d tensor."""
    d = z.shape[1]
    if isinstance(k, RadialKernel):
        t0 = z.new_zeros((), dtype=torch.float64)
        return lam + k.profile(t0, 0) - 2.0 * d * k.profile(t0, 1)
    zz = z.double()
    n2 = (zz * zz).sum(1)  # (M,)
    return lam + (k.profile(n2, 0) + d * k.profile(n2, 1) + k.profile(n2, 2) * n2).mean()


def _sigma2_inv_deep(top: Kernel, a: torch.Tensor, J: torch.Tensor, lam) -> torch.Tensor:
    """σ⁻² for K ∘ φ from features a (M, s) and Jacobians J (M, s, D); float64 0-d tensor."""
    jf = (J.double() ** 2).sum((1, 2))  # (M,)  ‖J‖²_F
    if isinstance(top, RadialKernel):
        t0 = a.new_zeros((), dtype=torch.float64)
        return lam + top.profile(t0, 0) + 2.0 * top.profile(t0, 1).abs() * jf.mean()
    ad = a.double()
    n2 = (ad * ad).sum(1)  # (M,)
    jta = torch.einsum("lsd,ls->ld", J.double(), ad)  # (M, D)  Jᵀa
    return lam + (top.profile(n2, 0) + top.profile(n2, 1) * jf + top.profile(n2, 2) * (jta * jta).sum(1)).mean()


def _check_lam(lam) -> None:
    check_nonnegative("lam", lam)


def sigma2_inv(kernel, z, *, lam=1.0, create_graph: bool = True, backend: str = "auto", **params):
    r"""The SMMD scale :math:`\sigma^{-2}_{\hat\mu,k,\lambda}` of SPEC §5 with µ̂ the empirical measure on Z.

    .. math::
        \sigma^{-2} = \lambda + \frac1M\sum_{l=1}^M\Bigl[k(z_l, z_l)
        + \sum_{i=1}^d \partial_i\partial_{i+d}k(z_l, z_l)\Bigr]

    evaluated by the closed forms of the module notes: for a kernel on R^d from its profile (g(0), g'(0) or
    h, h', h''), for a :class:`~kernelmmd.DeepKernel` K ∘ φ from φ(z), ‖J(z)‖²_F and (dot tops) ‖J(z)ᵀφ(z)‖².

    Args:
        kernel: kernel name, :class:`~kernelmmd.Kernel` or :class:`~kernelmmd.DeepKernel` (twice differentiable).
        z: points of µ̂, shape (M, d) (any (M, ...) for a deep kernel).
        lam: λ ≥ 0 (float or scalar tensor; tensors are differentiated).
        create_graph: for deep kernels, keep the Jacobian's graph (train through σ⁻²).
        backend: accepted like every estimator's and validated (a name of :data:`kernelmmd.ops.BACKENDS` or a
            :class:`~kernelmmd.Auto`); σ⁻² is a closed form of the profile at t = 0 (or an O(M) mean), with no
            pairwise kernel sums, so it is computed directly on every backend.
        **params: kernel parameters when ``kernel`` is a name (``sigma="median"`` is resolved on z).

    Returns:
        0-d tensor (float for numpy z), differentiable in z, tensor kernel parameters, λ and φ's parameters.

    Raises:
        ValueError: λ < 0, a kernel that is not twice differentiable (laplacian, energy, rbf_bounded), bad z.
        TypeError: bad kernel / z types.

    Example:
        >>> import torch
        >>> float(sigma2_inv("rbf", torch.randn(10, 3), lam=0.0, sigma=1.0))  # g(0) - 2 d g'(0) = 1 + 3
        4.0
    """
    k = get_kernel(kernel, **params)
    _check_lam(lam)
    create_graph = check_bool("create_graph", create_graph)
    if isinstance(k, DeepKernel):
        check_twice(k.top, "sigma2_inv")
        s = as_samples(("z", z), any_shape=True)
        (zt,) = s.tensors
        ops.select_backend(backend, zt, op="a_matvec")  # validated only (see above)
        a, J = features_and_jacobian(k.phi, zt, create_graph, "z")
        top = k.top.resolve(a.detach())
        out = _sigma2_inv_deep(top, a, J, lam)  # float64 throughout
        return to_output(_range.Plan(torch.float64, out_dtype(a), "features").result(out), s.numpy)
    s = as_samples(("z", z))
    (zt,) = s.tensors
    ops.select_backend(backend, zt, op="a_matvec")  # validated only (see above)
    if zt.dtype in (torch.float16, torch.bfloat16):
        zt = zt.float()
    k = k.resolve(zt)
    check_twice(k, "sigma2_inv")
    (zt,), k, plan = _range.compute((zt,), k, s.amax[0], orders=(0, 1, 2))
    return to_output(plan.result(_sigma2_inv_input(k, zt, lam)), s.numpy)


_ESTIMATORS = ("biased", "unbiased")


@old_positional_order(
    ("kernel", "z", "lam"),
    lambda args: len(args) > 1,
    "smmd2(x, y, kernel='rbf', *, z=None, lam=1.0, estimator='biased', backend='auto', ...)",
)
def smmd2(x, y, kernel="rbf", *, z=None, lam=1.0, estimator: str = "biased", backend: str = "auto",
          create_graph: bool = True, **params):
    r"""Scaled MMD², :math:`\mathrm{SMMD}^2 = \mathrm{MMD}^2 / \sigma^{-2}_{\hat\mu,k,\lambda}` (SPEC §5).

    .. math::
        \mathrm{SMMD}^2_{\hat\mu,k,\lambda}(\hat P, \hat Q) = \frac{\mathrm{MMD}^2_b(X, Y)}
        {\lambda + \frac1M\sum_l\bigl[k(z_l,z_l) + \sum_i \partial_i\partial_{i+d}k(z_l,z_l)\bigr]}

    **Which MMD².** The default ``estimator="biased"`` uses the V-statistic MMD²_b = ‖η̂‖²_H. That is the exact
    plug-in value of the definition for the empirical P̂, Q̂: :math:`\sup\{E_{\hat P} f - E_{\hat Q} f :
    \sigma^{-1}\|f\|_{\mathcal H} \le 1\}^2 = \sigma^2\|\hat\eta\|^2_{\mathcal H}`. It is therefore ≥ 0 and
    directly comparable with :func:`kernelmmd.gcmmd2`, which is built from the same ‖η̂‖² and the same Z: with
    both, Proposition 4 of Arbel et al. holds exactly for the estimates, ``smmd2 <= gcmmd2``. ``"unbiased"``
    uses MMD²_u instead (unbiased for MMD² up to the data-dependent scale, may be negative; it is what the
    paper's GAN loss :func:`smmd_loss` uses).

    Signature: ``z`` and ``lam`` are keyword-only, as in :func:`kernelmmd.gcmmd2`; the old positional form
    ``smmd2(x, y, kernel, z, lam)`` still works with a ``FutureWarning``.

    Args:
        x: samples of P, (n, d) (any (n, ...) for a deep kernel). y: samples of Q, same feature shape.
        kernel: twice-differentiable kernel name / object, or a :class:`~kernelmmd.DeepKernel`.
        z: points of µ̂, default x (µ = P̂, as in the paper).
        lam: λ ≥ 0 (float or scalar tensor).
        estimator: ``"biased"`` (default) or ``"unbiased"``.
        backend: backend for the MMD² block statistics (see :mod:`kernelmmd.ops`).
        create_graph: for deep kernels, keep the Jacobian's graph (critic training).
        **params: kernel parameters when ``kernel`` is a name (``sigma="median"`` is resolved on (x, y)).

    Returns:
        0-d tensor (float for numpy inputs), differentiable.

    Raises:
        ValueError: λ < 0, unknown estimator, non-twice-differentiable kernel, too few points (2 for
        ``"unbiased"``), mismatched shapes. TypeError: bad argument types.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(50, 2, generator=g), torch.randn(40, 2, generator=g) + 1
        >>> bool(smmd2(x, y, "rbf", sigma=1.0) > 0)
        True
    """
    if estimator not in _ESTIMATORS:
        raise ValueError(f"estimator must be one of {list(_ESTIMATORS)}, got {estimator!r}")
    _check_lam(lam)
    create_graph = check_bool("create_graph", create_graph)
    k = get_kernel(kernel, **params)
    named = [("x", x), ("y", y)] + ([] if z is None else [("z", z)])
    deep = isinstance(k, DeepKernel)
    s = as_samples(*named, min_points=2 if estimator == "unbiased" else 1, any_shape=deep)
    xt, yt = s.tensors[:2]
    stat = mmd2_u if estimator == "unbiased" else mmd2_v
    if deep:
        check_twice(k.top, "smmd2")
        zt = xt if z is None else s.tensors[2]
        az, J = features_and_jacobian(k.phi, zt, create_graph, "x" if z is None else "z")
        ax = az if z is None else phi_features(k.phi, xt, "x")
        ay = phi_features(k.phi, yt, "y")
        if ax.dtype in (torch.float16, torch.bfloat16):
            ax, ay, az = ax.float(), ay.float(), az.float()
        top = k.top.resolve(ax.detach(), ay.detach())
        (ax, ay), top, plan = _range.compute((ax, ay), top, what="features")
        st = block_stats(ax, ay, top, backend=backend)
        out = stat(st) / _sigma2_inv_deep(top, az, J, lam)
        return to_output(plan.result(out), s.numpy)
    ts = s.tensors
    if ts[0].dtype in (torch.float16, torch.bfloat16):
        ts = tuple(t.float() for t in ts)
    xt, yt = ts[:2]
    zt = xt if z is None else ts[2]
    k = k.resolve(xt, yt)
    check_twice(k, "smmd2")
    ts, k, plan = _range.compute(ts, k, max(s.amax))
    xt, yt = ts[:2]
    zt = xt if z is None else ts[2]
    st = block_stats(xt, yt, k, backend=backend)
    out = stat(st) / _sigma2_inv_input(k, zt, lam)
    return to_output(plan.result(out), s.numpy)


def _loss_inputs(phi, x_real, x_fake, min_points: int):
    if not callable(phi):
        raise TypeError(f"phi must be callable (e.g. an nn.Module critic), got {type(phi).__name__}")
    s = as_samples(("x_real", x_real), ("x_fake", x_fake), min_points=min_points, any_shape=True)
    if s.numpy:
        raise TypeError("x_real and x_fake must be torch.Tensors (a GAN loss is differentiated), got numpy arrays")
    return s.tensors


def smmd_loss(phi, x_real, x_fake, *, scale=10.0, kernel="rbf", sigma=1.0, backend: str = "auto"):
    r"""The paper's practical SMMD GAN loss (Arbel et al. 2018, §4; SPEC §5).

    .. math::
        L_{\mathrm{SMMD}} = \frac{\mathrm{MMD}^2_u\bigl(\varphi(X), \varphi(Y)\bigr)}
        {1 + \mathrm{scale}\cdot \hat E_{P}\,\|\nabla\varphi(x)\|_F^2}

    with X = ``x_real`` (µ = P: the Jacobian is taken at the real batch) and Y = ``x_fake``. The critic φ
    *maximises* this loss, the generator *minimises* it. As in the authors' code the critic is differentiated through
    the scale too (no stop-gradient), so the Jacobian is built with ``create_graph`` whenever gradients are enabled —
    except when φ is an ``nn.Module`` whose parameters are all frozen and ``x_real`` has no graph (a generator step
    with ``critic.requires_grad_(False)``): then the scale is a constant for every tensor that can receive a gradient,
    the generator's gradient is the same, and the double-backward graph is skipped.
    The kernel acts on critic outputs (the paper: Gaussian, σ = 1, scalar critic).

    Args:
        phi: critic mapping (n, ...) to (n,) or (n, s) (samples processed independently).
        x_real: real batch (n, ...), n ≥ 2. x_fake: generated batch (m, ...), m ≥ 2, same sample shape.
        scale: the factor in front of the gradient term, ≥ 0 (paper: 10).
        kernel: kernel on critic outputs, a name taking ``sigma`` (``"rbf"``) or a twice-differentiable
            :class:`~kernelmmd.Kernel` object (then ``sigma`` must be left at its default).
        sigma: bandwidth of the named kernel.
        backend: backend for MMD²_u's block statistics.

    Returns:
        0-d tensor, differentiable in φ's parameters and in both batches.

    Raises:
        TypeError: ``phi`` not callable, numpy inputs, ``sigma`` given with a kernel object. ValueError: fewer than
        2 samples, mismatched sample shapes, ``scale`` < 0, a non-twice-differentiable kernel.

    Example:
        >>> import torch
        >>> phi = torch.nn.Linear(4, 1)
        >>> loss = smmd_loss(phi, torch.randn(8, 4), torch.randn(8, 4) + 1)
        >>> (-loss).backward()  # a critic step maximises the loss
    """
    xr, xf = _loss_inputs(phi, x_real, x_fake, 2)
    check_nonnegative("scale", scale)
    if isinstance(kernel, Kernel):
        if not (isinstance(sigma, (int, float)) and float(sigma) == 1.0):
            raise TypeError(f"sigma={sigma!r} was given with a kernel object {kernel!r}; put it in the object instead")
        k = kernel
    else:
        k = get_kernel(kernel, sigma=sigma)
    if isinstance(k, DeepKernel):
        raise TypeError("kernel must act on critic outputs; pass the critic as phi, not a DeepKernel")
    check_twice(k, "smmd_loss")
    fr, J = features_and_jacobian(phi, xr, _scale_needs_graph(phi, xr), "x_real")
    ff = phi_features(phi, xf, "x_fake")
    if fr.dtype in (torch.float16, torch.bfloat16):
        fr, ff = fr.float(), ff.float()
    k = k.resolve(fr.detach(), ff.detach())
    (fr, ff), k, plan = _range.compute((fr, ff), k, what="critic outputs")
    st = block_stats(fr, ff, k, backend=backend)
    jn = (J.double() ** 2).sum((1, 2)).mean()
    return plan.result(mmd2_u(st) / (1.0 + scale * jn))


def swgan_loss(phi, x_real, x_fake, *, scale=10.0):
    r"""The paper's practical SWGAN loss (SMMD with a linear top kernel; Arbel et al. 2018, §4 and App. E).

    .. math::
        L_{\mathrm{SWGAN}} = \frac{\hat E_P\,\varphi(x) - \hat E_Q\,\varphi(y)}
        {\sqrt{1 + \mathrm{scale}\cdot\bigl(\hat E_P|\varphi(x)|^2 + \hat E_P\|\nabla\varphi(x)\|_F^2\bigr)}}

    with the expectations under P over ``x_real`` (µ = P) and under Q over ``x_fake``. The critic maximises, the
    generator minimises; the critic is differentiated through the scale (no stop-gradient); as in
    :func:`smmd_loss`, a frozen ``nn.Module`` critic with a graph-free ``x_real`` skips the double-backward graph.

    Args:
        phi: scalar critic mapping (n, ...) to (n,) or (n, 1).
        x_real: real batch (n, ...). x_fake: generated batch (m, ...).
        scale: factor ≥ 0 (paper: 10).

    Returns:
        0-d tensor, differentiable.

    Raises:
        TypeError: ``phi`` not callable, numpy inputs. ValueError: a critic with s > 1 outputs, ``scale`` < 0,
        mismatched sample shapes.

    Example:
        >>> import torch
        >>> phi = torch.nn.Linear(4, 1)
        >>> loss = swgan_loss(phi, torch.randn(8, 4), torch.randn(8, 4))
        >>> loss.backward()  # a generator step would minimise it
    """
    xr, xf = _loss_inputs(phi, x_real, x_fake, 1)
    check_nonnegative("scale", scale)
    fr, J = features_and_jacobian(phi, xr, _scale_needs_graph(phi, xr), "x_real")
    if fr.shape[1] != 1:
        raise ValueError(
            f"swgan_loss needs a scalar critic (output (n,) or (n, 1)), got outputs of shape {tuple(fr.shape)}"
        )
    ff = phi_features(phi, xf, "x_fake")
    fr64, ff64 = fr[:, 0].double(), ff[:, 0].double()
    denom = 1.0 + scale * ((fr64 * fr64).mean() + (J.double() ** 2).sum((1, 2)).mean())
    return ((fr64.mean() - ff64.mean()) / denom.sqrt()).to(out_dtype(fr))

