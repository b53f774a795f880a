"""Benchmarks of the two-sample family: the B-permutation test, the exact (all-pairs) KID, MMDAgg and MMD-FUSE.

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

3. ``test_mmdagg``: :func:`kernelmmd.mmdagg_test` at n = m = ``KERNELMMD_BENCH_AGG_N`` = 2000 points in R^49
   (float32, x ~ N(0, I), y ~ N(0.05·1, I): every implementation should reject), 20 kernels (laplace + gaussian ×
   10 bandwidths), B1 = B2 = ``KERNELMMD_BENCH_AGG_B`` = 2000 wild-bootstrap resamples, next to the authors'
   reference implementations on the same data and settings: ``mmdagg-numpy`` (``mmdagg.np.mmdagg``) and
   ``mmdagg-jax`` (``mmdagg.jax.mmdagg``, float32, jit-compiled before the timing; the compile time is recorded).
4. ``test_mmdfuse``: :func:`kernelmmd.mmdfuse_test` on the same data, 20 kernels, B = ``KERNELMMD_BENCH_AGG_B``
   permutations, next to ``mmdfuse-jax`` (``mmdfuse.mmdfuse``, float32, compiled before the timing).
   Cases of 3 and 4: ``KERNELMMD_BENCH_AGG_CASES`` (comma-separated, default
   tiled,keops,triton,mmdagg-numpy,mmdagg-jax,mmdfuse-jax; a case that does not apply to the test is skipped);
   KeOps has no BLAS and compiles one formula per column count: ``KERNELMMD_BENCH_KEOPS_B`` runs it with fewer
   resamples (default: all) and records the time projected to B (cost ∝ N²(d + B)). The peers are not project
   dependencies: a peer that is not installed is skipped (installation: benchmarks/RESULTS.md). Every case records
   its decision; a case whose decision differs from an earlier case's fails (same data, strong alternative).
   Single-threaded comparison on a shared CPU: run under ``taskset -c 0`` with ``KERNELMMD_BENCH_THREADS=1
   OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
   intra_op_parallelism_threads=1"``.

Every case records time, pairs per second and peak memory (CUDA: ``max_memory_allocated``; CPU: the process's peak
resident set size, reset before the case through ``/proc/self/clear_refs`` where Linux allows it) in
``extra_info``; record results in ``benchmarks/RESULTS.md`` with device, date and commit.
"""

from __future__ import annotations

import os
import time

import numpy as np
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


# ------------------------------------------------------------------------------ MMDAgg and MMD-FUSE vs the authors'
AGG_N = int(os.environ.get("KERNELMMD_BENCH_AGG_N", "2000"))
AGG_DIM = 49
AGG_B = int(os.environ.get("KERNELMMD_BENCH_AGG_B", "2000"))
KEOPS_B = int(os.environ.get("KERNELMMD_BENCH_KEOPS_B", str(AGG_B)))
AGG_CASES = [c for c in os.environ.get(
    "KERNELMMD_BENCH_AGG_CASES", "tiled,keops,triton,mmdagg-numpy,mmdagg-jax,mmdfuse-jax").split(",") if c]
_DECISIONS: dict[str, dict[str, bool]] = {"mmdagg": {}, "mmdfuse": {}}


@pytest.fixture(scope="module")
def agg_data():
    """(x, y) float32 numpy arrays (n, 49): N(0, I) and N(0.05·1, I), the same for every implementation."""
    rs = np.random.RandomState(0)
    x = rs.normal(size=(AGG_N, AGG_DIM)).astype(np.float32)
    y = (rs.normal(size=(AGG_N, AGG_DIM)) + 0.05).astype(np.float32)
    return x, y


def _agree(test: str, case: str, reject: bool) -> None:
    """Record ``case``'s decision; fail if an earlier case of the same test decided otherwise."""
    seen = _DECISIONS[test]
    seen[case] = bool(reject)
    assert len(set(seen.values())) == 1, f"{test}: the implementations disagree: {seen}"


def _run_peer(benchmark, test, case, fn, warmup):
    """Time ``fn`` once (after ``warmup``, e.g. a jit compile, timed separately) with the peak resident set."""
    t0 = time.perf_counter()
    if warmup is not None:
        warmup()
    compile_s = time.perf_counter() - t0
    _reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    reject, p = benchmark.pedantic(fn, rounds=1, iterations=1, warmup_rounds=0)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    benchmark.extra_info.update(
        device="cpu", impl=case, n=AGG_N, m=AGG_N, d=AGG_DIM, B=AGG_B, seconds=elapsed, cpu_seconds=cpu,
        warmup_seconds=compile_s, peak_mib=_peak_mib(), reject=reject, p_value=p,
    )
    print(f"\n[{test} {case}] {elapsed:.1f} s, CPU {cpu:.1f} s (warm-up {compile_s:.1f} s), reject={reject}, p={p}, "
          f"peak {benchmark.extra_info['peak_mib']:.0f} MiB")
    _agree(test, case, reject)


def _run_ours(benchmark, test, backend, x, y):
    _skip_unavailable(backend)
    xt, yt = torch.from_numpy(x).to(DEVICE), torch.from_numpy(y).to(DEVICE)
    B = KEOPS_B if backend == "keops" else AGG_B
    N = 2 * AGG_N
    batch = max(1, 2**24 // N)  # the default batch: the warm-up compiles the same KeOps formulas

    def fn(a, b):
        if test == "mmdagg":
            r = km.mmdagg_test(a, b, n_permutations=B, n_correction=B, seed=0, backend=backend, batch_size=batch)
            return r.reject, float(r.p_values.min())
        r = km.mmdfuse_test(a, b, n_permutations=B, seed=0, backend=backend, batch_size=batch)
        return r.reject, r.p_value

    t0 = time.perf_counter()
    if backend in ("keops", "triton"):
        fn(xt[:64], yt[:64])  # compile (KeOps: per column count) / autotune outside the timing
    compile_s = time.perf_counter() - t0
    _reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    reject, p = benchmark.pedantic(lambda: fn(xt, yt), rounds=1, iterations=1, warmup_rounds=0)
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    resamples = 2 * B if test == "mmdagg" else B
    projected = elapsed * (AGG_DIM + 2 * AGG_B) / (AGG_DIM + resamples) if test == "mmdagg" else \
        elapsed * (AGG_DIM + AGG_B) / (AGG_DIM + resamples)
    benchmark.extra_info.update(
        device=DEVICE, impl=f"kernelmmd-{backend}", n=AGG_N, m=AGG_N, d=AGG_DIM, B=AGG_B, B_run=B, seconds=elapsed,
        cpu_seconds=cpu, projected_seconds=projected, warmup_seconds=compile_s, threads=torch.get_num_threads(),
        peak_mib=_peak_mib(), reject=reject, p_value=p,
    )
    print(f"\n[{test} kernelmmd-{backend}] {elapsed:.1f} s, CPU {cpu:.1f} s with B = {B} "
          f"(projected to B = {AGG_B}: {projected:.1f} s), "
          f"reject={reject}, p={p}, peak {benchmark.extra_info['peak_mib']:.0f} MiB")
    if B == AGG_B:
        _agree(test, f"kernelmmd-{backend}", reject)


@pytest.mark.parametrize("case", AGG_CASES)
def test_mmdagg(benchmark, agg_data, case):
    if not hasattr(km, "mmdagg_test") and not case.startswith("mmdagg-"):
        pytest.skip("kernelmmd.mmdagg_test is not in this checkout")
    x, y = agg_data
    if case == "mmdagg-numpy":
        ref = pytest.importorskip("mmdagg.np")
        fn = lambda: (bool(ref.mmdagg(x, y, B1=AGG_B, B2=AGG_B)), None)  # noqa: E731
        return _run_peer(benchmark, "mmdagg", case, fn, None)
    if case == "mmdagg-jax":
        ref = pytest.importorskip("mmdagg.jax")
        jnp = pytest.importorskip("jax.numpy")
        xj, yj = jnp.asarray(x), jnp.asarray(y)
        fn = lambda: (bool(ref.mmdagg(xj, yj, B1=AGG_B, B2=AGG_B).block_until_ready()), None)  # noqa: E731
        return _run_peer(benchmark, "mmdagg", case, fn, fn)
    if case.startswith("mmd"):
        pytest.skip(f"{case} is a peer of another test")
    _run_ours(benchmark, "mmdagg", case, x, y)


@pytest.mark.parametrize("case", AGG_CASES)
def test_mmdfuse(benchmark, agg_data, case):
    if not hasattr(km, "mmdfuse_test") and not case.startswith("mmdfuse-"):
        pytest.skip("kernelmmd.mmdfuse_test is not in this checkout")
    x, y = agg_data
    if case == "mmdfuse-jax":
        ref = pytest.importorskip("mmdfuse")
        jax = pytest.importorskip("jax")
        xj, yj, key = jax.numpy.asarray(x), jax.numpy.asarray(y), jax.random.PRNGKey(42)

        def fn():
            out, p = ref.mmdfuse(xj, yj, key, number_permutations=AGG_B, return_p_val=True)
            return bool(out.block_until_ready()), float(p)

        return _run_peer(benchmark, "mmdfuse", case, fn, fn)
    if case.startswith("mmd"):
        pytest.skip(f"{case} is a peer of another test")
    _run_ours(benchmark, "mmdfuse", case, x, y)
