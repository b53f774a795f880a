"""Triton backend (fused kernels; CUDA, or CPU tensors under ``TRITON_INTERPRET=1``). Ops are added per module."""

from .block_stats import block_stats  # noqa: F401  (fused MMD² block statistics)
