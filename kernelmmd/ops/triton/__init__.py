"""Triton backend (fused kernels; CUDA, or CPU tensors under ``TRITON_INTERPRET=1``). Ops are added per module."""

from .block_stats import block_stats  # noqa: F401  (fused MMD² block statistics)
from .derivative_blocks import a_column, a_diag, a_matvec  # noqa: F401  (GCMMD derivative blocks A·u, diag, columns)
from .witness import kernel_grad_mv, kernel_mv  # noqa: F401  (witness η̂, K·V products, witness gradient ∇η̂)
