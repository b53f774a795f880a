r"""Critic parametrisations that control the spectral norm of each layer (SPEC §8), as ``--sn`` choices.

* ``"sn"`` — spectral normalisation (Miyato et al. 2018): :math:`W / \sigma(W)`, with :math:`\sigma` estimated by
  one step of power iteration per forward pass on the weight reshaped to a matrix (out, in·kh·kw).
* ``"spectral-param"`` — the spectral parametrisation of the SMMD paper's "SN-" models:
  :math:`W = \gamma\, \bar W / \sigma(\bar W)` with a learned scalar :math:`\gamma` (initialised to 1).
* ``"pico"`` — power iteration for convolution (Wang et al., seed 002 App. B.1): the spectral norm of the
  convolution *as a linear map* on feature maps, by power iteration that alternates ``conv2d`` and
  ``conv_transpose2d`` on a feature-map-shaped vector. Linear layers use the matrix power iteration (for them the
  two coincide). This is the layer's true operator norm; seed 002 found it larger than the reshaped-matrix estimate
  in practice (a stronger constraint).
* ``"none"`` — no constraint.

The power-iteration vectors are buffers (saved in checkpoints) updated in place under ``no_grad`` in training
mode only (in float32 also under ``--amp bf16``: autocast is off inside the parametrisation);
:math:`\sigma = u^\top W v` is then differentiated through :math:`W` with :math:`u, v` held fixed (as Miyato et al.),
twice if needed (gradient penalties, Jacobian norms).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["SN_MODES", "SpectralNorm", "spectralize", "spectral_norms"]

SN_MODES = ("none", "sn", "spectral-param", "pico")


def _normalize(v: torch.Tensor, eps: float) -> torch.Tensor:
    return v / v.norm().clamp_min(eps)


class SpectralNorm(nn.Module):
    r"""Parametrisation ``W ↦ γ W / σ(W)`` of a Linear or Conv2d weight (register with
    :func:`torch.nn.utils.parametrize.register_parametrization`, or use :func:`spectralize`).

    Args:
        weight: the layer's weight (shape only is used to size the power-iteration vectors).
        learn_gamma: learn the scalar γ (spectral parametrisation) instead of fixing γ = 1.
        conv: for a Conv2d weight, ``None`` to reshape the kernel to a matrix, or a dict with the convolution's
            ``stride``, ``padding`` and ``input_shape`` (C, H, W) for the PICO operator norm.
        eps: floor on norms.
    """

    def __init__(self, weight: torch.Tensor, *, learn_gamma: bool = False, conv: dict | None = None,
                 eps: float = 1e-12):
        super().__init__()
        self.eps = eps
        self.conv = conv
        self.gamma = nn.Parameter(torch.ones((), dtype=weight.dtype)) if learn_gamma else None
        with torch.no_grad():
            if conv is None:
                out_dim, in_dim = weight.shape[0], weight[0].numel()
                self.register_buffer("u", _normalize(torch.randn(out_dim, dtype=weight.dtype), eps))
                self.register_buffer("v", _normalize(torch.randn(in_dim, dtype=weight.dtype), eps))
            else:
                c, h, w = conv["input_shape"]
                v = _normalize(torch.randn(1, c, h, w, dtype=weight.dtype), eps)
                u = F.conv2d(v, weight, stride=conv["stride"], padding=conv["padding"])
                back = F.conv_transpose2d(u, weight, stride=conv["stride"], padding=conv["padding"])
                self.output_padding = (h - back.shape[2], w - back.shape[3])
                self.register_buffer("u", _normalize(torch.randn_like(u), eps))
                self.register_buffer("v", v)

    def _forward_op(self, weight, v):
        if self.conv is None:
            return weight.reshape(weight.shape[0], -1) @ v  # (out,)
        return F.conv2d(v, weight, stride=self.conv["stride"], padding=self.conv["padding"])  # (1, Cout, H', W')

    def _adjoint_op(self, weight, u):
        if self.conv is None:
            return weight.reshape(weight.shape[0], -1).T @ u  # (in,)
        return F.conv_transpose2d(u, weight, stride=self.conv["stride"], padding=self.conv["padding"],
                                  output_padding=self.output_padding)  # (1, Cin, H, W)

    @torch.no_grad()
    def power_iteration(self, weight: torch.Tensor, steps: int = 1) -> None:
        """Update the singular-vector estimates in place: v ← Wᵀu/‖·‖, u ← Wv/‖·‖ (``steps`` times)."""
        for _ in range(steps):
            self.v.copy_(_normalize(self._adjoint_op(weight, self.u), self.eps))
            self.u.copy_(_normalize(self._forward_op(weight, self.v), self.eps))

    def sigma(self, weight: torch.Tensor) -> torch.Tensor:
        """σ(W) ≈ uᵀ W v, differentiable in W (u, v held fixed)."""
        u, v = self.u.clone(), self.v.clone()  # clones: later in-place updates must not touch saved tensors
        return (u * self._forward_op(weight, v)).sum().clamp_min(self.eps)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        # float32 even under --amp bf16 autocast: σ and the power iteration keep full precision; autocast casts the
        # normalised weight where the layer uses it
        with torch.autocast(weight.device.type, enabled=False):
            if self.training:
                self.power_iteration(weight.detach())
            w = weight / self.sigma(weight)
            return w * self.gamma if self.gamma is not None else w


def spectralize(net: nn.Module, mode: str, example: torch.Tensor) -> nn.Module:
    """Apply ``--sn`` ``mode`` to every Conv2d and Linear layer of ``net`` (in place; returns ``net``).

    Args:
        net: the critic. mode: one of :data:`SN_MODES`.
        example: an input batch (e.g. ``torch.zeros(1, C, H, W)``) run once to record each convolution's input
            shape, which PICO needs.

    Raises:
        ValueError: unknown ``mode``, or a grouped / dilated convolution under ``"pico"``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 1))
        >>> _ = spectralize(net, "pico", torch.zeros(1, 1, 8, 8))
        >>> sorted(spectral_norms(net))
        ['0', '2']
    """
    if mode not in SN_MODES:
        raise ValueError(f"sn mode must be one of {list(SN_MODES)}, got {mode!r}")
    if mode == "none":
        return net
    shapes: dict[nn.Module, tuple[int, ...]] = {}

    def record(m, inp, out):
        shapes.setdefault(m, tuple(inp[0].shape[1:]))  # (C, H, W) of the convolution's input

    hooks = [m.register_forward_hook(record) for m in net.modules() if isinstance(m, nn.Conv2d)]
    was_training = net.training
    with torch.no_grad():
        net.eval()
        net(example)
        net.train(was_training)
    for h in hooks:
        h.remove()
    for m in list(net.modules()):
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        conv = None
        if mode == "pico" and isinstance(m, nn.Conv2d):
            if m.groups != 1 or m.dilation != (1, 1) or m.padding_mode != "zeros":
                raise ValueError(f"pico supports plain convolutions only, got {m}")
            conv = {"stride": m.stride, "padding": m.padding, "input_shape": shapes[m]}
        sn = SpectralNorm(m.weight, learn_gamma=mode == "spectral-param", conv=conv)
        parametrize.register_parametrization(m, "weight", sn)
    return net


@torch.no_grad()
def spectral_norms(net: nn.Module, steps: int = 0) -> dict[str, float]:
    """σ̂(W̄) of every spectrally parametrised layer's underlying weight, by layer name, after ``steps`` extra
    power-iteration steps (which update the stored vectors). The effective weight's norm is then γ · σ(W̄) / σ̂(W̄).
    """
    out = {}
    for name, m in net.named_modules():
        if parametrize.is_parametrized(m, "weight"):
            w = m.parametrizations.weight.original
            for p in m.parametrizations.weight:
                if isinstance(p, SpectralNorm):
                    p.power_iteration(w, steps)
                    out[name] = float(p.sigma(w))
    return out
