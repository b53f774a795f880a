r"""MMD² estimators, their variance, and the witness function (SPEC §3–4).

Every estimator returns **MMD²** (the squared discrepancy), never MMD. Names say which statistic:

* :func:`mmd2_unbiased` — the U-statistic MMD²_u (diagonal terms excluded; unbiased; may be negative);
* :func:`mmd2_biased` — the V-statistic MMD²_b = ‖η̂‖²_H (diagonals included; ≥ 0; biased upwards);
* :func:`mmd2_block` — the B-test average of per-block MMD²_u (unbiased);
* :func:`mmd2_linear` — the linear-time statistic of Gretton et al. 2012 (unbiased, O(n)).

Inputs: tensors or numpy arrays of shape (n, d) (a 1-D array of shape (n,) is n points in R¹; a
:class:`~kernelmmd.DeepKernel` accepts any (n, ...) input its feature map takes). numpy in → float / numpy out.
float16/bfloat16 inputs are computed in float32; sums are always formed in float64 and the result is returned in
the (float32 or float64) compute dtype. The plumbing (validation, block sums, their combinations) is in
``kernelmmd._estimator``; see docs/ARCHITECTURE.md, "Data flow of one call".
"""

from __future__ import annotations

import warnings

import torch

from . import ops
from ._estimator import block_stats, mmd2_u, mmd2_v, mmd2_variance_h1, prepare, witness_weights
from ._validate import as_samples, check_bool, check_int, check_same_size, to_output
from .errors import NumericalWarning, user_stacklevel
from .kernels import DeepKernel, get_kernel

__all__ = [
    "kernel_matrix",
    "mmd2_unbiased",
    "mmd2_biased",
    "mmd2_block",
    "mmd2_linear",
    "mmd2_and_variance",
    "witness",
    "witness_grad",
    "kernel_means",
]


def kernel_matrix(x, y=None, kernel="rbf", *, backend: str = "auto", **params):
    """Dense kernel matrix K(x, y) (or K(x, x)), shape (n, m), in the input dtype.

    Args:
        x: (n, d) or (n,) samples. y: (m, d) samples, or None for y = x.
        kernel: a kernel name (see :data:`kernelmmd.KERNELS`) or a :class:`~kernelmmd.Kernel`.
        backend: accepted like every estimator's and validated (a name of :data:`kernelmmd.ops.BACKENDS` or a
            :class:`~kernelmmd.Auto`); the matrix itself is always formed by the dense torch formulas of
            :meth:`Kernel.matrix` (materialising it is the point of this function).
        **params: the kernel's parameters when given by name (e.g. ``sigma=2.0``).

    Example:
        >>> import torch, kernelmmd
        >>> kernelmmd.kernel_matrix(torch.zeros(3, 2), kernel="rbf", sigma=1.0).shape
        torch.Size([3, 3])
    """
    named = [("x", x)] if y is None else [("x", x), ("y", y)]
    p = prepare(named, kernel, params)
    a = p.tensors[0]
    b = a if y is None else p.tensors[1]
    ops.select_backend(backend, a, b, op="block_stats")  # validated only (see above)
    return to_output(p.out(p.kernel.matrix(a, b)), p.numpy)


def mmd2_unbiased(x, y, kernel="rbf", *, backend: str = "auto", precision: str = "ieee", **params):
    r"""Unbiased estimate MMD²_u (a U-statistic; may be negative).

    .. math::
        \mathrm{MMD}^2_u = \frac{1}{n(n-1)}\sum_{i\ne i'} k(x_i,x_{i'}) + \frac{1}{m(m-1)}\sum_{j\ne j'} k(y_j,y_{j'})
        - \frac{2}{nm}\sum_{i,j} k(x_i,y_j)

    Args:
        x: samples of P, shape (n, d) or (n,), n ≥ 2. y: samples of Q, shape (m, d), m ≥ 2 (m ≠ n is fine).
        kernel: kernel name or :class:`~kernelmmd.Kernel` (default Gaussian ``"rbf"``).
        backend: ``"auto"`` or an explicit backend (see :mod:`kernelmmd.ops`).
        precision: ``"ieee"`` (default: exact fp32 products), or ``"tf32"`` / ``"tf32x3"``: tensor-core products
            (plain / split-precision TF32) on the triton backend only (ValueError elsewhere). Predicted absolute
            error (CPU emulation, ``benchmarks/tf32_emulation.py``, kernel scale 1): ``"tf32"`` ≈ 3·10⁻⁶ (N(0, I)
            data) to 3·10⁻⁵ (MNIST pixels); ``"tf32x3"`` ≈ 10⁻⁹, like ``"ieee"``.
        **params: kernel parameters, e.g. ``sigma=1.0`` or ``sigma="median"``.

    Returns:
        0-d tensor (float for numpy inputs): MMD²_u, differentiable in x, y and tensor kernel parameters.

    Raises:
        TypeError, ValueError: on bad inputs (shape, n < 2, NaN/Inf, dtype/device mismatch, unknown kernel,
        invalid kernel parameters, unknown backend).

    Example:
        >>> import torch, kernelmmd
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(100, 2, generator=g), torch.randn(80, 2, generator=g) + 1
        >>> bool(kernelmmd.mmd2_unbiased(x, y, kernel="rbf", sigma=1.0) > 0)
        True
    """
    p = prepare([("x", x), ("y", y)], kernel, params, min_points=2)
    st = block_stats(*p.tensors, p.kernel, backend=backend, precision=precision)
    return to_output(p.out(mmd2_u(st)), p.numpy)


def mmd2_biased(x, y, kernel="rbf", *, backend: str = "auto", precision: str = "ieee", **params):
    r"""Biased estimate MMD²_b = ‖η̂‖²_H (a V-statistic: diagonal terms included; always ≥ 0).

    .. math::
        \mathrm{MMD}^2_b = \frac{1}{n^2}\sum_{i,i'} k(x_i,x_{i'}) + \frac{1}{m^2}\sum_{j,j'} k(y_j,y_{j'})
        - \frac{2}{nm}\sum_{i,j} k(x_i,y_j)

    Arguments as in :func:`mmd2_unbiased` (n, m ≥ 1).
    """
    p = prepare([("x", x), ("y", y)], kernel, params, min_points=1)
    st = block_stats(*p.tensors, p.kernel, backend=backend, precision=precision)
    return to_output(p.out(mmd2_v(st)), p.numpy)


def mmd2_block(x, y, kernel="rbf", *, block_size: int, backend: str = "auto", return_blocks: bool = False,
               precision: str = "ieee", **params):
    r"""Block estimator (B-test, Zaremba et al. 2013): the mean of MMD²_u over disjoint blocks.

    X and Y (n = m) are split into ⌊n / block_size⌋ consecutive blocks of ``block_size`` points each; a
    remainder of n mod block_size points is left out with a :class:`~kernelmmd.errors.NumericalWarning`. This
    is also the estimator obtained when several GPUs each compute MMD²_u on their own batch and average.

    Args:
        block_size: points per block from each sample, 2 ≤ block_size ≤ n.
        return_blocks: also return the per-block values (shape (b,)), whose spread gives the B-test's variance.
    """
    return_blocks = check_bool("return_blocks", return_blocks)
    p = prepare([("x", x), ("y", y)], kernel, params, min_points=2)
    xt, yt = p.tensors
    check_same_size(xt, yt, "mmd2_block")
    bs = check_int("block_size", block_size, minimum=2)
    n = xt.shape[0]
    if bs > n:
        raise ValueError(f"block_size must be <= n = {n}, got {bs}")
    nb = n // bs
    if n % bs:
        warnings.warn(
            f"mmd2_block: n = {n} is not a multiple of block_size = {bs}; the last {n % bs} points are ignored",
            NumericalWarning,
            stacklevel=user_stacklevel(),
        )
    blocks = [(xt[b * bs : (b + 1) * bs], yt[b * bs : (b + 1) * bs]) for b in range(nb)]  # (bs, d) each
    vals = torch.stack([mmd2_u(block_stats(xb, yb, p.kernel, backend=backend, precision=precision))
                        for xb, yb in blocks])  # (b,)
    est = p.out(vals.mean())
    if return_blocks:
        return to_output(est, p.numpy), to_output(p.out(vals), p.numpy)
    return to_output(est, p.numpy)


def mmd2_linear(x, y, kernel="rbf", *, return_variance: bool = False, backend: str = "auto", **params):
    r"""Linear-time unbiased estimate (Gretton et al. 2012, Lemma 14), O(n) time and memory.

    .. math::
        \mathrm{MMD}^2_l = \frac{2}{n}\sum_{i=1}^{n/2} h(x_{2i-1}, y_{2i-1}, x_{2i}, y_{2i}),\quad
        h = k(x,x') + k(y,y') - k(x,y') - k(x',y)

    Needs n = m ≥ 2; with n odd the last point of each sample is left out. ``return_variance=True`` also returns
    the estimated variance of the statistic, var(h) / (n/2) (for the normal-approximation test).

    ``backend`` is accepted like every estimator's and validated (a name of :data:`kernelmmd.ops.BACKENDS` or a
    :class:`~kernelmmd.Auto`), but the 2n kernel values are O(n) elementwise work that no fused op exists for:
    they are computed directly (:meth:`Kernel.pairwise`, torch) on every backend.
    """
    return_variance = check_bool("return_variance", return_variance)
    p = prepare([("x", x), ("y", y)], kernel, params, min_points=2)
    xt, yt = p.tensors
    check_same_size(xt, yt, "mmd2_linear")
    ops.select_backend(backend, xt, yt, op="block_stats")  # validated only (see above)
    half = xt.shape[0] // 2
    x1, x2 = xt[0 : 2 * half : 2], xt[1 : 2 * half : 2]  # (n/2, d) each
    y1, y2 = yt[0 : 2 * half : 2], yt[1 : 2 * half : 2]
    k = p.kernel
    h = k.pairwise(x1, x2, "xx") + k.pairwise(y1, y2, "yy") - k.pairwise(x1, y2, "xy") - k.pairwise(x2, y1, "xy")
    h = h.double()  # (n/2,)
    est = h.mean()
    if not return_variance:
        return to_output(p.out(est), p.numpy)
    var = h.var(unbiased=True) / half if half > 1 else torch.zeros((), dtype=h.dtype, device=h.device)
    return to_output(p.out(est), p.numpy), to_output(p.out(var), p.numpy)


def kernel_means(x, y, kernel="rbf", *, unbiased: bool = True, backend: str = "auto", precision: str = "ieee",
                 **params):
    r"""The three kernel means (E k(x, x'), E k(y, y'), E k(x, y)) that every MMD-type loss combines.

    With ``unbiased=True`` the within-sample means exclude the diagonal (U-statistics, n, m ≥ 2); otherwise they
    include it (V-statistics). For :class:`~kernelmmd.RBFBounded` each block uses its own bound, which is how the
    repulsive and bounded GAN losses of SPEC §7 are built (e.g. ``λ·kxx − (λ−1)·kxy − kyy``).

    Returns:
        ``(kxx, kyy, kxy)``: three 0-d tensors (floats for numpy inputs), differentiable.
    """
    unbiased = check_bool("unbiased", unbiased)
    p = prepare([("x", x), ("y", y)], kernel, params, min_points=2 if unbiased else 1)
    st = block_stats(*p.tensors, p.kernel, backend=backend, precision=precision)
    n, m = st.n, st.m
    if unbiased:
        kxx, kyy = st.sxx / (n * (n - 1)), st.syy / (m * (m - 1))
    else:
        kxx, kyy = (st.sxx + st.dxx) / (n * n), (st.syy + st.dyy) / (m * m)
    kxy = st.sxy / (n * m)
    return tuple(to_output(p.out(v), p.numpy) for v in (kxx, kyy, kxy))


def mmd2_and_variance(x, y, kernel="rbf", *, backend: str = "auto", precision: str = "ieee", **params):
    r"""MMD²_u and the estimate of its variance under H1 of Sutherland et al. 2017 (SPEC §3), for n = m.

    The variance is the ``_mmd2_and_variance`` estimator of the opt-mmd reference, built from one pass of block
    statistics (row sums and sums of squared entries). It is not exactly unbiased at small m: measured on two 2-D
    Gaussians its mean is ≈0.67× the Monte Carlo variance at m = 12, 0.90× at m = 50 and 0.93× at m = 200. The
    MMD²_u returned excludes the diagonal (unlike the TensorFlow copy in the GAN repositories).

    Returns:
        ``(mmd2, variance)``, two 0-d tensors (floats for numpy inputs), both differentiable. The test-power
        criterion of opt-mmd is ``mmd2 / sqrt(max(variance, eps))``.
    """
    p = prepare([("x", x), ("y", y)], kernel, params, min_points=2)
    xt, yt = p.tensors
    check_same_size(xt, yt, "mmd2_and_variance")
    st = block_stats(xt, yt, p.kernel, variance=True, backend=backend, precision=precision)
    return to_output(p.out(mmd2_u(st)), p.numpy), to_output(p.out(mmd2_variance_h1(st)), p.numpy)


def witness(x, y, t, kernel="rbf", *, backend: str = "auto", **params):
    r"""Empirical witness function :math:`\hat\eta(t) = \frac1n\sum_i k(x_i, t) - \frac1m\sum_j k(y_j, t)`.

    The optimal MMD critic is η̂ / ‖η̂‖_H, and ‖η̂‖²_H = MMD²_b. Kernel parameters are resolved on (x, y).

    Args:
        t: query points, shape (T, d) or (T,).

    Returns:
        shape (T,), in the input dtype.
    """
    p = prepare([("x", x), ("y", y), ("t", t)], kernel, params)
    xt, yt, tt = p.tensors
    s, w = witness_weights(xt, yt)
    return to_output(p.out(ops.dispatch("kernel_mv", backend, tt, s)(tt, s, w, p.kernel)), p.numpy)


def _deep_witness_grad(x, y, t, k: DeepKernel, backend: str):
    """``witness_grad`` for K∘φ: the top kernel's fused gradient at φ(t), pulled back through φ by one VJP."""
    s = as_samples(("x", x), ("y", y), ("t", t), any_shape=True)
    xt, yt, tt = s.tensors
    keep_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        tq = tt if tt.requires_grad else tt.detach().requires_grad_(True)
        ft = k.features(tq, "t")
        with torch.set_grad_enabled(keep_graph):
            fx, fy = k.features(xt, "x"), k.features(yt, "y")
        g = witness_grad(fx, fy, ft, k.top, backend=backend)  # (T, s), differentiable in ft when keep_graph
        (out,) = torch.autograd.grad(ft, tq, grad_outputs=g.to(ft.dtype), create_graph=keep_graph)
    if out.dtype in (torch.float16, torch.bfloat16):
        out = out.float()  # half precision inputs give float32 results, as everywhere
    return to_output(out if keep_graph else out.detach(), s.numpy)


def witness_grad(x, y, t, kernel="rbf", *, backend: str = "auto", **params):
    r"""Gradient of the witness :math:`\nabla_t\hat\eta(t)` at query points (SPEC §4), in the input space of ``t``.

    For a deep kernel :math:`k = K\circ\varphi` this is the chain rule
    :math:`\nabla_t\hat\eta(t) = J_\varphi(t)^\top\,\nabla_a\hat\eta_K(a)\big|_{a=\varphi(t)}`: the feature-space
    gradient comes from the fused ``kernel_grad_mv`` product, and one vector–Jacobian product through φ maps it back
    (φ must act on each row independently, e.g. a network with BatchNorm in eval mode). Under grad mode the result is
    differentiable (with respect to x, y, t and φ's parameters), as a gradient penalty needs.

    Needs a differentiable kernel (at coincident points the laplacian and energy kernels use the zero subgradient).

    Args:
        x: (n, d) samples of P. y: (m, d) samples of Q. t: (T, d) query points (for a deep kernel: any
            shape (T, ...) that φ accepts, the same as x and y).
        kernel: a kernel name, a :class:`~kernelmmd.Kernel` or a :class:`~kernelmmd.DeepKernel`.
        backend: see :func:`mmd2_unbiased`.

    Returns:
        shape of ``t``: (T, d), or (T, ...) for a deep kernel; in the input dtype.

    Example:
        >>> x, y = torch.randn(100, 3), torch.randn(80, 3) + 1
        >>> kernelmmd.witness_grad(x, y, x[:5], "rbf", sigma=1.0).shape
        torch.Size([5, 3])
    """
    k = get_kernel(kernel, **params)
    if isinstance(k, DeepKernel):
        return _deep_witness_grad(x, y, t, k, backend)
    p = prepare([("x", x), ("y", y), ("t", t)], k, {})
    xt, yt, tt = p.tensors
    s, w = witness_weights(xt, yt)
    return to_output(p.out(ops.dispatch("kernel_grad_mv", backend, tt, s)(tt, s, w, p.kernel)), p.numpy)

