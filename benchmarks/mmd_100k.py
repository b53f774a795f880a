"""MMD²_u at n = m = 100 000, d = 16, rbf σ = 4 on the CPU: tiled value, auto value, value + gradient (float32) and
value in float64 — wall time, CPU time, peak resident-set growth, and the float32 − float64 difference.

``OMP_NUM_THREADS=1 THREADS=1 python -m benchmarks.mmd_100k`` (about 11 minutes on one core); ``N=20000`` for a
quicker run. Prints a JSON summary (recorded in RESULTS.md).
"""

import json
import os
import time

import torch

import kernelmmd as km

from ._memory import PeakRSS


def measure(fn):
    """(result, wall s, CPU s, peak RSS growth MB) of ``fn()``."""
    with PeakRSS() as rss:
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return out, wall, cpu, rss.mb


def main():
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    n, d = int(os.environ.get("N", "100000")), 16
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    y = torch.randn(n, d, generator=g) * 1.1 + 0.05
    mmd = lambda a, b, backend="tiled": km.mmd2_unbiased(a, b, "rbf", sigma=4.0, backend=backend)  # noqa: E731
    res = {"n": n, "d": d}
    with torch.no_grad():
        for name, fn in (("value_f32", lambda: mmd(x, y)), ("value_auto", lambda: mmd(x, y, "auto"))):
            v, t, c, mb = measure(lambda fn=fn: float(fn()))
            res[name] = dict(value=v, wall_s=round(t, 2), cpu_s=round(c, 2), peak_mb=mb)
            print(name, res[name], flush=True)
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()

    def value_and_grad():
        v = mmd(xr, yr)
        v.backward()
        return float(v.detach())

    _, t, c, mb = measure(value_and_grad)
    res["value_grad_f32"] = dict(wall_s=round(t, 2), cpu_s=round(c, 2), peak_mb=mb, grad_norm=float(xr.grad.norm()))
    print("value_grad_f32", res["value_grad_f32"], flush=True)
    with torch.no_grad():
        v, t, c, mb = measure(lambda: float(mmd(x.double(), y.double())))
    res["value_f64"] = dict(value=v, wall_s=round(t, 2), cpu_s=round(c, 2), peak_mb=mb)
    res["abs_diff_f32_f64"] = abs(res["value_f32"]["value"] - v)  # kernel values ≤ 1: relative to the kernel scale
    res["load"] = os.getloadavg()
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
