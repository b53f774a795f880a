"""Benchmarks of the two-sample family: the B-permutation test and the exact (all-pairs) KID.

Run with ``pytest benchmarks/bench_two_sample.py --benchmark-only`` (plain ``pytest`` skips benchmarks).

1. ``test_permutation_test``: ``kernelmmd.mmd_test`` with B permutations at n = m points in R^64, on every installed
   backend, next to the naive approach (materialise the pooled N × N kernel matrix once, then gather the three
   blocks of every permutation: O(N²) memory traffic per permutation and O(N²) memory).
   Size knobs (environment variables): ``KERNELMMD_BENCH_PERM_N`` (points per sample, default 10 000),
   ``KERNELMMD_BENCH_PERMUTATIONS`` (B, default 1000), ``KERNELMMD_BENCH_NAIVE_PERMUTATIONS`` (permutations the
   naive baseline actually runs, default B; its per-permutation time is reported so a capped run still gives the
   projected total), ``KERNELMMD_BENCH_BACKENDS`` (comma-separated subset of torch,tiled,keops,triton,naive),
   ``KERNELMMD_BENCH_THREADS`` (torch intra-op threads; default: torch's choice).
2. ``test_exact_kid``: exact KID (cubic kernel, all n·m + n² + m² pairs, with its variance) at
   ``KERNELMMD_BENCH_KID_N`` = 50 000 real and 50 000 fake 2048-d features (float32) — CUDA only (target < 1 s on
   an H100); skipped without CUDA.

Every case records time, pairs per second and peak memory (CUDA: ``max_memory_allocated``; CPU: the process's peak
resident set size, reset before the case through ``/proc/self/clear_refs`` where Linux allows it) in
``extra_info``; record results in ``benchmarks/RESULTS.md`` with device, date and commit.
"""

from __future__ import annotations

import os
import time

import pytest
import torch

import kernelmmd as km
from kernelmmd import ops

from ._memory import peak_mib, reset_peak

DIM = 64
N_PER_SAMPLE = int(os.environ.get("KERNELMMD_BENCH_PERM_N", "10000"))
PERMUTATIONS = int(os.environ.get("KERNELMMD_BENCH_PERMUTATIONS", "1000"))
NAIVE_PERMUTATIONS = int(os.environ.get("KERNELMMD_BENCH_NAIVE_PERMUTATIONS", str(PERMUTATIONS)))
KID_N = int(os.environ.get("KERNELMMD_BENCH_KID_N", "50000"))
KID_DIM = 2048
CASES = [c for c in os.environ.get("KERNELMMD_BENCH_BACKENDS", "torch,tiled,keops,triton,naive").split(",") if c]

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if os.environ.get("KERNELMMD_BENCH_THREADS"):  # e.g. 1 on a CPU shared with other jobs (OpenMP spin-waits)
    torch.set_num_threads(int(os.environ["KERNELMMD_BENCH_THREADS"]))


# ---------------------------------------------------------------------------------------------------- helpers
def _reset_peak():
    reset_peak(DEVICE)


def _peak_mib() -> float:
    return peak_mib(DEVICE)


def _skip_unavailable(backend: str) -> None:
    if backend == "naive":
        return
    if backend not in ops.BACKENDS or not ops.available(backend):
        pytest.skip(f"backend {backend!r} is not installed")
    if backend == "triton" and DEVICE != "cuda":
        pytest.skip("triton on CPU runs in the interpreter (a correctness tool, not a speed one)")


def _naive_permutation_test(x, y, kernel, n_permutations, gen):
    """Baseline: dense pooled K once, then per permutation gather K_XX, K_YY, K_XY by index (no batching)."""
    n, m = x.shape[0], y.shape[0]
    z = torch.cat([x, y])
    K = kernel.matrix(z, z).double()  # (N, N) — O(N²) memory

    def stat(ix, iy):
        kxx, kyy, kxy = K[ix][:, ix], K[iy][:, iy], K[ix][:, iy]  # gathers: O(N²) traffic per permutation
        sxx = kxx.sum() - torch.diagonal(kxx).sum()
        syy = kyy.sum() - torch.diagonal(kyy).sum()
        return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2 * kxy.sum() / (n * m)

    idx = torch.arange(n + m, device=z.device)
    observed = stat(idx[:n], idx[n:])
    null = []
    for _ in range(n_permutations):
        p = torch.randperm(n + m, generator=gen).to(z.device)
        null.append(stat(p[:n], p[n:]))
    null = torch.stack(null)
    return float(observed), (1 + int((null >= observed).sum())) / (1 + n_permutations)


def _data(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.randn(n, d, generator=g) * 1.05
    return x.to(DEVICE), y.to(DEVICE)


# ---------------------------------------------------------------------------------------------- the benchmarks
@pytest.mark.parametrize("backend", CASES)
def test_permutation_test(benchmark, backend):
    _skip_unavailable(backend)
    n, B = N_PER_SAMPLE, PERMUTATIONS
    x, y = _data(n, DIM)
    kernel = km.RBF(km.bandwidth(x, y))  # fixed bandwidth: every case does the same work
    info = benchmark.extra_info
    info.update(device=DEVICE, n=n, m=n, d=DIM, permutations=B, backend=backend, threads=torch.get_num_threads())
    if backend == "naive":
        runs = min(NAIVE_PERMUTATIONS, B)

        def fn():
            return _naive_permutation_test(x, y, kernel, runs, torch.Generator().manual_seed(0))

        info["permutations_run"] = runs
    else:

        def fn():
            res = km.mmd_test(x, y, kernel, n_permutations=B, seed=0, backend=backend)
            return res.statistic, res.p_value

    _reset_peak()
    t0 = time.perf_counter()
    stat, p = benchmark.pedantic(fn, rounds=1, iterations=1, warmup_rounds=0)
    elapsed = time.perf_counter() - t0
    runs = info.get("permutations_run", B)
    N = 2 * n
    info.update(
        seconds=elapsed,
        seconds_per_permutation=elapsed / runs,
        projected_seconds_for_B=elapsed / runs * B,
        kernel_pairs_per_second=N * N * (1 + runs) / elapsed,  # (N² pairs) × (B + 1 statistics)
        peak_mib=_peak_mib(),
        statistic=stat,
        p_value=p,
    )
    print(f"\n[{backend}] n=m={n} d={DIM} B={B} ({runs} run): {elapsed:.2f} s, "
          f"projected {elapsed / runs * B:.1f} s for B, peak {info['peak_mib']:.0f} MiB")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="exact KID at 50 000 × 50 000 × 2048 is a GPU benchmark")
@pytest.mark.parametrize("backend", ["triton", "keops", "tiled"])
def test_exact_kid(benchmark, backend):
    _skip_unavailable(backend)
    g = torch.Generator().manual_seed(0)
    real = torch.rand(KID_N, KID_DIM, generator=g).to("cuda")
    fake = (torch.rand(KID_N, KID_DIM, generator=g) * 1.02).to("cuda")
    km.kid(real[:1024], fake[:1024], subsets=None, backend=backend)  # compile / autotune outside the timing

    def fn():
        r = km.kid(real, fake, subsets=None, backend=backend)
        torch.cuda.synchronize()
        return r

    _reset_peak()
    t0 = time.perf_counter()
    res = benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
    elapsed = (time.perf_counter() - t0) / 4
    pairs = KID_N * KID_N * 3  # K_XX, K_YY, K_XY
    benchmark.extra_info.update(
        device=torch.cuda.get_device_name(), n=KID_N, m=KID_N, d=KID_DIM, backend=backend, kid=res.mean,
        kid_std=res.std, pairs_per_second=pairs / benchmark.stats.stats.min, peak_mib=_peak_mib(),
        mean_seconds_including_warmup=elapsed,
    )
