"""Host-side maths that every backend shares: written once here, used by :mod:`.reference`, :mod:`.tiled`,
:mod:`.keops` and :mod:`.triton` (whose ``@triton.jit`` twins live in :mod:`.triton._tiles`).

* ``precision`` values (:data:`PRECISIONS`);
* the energy kernel's norm terms: k(a, b) = ‖a‖ + ‖b‖ − ‖a − b‖, whose ‖a‖ + ‖b‖ part every fused backend adds in
  torch (:func:`energy_norm_mv`, O((n + m) B)) and whose gradient Σ_j w_ij a_i / ‖a_i‖ (:func:`unit_rows`) too;
* centring before t = ‖a‖² + ‖b‖² − 2aᵀb (:func:`centres`, :func:`pooled_mean`);
* the close-pair rule of the √t kernels (:func:`close_threshold`, with :data:`kernelmmd.kernels.CLOSE`);
* refusing a second derivative (:class:`Refuse`, :func:`refuse`).
"""

from __future__ import annotations

import torch

from ..kernels import CLOSE, Kernel, RadialKernel, safe_sqrt

__all__ = ["PRECISIONS", "check_precision", "row_norms", "unit_rows", "energy_norm_mv", "centres", "pooled_mean",
           "close_threshold", "Refuse", "refuse"]

#: values accepted by ``precision`` (the triton backend's products: exact fp32, TF32, split TF32)
PRECISIONS = ("ieee", "tf32", "tf32x3")


def check_precision(precision: str) -> None:
    """Raises ValueError unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")


# -------------------------------------------------------------------------------------------------- energy kernel


def row_norms(a: torch.Tensor) -> torch.Tensor:
    """‖a_i‖ (n,) in a's dtype; differentiable, with gradient 0 at a zero row."""
    return safe_sqrt((a * a).sum(1))


def unit_rows(a: torch.Tensor) -> torch.Tensor:
    """a_i / ‖a_i‖ (n, d) in a's dtype, 0 for a zero row: ∇‖a‖, the gradient of the energy kernel's norm term."""
    nrm = row_norms(a)[:, None]  # (n, 1)
    return torch.where(nrm > 0, a / nrm.clamp_min(1e-300), torch.zeros_like(a))


def energy_norm_mv(x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Σ_j (‖x_i‖ + ‖y_j‖) v_jb in float64, (n,) for v (m,) or (n, B) for v (m, B): the norm terms of the energy
    kernel's K(x, y)·v (the fused passes compute the radial part −‖x_i − y_j‖ only). Differentiable."""
    vd = v.double()
    xn, yn = row_norms(x.double()), row_norms(y.double())  # (n,), (m,)
    if vd.ndim == 1:
        return xn * vd.sum() + yn @ vd
    return xn[:, None] * vd.sum(0)[None, :] + (yn @ vd)[None, :]


# -------------------------------------------------------------------------------------------------- centring


def centres(kernel: Kernel) -> bool:
    """Whether inputs are centred before t = ‖a‖² + ‖b‖² − 2aᵀb: for translation-invariant radial kernels except
    the √t ones (laplacian, energy), whose close pairs are re-formed from differences of the given points (centred
    points are rounded). Dot-product kernels are not translation invariant."""
    return isinstance(kernel, RadialKernel) and kernel.translation_invariant and not kernel.sqrt_distance


def pooled_mean(*sets: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """(1, d) mean of all rows of ``sets`` (detached, in ``dtype`` or the first set's), without concatenating."""
    dtype = sets[0].dtype if dtype is None else dtype
    total = sets[0].detach().to(dtype).sum(0, keepdim=True)
    for s in sets[1:]:
        total = total + s.detach().to(dtype).sum(0, keepdim=True)
    return total / sum(s.shape[0] for s in sets)  # (1, d)


# -------------------------------------------------------------------------------------------------- close pairs


def close_threshold(an: torch.Tensor, bn: torch.Tensor) -> torch.Tensor:
    """CLOSE · (‖a_i‖² + ‖b_j‖²) from squared norms an (B, 1) or (B,) and bn broadcastable against it: pairs with t
    below it are re-formed from coordinate differences by the √t kernels (see :data:`kernelmmd.kernels.CLOSE`)."""
    return CLOSE * (an + bn)


# -------------------------------------------------------------------------------------------------- autograd


class Refuse(torch.autograd.Function):
    """Pass ``value`` through, linked to ``deps`` in the graph; differentiating it raises ``RuntimeError(message)``.

    For results of backward passes that are not differentiable again: unlike ``@once_differentiable`` (whose error
    node hangs off detached copies), ``torch.autograd.grad(result, x)`` reaches this node and raises — a double
    backward fails loudly instead of returning a silent zero."""

    @staticmethod
    def forward(ctx, message, value, *deps):
        ctx.message = message
        return value.clone()

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(ctx.message)


def refuse(message: str, outs, deps) -> list:
    """``outs`` (tensors or None), each wrapped in :class:`Refuse` linked to those ``deps`` that require grad, when a
    graph is being built (grad mode on, e.g. ``create_graph=True``); unchanged otherwise."""
    deps = [t for t in deps if isinstance(t, torch.Tensor) and t.requires_grad]
    if not torch.is_grad_enabled() or not deps:
        return list(outs)
    return [o if not isinstance(o, torch.Tensor) else Refuse.apply(message, o, *deps) for o in outs]


# -------------------------------------------------------------------------------------------------- quadratic forms


def _kernel_mv(backend: str):
    """``backend``'s ``kernel_mv`` as the dispatch table gives it (imported at call time: the backends import this
    module)."""
    from . import routine

    return routine("kernel_mv", backend)


def quad_forms_via(backend: str, z: torch.Tensor, v: torch.Tensor, kernels, row_sums: bool = False):
    r"""The ``quad_forms`` op from ``backend``'s ``kernel_mv`` (the default of every backend but ``tiled``):
    Q[λ, b] = Σ_ij v_ib k_λ(z_i, z_j) v_jb = v_bᵀ (K_λ v)_b, one ``kernel_mv`` pass of all the columns per kernel;
    with ``row_sums`` also R[λ] = K_λ·1 (one more column, first, in the same pass). float64 on z's device."""
    kernel_mv = _kernel_mv(backend)
    vd = v.double()
    if row_sums:
        vd = torch.cat([torch.ones(vd.shape[0], 1, dtype=vd.dtype, device=vd.device), vd], 1)
    forms, sums = [], []
    for k in kernels:
        kv = kernel_mv(z, z, vd, k).double()  # (N, [1 +] B)
        if row_sums:
            sums.append(kv[:, 0])
            kv = kv[:, 1:]
        forms.append((vd[:, 1:] if row_sums else vd).mul(kv).sum(0))
    q = torch.stack(forms) if forms else torch.zeros(0, v.shape[1], dtype=torch.float64, device=z.device)
    if not row_sums:
        return q
    return q, (torch.stack(sums) if sums else torch.zeros(0, z.shape[0], dtype=torch.float64, device=z.device))


def h_quad_forms_via(backend: str, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, kernels, total: bool = False):
    r"""The ``h_quad_forms`` op from ``backend``'s ``kernel_mv`` (n = m): Σ_ij v_ib v_jb h_λ(i, j) with
    h(i, j) = k(x_i,x_j) + k(y_i,y_j) − k(x_i,y_j) − k(x_j,y_i), as the pooled quadratic form uᵀK_λu,
    u = [v; −v] (one ``kernel_mv`` pass of 2n rows per kernel); with ``total`` also 1ᵀK_λ1 over the pooled sample."""
    z = torch.cat([x, y])
    vd = v.double()
    u = torch.cat([vd, -vd])  # (2n, B)
    if total:
        u = torch.cat([torch.ones(u.shape[0], 1, dtype=u.dtype, device=u.device), u], 1)
    q = quad_forms_via(backend, z, u, kernels)  # (Λ, [1 +] B)
    return (q[:, 1:], q[:, 0]) if total else q
