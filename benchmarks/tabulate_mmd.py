"""Markdown table of ``bench_mmd.py`` results: ``python benchmarks/tabulate_mmd.py run1.json [run2.json ...]``.

One row per (mode, n, d): the time per call of each backend (pytest-benchmark's minimum over the rounds; slow cases
run one round), what ``auto`` resolved to, and ``auto / best``: the ratio of auto's time to the fastest explicit
backend's time at that point, and ``pick / best``: the time of the explicit backend that ``auto`` resolved to over the
fastest one (auto runs exactly that backend's code, so ``pick / best`` judges the choice, and ``auto / best`` adds
the dispatch overhead and the timing noise of a shared machine). Later files override earlier ones for the same case.
Peak resident-set growth (MB) follows in brackets.
"""

from __future__ import annotations

import json
import sys

ORDER = ["torch", "tiled", "keops", "triton"]


def main(paths):
    cases = {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        for b in data["benchmarks"]:
            info = b.get("extra_info", {})
            if "backend" not in info:
                continue
            key = (info["mode"], info["n"], info["d"])
            cases.setdefault(key, {})[info["backend"]] = (b["stats"]["min"], info.get("peak_mb"), info.get("resolved"))
    backends = [be for be in ORDER if any(be in v for v in cases.values())]
    head = ["mode", "n", "d", *backends, "auto", "auto →", "pick / best", "auto / best"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for (mode, n, d), row in sorted(cases.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        cells = [mode, str(n), str(d)]
        best = min((row[be][0] for be in backends if be in row), default=None)
        for be in [*backends, "auto"]:
            if be in row:
                t, mb, _ = row[be]
                mark = "**" if be != "auto" and t == best else ""
                cells.append(f"{mark}{t:.3g} s{mark}" + (f" [{mb:.0f}]" if mb is not None else ""))
            else:
                cells.append("—")
        if "auto" in row and best:
            pick = row["auto"][2]
            ratio = f"{row[pick][0] / best:.2f}" if pick in row else "—"
            cells += [pick or "?", ratio, f"{row['auto'][0] / best:.2f}"]
        else:
            cells += ["—", "—", "—"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
