"""gan.schedule: the KID-adaptive learning rate fires on a stalled generator, stays quiet on an improving one, keeps the
authors' memory rules, survives a state_dict round trip, and plugs into gan.train as a callback."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from gan.experiments import one_thread
from gan.schedule import KIDAdaptiveLR, KIDScheduleCallback

D, N = 8, 200


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Small tensors only: one torch thread avoids OpenMP spin-waits on a shared CPU (restored afterwards)."""
    with one_thread():
        yield


def _opts(lr=1.0):
    p = torch.zeros(1, requires_grad=True)
    q = torch.zeros(1, requires_grad=True)
    return [torch.optim.Adam([p], lr=lr), torch.optim.SGD([{"params": [q]}, {"params": [], "lr": 2 * lr}], lr=lr)]


def _gauss(g, shift):
    return torch.randn(N, D, generator=g, dtype=torch.float64) + shift


def test_fires_on_stalled_generator():
    g = torch.Generator().manual_seed(0)
    real = _gauss(g, 0.0)
    opts = _opts()
    sched = KIDAdaptiveLR(opts, every=1, lookback=3, patience=3, factor=0.8, alpha=0.1)
    rows = [sched.update(step, real, _gauss(g, 0.5)) for step in range(1, 21)]  # the same model at every step
    decisions = [r["lr_decision"] for r in rows]
    assert decisions[:3] == ["filling"] * 3
    assert decisions[3:6] == ["not_improved", "not_improved", "decayed"]  # fresh samples of one model: p ~ U(0, 1)
    assert decisions.count("decayed") >= 3
    assert sched.decays == decisions.count("decayed")
    assert sched.lrs == pytest.approx([0.8**sched.decays, 0.8**sched.decays, 2 * 0.8**sched.decays])
    assert all(r["lr_p_value"] is None for r in rows[:3])
    assert all(0.0 <= r["lr_p_value"] <= 1.0 for r in rows[3:] if r["lr_decision"] != "filling")


def test_quiet_on_improving_generator():
    g = torch.Generator().manual_seed(1)
    real = _gauss(g, 0.0)
    sched = KIDAdaptiveLR(_opts(), every=1, lookback=3, patience=3)
    rows = [sched.update(step, real, _gauss(g, 4.0 - 0.15 * step)) for step in range(1, 16)]
    decisions = [r["lr_decision"] for r in rows]
    assert decisions[:3] == ["filling"] * 3 and set(decisions[3:]) == {"improved"}
    assert max(r["lr_p_value"] for r in rows[3:]) < 1e-3
    assert sched.decays == 0 and sched.lrs == [1.0, 1.0, 2.0]


def test_memory_rules_follow_the_authors():
    """Success: drop the oldest, append the new. Failure: memory unchanged (the same old set is compared again).
    Decay: keep the newest patience − 1 entries plus the new one."""
    g = torch.Generator().manual_seed(2)
    real = _gauss(g, 0.0)
    sched = KIDAdaptiveLR(_opts(), every=2, lookback=8, patience=2)  # memory of 4, decay after 2 failures
    for step in (2, 4, 6, 8):
        sched.update(step, real, _gauss(g, 2.0))
    assert [s for s, _ in sched.memory] == [2, 4, 6, 8]
    r = sched.update(10, real, _gauss(g, 0.0))  # a much better model
    assert r["lr_decision"] == "improved" and r["lr_compared_step"] == 2
    assert [s for s, _ in sched.memory] == [4, 6, 8, 10]
    r = sched.update(12, real, _gauss(g, 3.0))  # worse
    assert r["lr_decision"] == "not_improved" and r["lr_compared_step"] == 4 and r["lr_failures"] == 1
    assert [s for s, _ in sched.memory] == [4, 6, 8, 10]
    r = sched.update(14, real, _gauss(g, 3.0))
    assert r["lr_decision"] == "decayed" and r["lr_compared_step"] == 4 and r["lr_failures"] == 0
    assert [s for s, _ in sched.memory] == [10, 14]
    assert r["lr"] == pytest.approx(0.8)
    assert sched.update(16, real, _gauss(g, 3.0))["lr_decision"] == "filling"  # refilling after the decay


def test_min_lr_and_max_samples():
    g = torch.Generator().manual_seed(3)
    real = _gauss(g, 0.0)
    sched = KIDAdaptiveLR(_opts(lr=1e-3), every=1, lookback=1, patience=1, factor=0.5, min_lr=6e-4, max_samples=50)
    for step in range(1, 6):
        sched.update(step, real, _gauss(g, 1.0))
    assert sched.lrs[0] == pytest.approx(6e-4)
    assert sched.memory[-1][1].shape == (50, D)


def test_state_dict_round_trip_gives_identical_decisions():
    g = torch.Generator().manual_seed(4)
    real = _gauss(g, 0.0)
    feats = [_gauss(g, 0.5) for _ in range(9)]
    a = KIDAdaptiveLR(_opts(), every=1, lookback=3)
    for step in range(1, 6):
        a.update(step, real, feats[step - 1])
    state = a.state_dict()
    b = KIDAdaptiveLR(_opts(), every=1, lookback=3)
    b.load_state_dict(state)
    for opt_b, opt_a in zip(b.optimizers, a.optimizers):  # optimiser rates travel in the optimisers' own state
        opt_b.load_state_dict(opt_a.state_dict())
    for step in range(6, 10):
        ra, rb = a.update(step, real, feats[step - 1]), b.update(step, real, feats[step - 1])
        assert ra == rb


def test_due_and_callable_features():
    sched = KIDAdaptiveLR(_opts(), every=5, lookback=10, patience=2)
    assert [s for s in range(0, 21) if sched.due(s)] == [5, 10, 15, 20]
    calls = []
    sched.update(5, torch.randn(10, 2), lambda: calls.append(1) or torch.randn(10, 2))
    assert calls == [1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"every": 0}, "every must be an integer >= 1, got 0"),
        ({"every": 3, "lookback": 10}, "lookback must be a multiple of every = 3, got 10"),
        ({"patience": 0}, "patience must be an integer >= 1, got 0"),
        ({"every": 5, "lookback": 10, "patience": 3}, r"patience must be <= lookback / every = 2, got 3"),
        ({"factor": 1.0}, r"factor must be a number in \(0, 1\), got 1.0"),
        ({"alpha": 0}, r"alpha must be a number in \(0, 1\), got 0"),
        ({"max_samples": 3}, "max_samples must be an integer >= 4, got 3"),
        ({"min_lr": -1.0}, "min_lr must be a finite number >= 0, got -1.0"),
        ({"lookback": 2.5}, "lookback must be an integer >= 1, got 2.5"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KIDAdaptiveLR(_opts(), **kwargs)


def test_empty_optimizers():
    with pytest.raises(ValueError, match="optimizers must contain at least one"):
        KIDAdaptiveLR([])


def test_callback_validates_early():
    with pytest.raises(ValueError, match="n_samples must be an integer >= 4, got 2"):
        KIDScheduleCallback(n_samples=2)
    with pytest.raises(ValueError, match="patience must be <= lookback / every"):
        KIDScheduleCallback(every=2, lookback=2, patience=3)


class _FakeRun:
    """The parts of gan.train.Run the callback uses: G, noise, opt_g, opt_c, data."""

    def __init__(self):
        torch.manual_seed(0)
        self.G = nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2))
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=1e-4)
        self.opt_c = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-4)
        self.data = object()

    def noise(self, n, rng):
        return torch.rand(n, 4, generator=rng) * 2 - 1


def test_callback_fires_on_untrained_generator_and_restores_mode():
    run = _FakeRun()
    real = torch.randn(200, 2, generator=torch.Generator().manual_seed(5))
    cb = KIDScheduleCallback(None, n_samples=200, real_images=real, every=2, lookback=4, patience=2, batch_size=128)
    rows = {s: cb.on_step(run, s) for s in range(1, 31)}
    assert all(rows[s] is None for s in rows if s % 2)
    decisions = [rows[s]["lr_decision"] for s in range(2, 31, 2)]
    assert decisions[:2] == ["filling", "filling"] and "decayed" in decisions
    assert run.opt_g.param_groups[0]["lr"] < 1e-4 and run.opt_c.param_groups[0]["lr"] < 1e-4
    assert run.opt_g.param_groups[0]["lr"] == pytest.approx(1e-4 * 0.8 ** decisions.count("decayed"))
    assert run.G.training  # put back in train mode
    # checkpoint round trip mid-run: a restored callback makes the same decisions
    state = cb.state_dict()
    cb2 = KIDScheduleCallback(None, n_samples=200, real_images=real, every=2, lookback=4, patience=2, batch_size=128)
    cb2.load_state_dict(state)
    run2 = _FakeRun()
    run2.opt_g.load_state_dict(run.opt_g.state_dict())
    run2.opt_c.load_state_dict(run.opt_c.state_dict())
    for s in range(31, 39):
        assert cb.on_step(run, s) == cb2.on_step(run2, s)


def test_callback_in_training_loop(tmp_path):
    """End to end with gan.train: a 24-step toy run barely moves the generator, so the schedule decays the rates, the
    decisions land in metrics.jsonl, and the schedule state is in the checkpoint."""
    train = pytest.importorskip("gan.train")
    cfg = train.Config(loss="mmd", data="gaussians-2d", steps=24, out=str(tmp_path / "run"), progress=False,
                       width=8, log_every=50, sample_every=1000, checkpoint_every=1000, critic_steps=1,
                       start_critic_steps=1)
    cb = KIDScheduleCallback(None, n_samples=256, every=4, lookback=8, patience=2)
    train.train(cfg, callbacks=[cb], verbose=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    sched_rows = [r for r in rows if "lr_decision" in r]
    assert [r["step"] for r in sched_rows] == [4, 8, 12, 16, 20, 24]
    assert any(r["lr_decision"] == "decayed" for r in sched_rows)
    assert rows[-1]["lr_g"] < train.Config().lr
    from gan import checkpoint as ckpt

    state = ckpt.load(ckpt.latest_checkpoint(tmp_path / "run"))
    assert state["callbacks"][0]["schedule"]["decays"] == cb.schedule.decays


# ------------------------------------------------------------------------------ wired into python -m gan.train


def _cli(out, steps, *extra):
    from gan.train import main

    return main(["--loss", "mmd", "--data", "gaussians-2d", "--steps", str(steps), "--width", "8", "--critic-steps",
                 "1", "--start-critic-steps", "1", "--log-every", "1", "--out", str(out), "--no-progress",
                 "--kid-lr", "--kid-every", "2", "--kid-lookback", "4", "--kid-patience", "2", "--kid-samples", "128",
                 *extra])


def test_train_cli_kid_lr_and_resume(tmp_path):
    """--kid-lr logs the decisions, decays the rates of a barely moving generator, and a run resumed from a
    checkpoint makes exactly the decisions of an uninterrupted one (the schedule's state is checkpointed)."""
    assert _cli(tmp_path / "full", 14) == 0
    assert _cli(tmp_path / "part", 8) == 0
    assert _cli(tmp_path / "part", 14, "--resume") == 0
    full = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    part = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    keys = ("step", "lr_decision", "lr_p_value", "lr_g", "lr_c", "critic_loss", "generator_loss")
    assert [[r.get(k) for k in keys] for r in full] == [[r.get(k) for k in keys] for r in part]
    decisions = [r["lr_decision"] for r in full if "lr_decision" in r]
    assert len(decisions) == 7 and decisions[:2] == ["filling", "filling"] and "decayed" in decisions
    from gan.config import Config

    assert full[-1]["lr_g"] < Config().lr
    cfg = json.loads((tmp_path / "full" / "config.json").read_text())["config"]
    assert cfg["kid_lr"] is True and cfg["kid_every"] == 2


def test_train_cli_kid_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _cli(tmp_path / "a", 4, "--kid-lookback", "5")
    assert "lookback must be a multiple of every = 2, got 5" in capsys.readouterr().err
    from gan.train import main

    code = main(["--loss", "smmd", "--data", "mnist", "--steps", "1", "--out", str(tmp_path / "b"), "--kid-lr",
                 "--kid-feature-weights", str(tmp_path / "none.pt"), "--no-progress"])
    assert code == 2
    assert "--kid-lr: no LeNet feature weights" in capsys.readouterr().err
