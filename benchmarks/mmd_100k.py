"""MMD²_u at n = m = 100 000, d = 16, rbf σ = 4 on the CPU: tiled value, auto value, value + gradient (float32) and
value in float64 — wall time, CPU time, peak resident-set growth, and the float32 − float64 difference.

``OMP_NUM_THREADS=1 THREADS=1 python benchmarks/mmd_100k.py`` (about 11 minutes on one core); ``N=20000`` for a
quicker run. Prints a JSON summary (recorded in RESULTS.md).
"""

import json
import os
import threading
import time

import torch

import kernelmmd as km

torch.set_num_threads(int(os.environ.get("THREADS", "1")))
n, d = int(os.environ.get("N", "100000")), 16
g = torch.Generator().manual_seed(0)
x = torch.randn(n, d, generator=g)
y = torch.randn(n, d, generator=g) * 1.1 + 0.05


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(fn):
    base = rss()
    peak = [base]
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.005)

    th = threading.Thread(target=poll)
    th.start()
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    t1, c1 = time.perf_counter(), time.process_time()
    stop.set()
    th.join()
    return out, t1 - t0, c1 - c0, (peak[0] - base) / 2**20


res = {}
v32, t, c, mb = measure(lambda: float(km.mmd2_unbiased(x, y, "rbf", sigma=4.0, backend="tiled")))
res["value_f32"] = dict(value=v32, wall_s=t, cpu_s=c, peak_mb=mb)
print(res, flush=True)
va, t, c, mb = measure(lambda: float(km.mmd2_unbiased(x, y, "rbf", sigma=4.0, backend="auto")))
res["value_auto"] = dict(value=va, wall_s=t, cpu_s=c, peak_mb=mb)
print(res, flush=True)
xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()


def vg():
    v = km.mmd2_unbiased(xr, yr, "rbf", sigma=4.0, backend="tiled")
    v.backward()
    return float(v.detach())


_, t, c, mb = measure(vg)
res["value_grad_f32"] = dict(wall_s=t, cpu_s=c, peak_mb=mb, grad_norm=float(xr.grad.norm()))
print(res, flush=True)
v64, t, c, mb = measure(lambda: float(km.mmd2_unbiased(x.double(), y.double(), "rbf", sigma=4.0, backend="tiled")))
res["value_f64"] = dict(value=v64, wall_s=t, cpu_s=c, peak_mb=mb)
res["rel_err_f32_vs_f64_over_kernel_scale"] = abs(v32 - v64)  # kernel values ≤ 1: MMD² error relative to scale 1
res["load"] = open("/proc/loadavg").read().split()[:3]
print(json.dumps(res, indent=1))
