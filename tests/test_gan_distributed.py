"""gan.distributed on CPU with gloo and 2 processes (torch.multiprocessing.spawn).

One spawned job checks everything that needs a process group: the averaged estimate equals the mean of the per-rank
``kernelmmd.mmd2_unbiased`` values and ``kernelmmd.mmd2_block`` on the concatenated batches; DDP-averaged critic
gradients of the per-rank SMMD losses (double backward through the Jacobian) equal the single-process gradient of
their mean; every rank ends with the same weights; rank 0 alone writes a state dict that loads in a single process.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
from torch import nn

import kernelmmd
from gan import distributed

WORLD, B, D = 2, 16, 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(WORLD * B, D, generator=g, dtype=torch.float64)
    y = torch.randn(WORLD * B, D, generator=g, dtype=torch.float64) + 0.5
    return x, y


def _critic(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 8), nn.Tanh(), nn.Linear(8, 1)).double()


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    info = distributed.init_from_env("cpu")
    try:
        x, y = _data()
        xr, yr = x[rank * B : (rank + 1) * B], y[rank * B : (rank + 1) * B]  # this rank's batch
        est = kernelmmd.mmd2_unbiased(xr, yr, kernel="rbf", sigma=1.0)
        avg = distributed.average_estimate(est)

        critic = _critic(seed=100 + rank)  # different initial weights: DDP must broadcast rank 0's
        ddp = distributed.wrap(critic)
        loss = kernelmmd.smmd_loss(ddp, xr, yr)
        loss.backward()
        grads = [p.grad.clone() for p in critic.parameters()]
        loss_avg = distributed.average_estimate(loss)
        init = {k: v.clone() for k, v in distributed.unwrap(ddp).state_dict().items()}
        with torch.no_grad():
            for p, g in zip(critic.parameters(), grads):
                p -= 0.1 * g
        save = distributed.main_only(lambda: torch.save(distributed.unwrap(ddp).state_dict(), f"{out}/ckpt.pt"))
        save()
        distributed.barrier()

        # the small collectives gan.train uses
        bn = nn.BatchNorm1d(3).double()
        with torch.no_grad():
            bn.running_mean.fill_(rank + 1.0)
            bn.num_batches_tracked.fill_(rank + 5)
        distributed.broadcast_buffers(bn)
        unsynced = distributed.wrap(nn.Linear(2, 1).double(), forward_buffer_sync=False)
        helpers = {
            "buffers": (bn.running_mean.tolist(), int(bn.num_batches_tracked)),
            "gathered": distributed.all_gather_values(torch.tensor([rank, 10.0 + rank])),
            "no_failure": distributed.first_failure(None),
            "failure": distributed.first_failure(ValueError("boom") if rank == 1 else None),
            "objects": distributed.gather_objects({"rank": rank}),
            "object": distributed.broadcast_object(f"from {rank}"),
            "broadcast": distributed.broadcast_(torch.tensor([rank + 1.0])).tolist(),
            "no_forward_sync": getattr(unsynced, "forward_sync_buffers", getattr(unsynced, "broadcast_buffers", None))
            is False,
        }
        torch.save({"info": (info.rank, info.world_size, info.backend, distributed.is_main()), "est": est,
                    "avg": avg, "loss": loss.detach(), "loss_avg": loss_avg, "grads": grads, "init": init,
                    "after": {k: v.clone() for k, v in critic.state_dict().items()}, "helpers": helpers},
                   f"{out}/rank{rank}.pt")
    finally:
        distributed.cleanup()


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    torch.multiprocessing.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return out, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_ranks_and_backend(spawned):
    _, res = spawned
    assert [r["info"] for r in res] == [(0, 2, "gloo", True), (1, 2, "gloo", False)]


def test_average_is_mean_of_rank_estimates_and_block_estimator(spawned):
    _, res = spawned
    x, y = _data()
    per_rank = [float(kernelmmd.mmd2_unbiased(x[r * B : (r + 1) * B], y[r * B : (r + 1) * B], sigma=1.0))
                for r in range(WORLD)]
    for r in range(WORLD):
        assert float(res[r]["est"]) == pytest.approx(per_rank[r], rel=1e-12, abs=1e-15)
        assert float(res[r]["avg"]) == pytest.approx(sum(per_rank) / WORLD, rel=1e-12, abs=1e-15)
    block = float(kernelmmd.mmd2_block(x, y, block_size=B, sigma=1.0))
    assert float(res[0]["avg"]) == pytest.approx(block, rel=1e-12, abs=1e-15)


def test_ddp_gradient_is_gradient_of_averaged_loss(spawned):
    _, res = spawned
    x, y = _data()
    critic = _critic(seed=100)  # rank 0's initial weights, broadcast by DDP
    for r in range(WORLD):
        for k, v in critic.state_dict().items():
            torch.testing.assert_close(res[r]["init"][k], v, rtol=0, atol=0)
    losses = [kernelmmd.smmd_loss(critic, x[r * B : (r + 1) * B], y[r * B : (r + 1) * B]) for r in range(WORLD)]
    mean_loss = torch.stack(losses).mean()
    mean_loss.backward()
    for r in range(WORLD):
        assert float(res[r]["loss"]) == pytest.approx(float(losses[r].detach()), rel=1e-12)
        assert float(res[r]["loss_avg"]) == pytest.approx(float(mean_loss.detach()), rel=1e-12)
        for g_rank, p in zip(res[r]["grads"], critic.parameters()):
            torch.testing.assert_close(g_rank, p.grad, rtol=1e-10, atol=1e-13)
    for k in res[0]["after"]:  # identical updates on every rank
        torch.testing.assert_close(res[0]["after"][k], res[1]["after"][k], rtol=0, atol=0)


def test_rank0_state_dict_loads_in_a_single_process(spawned):
    out, res = spawned
    files = sorted(p.name for p in out.iterdir())
    assert files == ["ckpt.pt", "rank0.pt", "rank1.pt"]  # only rank 0 wrote the checkpoint
    state = torch.load(out / "ckpt.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state)
    critic = _critic(seed=0)
    critic.load_state_dict(state)
    for k, v in critic.state_dict().items():
        torch.testing.assert_close(v, res[0]["after"][k], rtol=0, atol=0)


def test_collective_helpers(spawned):
    _, res = spawned
    for r in range(WORLD):
        h = res[r]["helpers"]
        assert h["buffers"] == ([1.0, 1.0, 1.0], 5)  # process 0's
        assert h["gathered"].tolist() == [[0.0, 10.0], [1.0, 11.0]]
        assert h["no_failure"] is None and h["failure"] == (1, "ValueError", "boom")
        assert h["object"] == "from 0" and h["broadcast"] == [1.0]
        assert h["no_forward_sync"]
    assert res[0]["helpers"]["objects"] == [{"rank": 0}, {"rank": 1}] and res[1]["helpers"]["objects"] is None


def test_single_process_fallbacks():
    info = distributed.init_from_env("cpu")
    assert (info.rank, info.world_size, info.backend, str(info.device)) == (0, 1, "", "cpu")
    m = nn.Linear(2, 1)
    assert distributed.wrap(m) is m and distributed.unwrap(m) is m
    v = torch.tensor(1.5, requires_grad=True)
    assert float(distributed.average_estimate(v)) == 1.5 and not distributed.average_estimate(v).requires_grad
    assert distributed.average_estimate(v, differentiable=True) is v
    assert distributed.is_main() and distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.rank_seed(7) == 7
    assert distributed.main_only(lambda: 3)() == 3
    distributed.average_gradients(m.parameters())  # no-op
    distributed.barrier()
    distributed.broadcast_buffers(m)  # no-op
    assert distributed.all_gather_values(torch.tensor([1.0, 2.0])).tolist() == [[1.0, 2.0]]
    assert distributed.first_failure(None) is None
    assert distributed.first_failure(KeyError("k")) == (0, "KeyError", "'k'")
    assert distributed.gather_objects(3) == [3] and distributed.broadcast_object(4) == 4
    assert distributed.broadcast_(torch.tensor([2.0])).tolist() == [2.0]


@pytest.mark.parametrize(
    ("env", "kwargs", "match"),
    [
        ({"WORLD_SIZE": "two"}, {}, "WORLD_SIZE must be an integer, got 'two'"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, {}, r"RANK must be in \[0, WORLD_SIZE = 2\), got 2"),
        ({}, {"device": "tpu"}, "device must be 'auto', 'cpu' or 'cuda', got 'tpu'"),
        ({}, {"device": "cpu", "backend": "mpi"}, "backend must be None, 'nccl' or 'gloo', got 'mpi'"),
    ],
)
def test_init_errors(monkeypatch, env, kwargs, match):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=match):
        distributed.init_from_env(**({"device": "cpu"} | kwargs))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_requested_without_cuda():
    with pytest.raises(ValueError, match="device='cuda' was given but no CUDA device is available"):
        distributed.init_from_env("cuda")
