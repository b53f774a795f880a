"""Helpers shared by the gan tests: small IDX / MNIST files and a tiny training configuration."""

import gzip
import json
from pathlib import Path

import numpy as np

from gan.train import Config


def write_idx(path, array, *, gz=False):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    raw = header + array.tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def write_mnist(directory, n=10, *, gz=False, split="train", seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    prefix = "train" if split == "train" else "t10k"
    directory.mkdir(parents=True, exist_ok=True)
    write_idx(directory / f"{prefix}-images-idx3-ubyte", images, gz=gz)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, gz=gz)
    return images, labels


def tiny(out, **kw):
    """A configuration that runs in well under a second per step on a CPU."""
    base = dict(data="gaussians-2d", steps=3, batch_size=8, critic_steps=1, start_critic_steps=2, width=4, z_dim=4,
                lr=1e-4, log_every=1, sample_every=2, checkpoint_every=2, out=str(out), progress=False)
    base.update(kw)
    return Config(**base)


def rows(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
