"""Triton backend (fused kernels; CUDA, or CPU tensors under ``TRITON_INTERPRET=1``). Ops are added per module.

Differentiability of the witness and derivative-block ops (float64 outputs; a derivative beyond the listed order
raises ``RuntimeError``, never a silent zero):

* ``kernel_mv``: twice in x, y, v (the backward is made of ``kernel_mv`` / ``grad_mv`` calls); once in kernel params.
* ``kernel_grad_mv``: once in x, y (needs g'': not laplacian / energy / l1_laplacian), v and kernel params.
* ``a_matvec``: once in z (needs g''') and kernel params; the u-gradient (A·g) can be differentiated again.
* ``a_diag``, ``a_column``: once (backward by the O(M d) torch formulas).
"""

from .block_stats import block_stats  # noqa: F401  (fused MMD² block statistics)
from .derivative_blocks import a_column, a_diag, a_matvec  # noqa: F401  (GCMMD derivative blocks A·u, diag, columns)
from .witness import kernel_grad_mv, kernel_mv  # noqa: F401  (witness η̂, K·V products, witness gradient ∇η̂)


