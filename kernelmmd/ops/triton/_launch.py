"""Host side shared by the Triton launchers: input checks, the kernel as a launch sees it, tile sizes and grids,
float64 partials, the message of a refused second derivative, ahead-of-time compilation specs.

Every fused op module (:mod:`.block_stats`, :mod:`.witness`, :mod:`.derivative_blocks`) checks its inputs, builds a
:class:`Spec`, picks :class:`Tiles` and a column split, allocates float64 partials (one slab per split, reduced
deterministically on the host: no float atomics) and launches its kernels with these helpers.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import torch
import triton.language as tl

from ...kernels import Kernel, L1Kernel, RadialKernel
from .._shared import centres, check_precision, pooled_mean, refuse  # noqa: F401  (refuse: re-exported)
from ._profiles import kernel_launch_args

# -------------------------------------------------------------------------------------------------- input checks


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def check_tensor(name: str, t) -> None:
    """``t`` is a tensor on a CUDA device (or on the CPU under the Triton interpreter)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cuda" and not (t.device.type == "cpu" and interpreting()):
        raise ValueError(
            f"{name} must be a CUDA tensor for the triton backend (CPU tensors only run under the Triton "
            f"interpreter, TRITON_INTERPRET=1), got a tensor on {t.device}"
        )


def check_points(name: str, t: torch.Tensor, rows: str = "n") -> None:
    """``t`` has shape (rows, d) with rows, d ≥ 1."""
    if t.ndim != 2 or t.shape[0] < 1 or t.shape[1] < 1:
        raise ValueError(f"{name} must have shape ({rows}, d) with {rows}, d >= 1, got {tuple(t.shape)}")


def dtype_for(name: str, t: torch.Tensor, precision: str) -> torch.dtype:
    """Compute dtype: fp32 for float16/bfloat16/float32, float64 for float64 (then ``precision`` must be ieee)."""
    if t.dtype in (torch.float16, torch.bfloat16, torch.float32):
        out = torch.float32
    elif t.dtype == torch.float64:
        if precision != "ieee":
            raise ValueError(
                f"precision={precision!r} applies to float32 inputs; float64 inputs are computed in float64 "
                "with precision='ieee'"
            )
        out = torch.float64
    else:
        raise TypeError(
            f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), got dtype {t.dtype}"
        )
    return out


def compute_dtype(name: str, t: torch.Tensor, precision: str) -> torch.dtype:
    """:func:`check_tensor`, then :func:`dtype_for`."""
    check_tensor(name, t)
    return dtype_for(name, t, precision)


def check_like(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor, shape: tuple) -> None:
    """``t`` is a float tensor of ``shape`` on ``ref``'s device (any float dtype: it is cast)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    if t.device != ref.device:
        raise ValueError(f"{name} is on device {t.device} but {ref_name} is on {ref.device}; put both on one device")


# -------------------------------------------------------------------------------------------------- the kernel


@dataclass(frozen=True)
class Spec:
    """A kernel as a launch sees it: constexpr choices, parameter values and clamp bounds (hashable)."""

    kind: int
    r: int
    degree: int
    n_params: int  # len(kernel.scalar_params())
    params: torch.Tensor  # (R,) compute dtype, detached
    lohi: torch.Tensor  # (2,) compute dtype: RBF-B bounds of t (0 where not clamped)
    clamp_lo: bool
    clamp_hi: bool
    centre: bool  # centre the data (translation-invariant radial kernels except the √t ones)
    energy: bool  # the energy kernel's norm terms ‖a‖ + ‖b‖ (kernel.norm_terms)
    dtype: torch.dtype
    precision: str
    param_index: tuple[int, ...]  # positions (in scalar_params) of the tensor parameters given to the Functions
    radial: bool  # a RadialKernel (argument t), else a DotKernel (argument u)
    sqrt_distance: bool  # a √t kernel (laplacian, energy): not twice differentiable, close pairs re-formed
    l1: bool = False  # an L1 kernel (argument t = ‖a − b‖₁): not twice differentiable, gradients by sign products


def make_spec(kernel: Kernel, block: str, dtype: torch.dtype, device, precision: str) -> Spec:
    """The :class:`Spec` of ``kernel`` for the block ``"xx"``, ``"yy"`` or ``"xy"`` (which RBF-B bounds apply).

    Raises:
        ValueError: unknown ``precision`` or ``block``. TypeError: a kernel that is not radial, dot-product or L1.
    """
    check_precision(precision)
    if block not in ("xx", "yy", "xy"):
        raise ValueError(f"block must be 'xx', 'yy' or 'xy', got {block!r}")
    kind, r, degree, params = kernel_launch_args(kernel, device)
    lo, hi = kernel.block_bounds(block) if isinstance(kernel, RadialKernel) else (0.0, math.inf)
    clamp_lo, clamp_hi = lo > 0, hi < math.inf
    lohi = torch.tensor([lo if clamp_lo else 0.0, hi if clamp_hi else 0.0], dtype=dtype, device=device)
    sp = kernel.scalar_params()
    index = tuple(i for i, p in enumerate(sp) if isinstance(p, torch.Tensor))
    energy = bool(getattr(kernel, "norm_terms", False))
    centre = centres(kernel)
    return Spec(kind, r, degree, len(sp), params.to(dtype), lohi, clamp_lo, clamp_hi, centre, energy, dtype,
                precision, index, isinstance(kernel, RadialKernel), bool(getattr(kernel, "sqrt_distance", False)),
                isinstance(kernel, L1Kernel))


def tensor_params(kernel: Kernel, spec: Spec) -> list[torch.Tensor]:
    """The tensor-valued scalar parameters of ``kernel`` (extra inputs of the autograd Functions)."""
    sp = kernel.scalar_params()
    return [sp[i] for i in spec.param_index]


def param_grad(pgrad: torch.Tensor, i: int, p: torch.Tensor) -> torch.Tensor:
    """Entry ``i`` of a parameter-gradient vector as a gradient for the parameter ``p`` (its device, dtype, shape)."""
    return pgrad[i].to(device=p.device, dtype=p.dtype).reshape(p.shape)


def param_grads(pgrad: torch.Tensor | None, index, params, needs) -> list:
    """Per tensor parameter (positions ``index`` in ``pgrad``): its gradient, or None where not needed."""
    return [None if pgrad is None or not need else param_grad(pgrad, i, p) for i, p, need in zip(index, params, needs)]


# -------------------------------------------------------------------------------------------------- tiles and grids


@dataclass(frozen=True)
class Tiles:
    """Tile sizes and launch parameters of one launch. ``split=None``: split the column tiles to fill the device.

    ``block_m`` × ``block_n`` pair tiles, ``block_k``-wide chunks of d for the pair products; up to d =
    ``direct_max_d`` the pair argument is summed coordinate by coordinate instead (exact, cheaper than a padded
    ``tl.dot``). ``block_d``: output columns (of d) per program; ``block_b``: columns of a batched right-hand side.
    ``chunk_d``: column chunks of the block_stats backward when d > ``block_d`` (accumulated in memory).
    ``block_m == block_n`` enables the triangular schedule of within-sample blocks.
    """

    block_m: int = 64
    block_n: int = 64
    block_k: int = 32
    block_d: int = 64
    chunk_d: int = 32
    block_b: int = 64
    num_warps: int = 4
    num_stages: int = 2
    split: int | None = None
    direct_max_d: int = 8


def pow2(v: int) -> int:
    """The smallest power of two ≥ v (v ≥ 1)."""
    return 1 << max(0, (int(v) - 1).bit_length())


def tile_width(size: int, cap: int) -> int:
    """A constexpr tile width for ``size`` entries: a power of two, at least 16 (``tl.dot``), at most ``cap``."""
    return max(16, min(pow2(size), cap))


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


#: tests set this to force small or odd tiles (tiles not dividing n, several d chunks, split > 1)
TILES_OVERRIDE: Tiles | None = None


def tiles_for(device: torch.device, dtype: torch.dtype, d: int, heavy: bool = False,
              precision: str = "ieee") -> Tiles:
    """Tile sizes of the :mod:`.witness` and :mod:`.derivative_blocks` launches. Under the interpreter (CPU tensors)
    wide tiles, one program per row tile.

    CUDA defaults come from the sm_90 ``ptxas -v`` register report of the AOT-compiled kernels (no GPU was
    available to time them): 64 × 32 tiles with 8 warps keep the fp32 FMA and TF32 paths free of register spills
    (fp64 accumulators included); split-precision TF32 (three products) gets 32-wide output chunks; the
    derivative-block backward (seven pairwise products per tile, ``heavy``) uses 32 × 32 tiles.
    """
    if TILES_OVERRIDE is not None:
        return TILES_OVERRIDE
    if device.type != "cuda":
        return Tiles(block_m=32, block_n=32, block_k=min(256, max(16, pow2(d))), block_d=min(512, max(16, pow2(d))),
                     block_b=32, split=1)
    if heavy:
        return Tiles(block_m=32, block_n=32, block_k=16, block_d=32, block_b=32, num_warps=8)
    if precision == "tf32x3":
        return Tiles(block_m=64, block_n=32, block_k=16, block_d=32, block_b=32, num_warps=8)
    return Tiles(block_m=64, block_n=32, block_k=16, block_d=64, block_b=64, num_warps=8)


def split_for(tiles: Tiles, programs: int, tiles_j: int, device: torch.device,
              max_split: int | None = None) -> tuple[int, int]:
    """(split, tiles_per_split): split the column tiles so that there are ≳ 4 programs per SM (at most
    ``max_split`` ways on CUDA); ``programs``: programs per split (row tiles × output chunks)."""
    if tiles.split is not None:
        want = max(1, tiles.split)
    elif device.type == "cuda":
        target = 4 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
        want = max(1, -(-target // max(1, programs)))
        if max_split is not None:
            want = min(want, max_split)
    else:
        want = 1
    want = min(want, tiles_j)
    per = -(-tiles_j // want)
    return -(-tiles_j // per), per


def row_grid(tiles: Tiles, n: int, m: int, chunks: int, device: torch.device) -> tuple[int, int, int]:
    """(row tiles, split, tiles_per_split) of a (row tile, ``chunks`` output-column chunks, column split) grid over
    an n × m pair block (:func:`split_for`)."""
    tiles_i = -(-n // tiles.block_m)
    split, per = split_for(tiles, tiles_i * chunks, -(-m // tiles.block_n), device)
    return tiles_i, split, per


def kind_constexprs(spec: Spec, clamps: bool = False) -> dict:
    """The launch keywords naming the kernel: KIND, R, DEGREE (and the RBF-B CLAMP_LO / CLAMP_HI flags)."""
    out = dict(KIND=spec.kind, R=spec.r, DEGREE=spec.degree)
    if clamps:
        out.update(CLAMP_LO=spec.clamp_lo, CLAMP_HI=spec.clamp_hi)
    return out


def launch_opts(tiles: Tiles) -> dict:
    """``num_warps`` / ``num_stages`` launch keywords of ``tiles``."""
    return dict(num_warps=tiles.num_warps, num_stages=tiles.num_stages)


# -------------------------------------------------------------------------------------------------- tensors


def flat(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` detached, in ``dtype``, contiguous."""
    return t.detach().to(dtype).contiguous()


def prepare(spec: Spec, *sets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(*sets, *squared row norms): detached, contiguous, compute dtype, centred on the pooled mean of all sets when
    the kernel allows (t = ‖a‖² + ‖b‖² − 2aᵀb loses less to rounding near the origin)."""
    sets = tuple(s.detach().to(spec.dtype) for s in sets)
    if spec.centre:
        c = pooled_mean(*sets)  # (1, d)
        sets = tuple(s - c for s in sets)
    sets = tuple(s.contiguous() for s in sets)
    return (*sets, *((s * s).sum(1) for s in sets))


def partials(split: int, *shape: int, device) -> torch.Tensor:
    """Uninitialised float64 (split, *shape): one slab of partial sums per column split."""
    return torch.empty(split, *shape, dtype=torch.float64, device=device)


def reduce_partials(part: torch.Tensor) -> torch.Tensor:
    """Sum of the per-split slabs of :func:`partials` (a view of the only slab when there is one)."""
    return part[0] if part.shape[0] == 1 else part.sum(0)


# -------------------------------------------------------------------------------------------------- autograd


def second_order_message(what: str, need: str = "one more profile derivative") -> str:
    return (f"{what} of the triton backend is not differentiable again (it would need {need}); "
            "use backend='torch' for higher-order derivatives")


# -------------------------------------------------------------------------------------------------- AOT specs


def aot_spec(name: str, fn, const: dict, *, dt: str = "fp32", f64=(), tensor_cores: bool = False) -> dict:
    """One ``AOT_SPECS`` entry (``tests/triton_aot_check.py``): the signature follows ``fn``'s arguments — the
    constexprs of ``const``, pointers (``*_ptr``) to ``dt`` except those named in ``f64``, integers otherwise."""
    const = {k: v.value if isinstance(v, tl.constexpr) else v for k, v in const.items()}  # kinds are tl.constexpr
    sig = {}
    for arg in fn.arg_names:
        if arg in const:
            sig[arg] = "constexpr"
        elif arg.endswith("_ptr"):
            sig[arg] = "*fp64" if arg in f64 else f"*{dt}"
        else:
            sig[arg] = "i32"
    return {"name": name, "fn": fn, "signature": sig, "constexprs": const, "tensor_cores": tensor_cores}
