"""Peak-memory probes shared by the benchmark files: CUDA allocator peak on GPU, peak RSS (VmHWM) on CPU, and the
peak growth of the resident set during a block (:class:`PeakRSS`, sampled)."""

from __future__ import annotations

import os
import threading
import time

import torch


def reset_peak(device: str) -> None:
    """Start a new peak-memory window (CUDA allocator stats, or the process's VmHWM on Linux)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return
    try:  # Linux: writing 5 resets the peak RSS (VmHWM) of this process
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_mib(device: str) -> float:
    """Peak memory in MiB since :func:`reset_peak` (NaN where the platform does not report it)."""
    if device == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class PeakRSS:
    """Peak growth of the resident set while the block runs (sampled from /proc/self/statm every 2 ms)."""

    def __init__(self):
        self.ok = os.path.exists("/proc/self/statm")
        self.page = os.sysconf("SC_PAGE_SIZE") if self.ok else 0
        self.peak = 0

    def _rss(self):
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss() - self.base)
            time.sleep(0.002)

    def __enter__(self):
        if self.ok:
            self.base, self.peak = self._rss(), 0
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.ok:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._rss() - self.base)

    @property
    def mb(self):
        return round(self.peak / 2**20, 1) if self.ok else None
