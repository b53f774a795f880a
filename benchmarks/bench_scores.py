"""Benchmarks of the evaluation scores: KID over subsets, kernelmmd next to torch-fidelity and torchmetrics.

Run with ``pytest benchmarks/bench_scores.py --benchmark-only`` (plain ``pytest`` skips benchmarks); add
``--benchmark-json=FILE`` to keep the ``extra_info``.

1. ``test_kid_subsets``: KID as the papers report it (``subsets`` = 100 subsets of ``subset_size`` = 1000 real and
   1000 fake points, cubic kernel (aᵀb/d + 1)³) on ``KERNELMMD_BENCH_KID_POOL`` = 10 000 real and 10 000 fake
   2048-d float32 features (uniform in [0, 1) and [0, 1.02): Inception pool3 features are ≥ 0), one case per
   implementation: ``kernelmmd`` (``backend="auto"``: upper-triangle products, syrk on the CPU), ``kernelmmd-tiled``
   (the same subsets through the tiled block statistics: the path ``auto`` took before), ``torch-fidelity``
   (``kid_features_to_metric``: numpy float32, BLAS syrk for K_XX and K_YY through numpy's matmul) and
   ``torchmetrics`` (``KernelInceptionDistance.compute``, torch, float64 as given the features' dtype); a peer that
   is not installed is skipped. Each records time, peak memory and the KID value.
2. ``test_kid_subsets_ratio``: kernelmmd, kernelmmd-tiled (the path before) and torch-fidelity interleaved call by
   call (same load on a shared machine), ``KERNELMMD_BENCH_ROUNDS`` (default 3) calls each; records torch-fidelity
   time / kernelmmd time (median of the per-round ratios; > 1: kernelmmd is faster), in wall time and in process CPU
   time (the steadier figure on a shared CPU: single-threaded runs are not charged for waiting).

Knobs: ``KERNELMMD_BENCH_THREADS`` (torch intra-op threads **and** the BLAS threads numpy uses, through threadpoolctl
when it is installed: both implementations then run on the same number of cores; 1 on a CPU shared with other jobs),
``KERNELMMD_BENCH_KID_SUBSETS`` (100), ``KERNELMMD_BENCH_KID_SUBSET_SIZE`` (1000), ``KERNELMMD_BENCH_KID_POOL``.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
import warnings

import pytest
import torch

import kernelmmd as km

from ._memory import peak_mib, reset_peak

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
THREADS = int(os.environ["KERNELMMD_BENCH_THREADS"]) if os.environ.get("KERNELMMD_BENCH_THREADS") else None
if THREADS:
    torch.set_num_threads(THREADS)
SUBSETS = int(os.environ.get("KERNELMMD_BENCH_KID_SUBSETS", "100"))
SUBSET_SIZE = int(os.environ.get("KERNELMMD_BENCH_KID_SUBSET_SIZE", "1000"))
POOL = int(os.environ.get("KERNELMMD_BENCH_KID_POOL", "10000"))
ROUNDS = int(os.environ.get("KERNELMMD_BENCH_ROUNDS", "3"))
DIM = 2048
IMPLS = ["kernelmmd", "kernelmmd-tiled", "torch-fidelity", "torchmetrics"]


def blas_threads():
    """numpy's BLAS limited to ``KERNELMMD_BENCH_THREADS`` threads (threadpoolctl), or a no-op."""
    if not THREADS:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=THREADS)


@pytest.fixture(scope="module")
def features():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(POOL, DIM, generator=g)  # (n, d) float32
    fake = torch.rand(POOL, DIM, generator=g) * 1.02  # (m, d)
    return real.to(DEVICE), fake.to(DEVICE)


def kid_call(impl: str, real: torch.Tensor, fake: torch.Tensor):
    """A zero-argument function computing KID over subsets with ``impl`` (pytest.skip when it is not installed)."""
    if impl == "kernelmmd":
        return lambda: km.kid(real, fake, subsets=SUBSETS, subset_size=SUBSET_SIZE, seed=0).mean
    if impl == "kernelmmd-tiled":
        return lambda: km.kid(real, fake, subsets=SUBSETS, subset_size=SUBSET_SIZE, seed=0, backend="tiled").mean
    if impl == "torch-fidelity":
        metric_kid = pytest.importorskip("torch_fidelity.metric_kid")

        def fn():
            out = metric_kid.kid_features_to_metric(
                real, fake, kid_subsets=SUBSETS, kid_subset_size=SUBSET_SIZE, verbose=False
            )
            return float(out[metric_kid.KEY_METRIC_KID_MEAN])

        return fn
    kid_mod = pytest.importorskip("torchmetrics.image.kid")

    def fn():  # a fresh metric per call: compute() caches its result
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "will save all extracted features in buffer"
            metric = kid_mod.KernelInceptionDistance(
                feature=torch.nn.Identity(), subsets=SUBSETS, subset_size=SUBSET_SIZE
            ).to(DEVICE)
        metric.update(real, real=True)
        metric.update(fake, real=False)
        torch.manual_seed(0)
        return float(metric.compute()[0])

    return fn


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("impl", IMPLS)
def test_kid_subsets(benchmark, features, impl):
    real, fake = features
    fn = kid_call(impl, real, fake)

    def timed():
        with blas_threads():
            out = fn()
        _sync()
        return out

    reset_peak(DEVICE)
    value = benchmark.pedantic(timed, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(
        device=DEVICE, impl=impl, pool=POOL, d=DIM, subsets=SUBSETS, subset_size=SUBSET_SIZE,
        threads=torch.get_num_threads(), blas_threads=THREADS, kid=value, peak_mib=peak_mib(DEVICE),
        seconds_min=benchmark.stats.stats.min, seconds_median=benchmark.stats.stats.median,
    )
    print(f"\n[{impl}] KID {value:.6g}: min {benchmark.stats.stats.min:.2f} s, "
          f"median {benchmark.stats.stats.median:.2f} s over {ROUNDS}")


def test_kid_subsets_ratio(benchmark, features):
    real, fake = features
    names = ("kernelmmd", "kernelmmd-tiled", "torch-fidelity")
    calls = {name: kid_call(name, real, fake) for name in names}
    times = {name: [] for name in names}
    cpu = {name: [] for name in names}  # process CPU seconds: steadier than wall time on a shared CPU
    values = {}

    def each():
        for name in names:
            t0, c0 = time.perf_counter(), time.process_time()
            with blas_threads():
                values[name] = calls[name]()
            _sync()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)

    benchmark.pedantic(each, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    ref = "torch-fidelity"
    speed = {name: [r / o for o, r in zip(times[name], times[ref])] for name in names[:2]}
    cpu_speed = {name: [r / o for o, r in zip(cpu[name], cpu[ref])] for name in names[:2]}
    benchmark.extra_info.update(
        device=DEVICE, pool=POOL, d=DIM, subsets=SUBSETS, subset_size=SUBSET_SIZE, threads=torch.get_num_threads(),
        blas_threads=THREADS, seconds=times, cpu_seconds=cpu, kid=values, speedups_vs_torch_fidelity=speed,
        cpu_speedups_vs_torch_fidelity=cpu_speed,
        speedup_vs_torch_fidelity={k: statistics.median(v) for k, v in speed.items()},
        cpu_speedup_vs_torch_fidelity={k: statistics.median(v) for k, v in cpu_speed.items()},
    )
    for name in names[:2]:
        print(f"\ntorch-fidelity / {name} per round, wall: {', '.join(f'{r:.2f}' for r in speed[name])}; "
              f"CPU: {', '.join(f'{r:.2f}' for r in cpu_speed[name])}")
    print("wall s:", {k: [round(t, 2) for t in v] for k, v in times.items()})
    print("CPU s:", {k: [round(t, 2) for t in v] for k, v in cpu.items()})
