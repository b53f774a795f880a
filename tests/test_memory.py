"""No n × m allocation: peak resident memory of the fused backends in a fresh subprocess, at sizes where one
float32 n × m matrix would need gigabytes. Linux only (reads ru_maxrss in kilobytes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss units are Linux-specific")

_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    import torch
    import kernelmmd as km
    from kernelmmd import ops

    backend, n, d, grad = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    y = torch.randn(n, d, generator=g) + 0.1
    v = torch.randn(n, 1, generator=g)
    k = km.RBF(2.0)
    mv = ops.routine("kernel_mv", backend)
    bs = ops.routine("block_stats", backend)
    small = torch.randn(64, d)
    mv(small, small, v[:64], k)  # warm up: imports, KeOps compilation, allocator pools
    if grad:
        s = small.clone().requires_grad_()
        st = bs(s, s, k)
        (st.sxx - 2 * st.sxy).backward()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if grad:  # value and gradient of MMD²_u
        x.requires_grad_(True)
        y.requires_grad_(True)
        st = bs(x, y, k)
        mmd = st.sxx / (n * (n - 1)) + st.syy / (n * (n - 1)) - 2 * st.sxy / (n * n)
        mmd.backward()
        ok = bool(torch.isfinite(x.grad).all())
    else:  # one kernel-matrix product K(x, y) v
        out = mv(x, y, v, k)
        ok = bool(torch.isfinite(out).all())
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"delta_mb": (after - before) / 1024, "seconds": seconds, "ok": ok}))
    """
)


def _peak(backend, n, d, grad):
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, backend, str(n), str(d), "1" if grad else "0"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_tiled_value_and_gradient_without_nm_matrix():
    """MMD²_u and its gradient at n = m = 12 000 (one float32 n × m matrix: 576 MB; the dense backend holds three
    kernel blocks plus their autograd temporaries, several GB): the tiled backend's peak grows by < 150 MB (its
    tiles hold about 2^20 entries whatever n is; measured ≈ 60 MB)."""
    r = _peak("tiled", 12_000, 4, grad=True)
    assert r["ok"]
    assert r["delta_mb"] < 150, r


def test_keops_kernel_product_without_nm_matrix():
    """K(x, y) v at n = m = 20 000 (one float32 n × m matrix: 1.6 GB) through KeOps: peak grows by < 100 MB."""
    pytest.importorskip("pykeops")
    r = _peak("keops", 20_000, 8, grad=False)
    assert r["ok"]
    assert r["delta_mb"] < 100, r
