"""python -m gan.experiments.troubleshoot (seed 004): a tiny MNIST-shaped run, a few small repetitions."""

from __future__ import annotations

import json

import pytest
import torch

from gan.experiments import troubleshoot as T
from tests._gan_helpers import tiny, write_mnist


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    train = pytest.importorskip("gan.train")
    d = tmp_path_factory.mktemp("mnist")
    write_mnist(d, n=60, split="train", seed=0)
    write_mnist(d, n=60, split="test", seed=1)
    out = tmp_path_factory.mktemp("runs") / "mnist"
    train.train(tiny(out, loss="smmd", data="mnist", data_dir=str(d), arch="mlp", width=2, steps=2), verbose=False)
    return out, d


def test_command_writes_powers_map_and_figure(mnist_run, tmp_path, capsys):
    run_dir, _ = mnist_run
    out = tmp_path / "ts"
    assert T.main([str(run_dir), "--out", str(out), "--n", "24", "--reps", "2", "--steps", "3",
                   "--permutations", "20", "--alpha", "0.1"]) == 0
    text = capsys.readouterr().out
    r = json.loads((out / "troubleshoot.json").read_text())
    assert r["real_split"] == "test" and r["reps"] == 2 and r["n"] == 24 and r["step"] == 2
    for k in ("rbf", "ard"):
        assert len(r[k]["p_values"]) == 2 and all(0 < p <= 1 for p in r[k]["p_values"])
        assert r[f"power_{k}"] == sum(p <= 0.1 for p in r[k]["p_values"]) / 2
    ell = torch.tensor(r["ard_map"])
    assert ell.shape == (28, 28) and bool((ell > 0).all())
    assert (out / "troubleshoot.png").stat().st_size > 1000
    assert "power at alpha = 0.1: optimised ARD" in text and "rep 2/2" in text


def test_power_study_is_reproducible_and_train_split_fallback(mnist_run):
    run_dir, d = mnist_run
    from gan.run import load_checkpointed_generator

    gen, cfg, _, _ = load_checkpointed_generator(run_dir)
    real, used = T.real_digits("mnist", d, "train")
    assert used == "train" and real.shape == (60, 1, 28, 28) and float(real.min()) >= -1.0
    kw = dict(n=16, reps=1, steps=2, lr=0.05, alpha=0.05, n_permutations=10, seed=3, log=lambda s: None)
    a, b = T.power_study(real, gen, cfg.z_dim, **kw), T.power_study(real, gen, cfg.z_dim, **kw)
    assert a["rbf"]["p_values"] == b["rbf"]["p_values"] and torch.equal(a["ard_map"], b["ard_map"])
    with pytest.raises(ValueError, match="n = 100 real images requested but the real set has only 60"):
        T.power_study(real, gen, cfg.z_dim, **{**kw, "n": 100})


def test_bad_options_and_missing_run(tmp_path, capsys):
    assert T.main([str(tmp_path), "--reps", "0"]) == 2
    assert "--reps must be >= 1, got 0" in capsys.readouterr().err
    assert T.main([str(tmp_path), "--alpha", "1.5"]) == 2
    assert "--alpha must be in (0, 1)" in capsys.readouterr().err
    assert T.main([str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
