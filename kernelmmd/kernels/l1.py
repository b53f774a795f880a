r"""L1 kernels k(a, b) = g(‖a − b‖₁): :class:`L1Kernel` and the L1 Laplace kernel :class:`L1Laplacian`, with the
L1 distance :func:`l1dist`, the sign products of its gradient (:func:`sign_mv`) and the profile g..g'''.

The L1 distance t = Σ_i |a_i − b_i| is not a function of ‖a − b‖₂, so these kernels are a family of their own for
the backends: t is always a sum of absolute coordinate differences (exact, no ‖a‖² + ‖b‖² − 2aᵀb expansion, no
tensor cores), and the gradient is ∇_a k(a, b) = g'(t) sign(a − b) (sign(0) = 0: the subgradient at ties). k is not
twice differentiable where a coordinate of a − b vanishes: MMD only, never SMMD / GCMMD.
"""

from __future__ import annotations

import torch

from ._base import ProfileKernel, SigmaBandwidth, is_lazy
from .radial import _exp_terms, _finite_max

__all__ = ["L1Kernel", "L1Laplacian", "l1dist", "sign_mv"]

def l1dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""L1 distances :math:`\|x_i - y_j\|_1`, shape (n, m): sums of absolute coordinate differences (exact; no
    matrix-product expansion). Differentiable to any order, gradient Σ_j G_ij sign(x_i − y_j) (0 at ties)."""
    return torch.cdist(x, y, p=1.0)


def sign_mv(a: torch.Tensor, b: torch.Tensor, p: torch.Tensor, cols: bool = False):
    r""":math:`\sum_j p_{ij}\, \mathrm{sign}(a_i - b_j)`, shape (n, d), for a (n, d), b (m, d), p (n, m): the
    gradient of :math:`\sum_{ij} p_{ij} \|a_i - b_j\|_1` in a (sign(0) = 0). With ``cols`` also the gradient in b,
    :math:`-\sum_i p_{ij}\, \mathrm{sign}(a_i - b_j)` of shape (m, d). In p's dtype; differentiable to any order in p
    (a linear map of p; the signs are locally constant, a and b are not differentiated). O(n·m·d) work by ATen's
    ``torch.cdist`` backward (what autograd runs for ``cdist(a, b, p=1)``), O(n·m) memory."""
    a, b = a.detach().to(p.dtype).contiguous(), b.detach().to(p.dtype).contiguous()
    ga = _SignMV.apply(p, a, b)
    return (ga, _SignMV.apply(p.mT, b, a)) if cols else ga  # −Σ_i p_ij sign(a_i − b_j) = Σ_i p_ij sign(b_j − a_i)


class _SignMV(torch.autograd.Function):
    """p ↦ Σ_j p_ij sign(a_i − b_j) (n, d); its adjoint :class:`_SignDir` is its backward (and the reverse)."""

    @staticmethod
    def forward(ctx, p, a, b):
        ctx.save_for_backward(a, b)
        t = torch.cdist(a, b, p=1.0)  # (n, m): an argument of the ATen op (unused by its p = 1 formula)
        return torch.ops.aten._cdist_backward(p.contiguous(), a, b, 1.0, t)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return _SignDir.apply(g, a, b), None, None


class _SignDir(torch.autograd.Function):
    """g ↦ G_ij = Σ_k g_ik sign(a_ik − b_jk) (n, m), the adjoint of :class:`_SignMV`; one (n, m) pass per coordinate
    (reached only by second derivatives through :func:`sign_mv`)."""

    @staticmethod
    def forward(ctx, g, a, b):
        ctx.save_for_backward(a, b)
        out = g.new_zeros(a.shape[0], b.shape[0])
        for k in range(a.shape[1]):
            out += g[:, k, None] * torch.sign(a[:, k, None] - b[None, :, k])
        return out

    @staticmethod
    def backward(ctx, gg):
        a, b = ctx.saved_tensors
        return _SignMV.apply(gg, a, b), None, None


class L1Kernel(ProfileKernel):
    r"""k(a, b) = g(t), t = ‖a − b‖₁. Subclasses define :meth:`profile` (g^{(order)}(t) for order 0..3) and
    :meth:`param_grads` (∂g/∂θ for each scalar parameter of :meth:`scalar_params`).

    Translation invariant; not twice differentiable in the points (∇_a k = g'(t) sign(a − b) jumps where a
    coordinate of a − b changes sign), so SMMD, GCMMD and the derivative blocks refuse it. ``kind_id`` names the
    profile for the Triton twin (:mod:`kernelmmd.ops.triton._profiles`).
    """

    translation_invariant = True
    twice_differentiable = False

    def matrix(self, x, y, block: str = "xy"):
        return self.profile(l1dist(x, y), 0)

    def pairwise(self, a, b, block="xy"):
        return self.profile((a - b).abs().sum(1), 0)


class L1Laplacian(SigmaBandwidth, L1Kernel):
    r"""L1 Laplace kernel :math:`k(a, b) = \exp(-\|a - b\|_1 / \sigma)` (the "laplace" kernel of MMDAgg / MMD-FUSE).

    A product of one-dimensional Laplace kernels, positive definite and characteristic; a function of the L1
    distance t = Σ_i |a_i − b_i|, not of ‖a − b‖₂ (that is :class:`~kernelmmd.Laplacian`). Profile
    :math:`g(t) = e^{-t/\sigma}`, :math:`g^{(o)} = (-1/\sigma)^o g`, :math:`\partial g/\partial\sigma = g\,t/\sigma^2`;
    gradient :math:`\nabla_a k = -\tfrac{k}{\sigma}\,\mathrm{sign}(a - b)` (sign(0) = 0). Not twice differentiable at
    ties: MMD and the tests built on it only (SMMD / GCMMD refuse it).

    Conventions: MMDAgg's jax code uses exp(−d₁/λ) (this kernel with σ = λ); MMD-FUSE uses exp(−√2·d₁/λ)
    (σ = λ/√2).

    Args:
        sigma: bandwidth > 0 (float or scalar tensor; a tensor with ``requires_grad=True`` gets gradients), or
            ``"median"`` / ``"mean"``: the median / mean pairwise **L1** distance of the pooled sample
            (:func:`~kernelmmd.bandwidth` with ``p=1``), resolved at each call.

    Raises:
        ValueError, TypeError: sigma not a number > 0 or a heuristic name.

    Example:
        >>> import torch
        >>> k = L1Laplacian(sigma=2.0)
        >>> float(k.matrix(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, -1.0]])))  # exp(-2/2)
        0.36787944117144233
    """

    name = "l1_laplacian"
    kind_id = 20
    _distance_p = 1  # "median" / "mean": of the pooled L1 distances

    def profile(self, t, order=0):
        self._check_order(order)
        self._require_resolved()
        return self.profiles(t, (order,))[0]

    def profiles(self, t, orders=(0, 1)):
        for o in orders:
            self._check_order(o)
        self._require_resolved()
        return _exp_terms(_coef(self.sigma, t), t, orders)

    def param_grads(self, t):
        self._require_resolved()
        s = self.sigma
        ct = t * _coef(s, t)
        v = ct.exp() * ct * (-1.0 / s)  # g·t/σ², 0 where g underflows (t/σ² alone may overflow first)
        if isinstance(v, torch.Tensor):
            v = torch.nan_to_num(v, nan=0.0)
        return [v]


def _coef(s, t):
    """c = −1/σ of exp(c·t), limited to −(the largest finite value of t's dtype): with a huge 1/σ the product c·t is
    then 0 at t = 0 (g = 1, not 0·inf = NaN) and −inf (g = 0) elsewhere; a tensor σ stays differentiable."""
    big = _finite_max(t)
    if isinstance(s, torch.Tensor):
        return (-1.0 / s).clamp_min(-min(big, _finite_max(s)))
    if is_lazy(s):
        return -1.0 / s
    return -1.0 / s if s * big > 1.0 else -big
