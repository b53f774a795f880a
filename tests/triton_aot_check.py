"""Compile every Triton kernel of kernelmmd ahead of time for the H100 (sm_90), with no GPU.

Run as a script *without* ``TRITON_INTERPRET`` (the interpreter replaces jit functions by interpreted ones, which
cannot be compiled). Each module of ``kernelmmd.ops.triton`` lists its kernels in ``AOT_SPECS``: a list of dicts
``{"name": str, "fn": JITFunction, "signature": {arg: type}, "constexprs": {arg: value}, "tensor_cores": bool}``.
Prints one JSON object: {name: {"ok": bool, "error": str, "mma": bool, "wgmma": bool, "tensor_cores": bool}}.
"""

import importlib
import json
import os
import pkgutil
import sys

os.environ.pop("TRITON_INTERPRET", None)

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import kernelmmd.ops.triton as pkg  # noqa: E402


def main() -> int:
    target = GPUTarget("cuda", 90, 32)
    out = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
        for spec in getattr(mod, "AOT_SPECS", []):
            key = f"{info.name}.{spec['name']}"
            res = {"ok": False, "error": "", "mma": False, "wgmma": False}
            res["tensor_cores"] = spec.get("tensor_cores", False)
            try:
                src = ASTSource(fn=spec["fn"], signature=spec["signature"], constexprs=spec.get("constexprs", {}))
                ptx = triton.compile(src, target=target).asm["ptx"]
                res.update(ok=True, mma="mma.sync" in ptx or "wgmma" in ptx, wgmma="wgmma" in ptx)
            except Exception as e:  # report, the test fails on it
                res["error"] = f"{type(e).__name__}: {e}"[:2000]
            out[key] = res
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
