r"""Kernel two-sample tests (SPEC §3, §9), one module per family; this package re-exports every public name.

* :mod:`.permutation` — :func:`mmd_test`, the quadratic-time permutation test with MMD²_u;
* :mod:`.normal` — :func:`linear_mmd_test` (MMD²_l) and :func:`block_mmd_test` (the B-test): normal approximations;
* :mod:`.selection` — :func:`select_kernel` / :func:`selected_mmd_test`: kernel choice by MMD²_u / √V̂ on a training
  split, permutation test on the disjoint remainder;
* :mod:`.optimized` — :func:`optimize_kernel` (gradient ascent on MMD²_u / √V̂ over a kernel's parameters: ARD,
  deep kernels, MMD-D) and :func:`optimized_mmd_test` (optimise on a training split, test on the remainder);
* :mod:`.relative` — :func:`relative_mmd_test` (Bounliphone et al. 2016) and :func:`mmd2_variance_unbiased`;
* :mod:`.aggregated` — :func:`mmdagg_test` (MMDAgg) and :func:`mmdagginc_test` (MMDAggInc): tests aggregated over
  many kernels with a level correction; :mod:`.fuse` — :func:`mmdfuse_test` (MMD-FUSE);
* :mod:`._common` — the result types and the "cannot decide" rule every test applies.

Every test returns a result object with the statistic, the p-value and the kernel actually used (data-dependent
parameters resolved). How the tests reach the kernel ops: docs/ARCHITECTURE.md, "Two-sample tests".
"""

from ._common import KernelSelection, MMDTestResult, RelativeTestResult
from .aggregated import MMDAggResult, mmdagg_test, mmdagginc_test
from .fuse import MMDFuseResult, mmdfuse_test
from .normal import block_mmd_test, linear_mmd_test
from .optimized import OptimizedKernel, OptimizedTestResult, optimize_kernel, optimized_mmd_test
from .permutation import mmd_test
from .relative import mmd2_variance_unbiased, relative_mmd_test
from .selection import select_kernel, selected_mmd_test

__all__ = [
    "MMDTestResult",
    "KernelSelection",
    "RelativeTestResult",
    "mmd_test",
    "linear_mmd_test",
    "block_mmd_test",
    "select_kernel",
    "selected_mmd_test",
    "relative_mmd_test",
    "mmd2_variance_unbiased",
    "MMDAggResult",
    "MMDFuseResult",
    "mmdagg_test",
    "mmdagginc_test",
    "mmdfuse_test",
    "OptimizedKernel",
    "OptimizedTestResult",
    "optimize_kernel",
    "optimized_mmd_test",
]
