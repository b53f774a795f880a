"""Monte Carlo level and power of MMDAgg, MMDAggInc and MMD-FUSE against the median-heuristic permutation test.

    python examples/aggregated_power.py [--reps 100] [--json out.json]

Problems (tests/_alternatives.py): two samples of N(0, I₂) (the level, m = n and m ≠ n); Blobs (Liu et al. 2020: ε = 6,
n = m = 180, 20 points per blob); MMDAgg's perturbed uniform in d = 1 (P = 3 bumps, c = 2.7, n = m = 200); HDGM
(d = 10, n = m = 200). Every test at α = 0.05: mmd_test (σ = median, 500 permutations), mmdagg_test (laplace +
gaussian, 10 bandwidths each, B1 = B2 = 500), mmdagginc_test (gaussian, R = 50, B1 = B2 = 500), mmdfuse_test (laplace
+ gaussian, B = 500). The numbers in README.md ("Aggregated tests") come from this script.
"""

import argparse
import functools
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from _alternatives import blobs, hdgm, null_pair, perturbed_uniform  # noqa: E402

import kernelmmd as km  # noqa: E402

PROBLEMS = {
    "null n=m=50": (null_pair, 50, 50),
    "null n=50, m=80": (null_pair, 50, 80),
    "blobs eps=6 n=m=180": (blobs, 180, 180),
    "perturbed uniform P=3 n=m=200": (functools.partial(perturbed_uniform, perturbations=3, c=2.7), 200, 200),
    "hdgm d=10 n=m=200": (hdgm, 200, 200),
}
TESTS = {
    "median": lambda x, y, r: km.mmd_test(x, y, sigma="median", n_permutations=500, seed=r).reject(0.05),
    "mmdagg": lambda x, y, r: km.mmdagg_test(x, y, n_permutations=500, n_correction=500, seed=r).reject,
    "mmdagginc": lambda x, y, r: km.mmdagginc_test(x[: min(len(x), len(y))], y[: min(len(x), len(y))], R=50,
                                                   n_permutations=500, n_correction=500, seed=r).reject,
    "mmdfuse": lambda x, y, r: km.mmdfuse_test(x, y, n_permutations=500, seed=r).reject,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = {}
    for name, (gen, n, m) in PROBLEMS.items():
        rng = np.random.default_rng(0)
        data = [gen(n, m, rng) for _ in range(args.reps)]
        out[name] = {}
        for test, fn in TESTS.items():
            t0 = time.time()
            rate = float(np.mean([fn(x, y, r) for r, (x, y) in enumerate(data)]))
            se = math.sqrt(max(rate * (1 - rate), 0.05 * 0.95) / args.reps)
            out[name][test] = {"rate": rate, "se": se, "seconds_per_test": (time.time() - t0) / args.reps}
            print(f"{name:32s} {test:10s} {rate:.3f} ± {se:.3f}  ({out[name][test]['seconds_per_test']:.3f} s/test)",
                  flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"reps": args.reps, "results": out}, f, indent=1)


if __name__ == "__main__":
    main()
