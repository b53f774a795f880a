"""Predicted error of ``precision="tf32"`` / ``"tf32x3"`` on the triton backend, by CPU emulation (no GPU needed).

The triton kernels form t = ‖a‖² + ‖b‖² − 2aᵀb on data centred on the pooled mean, with the squared norms in fp32
and only aᵀb on the tensor cores; the kernel values are fp32 and every sum is float64. Tensor cores read TF32
operands (8-bit exponent, 10-bit mantissa): with ``"tf32"`` the fp32 operands' low 13 mantissa bits are dropped
(emulated both as truncation — what the mma unit does with raw fp32 bits — and as round-to-nearest); ``"tf32x3"``
splits each operand into a big and a small TF32 part and sums three products (big·big + big·small + small·big).
This script repeats exactly that arithmetic in torch on the CPU and reports the error of MMD²_u against float64
(relative to the kernel scale, max k = 1 for rbf) — a prediction of what the GPU will show, to be confirmed on an
H100 by ``tests/test_triton_block_stats.py::test_gpu_tensor_core_precision``.

``python benchmarks/tf32_emulation.py [--n 2048]`` prints a markdown table.
"""

from __future__ import annotations

import argparse

import torch

import kernelmmd as km


def tf32(a: torch.Tensor, mode: str = "rn") -> torch.Tensor:
    """fp32 → TF32 values (kept in fp32): the low 13 mantissa bits dropped (``"trunc"``) or rounded to nearest, ties
    away from zero (``"rn"``, as cvt.rna.tf32.f32)."""
    bits = a.float().contiguous().view(torch.int32)
    if mode == "rn":
        bits = bits + 0x1000  # half an ulp of the 10-bit mantissa, added to the magnitude bits (sign apart)
    return (bits & ~0x1FFF).view(torch.float32)


def dot(a: torch.Tensor, b: torch.Tensor, precision: str) -> torch.Tensor:
    """aᵀb as the tensor cores form it (fp32 accumulation emulated by rounding the float64 product to fp32)."""
    if precision == "ieee":
        return a @ b.T
    if precision in ("tf32", "tf32-rn"):
        mode = "rn" if precision == "tf32-rn" else "trunc"
        return (tf32(a, mode).double() @ tf32(b, mode).double().T).float()
    ab, bb = tf32(a), tf32(b)
    al, bl = tf32(a - ab), tf32(b - bb)
    A, B, Al, Bl = ab.double(), bb.double(), al.double(), bl.double()
    return (A @ B.T + A @ Bl.T + Al @ B.T).float()


def mmd2u(x: torch.Tensor, y: torch.Tensor, sigma: float, precision: str) -> float:
    """MMD²_u with rbf(σ) by the triton path's arithmetic (fp32 data) or in float64 (``precision="float64"``)."""
    if precision == "float64":
        return float(km.mmd2_unbiased(x.double(), y.double(), "rbf", sigma=sigma, backend="torch"))
    c = (x.sum(0) + y.sum(0)) / (len(x) + len(y))
    x, y = x - c, y - c
    nx, ny = (x * x).sum(1), (y * y).sum(1)

    def block(a, na, b, nb, same):
        t = (na[:, None] + nb[None, :] - 2.0 * dot(a, b, precision)).clamp_min(0)
        k = km.RBF(sigma).profile(t).double()  # fp32 kernel values, as the triton kernels form them
        if same:
            k.fill_diagonal_(0.0)
            return k.sum() / (len(a) * (len(a) - 1))
        return k.mean()

    return float(block(x, nx, x, nx, True) + block(y, ny, y, ny, True) - 2 * block(x, nx, y, ny, False))


def _cases(n: int):
    g = torch.Generator().manual_seed(0)
    for d in (2, 16, 128, 784, 2048):
        x = torch.randn(n, d, generator=g)
        y = torch.randn(n, d, generator=g) * 1.1 + 0.1
        yield f"N(0, I), d = {d}, σ = √d", x, y, float(d) ** 0.5
    try:
        from gan.data import load_images

        imgs = load_images("mnist", verbose=False).images
    except (ImportError, FileNotFoundError):
        return
    imgs = imgs.reshape(len(imgs), -1).float() / 255.0
    x, y = imgs[:n], imgs[n:2 * n]
    sigma = float(km.get_kernel("rbf", sigma="median").resolve(x, y).sigma)
    yield f"MNIST digits in [0, 1] (two disjoint slices), d = 784, σ = median ({sigma:.2f})", x, y, sigma
    yield f"MNIST digits, d = 784, σ = median / 4 ({sigma / 4:.2f})", x, y, sigma / 4


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2048)
    args = p.parse_args(argv)
    print("| data | MMD²_u (float64) | ieee | tf32 (trunc) | tf32 (rn) | tf32x3 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, x, y, sigma in _cases(args.n):
        ref = mmd2u(x, y, sigma, "float64")
        errs = [abs(mmd2u(x, y, sigma, p) - ref) for p in ("ieee", "tf32", "tf32-rn", "tf32x3")]
        print(f"| {name} | {ref:.6g} | " + " | ".join(f"{e:.1e}" for e in errs) + " |", flush=True)


if __name__ == "__main__":
    main()
