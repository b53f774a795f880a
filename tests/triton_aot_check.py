"""Compile every Triton kernel of kernelmmd ahead of time for the H100 (sm_90), with no GPU.

Run as a script *without* ``TRITON_INTERPRET`` (the interpreter replaces jit functions by interpreted ones, which
cannot be compiled). Each module of ``kernelmmd.ops.triton`` lists its kernels in ``AOT_SPECS``: a list of dicts
``{"name": str, "fn": JITFunction, "signature": {arg: type}, "constexprs": {arg: value}, "tensor_cores": bool}``.
Prints one JSON object: {name: {"ok": bool, "error": str, "mma": bool, "wgmma": bool, "tensor_cores": bool}}.

Options (for comparing generated code before and after a change; the test runs without them):

* ``--ptxas``: also run ``ptxas -v`` (Triton's own binary and flags) on each PTX and add ``"regs"`` (registers per
  thread), ``"spill_stores"`` and ``"spill_loads"`` (bytes) to each entry.
* ``--num-warps N``: compile with N warps (default: Triton's default, 4; the CUDA launchers use 8).
* ``--only SUBSTR``: only the kernels whose ``module.name`` contains SUBSTR.
"""

import argparse
import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import kernelmmd.ops.triton as pkg  # noqa: E402

ARCH = 90


def ptxas_report(ptx: str) -> dict:
    """Registers and spill bytes of one kernel from ``ptxas -v`` with the flags Triton's NVIDIA backend uses."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        cmd = [get_ptxas(ARCH).path, "-lineinfo", "-v", "--regAllocOptLevel=2",
               f"--gpu-name={sm_arch_from_capability(ARCH)}", src, "-o", os.path.join(tmp, "k.o")]
        log = subprocess.run(cmd, check=True, capture_output=True, text=True).stderr
    regs = re.search(r"Used (\d+) registers", log)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    return {"regs": int(regs.group(1)) if regs else -1,
            "spill_stores": int(spill.group(1)) if spill else -1, "spill_loads": int(spill.group(2)) if spill else -1}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ptxas", action="store_true", help="add registers and spill bytes from ptxas -v")
    ap.add_argument("--num-warps", type=int, default=None, help="compile with this many warps")
    ap.add_argument("--only", default="", help="only kernels whose module.name contains this")
    args = ap.parse_args(argv)
    target = GPUTarget("cuda", ARCH, 32)
    options = {} if args.num_warps is None else {"num_warps": args.num_warps}
    out = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
        for spec in getattr(mod, "AOT_SPECS", []):
            key = f"{info.name}.{spec['name']}"
            if args.only not in key:
                continue
            res = {"ok": False, "error": "", "mma": False, "wgmma": False}
            res["tensor_cores"] = spec.get("tensor_cores", False)
            try:
                src = ASTSource(fn=spec["fn"], signature=spec["signature"], constexprs=spec.get("constexprs", {}))
                ptx = triton.compile(src, target=target, options=options).asm["ptx"]
                res.update(ok=True, mma="mma.sync" in ptx or "wgmma" in ptx, wgmma="wgmma" in ptx)
                if args.ptxas:
                    res.update(ptxas_report(ptx))
            except Exception as e:  # report, the test fails on it
                res["error"] = f"{type(e).__name__}: {e}"[:2000]
            out[key] = res
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
