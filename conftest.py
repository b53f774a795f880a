"""Test configuration shared by tests/ and benchmarks/.

* Triton runs through its interpreter on machines without CUDA: ``TRITON_INTERPRET=1`` is set here, before
  anything imports triton, so Triton kernels are tested on CPU tensors.
* KeOps compiles its formulas into ``.keops_cache/`` in the repository (a directory the tests control).
* Benchmarks (tests using the ``benchmark`` fixture) run only under ``pytest --benchmark-only``; plain
  ``pytest`` skips them so the test suite stays fast.
* Hypothesis property tests are derandomized (the same examples every run, so CI never fails by chance);
  ``HYPOTHESIS_PROFILE=explore pytest`` draws fresh random examples (and more of them) to hunt for new failures —
  add each one found as an ``@example``.
"""

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch missing is an install error reported elsewhere
        return False


if not _cuda_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

os.environ.setdefault("KERNELMMD_KEOPS_CACHE", str(ROOT / ".keops_cache"))

try:
    from hypothesis import settings as _hyp

    _hyp.register_profile("ci", derandomize=True, database=None)
    _hyp.register_profile("explore", max_examples=500)
    _hyp.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # pragma: no cover - hypothesis is a dev dependency
    pass


def pytest_collection_modifyitems(config, items):
    if config.getoption("benchmark_only", default=False):
        return
    skip = pytest.mark.skip(reason="benchmark: run with `pytest --benchmark-only`")
    for item in items:
        if "benchmark" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)
