"""Multi-process training (issue 7 item 4): ``torchrun -m gan.train`` and ``gan.train`` under a gloo process group.

Two launches, both CPU / gloo / 2 processes:

* ``python -m torch.distributed.run --standalone --nproc_per_node=2 -m gan.train`` (SMMD, tiny MNIST-format images,
  DCGAN with batch norm, spectral parametrisation): exit status 0, one writer (process 0), logged losses are the mean
  of the logged per-process losses, every process ends with the same networks and optimisers (each dumps them through
  ``$GAN_TRAIN_RANK_STATE_DIR``), and the checkpoint loads and resumes in a single process.
* ``torch.multiprocessing.spawn`` of 2 workers that join one gloo group and then (1) run one critic + generator
  iteration of ``gan.train.Run`` for every loss in float64, recording each process's batch streams and gradients:
  the DDP-averaged gradient must equal the gradient of the mean of the per-process losses recomputed in this process
  without DDP, and the processes must stay bitwise identical; (2) call ``gan.train.train`` for resume, NaN, signal,
  learning-rate-broadcast and KID scenarios.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

import pytest
import torch

from gan import checkpoint as ckpt
from gan import distributed
from gan import losses as gl
from gan.train import RANK_STATE_ENV, Config, NonFiniteLossError, Run, load_generator, main, train

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2
ALL = list(gl.LOSSES)
TIMEOUT = 240  # seconds for one launch; a hang must fail the test, not the CI job


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny(out, **kw) -> Config:
    """A configuration that takes a fraction of a second per step (the one tests/test_gan_train.py uses)."""
    base = dict(data="gaussians-2d", steps=3, batch_size=8, critic_steps=1, start_critic_steps=1, width=4, z_dim=4,
                lr=1e-4, log_every=1, sample_every=1000, checkpoint_every=2, out=str(out), progress=False)
    base.update(kw)
    return Config(**base)


def rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def assert_states_equal(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: {k}"


def assert_optimizers_equal(a: dict, b: dict, what: str) -> None:
    assert a["param_groups"] == b["param_groups"], what
    assert a["state"].keys() == b["state"].keys(), what
    for i in a["state"]:
        for k, v in a["state"][i].items():
            assert torch.equal(v, b["state"][i][k]), f"{what}: state {i} {k}"


# ================================================================================== torchrun -m gan.train, 2 processes


@pytest.fixture(scope="module")
def torchrun_run(tmp_path_factory):
    from tests._gan_helpers import write_mnist

    base = tmp_path_factory.mktemp("torchrun")
    write_mnist(base / "mnist", n=40, gz=True)
    out, ranks = base / "run", base / "ranks"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
           "-m", "gan.train", "--loss", "smmd", "--sn", "spectral-param", "--data", "mnist",
           "--data-dir", str(base / "mnist"), "--steps", "3", "--batch-size", "8", "--width", "2", "--z-dim", "8",
           "--critic-steps", "1", "--start-critic-steps", "2", "--log-every", "1", "--checkpoint-every", "2",
           "--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", RANK_STATE_ENV: str(ranks)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    return {"proc": proc, "out": out, "ranks": ranks, "seconds": time.perf_counter() - t0}


def test_torchrun_runs_and_only_process_0_writes(torchrun_run):
    proc, out = torchrun_run["proc"], torchrun_run["out"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("done: 3 generator steps") == 1  # printing on process 0 only
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.json", "losses.png", "metrics.jsonl",
                                                     "samples"]
    assert [r["step"] for r in rows(out)] == [1, 2, 3]  # one row per step: a second writer would duplicate them
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["ckpt_00000002.pt", "ckpt_00000003.pt"]
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_00000003.png"]
    config = json.loads((out / "config.json").read_text())
    assert (config["world_size"], config["effective_batch_size"], config["config"]["batch_size"]) == (2, 16, 8)


def test_torchrun_logs_the_average_of_the_per_process_losses(torchrun_run):
    for r in rows(torchrun_run["out"]):
        assert r["world_size"] == WORLD
        for key in ("critic_loss", "generator_loss"):
            per_process = r[f"{key}_ranks"]
            assert len(per_process) == WORLD
            assert r[key] == pytest.approx(sum(per_process) / WORLD, rel=1e-6, abs=1e-12)
            assert per_process[0] != per_process[1]  # each process had its own batch
        assert r["critic_smmd"] == pytest.approx(-r["critic_loss"], rel=1e-6)  # terms are averaged too


def test_torchrun_processes_end_identical(torchrun_run):
    ranks = [torch.load(torchrun_run["ranks"] / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert [(s["rank"], s["world_size"], s["step"]) for s in ranks] == [(0, 2, 3), (1, 2, 3)]
    for part in ("generator", "critic"):  # parameters and buffers: batch norm, spectral power iteration
        assert_states_equal(ranks[0][part], ranks[1][part], part)
    assert any("running_mean" in k for k in ranks[0]["generator"])
    assert any(k.endswith(".u") for k in ranks[0]["critic"])
    for part in ("opt_g", "opt_c"):
        assert_optimizers_equal(ranks[0][part], ranks[1][part], part)
    state = ckpt.load(torchrun_run["out"] / "checkpoints" / "ckpt_00000003.pt")
    for part in ("generator", "critic"):
        assert_states_equal(state[part], ranks[1][part], f"checkpoint vs process 1: {part}")
    assert state["world_size"] == WORLD and len(state["ranks"]) == WORLD
    r0, r1 = state["ranks"]
    assert torch.equal(r0["noise_rng"], state["noise_rng"]) and torch.equal(r0["data"]["order"], state["data"]["order"])
    assert not torch.equal(r0["noise_rng"], r1["noise_rng"])  # every process has its own streams
    assert not torch.equal(r0["data"]["order"], r1["data"]["order"])
    assert not any(k.startswith("module.") for part in ("generator", "critic") for k in state[part])


def test_torchrun_checkpoint_loads_and_resumes_in_one_process(torchrun_run, tmp_path):
    g, cfg = load_generator(torchrun_run["out"])
    assert (cfg.loss, cfg.width) == ("smmd", 2) and g(torch.zeros(3, 8)).shape == (3, 1, 28, 28)
    run_dir = tmp_path / "run"
    shutil.copytree(torchrun_run["out"], run_dir)
    with pytest.warns(UserWarning, match=r"written by 2 process\(es\) and is resumed with 1: processes 0\.\.0"):
        code = main(["--resume", "--out", str(run_dir), "--steps", "4", "--no-progress"])
    assert code == 0
    r = rows(run_dir)
    assert [x["step"] for x in r] == [1, 2, 3, 4] and r[-1]["world_size"] == 1 and "critic_loss_ranks" not in r[-1]
    assert ckpt.load(ckpt.latest_checkpoint(run_dir))["world_size"] == 1


def test_ctrl_c_to_torchrun_stops_every_process_with_a_checkpoint(tmp_path):
    """torchrun forwards SIGINT to its workers (each in its own session) and waits for them: they finish the step,
    process 0 writes the checkpoint, and torchrun exits with status 1 (its own report of the signal)."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}", "-m",
           "gan.train", "--loss", "mmd", "--data", "gaussians-2d", "--steps", "100000", "--batch-size", "8",
           "--width", "4", "--z-dim", "4", "--critic-steps", "1", "--start-critic-steps", "1", "--log-every", "1",
           "--checkpoint-every", "100000", "--sample-every", "100000", "--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + TIMEOUT
    while time.time() < deadline and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 1, stderr
    assert stdout.count("stopped by SIGINT at generator step") == 1, stdout + stderr
    steps = [s for s, _ in ckpt.list_checkpoints(out)]
    assert len(steps) == 1 and steps[0] >= 3
    assert rows(out)[-1]["step"] == steps[0]  # the checkpoint holds the last completed (and logged) step
    assert len(ckpt.load(ckpt.latest_checkpoint(out))["ranks"]) == WORLD


# ================================================================================== spawned gloo group, 2 processes


class _Double:
    """A data stream giving float64 batches (the float64 gradient checks), resumable like the stream it wraps."""

    def __init__(self, data):
        self.inner = data

    def next(self):
        return self.inner.next().double()

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)


def _clone(state: dict) -> dict:
    return {k: v.detach().clone() for k, v in state.items()}


def _snapshot(run: Run) -> dict:
    return {"G": _clone(run.G.state_dict()), "D": _clone(run.D.state_dict()), "data": run.data.state_dict(),
            "noise_rng": run.noise_rng.get_state(), "penalty_rng": run.penalty_rng.get_state()}


def _iteration_cfg(loss: str, out) -> Config:
    return tiny(out, loss=loss, clip=0.0).resolved()  # no clipping: the raw averaged gradients stay in .grad


def _one_iteration_per_loss(rank: int, out: Path) -> dict:
    """Three iterations of every loss in float64; records what the reference needs (from the first)."""
    results = {}
    torch.set_default_dtype(torch.float64)
    try:
        for loss in ALL:
            run = Run(_iteration_cfg(loss, out / loss), verbose=False)
            run.data = _Double(run.data)
            rec = {"pre_critic": _snapshot(run)}
            generator_update = run.generator_update

            def recording_generator_update(run=run, rec=rec, update=generator_update):
                if "pre_generator" not in rec:  # the first iteration's
                    rec["pre_generator"] = _snapshot(run)
                return update()

            run.generator_update = recording_generator_update
            first = run.iteration()
            rec["critic_loss"], rec["generator_loss"] = float(first["critic_loss"]), float(first["generator_loss"])
            rec["critic_grads"] = [p.grad.clone() for p in run.D.parameters()]
            rec["generator_grads"] = [p.grad.clone() for p in run.G.parameters()]
            rec["after_one"] = {"G": _clone(run.G.state_dict()), "D": _clone(run.D.state_dict())}
            for _ in range(2):  # two more: the critic is frozen and unfrozen in between, DDP rebuilds its buckets
                run.iteration()
            rec["after_three"] = {"G": _clone(run.G.state_dict()), "D": _clone(run.D.state_dict()),
                                "opt_g": run.opt_g.state_dict(), "opt_c": run.opt_c.state_dict()}
            results[loss] = rec
    finally:
        torch.set_default_dtype(torch.float32)
    return results


class _NaNOnProcess1(gl.MMD):
    """MMD whose critic loss turns NaN at critic call ``at`` on process 1 only."""

    def __init__(self, at: int = 3):
        super().__init__()
        self.at, self.calls = at, 0

    def critic_loss(self, critic, real, fake, rng):
        self.calls += 1
        loss, terms = super().critic_loss(critic, real, fake, rng)
        if distributed.rank() == 1 and self.calls >= self.at:
            loss = loss * float("nan")
        return loss, terms


class _FailOnProcess1(gl.MMD):
    """MMD whose critic loss raises an ordinary error (not a NaN) at its second call on process 1, after the critic's
    forward passes (as an error inside kernelmmd would)."""

    calls = 0

    def critic_loss(self, critic, real, fake, rng):
        self.calls += 1
        out = super().critic_loss(critic, real, fake, rng)
        if distributed.rank() == 1 and self.calls == 2:
            raise ValueError("synthetic failure")
        return out


class _BreakDataOnProcess1:
    """Makes process 1's data stream fail after generator step 1: an error before any forward pass of the update."""

    def on_step(self, run, step):
        if run.rank == 1 and step == 1:
            data = run.data

            class Broken:
                def next(self):
                    raise OSError("synthetic read error")

                def __getattr__(self, name):  # state_dict etc. (checkpoints) still work
                    return getattr(data, name)

            run.data = Broken()


class _SignalProcess1:
    """Sends SIGTERM to process 1 itself after generator step 2."""

    def on_step(self, run, step):
        if run.rank == 1 and step == 2:
            os.kill(os.getpid(), signal.SIGTERM)


class _HalveOnProcess0:
    """A scheduler that runs on process 0 only and halves the generator's learning rate at every step."""

    main_only = True

    def on_step(self, run, step):
        assert run.rank == 0
        for group in run.opt_g.param_groups:
            group["lr"] *= 0.5
        return {"halved_at": step}


def _train_scenarios(rank: int, out: Path) -> dict:
    res = {}
    kw = dict(loss="mmd-gp", sn="sn", checkpoint_every=2)  # penalty RNG and power-iteration buffers
    res["uninterrupted"] = train(tiny(out / "a", steps=4, **kw), verbose=False)
    train(tiny(out / "b", steps=2, **kw), verbose=False)
    res["resumed"] = train(tiny(out / "b", steps=4, resume=True, **kw), verbose=False)

    gl.LOSSES["nan-on-1"] = (_NaNOnProcess1, {})
    try:
        train(tiny(out / "nan", loss="nan-on-1", steps=6, checkpoint_every=1), verbose=False)
        res["nan"] = None
    except NonFiniteLossError as e:
        res["nan"] = str(e)
    finally:
        del gl.LOSSES["nan-on-1"]

    gl.LOSSES["fail-on-1"] = (_FailOnProcess1, {})
    try:
        train(tiny(out / "fail", loss="fail-on-1", steps=6), verbose=False)
        res["fail"] = None
    except Exception as e:  # noqa: BLE001 - the type is what the test checks
        res["fail"] = (type(e).__name__, str(e))
    finally:
        del gl.LOSSES["fail-on-1"]

    try:
        train(tiny(out / "data", steps=6), callbacks=[_BreakDataOnProcess1()], verbose=False)
        res["data"] = None
    except Exception as e:  # noqa: BLE001 - the type is what the test checks
        res["data"] = (type(e).__name__, str(e))

    res["signal"] = train(tiny(out / "signal", steps=50, checkpoint_every=1000), callbacks=[_SignalProcess1()],
                          verbose=False)
    res["halve"] = train(tiny(out / "halve", steps=3, log_every=10), callbacks=[_HalveOnProcess0()], verbose=False)
    res["kid"] = train(tiny(out / "kid", loss="mmd", steps=3, kid_lr=True, kid_every=1, kid_lookback=1,
                            kid_patience=1, kid_samples=64, kid_features="identity"), verbose=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res["grow"] = train(tiny(out / "grow", steps=3, resume=True), verbose=False)
    res["grow_warnings"] = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    return res


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    out = Path(out)
    distributed.init_from_env("cpu")
    result = {}
    try:
        for name, fn in (("iterations", _one_iteration_per_loss), ("train", _train_scenarios)):
            t0 = time.perf_counter()
            try:
                result[name] = fn(rank, out / name)
            except Exception:  # recorded and reported by the tests that need it
                result[name] = {"error": traceback.format_exc()}
            result[f"{name}_seconds"] = time.perf_counter() - t0
    finally:
        distributed.cleanup()
    torch.save(result, out / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    out = tmp_path_factory.mktemp("spawned")
    # a single-process run to be resumed by the two processes (world size 1 -> 2)
    train(tiny(out / "train" / "grow", steps=2), verbose=False)
    single = out / "single"
    shutil.copytree(out / "train" / "grow", single)
    train(tiny(single, steps=3, resume=True), verbose=False)  # the single-process continuation, for comparison
    t0 = time.perf_counter()
    ctx = torch.multiprocessing.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=False)
    deadline = time.time() + TIMEOUT
    while not ctx.join(timeout=1):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"the spawned processes did not finish in {TIMEOUT} s (a collective hung?)")
    seconds = time.perf_counter() - t0
    return out, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)], seconds


def _part(spawned, name):
    _, res, _ = spawned
    for r in range(WORLD):
        assert "error" not in res[r][name], f"process {r}:\n{res[r][name].get('error')}"
    return [res[r][name] for r in range(WORLD)]


def _reference_grads(loss: str, recs: list[dict], tmp_path) -> tuple[list, list, list, list]:
    """Per-process losses and the gradients of their mean, computed in this process without DDP from the recorded
    states and streams: (critic losses, critic grads, generator losses, generator grads)."""
    torch.set_default_dtype(torch.float64)
    try:
        run = Run(_iteration_cfg(loss, tmp_path / loss), verbose=False)
        run.data = _Double(run.data)
        G, D, bs = run.G, run.D, run.cfg.batch_size

        def streams(snap):
            run.data.load_state_dict(snap["data"])
            noise = torch.Generator().set_state(snap["noise_rng"])
            penalty = torch.Generator().set_state(snap["penalty_rng"])
            return noise, penalty

        critic_losses, generator_losses = [], []
        G.load_state_dict(recs[0]["pre_critic"]["G"])
        for rec in recs:
            D.load_state_dict(rec["pre_critic"]["D"])  # parameters and power-iteration vectors before the update
            noise, penalty = streams(rec["pre_critic"])
            real = run.data.next()
            with torch.no_grad():
                fake = G(run.noise(bs, noise))
            value, _ = run.loss.critic_loss(D, real, fake, penalty)
            (value / WORLD).backward()
            critic_losses.append(float(value.detach()))
        critic_grads = [p.grad.clone() for p in D.parameters()]
        D.requires_grad_(False)
        G.load_state_dict(recs[0]["pre_generator"]["G"])
        for rec in recs:
            D.load_state_dict(rec["pre_generator"]["D"])
            noise, _ = streams(rec["pre_generator"])
            real = run.data.next()
            value, _ = run.loss.generator_loss(D, real, G(run.noise(bs, noise)))
            (value / WORLD).backward()
            generator_losses.append(float(value.detach()))
        generator_grads = [p.grad.clone() for p in G.parameters()]
        return critic_losses, critic_grads, generator_losses, generator_grads
    finally:
        torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("loss", ALL)
def test_ddp_gradient_is_the_gradient_of_the_mean_loss(loss, spawned, tmp_path):
    recs = [res[loss] for res in _part(spawned, "iterations")]
    for part in ("G", "D"):  # the same initial weights (and buffers) on both processes
        assert_states_equal(recs[0]["pre_critic"][part], recs[1]["pre_critic"][part], f"initial {part}")
    assert not torch.equal(recs[0]["pre_critic"]["noise_rng"], recs[1]["pre_critic"]["noise_rng"])  # own streams
    c_losses, c_grads, g_losses, g_grads = _reference_grads(loss, recs, tmp_path)
    for r, rec in enumerate(recs):
        assert rec["critic_loss"] == pytest.approx(c_losses[r], rel=1e-12, abs=1e-15)
        assert rec["generator_loss"] == pytest.approx(g_losses[r], rel=1e-12, abs=1e-15)
        for got, want in zip(rec["critic_grads"], c_grads):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-14)
        for got, want in zip(rec["generator_grads"], g_grads):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-14)
    assert c_losses[0] != c_losses[1]  # different batches: the average is not a copy of one process's loss


@pytest.mark.parametrize("loss", ALL)
def test_processes_stay_bitwise_identical(loss, spawned):
    recs = [res[loss] for res in _part(spawned, "iterations")]
    for when in ("after_one", "after_three"):
        for part in ("G", "D"):
            assert_states_equal(recs[0][when][part], recs[1][when][part], f"{when} {part}")
    for part in ("opt_g", "opt_c"):
        assert_optimizers_equal(recs[0]["after_three"][part], recs[1]["after_three"][part], part)


def test_resume_under_two_processes_is_bitwise(spawned):
    out, _, _ = spawned
    res = _part(spawned, "train")
    ra, rb = rows(out / "train" / "a"), rows(out / "train" / "b")
    assert [r["step"] for r in ra] == [r["step"] for r in rb] == [1, 2, 3, 4]
    for x, y in zip(ra, rb):
        for key in ("critic_loss", "generator_loss", "critic_mmd2", "critic_gp", "critic_loss_ranks",
                    "generator_loss_ranks"):
            assert x[key] == y[key], (x["step"], key)
    sa = ckpt.load(ckpt.latest_checkpoint(out / "train" / "a"))
    sb = ckpt.load(ckpt.latest_checkpoint(out / "train" / "b"))
    for part in ("generator", "critic"):
        assert_states_equal(sa[part], sb[part], part)
    for r in range(WORLD):
        assert torch.equal(sa["ranks"][r]["noise_rng"], sb["ranks"][r]["noise_rng"])
        assert torch.equal(sa["ranks"][r]["penalty_rng"], sb["ranks"][r]["penalty_rng"])
    for r in range(WORLD):  # every process returns the same summary losses
        assert res[r]["resumed"]["last"]["critic_loss"] == res[0]["uninterrupted"]["last"]["critic_loss"]
        assert res[r]["resumed"]["world_size"] == WORLD


def test_nonfinite_loss_on_one_process_stops_all(spawned):
    out, _, _ = spawned
    messages = [res["nan"] for res in _part(spawned, "train")]
    assert messages[1] is not None and messages[1].startswith("critic loss is nan at generator step 3")
    assert messages[0] is not None and messages[0].startswith(
        "process 1 of 2 failed (NonFiniteLossError): critic loss is nan at generator step 3")
    assert "the last good checkpoint is" in messages[0] and "ckpt_00000002.pt" in messages[0]
    assert [s for s, _ in ckpt.list_checkpoints(out / "train" / "nan")] == [1, 2]


def test_any_error_on_one_process_stops_all(spawned):
    failures = [res["fail"] for res in _part(spawned, "train")]
    assert failures[1] == ("ValueError", "synthetic failure")
    assert failures[0] == ("RuntimeError", "process 1 of 2 failed (ValueError): synthetic failure")


def test_data_error_on_one_process_stops_all(spawned):
    """An error before the update's first forward pass (reading data) is agreed on too: no process is left waiting
    in the backward's all-reduce."""
    failures = [res["data"] for res in _part(spawned, "train")]
    assert failures[1] == ("OSError", "synthetic read error")
    assert failures[0] == ("RuntimeError", "process 1 of 2 failed (OSError): synthetic read error")


def test_signal_on_one_process_stops_all_with_a_checkpoint(spawned):
    out, _, _ = spawned
    summaries = [res["signal"] for res in _part(spawned, "train")]
    assert [(s["step"], s["interrupted"]) for s in summaries] == [(2, signal.SIGTERM)] * WORLD
    assert [s for s, _ in ckpt.list_checkpoints(out / "train" / "signal")] == [2]
    assert [r["step"] for r in rows(out / "train" / "signal")] == [1, 2]


def test_main_only_scheduler_learning_rates_reach_every_process(spawned):
    out, _, _ = spawned
    summaries = [res["halve"] for res in _part(spawned, "train")]
    for s in summaries:  # rows at every step although --log-every is 10: process 0's callback asked for them
        assert s["last"]["step"] == 3 and s["last"]["lr_g"] == pytest.approx(1e-4 / 8, rel=1e-12)
        assert s["last"]["lr_c"] == 1e-4
    assert [r.get("halved_at") for r in rows(out / "train" / "halve")] == [1, 2, 3]


def test_kid_adaptive_lr_runs_on_process_0(spawned):
    out, _, _ = spawned
    summaries = [res["kid"] for res in _part(spawned, "train")]
    decisions = [r.get("lr_decision") for r in rows(out / "train" / "kid")]
    assert decisions[0] == "filling" and all(d in ("improved", "not_improved", "decayed") for d in decisions[1:])
    assert summaries[0]["last"]["lr_g"] == summaries[1]["last"]["lr_g"]
    assert "lr_decision" in summaries[0]["last"] and "lr_decision" not in summaries[1]["last"]


def test_single_process_checkpoint_resumed_by_two_processes(spawned):
    out, _, _ = spawned
    grown, single = rows(out / "train" / "grow"), rows(out / "single")
    assert [r["step"] for r in grown] == [r["step"] for r in single] == [1, 2, 3]
    assert grown[1] == single[1]  # steps before the resume are kept
    # process 0 continues the single process's streams: its first critic loss after the resume is the one the single
    # process computed (same weights, same batch); process 1 drew a fresh batch
    assert grown[2]["critic_loss_ranks"][0] == pytest.approx(single[2]["critic_loss"], rel=1e-5)
    assert grown[2]["world_size"] == WORLD
    messages = [res["grow_warnings"] for res in _part(spawned, "train")]
    assert messages[1] == [] and len(messages[0]) == 1
    assert "written by 1 process(es) and is resumed with 2: processes 0..0 continue" in messages[0][0]
    assert "processes 1..1 start fresh streams from rank_seed" in messages[0][0]


def test_spawned_timings(spawned):
    _, res, seconds = spawned
    assert seconds < TIMEOUT
    print(f"spawned job: {seconds:.1f} s; " + ", ".join(
        f"process {r}: iterations {res[r]['iterations_seconds']:.1f} s, train {res[r]['train_seconds']:.1f} s"
        for r in range(WORLD)))
