"""Result types shared by every backend."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class BlockStats:
    """Sums over the kernel blocks K_XX (n × n), K_YY (m × m), K_XY (n × m), all float64 (SPEC §3).

    ``sxx``/``syy`` exclude the diagonal (``dxx``/``dyy`` hold the traces); ``sxy`` is the full sum. When the
    variance statistics are requested: ``rxx``/``ryy`` are row sums of the zero-diagonal K̃_XX / K̃_YY, ``rxy`` and
    ``cxy`` the row and column sums of K_XY, ``qxx``/``qyy``/``qxy`` sums of squared entries (zero diagonal for the
    within-sample blocks). Every field is differentiable in x, y and tensor kernel parameters.
    """

    n: int
    m: int
    sxx: torch.Tensor
    syy: torch.Tensor
    sxy: torch.Tensor
    dxx: torch.Tensor
    dyy: torch.Tensor
    rxx: torch.Tensor | None = None
    ryy: torch.Tensor | None = None
    rxy: torch.Tensor | None = None
    cxy: torch.Tensor | None = None
    qxx: torch.Tensor | None = None
    qyy: torch.Tensor | None = None
    qxy: torch.Tensor | None = None
