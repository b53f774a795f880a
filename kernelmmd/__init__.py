"""kernelmmd: fast, exact kernel two-sample statistics for PyTorch.

Public API only (re-exports); nothing is computed here. See README.md and docs/ARCHITECTURE.md.
"""

from .blocks import a_column, a_diagonal, a_matvec, derivative_blocks, g_matvec, gt_matvec, h_matvec
from .errors import BackendFallbackWarning, ConvergenceWarning, KernelMMDWarning, NumericalWarning
from .gcmmd import DENSE_MAX_SIZE, GCMMDInfo, gcmmd2
from .kernels import (
    KERNELS,
    RBF,
    RQ,
    DeepKernel,
    DotKernel,
    Energy,
    Kernel,
    Laplacian,
    Linear,
    MixRBF,
    MixRQ,
    Poly,
    RadialKernel,
    RBFBounded,
    bandwidth,
    get_kernel,
)
from .mmd import (
    kernel_matrix,
    kernel_means,
    mmd2_and_variance,
    mmd2_biased,
    mmd2_block,
    mmd2_linear,
    mmd2_unbiased,
    witness,
    witness_grad,
)
from .scaled import jacobian_sqnorm, sigma2_inv, smmd2, smmd_loss, swgan_loss
from .solvers import conjugate_gradient, pivoted_cholesky, woodbury_solve

__version__ = "0.1.0"

__all__ = [
    "DENSE_MAX_SIZE",
    "GCMMDInfo",
    "conjugate_gradient",
    "gcmmd2",
    "jacobian_sqnorm",
    "pivoted_cholesky",
    "sigma2_inv",
    "smmd2",
    "smmd_loss",
    "swgan_loss",
    "woodbury_solve",
    "KERNELS",
    "RBF",
    "RQ",
    "BackendFallbackWarning",
    "ConvergenceWarning",
    "DeepKernel",
    "DotKernel",
    "Energy",
    "Kernel",
    "KernelMMDWarning",
    "Laplacian",
    "Linear",
    "MixRBF",
    "MixRQ",
    "NumericalWarning",
    "Poly",
    "RBFBounded",
    "RadialKernel",
    "a_column",
    "a_diagonal",
    "a_matvec",
    "bandwidth",
    "derivative_blocks",
    "g_matvec",
    "get_kernel",
    "gt_matvec",
    "h_matvec",
    "kernel_matrix",
    "kernel_means",
    "mmd2_and_variance",
    "mmd2_biased",
    "mmd2_block",
    "mmd2_linear",
    "mmd2_unbiased",
    "witness",
    "witness_grad",
]
