"""Triton backend (fused kernels; CUDA, or CPU tensors under ``TRITON_INTERPRET=1``). Ops are added per module."""
