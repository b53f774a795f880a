"""MMD²_u benchmarks: value and value + gradient for every backend side by side (``pytest --benchmark-only``).

Grid: n = m ∈ {1024, 4096, 16384, 65536 (CUDA only)}, d ∈ {2, 16, 128, 784, 2048}, Gaussian kernel (σ = √d), float32,
backends ``torch`` (dense), ``tiled``, ``keops``, ``triton`` (CUDA only) and ``auto``. Every case records in
``benchmark.extra_info``: the backend that ``auto`` resolved to, peak memory (CUDA: ``max_memory_allocated``; CPU:
the peak resident-set growth sampled every 2 ms from /proc/self/statm, or ``null`` where that is not available),
the process CPU time, and the machine load average.

Environment variables restrict the grid (the full CPU grid takes hours on 2 cores):

* ``KERNELMMD_BENCH_MAX_N`` — largest n (default 4096 on CPU, 65536 on CUDA);
* ``KERNELMMD_BENCH_N`` / ``KERNELMMD_BENCH_D`` — comma-separated lists replacing the default n / d values;
* ``KERNELMMD_BENCH_BACKENDS`` — comma-separated subset of backends;
* ``KERNELMMD_BENCH_MODES`` — ``value``, ``grad`` or both (default);
* ``KERNELMMD_BENCH_DENSE_MAX_GB`` — skip the dense backend where its estimated peak exceeds this (default 6 on
  CPU; on CUDA the device memory decides);
* ``KERNELMMD_BENCH_DEVICE`` — ``cpu`` or ``cuda`` (default: cuda when available);
* ``KERNELMMD_BENCH_THREADS`` — torch intra-op threads (1 on a CPU shared with other jobs, where OpenMP spin-waits
  distort timings; set ``OMP_NUM_THREADS`` too, which KeOps' CPU reductions read);
* ``KERNELMMD_BENCH_MAX_SECONDS`` — skip a case whose estimated time per call exceeds this (default 300; KeOps on CPU
  at large d, whose cost grows like n²·d without BLAS).

Example (the CPU subset recorded in RESULTS.md)::

    KERNELMMD_BENCH_MAX_N=4096 pytest benchmarks/bench_mmd.py --benchmark-only \\
        --benchmark-json=benchmarks/cpu.json

Every case makes one warm-up call (which also compiles KeOps formulas), then timed rounds: one for calls of 2 s or
more, otherwise as many as fit in about 3 s (3 to 25); the table uses the fastest round.
"""

from __future__ import annotations

import os
import resource
import time

import pytest
import torch

import kernelmmd as km
from kernelmmd import ops

from ._memory import PeakRSS

CUDA = torch.cuda.is_available()
DEVICE = os.environ.get("KERNELMMD_BENCH_DEVICE", "cuda" if CUDA else "cpu")
_DEFAULT_MAX_N = 65536 if DEVICE == "cuda" else 4096
MAX_N = int(os.environ.get("KERNELMMD_BENCH_MAX_N", _DEFAULT_MAX_N))


def _ints(name, default):
    raw = os.environ.get(name)
    return [int(v) for v in raw.split(",")] if raw else default


NS = [n for n in _ints("KERNELMMD_BENCH_N", [1024, 4096, 16384, 65536]) if n <= MAX_N]
DS = _ints("KERNELMMD_BENCH_D", [2, 16, 128, 784, 2048])
BACKENDS = os.environ.get("KERNELMMD_BENCH_BACKENDS", "torch,tiled,keops,triton,auto").split(",")
_MODE_SETS = {"value": ["value"], "grad": ["value+grad"]}
MODES = _MODE_SETS.get(os.environ.get("KERNELMMD_BENCH_MODES", ""), ["value", "value+grad"])
DENSE_MAX_GB = float(os.environ.get("KERNELMMD_BENCH_DENSE_MAX_GB", "6"))
MAX_SECONDS = float(os.environ.get("KERNELMMD_BENCH_MAX_SECONDS", "300"))
if os.environ.get("KERNELMMD_BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["KERNELMMD_BENCH_THREADS"]))
#: KeOps CPU throughput used to skip hopeless cases: pair-dimensions per second (measured on the 2-core CPU,
#: one thread: ≈ 1e8 pairs/s at d = 16, falling roughly like 1/d)
_KEOPS_CPU_PAIR_DIMS_PER_S = 1.5e9


def _skip_reason(backend: str, n: int, d: int, mode: str) -> str | None:
    if n > 16384 and DEVICE != "cuda":
        return "n = 65536 runs on CUDA only"
    if backend == "triton" and DEVICE != "cuda":
        return "triton is benchmarked on CUDA only (the CPU interpreter is for tests)"
    if backend not in ("torch", "auto") and not ops.available(backend):
        return f"{backend} is not installed"
    if backend == "keops" and DEVICE != "cuda":
        seconds = (3 if mode == "value+grad" else 1) * 3 * n * n * max(d, 16) / _KEOPS_CPU_PAIR_DIMS_PER_S
        if seconds > MAX_SECONDS:
            return f"keops on CPU: ~{seconds:.0f} s per call estimated (> KERNELMMD_BENCH_MAX_SECONDS={MAX_SECONDS:g})"
    if backend == "torch" and DEVICE != "cuda":
        # measured peak at n = 4096: ≈ 3.8 (value) and 5.4 (value + gradient) × the three float32 n × n blocks
        gb = (6 if mode == "value+grad" else 4) * 3 * n * n * 4 / 2**30
        if gb > DENSE_MAX_GB:
            return f"dense backend would need ~{gb:.0f} GB (> KERNELMMD_BENCH_DENSE_MAX_GB = {DENSE_MAX_GB:g})"
    return None


def _data(n, d):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    y = torch.randn(n, d, generator=g) * 1.1 + 0.1
    return x.to(DEVICE), y.to(DEVICE)


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("d", DS)
@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("mode", MODES)
def test_mmd2_unbiased(benchmark, mode, n, d, backend):
    reason = _skip_reason(backend, n, d, mode)
    if reason:
        pytest.skip(reason)
    x, y = _data(n, d)
    kernel = km.RBF(float(d) ** 0.5)
    grad = mode == "value+grad"
    resolved = ops.select_backend(backend, x, y) if backend == "auto" else backend
    if backend == "auto" and resolved == "torch" and _skip_reason("torch", n, d, mode):
        pytest.skip("auto resolves to the dense backend, which is skipped here")

    def run():
        if grad:
            xs, ys = x.detach().requires_grad_(), y.detach().requires_grad_()
            v = km.mmd2_unbiased(xs, ys, kernel, backend=backend)
            v.backward()
        else:
            with torch.no_grad():
                v = km.mmd2_unbiased(x, y, kernel, backend=backend)
        _sync()
        return float(v)

    t0 = time.perf_counter()
    first = run()  # warm-up (KeOps compilation, Triton autotuning, allocator)
    first_s = time.perf_counter() - t0
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    cpu0 = time.process_time()
    rounds = 1 if first_s >= 2.0 else int(min(25, max(3, 3.0 / max(first_s, 1e-3))))
    with PeakRSS() as rss:
        value = benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=0)
    info = benchmark.extra_info
    info.update(
        backend=backend, resolved=resolved, n=n, d=d, mode=mode, device=DEVICE, value=value,
        first_call_s=round(first_s, 3), cpu_s_per_round=round((time.process_time() - cpu0) / rounds, 3),
        load_avg=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        torch_threads=torch.get_num_threads(),
    )
    if DEVICE == "cuda":
        info["peak_mb"] = round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)
    else:
        info["peak_mb"] = rss.mb
        info["maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    assert abs(value - first) <= 1e-5 * max(1.0, abs(first))


def test_mmd2_unbiased_100k_cpu(benchmark):
    """n = m = 100 000, d = 16 on the tiled backend, value + gradient, once (the dense backend would need ~40 GB
    for one float32 n × m block alone). Runs only when KERNELMMD_BENCH_100K=1."""
    if os.environ.get("KERNELMMD_BENCH_100K") != "1":
        pytest.skip("set KERNELMMD_BENCH_100K=1 to run the n = m = 100 000 case (minutes on 2 cores)")
    n, d = 100_000, 16
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g).requires_grad_()
    y = (torch.randn(n, d, generator=g) + 0.05).requires_grad_()
    kernel = km.RBF(4.0)

    def run():
        v = km.mmd2_unbiased(x, y, kernel)  # backend="auto" -> tiled at this size on CPU
        v.backward()
        return float(v)

    with PeakRSS() as rss:
        value = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(
        n=n, d=d, mode="value+grad", resolved=ops.select_backend("auto", x, y), value=value, peak_mb=rss.mb,
        maxrss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        load_avg=round(os.getloadavg()[0], 2),
    )


@pytest.mark.parametrize("d", DS)
def test_auto_dispatch_overhead(benchmark, d):
    """``auto`` against the backend it resolves to, interleaved call by call (value + gradient, n = m = 1024, where a
    call takes 10-500 ms and fixed costs would show): the ratio of the median times, which drifts in the load of a
    shared machine cancel out of. ``benchmark`` times the auto calls."""
    n = 1024
    x, y = _data(n, d)
    kernel = km.RBF(float(d) ** 0.5)
    pick = ops.select_backend("auto", x, y)

    def run(backend):
        xs, ys = x.detach().requires_grad_(), y.detach().requires_grad_()
        v = km.mmd2_unbiased(xs, ys, kernel, backend=backend)
        v.backward()
        _sync()

    times = {"auto": [], pick: []}
    run("auto"), run(pick)
    for _ in range(9 if d < 784 else 5):
        for b in times:
            t0 = time.perf_counter()
            run(b)
            times[b].append(time.perf_counter() - t0)
    med = {b: sorted(v)[len(v) // 2] for b, v in times.items()}
    benchmark.pedantic(run, args=("auto",), rounds=1, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(n=n, d=d, pick=pick, auto_median_s=med["auto"], pick_median_s=med[pick],
                                ratio=round(med["auto"] / med[pick], 3), device=DEVICE)


#: H100 SXM peak rates used for the "fraction of the limit" of the n = 10⁶ case (132 SMs at the 1.98 GHz boost
#: clock): FP32 FMA 66.9 TFLOP/s (the ieee path forms aᵀb on the CUDA cores), TF32 tensor cores 495 TFLOP/s dense,
#: MUFU ex2 16 per SM per clock = 4.18e12 exp/s (one exp per pair for rbf).
H100_PEAKS = {"fp32_flops": 66.9e12, "tf32_flops": 495e12, "exp_per_s": 132 * 16 * 1.98e9}


@pytest.mark.parametrize("precision", ["ieee", "tf32"])
def test_mmd2_unbiased_1m(benchmark, precision):
    """n = m = 10⁶, d = 64 (issue 3's target: completes), value, triton on CUDA; records pairs per second and the
    achieved fraction of the H100's binding limit (FP32/TF32 throughput for the 2·d flops of aᵀb per pair, or the
    exp throughput). Skips without CUDA unless ``KERNELMMD_BENCH_1M_N`` sets a smaller n (then ``auto`` on CPU,
    ieee only: a smoke run of the bookkeeping)."""
    small = os.environ.get("KERNELMMD_BENCH_1M_N")
    if DEVICE != "cuda" and not small:
        pytest.skip("the n = 10⁶ case runs on CUDA (set KERNELMMD_BENCH_1M_N for a small CPU smoke run)")
    if DEVICE != "cuda" and precision != "ieee":
        pytest.skip("tensor-core precision exists on CUDA only")
    n, d = int(small or 1_000_000), 64
    x, y = _data(n, d)
    backend = "triton" if DEVICE == "cuda" else "auto"
    kernel = km.RBF(8.0)

    def run():
        with torch.no_grad():
            v = km.mmd2_unbiased(x, y, kernel, backend=backend, precision=precision)
        _sync()
        return float(v)

    value = run()  # warm-up / compile
    t0 = time.perf_counter()
    benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    seconds = time.perf_counter() - t0
    # kernel evaluations: both within-sample blocks are computed as triangles (n(n−1)/2 pairs each) + the n·m block
    pairs = n * (n - 1) / 2 * 2 + n * n
    flops_peak = H100_PEAKS["tf32_flops" if precision == "tf32" else "fp32_flops"]
    frac_dot = pairs * 2 * d / seconds / flops_peak
    frac_exp = pairs / seconds / H100_PEAKS["exp_per_s"]
    benchmark.extra_info.update(
        n=n, d=d, precision=precision, device=DEVICE, value=value, seconds=round(seconds, 4),
        pairs_per_s=pairs / seconds, fraction_of_dot_peak=round(frac_dot, 4), fraction_of_exp_peak=round(frac_exp, 4),
        binding="dot" if frac_dot >= frac_exp else "exp",
    )
