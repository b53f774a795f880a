"""Damaged runs lose nothing that is intact (gan.checkpoint, gan.train --resume, load_generator, gan.evaluate), and
the gan command lines turn bad input into one ``error:`` line with exit status 2, never a traceback.

Checkpoints carry a SHA-256 trailer: truncation at any byte, a flipped byte anywhere (including bytes that
``torch.load`` would read without complaint), garbage and foreign files are detected; --resume falls back to the
newest intact checkpoint (continuing bitwise as a normal resume from it) or exits 2 when none is intact.
"""

from __future__ import annotations

import gzip
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gan import checkpoint as ckpt
from gan import evaluate as E
from gan.checkpoint import CheckpointError, DamagedFileWarning
from gan.train import RunConfigError, load_generator, main, train
from tests._gan_helpers import rows, tiny, write_idx, write_mnist

ROOT = Path(__file__).resolve().parents[1]
KW = dict(loss="mmd-gp", steps=4, checkpoint_every=1, keep=3)  # mmd-gp: the penalty RNG is checkpointed too
RESUME = ["--resume", "--steps", "6", "--no-progress"]
EVAL = ["--samples", "60", "--subsets", "3", "--subset-size", "20", "--no-progress"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A 4-step run with checkpoints 2, 3, 4 and an uninterrupted 6-step reference run of the same settings."""
    d = tmp_path_factory.mktemp("reliability")
    train(tiny(d / "base", **KW), verbose=False)
    train(tiny(d / "ref", **{**KW, "steps": 6}), verbose=False)
    return d


@pytest.fixture
def run(base, tmp_path):
    shutil.copytree(base / "base", tmp_path / "run")
    return tmp_path / "run"


def ck(run_dir, step: int) -> Path:
    return ckpt.checkpoint_dir(run_dir) / f"ckpt_{step:08d}.pt"


def flip(path: Path, at: int) -> None:
    b = bytearray(path.read_bytes())
    b[at] ^= 0xFF
    path.write_bytes(bytes(b))


def truncate(path: Path, size: int) -> None:
    with open(path, "rb+") as f:
        f.truncate(size)


def one_error_line(err: str, *needles: str) -> None:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], (n, err)


def resume(run_dir, **kw):
    return train(tiny(run_dir, **{**KW, "steps": 6, "resume": True, **kw}), verbose=False)


def assert_continues_like_the_reference(run_dir, ref_dir):
    """Bitwise: the resumed run's logged losses and final networks equal the uninterrupted run's."""
    ra, rb = rows(ref_dir), rows(run_dir)
    assert [r["step"] for r in rb] == [1, 2, 3, 4, 5, 6]
    for x, y in zip(ra, rb):
        assert {k: v for k, v in x.items() if k != "images_per_s"} == \
            {k: v for k, v in y.items() if k != "images_per_s"}, x["step"]
    sa, sb = ckpt.load(ck(ref_dir, 6)), ckpt.load(ck(run_dir, 6))
    for part in ("generator", "critic"):
        assert all(torch.equal(sa[part][k], sb[part][k]) for k in sa[part]), part


# ------------------------------------------------------------------------------------------- detection


def _damage_cases(path: Path) -> dict:
    size, t = path.stat().st_size, ckpt._TRAILER_LEN
    state = ckpt.load(path)
    inside_tensor = path.read_bytes().find(state["fixed_z"].numpy().tobytes()) + 5  # torch.load reads it fine
    assert inside_tensor > 5
    cases = {f"truncated to {n} bytes": ("truncate", n)
             for n in (0, 1, 100, size // 2, size - t - 1, size - t, size - t + 30, size - 1)}
    cases.update({f"byte {i} flipped": ("flip", i) for i in (0, inside_tensor, size // 2, size - 30, size - 1)})
    cases["bytes appended"] = ("append", b"\x00" * 7)
    return cases


def test_every_damage_to_a_checkpoint_is_detected(run):
    path = ck(run, 4)
    pristine = path.read_bytes()
    for name, (kind, arg) in _damage_cases(path).items():
        path.write_bytes(pristine)
        if kind == "truncate":
            truncate(path, arg)
        elif kind == "flip":
            flip(path, arg)
        else:
            path.write_bytes(pristine + arg)
        with pytest.raises(CheckpointError, match=str(path)) as e:
            ckpt.load(path)
        assert e.value.path == path, name
        found, state, damaged = ckpt.newest_intact(run)
        assert found == ck(run, 3) and state["step"] == 3 and [d.path for d in damaged] == [path], name
    path.write_bytes(pristine)
    assert ckpt.load(path)["step"] == 4 and "checksum" not in ckpt.load(path)


def test_altered_bytes_that_torch_load_accepts_fail_the_checksum(run):
    path = ck(run, 4)
    state = ckpt.load(path)
    flip(path, path.read_bytes().find(state["fixed_z"].numpy().tobytes()) + 5)
    altered = torch.load(path, weights_only=True)  # the dangerous case: plain torch.load reads altered values
    assert not torch.equal(altered["fixed_z"], state["fixed_z"])
    with pytest.raises(CheckpointError, match="fails its SHA-256 checksum"):
        ckpt.load(path)


def test_checkpoints_without_a_checksum_still_load_and_resume(run, base):
    for s in (2, 3, 4):  # as written before checksums existed: a plain torch.save dict
        torch.save(ckpt.load(ck(run, s)), ck(run, s))
        assert b"#gan-checkpoint" not in ck(run, s).read_bytes()
    assert ckpt.load(ck(run, 4))["step"] == 4
    resume(run)
    assert_continues_like_the_reference(run, base / "ref")


def test_not_a_checkpoint(tmp_path):
    cases = {"text.pt": b"hello\n", "random.pt": np.random.default_rng(0).bytes(5000)}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    torch.save(torch.randn(3), tmp_path / "tensor.pt")
    torch.save({"step": 1}, tmp_path / "dict.pt")
    for name, match in (("text.pt", "truncated, damaged or not a checkpoint"), ("random.pt", "not a checkpoint"),
                        ("tensor.pt", "holds a Tensor, not a dict"), ("dict.pt", "not a gan.train checkpoint")):
        with pytest.raises(CheckpointError, match=match):
            ckpt.load(tmp_path / name)
    with pytest.raises(CheckpointError, match="is a directory"):
        ckpt.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ckpt.load(tmp_path / "missing.pt")


# ------------------------------------------------------------------------------------------- resume


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_resume_falls_back_to_the_newest_intact_checkpoint_bitwise(damage, run, base):
    path = ck(run, 4)
    if damage == "truncate":
        truncate(path, path.stat().st_size - 1)
    elif damage == "flip":
        flip(path, path.stat().st_size // 2)
    else:
        path.write_text("not a checkpoint\n")
    with pytest.warns(DamagedFileWarning, match=f"{path}.*renamed it to ckpt_00000004.pt.damaged.*ckpt_00000003.pt"):
        summary = resume(run)
    assert summary["step"] == 6
    assert (path.parent / "ckpt_00000004.pt.damaged").is_file()  # kept aside for inspection, out of pruning's way
    assert_continues_like_the_reference(run, base / "ref")
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [4, 5, 6]


def _cli(module, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_resume_cli_warns_with_one_line_per_damaged_file(run):
    flip(ck(run, 4), 1000)
    truncate(ck(run, 3), 0)
    proc = _cli("gan.train", "--out", run, *RESUME)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warned = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 2 and "ckpt_00000004.pt fails its SHA-256 checksum" in warned[0]
    assert "ckpt_00000003.pt is empty" in warned[1] and "resuming from the newest intact checkpoint, " \
        "ckpt_00000002.pt" in warned[1]
    assert not [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("warning: ")]
    assert [r["step"] for r in rows(run)] == [1, 2, 3, 4, 5, 6]


def test_no_intact_checkpoint_exits_2_with_one_line(run):
    truncate(ck(run, 4), 10)
    flip(ck(run, 3), 2000)
    ck(run, 2).write_bytes(b"")
    before = sorted(p.name for p in ckpt.checkpoint_dir(run).iterdir())
    proc = _cli("gan.train", "--out", run, *RESUME)
    assert proc.returncode == 2, proc.stderr
    one_error_line(proc.stderr, "--resume: no intact checkpoint in", "ckpt_00000004.pt is truncated",
                   "ckpt_00000003.pt fails its SHA-256 checksum", "ckpt_00000002.pt is empty")
    assert sorted(p.name for p in ckpt.checkpoint_dir(run).iterdir()) == before  # nothing renamed or removed
    with pytest.raises(CheckpointError, match="no intact checkpoint"):
        load_generator(run)


def test_stale_temporary_files_are_removed_on_resume(run):
    dead = 2**31 - 7  # no such process
    stale = [ckpt.checkpoint_dir(run) / f".ckpt_00000005.pt.tmp-{dead}", run / f".config.json.tmp-{dead}",
             run / "samples" / f".step_00000006.png.tmp-{dead}"]
    live = ckpt.checkpoint_dir(run) / f".ckpt_00000007.pt.tmp-{os.getppid()}"  # a writer that still runs
    for p in [*stale, live]:
        p.write_bytes(b"half a file")
    with pytest.warns(DamagedFileWarning, match=r"removed 3 temporary file\(s\) left by a killed process"):
        resume(run)
    assert not any(p.exists() for p in stale) and live.exists()
    leftovers = [p for d in (run, run / "samples", ckpt.checkpoint_dir(run)) for p in d.iterdir() if ".tmp-" in p.name]
    assert leftovers == [live]


def test_half_written_metrics_line_is_dropped(run):
    metrics = run / "metrics.jsonl"
    text = metrics.read_bytes()
    metrics.write_bytes(text[:-7])  # the step-4 row cut off by a kill
    with pytest.warns(DamagedFileWarning, match="dropped its last line"):
        resume(run)
    assert [r["step"] for r in rows(run)] == [1, 2, 3, 5, 6]


def test_unreadable_metrics_lines_are_dropped(run):
    metrics = run / "metrics.jsonl"
    lines = metrics.read_bytes().split(b"\n")
    lines[1] = b"\xff\xfe{not json"
    metrics.write_bytes(b"\n".join(lines))
    with pytest.warns(DamagedFileWarning, match=r"dropped 1 unreadable line\(s\) \(line 2\)"):
        resume(run)
    assert [r["step"] for r in rows(run)] == [1, 3, 4, 5, 6]


def test_outputs_are_written_atomically(run, monkeypatch):
    before = (run / "losses.png").read_bytes()
    import matplotlib.figure

    def broken(self, fname, **kw):
        Path(fname).write_bytes(b"half a png")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    from gan.plots import save_loss_curves

    with pytest.raises(OSError):
        save_loss_curves(rows(run), run / "losses.png")
    assert (run / "losses.png").read_bytes() == before and not list(run.glob(".*.tmp-*"))
    with pytest.raises(RuntimeError):
        with ckpt.atomic_path(run / "config.json") as tmp:
            tmp.write_text("{half")
            raise RuntimeError("killed")
    json.loads((run / "config.json").read_text())  # untouched


# ------------------------------------------------------------------------------------------- config.json


CONFIG_DAMAGE = {
    "truncated": (lambda text: text[: len(text) // 2], "is not valid JSON"),
    "not JSON": (lambda text: "\x00\x01garbage", "is not valid JSON"),
    "no config": (lambda text: json.dumps({"sample_shape": [2]}), "has no 'config' object"),
    "missing key": (lambda text: _edit(text, lambda c: c["config"].pop("loss")), "settings missing loss"),
    "unknown key": (lambda text: _edit(text, lambda c: c["config"].update(colour=1)), "unknown 'colour'"),
    "invalid value": (lambda text: _edit(text, lambda c: c["config"].update(loss="hinge")), "loss must be one of"),
    "bad type": (lambda text: _edit(text, lambda c: c["config"].update(steps="many")), "steps must be an integer"),
    "no sample_shape": (lambda text: _edit(text, lambda c: c.pop("sample_shape")), "'sample_shape' must be"),
}


def _edit(text, fn):
    c = json.loads(text)
    fn(c)
    return json.dumps(c)


@pytest.mark.parametrize("case", list(CONFIG_DAMAGE))
def test_damaged_config_json_is_one_clear_error(case, run, capsys):
    damage, message = CONFIG_DAMAGE[case]
    path = run / "config.json"
    path.write_text(damage(path.read_text()))
    assert main(["--out", str(run), *RESUME]) == 2
    one_error_line(capsys.readouterr().err, str(path), message)
    assert E.main([str(run), *EVAL]) == 2
    one_error_line(capsys.readouterr().err, str(path), message)
    with pytest.raises(RunConfigError, match=message):
        load_generator(run)


# ------------------------------------------------------------------------------------------- load_generator, evaluate


def test_load_generator_on_a_damaged_run(run):
    good, _ = load_generator(run, checkpoint=ck(run, 3))
    flip(ck(run, 4), 3000)
    with pytest.warns(DamagedFileWarning, match="ckpt_00000004.pt fails its SHA-256.*using .*ckpt_00000003.pt"):
        g, cfg = load_generator(run)
    assert cfg.loss == "mmd-gp"
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), good.state_dict().values()))
    with pytest.raises(CheckpointError, match=f"checkpoint {ck(run, 4)} fails its SHA-256 checksum"):
        load_generator(run, checkpoint=ck(run, 4))  # an explicit checkpoint never falls back
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        load_generator(run, checkpoint=run / "missing.pt")
    config = json.loads((run / "config.json").read_text())
    config["sample_shape"] = [3]
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not fit the run"):
        load_generator(run, checkpoint=ck(run, 3))


def test_evaluate_falls_back_or_exits_2(run, capsys):
    truncate(ck(run, 4), 12345)
    with pytest.warns(DamagedFileWarning, match=f"checkpoint {ck(run, 4)} is truncated.*using the newest intact "
                      "checkpoint, ckpt_00000003.pt"):
        assert E.main([str(run), *EVAL]) == 0
    assert "Traceback" not in capsys.readouterr().err
    s = json.loads((run / "scores.json").read_text())
    assert s["step"] == 3 and s["checkpoint"] == str(ck(run, 3))
    assert ck(run, 4).is_file()  # evaluation leaves the run's checkpoints alone
    for s in (2, 3):
        flip(ck(run, s), 100)
    assert E.main([str(run), *EVAL]) == 2
    one_error_line(capsys.readouterr().err, "no intact checkpoint in", "ckpt_00000003.pt fails its SHA-256")


def test_evaluate_checkpoint_that_is_not_a_checkpoint(run, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(1).bytes(4000))
    torch.save(torch.zeros(2), tmp_path / "tensor.pt")
    for name, message in (("notes.txt", "is truncated, damaged or not a checkpoint"),
                          ("random.pt", "is truncated, damaged or not a checkpoint"),
                          ("tensor.pt", "is not a gan.train checkpoint"), (".", "is a directory"),
                          ("missing.pt", "does not exist")):
        assert E.main([str(run), "--checkpoint", str(tmp_path / name), *EVAL]) == 2, name
        one_error_line(capsys.readouterr().err, message)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
@pytest.mark.parametrize("module, device, message", [
    ("gan.evaluate", "cuda", "--device cuda: no CUDA device is available"),
    ("gan.evaluate", "cuda:0", "--device cuda:0: no CUDA device is available"),
    ("gan.evaluate", "gpu", "--device 'gpu' is not a torch device"),
    ("gan.features", "cuda", "--device cuda: no CUDA device is available"),
])
def test_missing_device_is_one_clear_error(module, device, message, run, capsys):
    mod = importlib.import_module(module)
    argv = ([str(run)] if module == "gan.evaluate" else []) + ["--device", device]
    with pytest.raises(SystemExit) as e:
        mod.main(argv)
    assert e.value.code == 2
    one_error_line(capsys.readouterr().err, message)
    with pytest.raises(ValueError, match="no CUDA device|not a torch device"):
        E.evaluate_run(run, device=device, samples=10)


def test_garbage_feature_weights(run, tmp_path, capsys):
    (tmp_path / "lenet.pt").write_bytes(b"\x00" * 100)
    assert E.main([str(run), "--features", "lenet", "--feature-weights", str(tmp_path / "lenet.pt"), *EVAL]) == 2
    one_error_line(capsys.readouterr().err, "lenet.pt is not a LeNet weights file")


# ------------------------------------------------------------------------------------------- data and options


def _idx_bytes(n=6):
    images = np.random.default_rng(0).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    return bytes([0, 0, 8, 3]) + b"".join(int(v).to_bytes(4, "big") for v in images.shape) + images.tobytes()


GZ_DAMAGE = {
    "not gzip": (lambda: b"garbage, not gzip\n", "is not a readable gzip file (BadGzipFile"),
    "gzip of garbage": (lambda: gzip.compress(b"\x01\x02garbage" * 20), "is not an IDX file"),
    "truncated gzip": (lambda: gzip.compress(_idx_bytes())[:-40], "is not a readable gzip file (EOFError"),
    "corrupt gzip": (lambda: _corrupt_gzip(), "is not a readable gzip file"),
    "truncated IDX": (lambda: gzip.compress(_idx_bytes()[:-100]), "is truncated or corrupt"),
}


def _corrupt_gzip():
    b = bytearray(gzip.compress(_idx_bytes()))
    b[20:40] = b"\xff" * 20
    return bytes(b)


@pytest.mark.parametrize("case", list(GZ_DAMAGE))
def test_garbage_idx_files_are_one_clear_error(case, tmp_path, capsys):
    write_mnist(tmp_path / "data", n=8, gz=True)
    data, message = GZ_DAMAGE[case]
    bad = tmp_path / "data" / "train-images-idx3-ubyte.gz"
    bad.write_bytes(data())
    argv = ["--data", "mnist", "--data-dir", str(tmp_path / "data"), "--steps", "1", "--batch-size", "4", "--width",
            "2", "--z-dim", "2", "--critic-steps", "1", "--start-critic-steps", "1", "--out", str(tmp_path / "out"),
            "--no-progress"]
    assert main(argv) == 2
    one_error_line(capsys.readouterr().err, str(bad), message)


def test_out_that_is_a_file(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    assert main(["--data", "gaussians-2d", "--steps", "1", "--out", str(tmp_path / "notes.txt"), "--no-progress"]) == 2
    one_error_line(capsys.readouterr().err, "notes.txt is a file, not a run directory")


def test_garbage_cifar_batch(tmp_path):
    from gan.data import read_cifar_batch

    (tmp_path / "data_batch_1").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match="is not a CIFAR-10 python batch"):
        read_cifar_batch(tmp_path / "data_batch_1")


def test_write_idx_helper_matches(tmp_path):  # the hand-made IDX bytes above are what the test helper writes
    images = np.random.default_rng(0).integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "x", images, gz=False)
    assert (tmp_path / "x").read_bytes() == _idx_bytes()


def test_dcgan_on_2d_data_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--data", "gaussians-2d", "--arch", "dcgan", "--out", str(tmp_path)])
    assert e.value.code == 2
    one_error_line(capsys.readouterr().err, "arch 'dcgan' needs image data (--data mnist, fashion-mnist, cifar10)",
                   "--arch mlp")


@pytest.mark.parametrize("module", ["gan.train", "gan.evaluate", "gan.features"])
def test_help_states_each_default_once(module):
    parser = importlib.import_module(module).build_parser()
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        shown = formatter._get_help_string(action)
        if action.nargs == 0 or action.default is None:
            assert "(default: " not in shown.replace(action.help, ""), action.dest  # nothing added
        elif "default" in action.help:
            assert shown == action.help, action.dest  # the help states it already
        else:
            assert shown == action.help + " (default: %(default)s)", action.dest
    text = parser.format_help()
    assert "(default: None)" not in text and "(default: True)" not in text and "(default: False)" not in text


# ------------------------------------------------------------------------------------------- KID subsets


class _Half(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)

    def forward(self, z):
        return 0.5 * self.lin(z)


def test_kid_subset_size_equal_to_the_sample_count_warns():
    real = torch.rand(40, 2, generator=torch.Generator().manual_seed(0))
    kw = dict(subsets=4, progress=False)
    with pytest.warns(UserWarning, match="equals the number of generated samples and of real images.*std over "
                      "subsets is 0 \\(up to rounding\\) and meaningless.*smaller subset size"):
        s = E.evaluate_generator(_Half(), real, lambda x: x, 40, subset_size=40, **kw)
    assert s["kid_std"] <= 1e-12 * abs(s["kid_mean"])  # the same value 4 times, up to summation order
    with pytest.warns(UserWarning, match=r"KID subset size 30 \(capped\) equals the number of generated samples: "
                      "the std over subsets only reflects"):
        E.evaluate_generator(_Half(), real, lambda x: x, 30, subset_size=1000, **kw)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        E.evaluate_generator(_Half(), real, lambda x: x, 40, subset_size=20, **kw)


# ------------------------------------------------------- QA round 2: intact files that are not this run's state


def _foreign(run_dir, step, **changes):
    """Checkpoint ``step`` rewritten with a valid checksum but altered contents (another run's, or edited)."""
    state = ckpt.load(ck(run_dir, step))
    for k, v in changes.items():
        if k == "config":
            state["config"] = {**state["config"], **v}
        else:
            state[k] = v
    return state


@pytest.mark.parametrize("case", ["another run", "renamed", "fifo", "nan weights", "bad fixed_z", "step in name"])
def test_resume_skips_intact_files_that_are_not_this_runs_state(case, run):
    path = ck(run, 4)
    if case == "another run":  # same step, checksum fine, but the seed of another run
        state, expect = _foreign(run, 4, config={"seed": 7}), "differs from the run's"
        path.unlink()
        ckpt.save_atomic(state, run, 4)
    elif case == "renamed":  # an older checkpoint copied over the newest name
        shutil.copy(ck(run, 2), path)
        expect = "holds step 2, not the step 4 of its name"
    elif case == "fifo":  # opening it would block forever
        path.unlink()
        os.mkfifo(path)
        expect = "is not a regular file"
    else:  # older checkpoints (no checksum trailer) with damaged contents
        state = ckpt.load(path)
        gen = {k: v * float("nan") for k, v in state["generator"].items()}
        state.update({"nan weights": {"generator": gen}, "bad fixed_z": {"fixed_z": torch.zeros(3, 1)},
                      "step in name": {"step": 1000}}[case])
        torch.save(state, path)
        expect = {"nan weights": "non-finite values in the generator", "bad fixed_z": "'fixed_z' is not a (n, z_dim)",
                  "step in name": "holds step 1000"}[case]
    with pytest.warns(DamagedFileWarning) as caught:
        assert resume(run)["step"] == 6
    (warned,) = [str(w.message) for w in caught if issubclass(w.category, DamagedFileWarning)]
    assert expect in warned and str(path) in warned, warned
    assert "resuming from the newest intact checkpoint, ckpt_00000003.pt" in warned
    assert [r["step"] for r in rows(run)] == [1, 2, 3, 4, 5, 6]


def test_edited_config_json_is_never_resumed_silently(run, capsys):
    cfg = json.loads((run / "config.json").read_text())
    cfg["config"]["lr"] = 0.5  # valid, but not the settings the checkpoints were trained with
    (run / "config.json").write_text(json.dumps(cfg))
    assert main(["--out", str(run), *RESUME]) == 2
    one_error_line(capsys.readouterr().err, "--resume: no intact checkpoint", "differs from the run's")
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [2, 3, 4]  # nothing renamed
    with pytest.raises(CheckpointError, match="differs from the run's"):
        load_generator(run)


def test_empty_out_is_one_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["--data", "gaussians-2d", "--steps", "1", "--out", "", "--no-progress"])
    assert e.value.code == 2
    one_error_line(capsys.readouterr().err, "--out must name a run directory")
    assert list(tmp_path.iterdir()) == []  # nothing written into the current directory


@pytest.mark.parametrize("case", ["32x32 images", "7 labels for 8 images", "no images"])
@pytest.mark.parametrize("module", ["train", "features"])
def test_idx_files_of_the_wrong_shape_are_one_clear_error(case, module, tmp_path, capsys):
    from gan import features

    write_mnist(tmp_path / "data", n=8, gz=True)
    images, labels = tmp_path / "data" / "train-images-idx3-ubyte", tmp_path / "data" / "train-labels-idx1-ubyte"
    if case == "32x32 images":
        write_idx(images, np.zeros((8, 32, 32), np.uint8), gz=True)
    elif case == "no images":
        write_idx(images, np.zeros((0, 28, 28), np.uint8), gz=True)
        write_idx(labels, np.zeros((0,), np.uint8), gz=True)
    else:
        write_idx(labels, np.zeros((7,), np.uint8), gz=True)
    data = ["--data", "mnist", "--data-dir", str(tmp_path / "data"), "--no-progress"]
    if module == "train":
        code = main([*data, "--steps", "1", "--batch-size", "4", "--width", "2", "--z-dim", "2", "--out",
                     str(tmp_path / "out")])
    else:
        code = features.main([*data, "--epochs", "1", "--out", str(tmp_path / "lenet.pt")])
    assert code == 2
    one_error_line(capsys.readouterr().err, "labels" if "labels" in case else "expected an image array")


@pytest.mark.parametrize("where", ["samples", "metrics.jsonl"])
def test_run_files_of_the_wrong_kind_are_one_clear_error(where, run, capsys):
    target = run / where
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    (target.mkdir() if where == "metrics.jsonl" else target.write_text("x"))
    assert main(["--out", str(run), *RESUME]) == 2
    err = capsys.readouterr().err
    one_error_line(err, str(run))
    assert "[Errno" not in err
