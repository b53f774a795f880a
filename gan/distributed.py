r"""Multi-process training helpers: ``torchrun --nproc_per_node=N -m gan.train ...`` (SPEC §3, §10).

The paper's multi-GPU scheme: every process (GPU) draws its own batch of 64 real and 64 generated samples, computes
the MMD estimate on it, and the estimates are averaged — the block estimator of SPEC §3 with one block per process,
``kernelmmd.mmd2_block`` on the concatenated batches. Gradients follow without extra communication of samples:
wrapping the critic and the generator in :class:`~torch.nn.parallel.DistributedDataParallel` averages the
per-process gradients, and the average of the gradients of the per-process estimates is the gradient of their
average. :func:`average_estimate` averages the values themselves (for logging and for decisions every process must
agree on); only process 0 writes checkpoints, samples and logs (:func:`is_main`, :func:`main_only`).

Set-up from the environment that ``torchrun`` provides (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``): :func:`init_from_env` uses the ``nccl`` backend on CUDA (one GPU per process, ``LOCAL_RANK``) and
``gloo`` on CPU; without those variables it does nothing and every helper behaves as for a single process, so the
same training script runs unchanged with ``python -m`` and with ``torchrun``.

Also :func:`rank_seed` (each process its own data / noise stream; the initial weights stay the same) and small
collectives, each a no-op in a single process: :func:`broadcast_buffers`, :func:`broadcast_`,
:func:`broadcast_object`, :func:`gather_objects`, :func:`all_gather_values`, :func:`first_failure`. Where each runs
in a training step: docs/ARCHITECTURE.md (section "GAN training", multi-process data flow).
"""

from __future__ import annotations

import functools
import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "init_from_env", "is_distributed", "rank", "world_size", "is_main", "main_only", "barrier",
           "wrap", "unwrap", "average_estimate", "average_gradients", "rank_seed", "cleanup", "broadcast_buffers",
           "broadcast_", "broadcast_object", "gather_objects", "all_gather_values", "first_failure"]


@dataclass(frozen=True)
class DistInfo:
    """The process's place in the job: ``rank`` (0 … world_size − 1), ``world_size``, ``local_rank`` (GPU index on
    its node), ``device`` and the ``backend`` ("nccl", "gloo" or "" for a single process)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str


def is_distributed() -> bool:
    """Whether a process group is initialised (with any world size)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on process 0 (and in a single process): the one that writes checkpoints, samples and logs."""
    return rank() == 0


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {v!r}") from None


def init_from_env(device: str = "auto", backend: str | None = None) -> DistInfo:
    """Initialise the process group from torchrun's environment variables (no-op without them).

    Args:
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``. With CUDA each process uses GPU
            ``LOCAL_RANK``.
        backend: ``"nccl"`` / ``"gloo"``, default nccl on CUDA and gloo on CPU.

    Returns:
        :class:`DistInfo` (rank 0 of 1 with backend "" when not launched by torchrun / WORLD_SIZE unset).

    Raises:
        ValueError: non-integer RANK / WORLD_SIZE / LOCAL_RANK, RANK outside [0, WORLD_SIZE), an unknown device or
            backend, ``"cuda"`` without CUDA or with fewer GPUs than LOCAL_RANK needs.

    Example:
        >>> info = init_from_env("cpu")  # plain `python`: a single process
        >>> (info.rank, info.world_size, info.backend)
        (0, 1, '')
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if backend not in (None, "nccl", "gloo"):
        raise ValueError(f"backend must be None, 'nccl' or 'gloo', got {backend!r}")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("device='cuda' was given but no CUDA device is available")
    world = _env_int("WORLD_SIZE")
    r = _env_int("RANK")
    local = _env_int("LOCAL_RANK")
    if world is None or world < 1:
        dev = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
        return DistInfo(0, 1, 0, dev, "")
    r = 0 if r is None else r
    local = r if local is None else local
    if not 0 <= r < world:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE = {world}), got {r}")
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK = {local} needs GPU {local}, but only {torch.cuda.device_count()} are visible")
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    backend = backend or ("nccl" if use_cuda else "gloo")
    if not is_distributed():
        dist.init_process_group(backend=backend, rank=r, world_size=world)
    return DistInfo(r, world, local, dev, backend)


def cleanup() -> None:
    """Destroy the process group (if any)."""
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def rank_seed(seed: int) -> int:
    """A per-process seed for data order and noise: ``seed + 1000 · rank`` (``seed`` itself on process 0)."""
    return seed + 1000 * rank()


def main_only(fn):
    """Decorator: run ``fn`` on process 0 only (returns None elsewhere), e.g. writing checkpoints or sample grids."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs) if is_main() else None

    return wrapper


def wrap(module: nn.Module, device: torch.device | str | None = None, *, forward_buffer_sync: bool = True,
         **ddp_options) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel when a process group with more than one process exists, else
    ``module`` itself. On CUDA the module is bound to ``device`` (``device_ids=[device]``). Process 0's parameters and
    buffers are broadcast to all processes at wrapping time.

    ``forward_buffer_sync=False`` turns off DDP's broadcast of process 0's buffers at every forward (DDP's
    ``forward_sync_buffers``, called ``broadcast_buffers`` before torch 2.14, where turning it off also skips the
    broadcast at wrapping time: call :func:`broadcast_buffers` after wrapping)."""
    if not is_distributed() or world_size() == 1:
        return module
    device = torch.device(device) if device is not None else next(module.parameters()).device
    ids = [device] if device.type == "cuda" else None
    if not forward_buffer_sync:
        ddp_params = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
        key = "forward_sync_buffers" if "forward_sync_buffers" in ddp_params else "broadcast_buffers"
        ddp_options = {key: False, **ddp_options}
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, **ddp_options)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (for ``state_dict`` keys without the ``module.`` prefix)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def average_estimate(value: torch.Tensor, *, differentiable: bool = False) -> torch.Tensor:
    r"""Mean over processes of a per-process estimate (e.g. each process's MMD²_u on its own batch).

    .. math:: \bar v = \frac1W \sum_{r=0}^{W-1} v_r

    With one MMD²_u per process on equal batch sizes this is the block estimator (``kernelmmd.mmd2_block`` on the
    concatenated batches, block size = the per-process batch). In a single process it returns ``value``.

    Args:
        value: a 0-d (or any-shape) tensor, on the process's device (CUDA with nccl).
        differentiable: keep the graph (``torch.distributed.nn.all_reduce``, whose backward sums the incoming
            gradients across processes). Not needed for training with :func:`wrap`, where DDP already averages
            the per-process gradients; the default returns a detached average for logging.

    Returns:
        tensor of ``value``'s shape and dtype, the same on every process.
    """
    if not is_distributed() or world_size() == 1:
        return value if differentiable else value.detach()
    w = world_size()
    if differentiable:
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(value, op=dist.ReduceOp.SUM) / w
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / w


@torch.no_grad()
def average_gradients(params) -> None:
    """All-reduce and average ``.grad`` of ``params`` across processes (what DDP does), for modules not wrapped in
    DDP; a no-op in a single process."""
    if not is_distributed() or world_size() == 1:
        return
    w = world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(w)


# ------------------------------------------------------------------------------------- small collectives for train.py


def _collective_device() -> torch.device:
    """Where tensors of a collective must live: the process's GPU with nccl, the CPU otherwise."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@torch.no_grad()
def broadcast_buffers(*modules: nn.Module, src: int = 0) -> None:
    """Overwrite every buffer of ``modules`` (batch-norm statistics, spectral-norm power-iteration vectors) with
    process ``src``'s values: one broadcast per (dtype, device) group of buffers, whatever their number. A no-op in a
    single process.

    ``gan.train`` calls it once at the end of every generator step (DDP's own per-forward ``broadcast_buffers`` is
    off there): batch-norm running statistics are updated from each process's own batch in every forward, so without
    it the processes' copies differ between syncs (and at checkpoints); with it every process holds process 0's
    state after each step, the state a single process on process 0's data stream would hold.
    """
    if not is_distributed() or world_size() == 1:
        return
    groups: dict[tuple, list[torch.Tensor]] = {}
    for m in modules:
        for b in m.buffers():
            groups.setdefault((b.dtype, b.device), []).append(b)
    dev = _collective_device()
    for bufs in groups.values():
        flat = torch.cat([b.detach().reshape(-1) for b in bufs]).to(dev)  # (total,)
        dist.broadcast(flat, src=src)
        offset = 0
        for b in bufs:
            n = b.numel()
            b.copy_(flat[offset : offset + n].view_as(b))
            offset += n


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` in place with process ``src``'s values (and return it); a no-op in a single process."""
    if not is_distributed() or world_size() == 1:
        return tensor
    t = tensor.to(_collective_device())
    dist.broadcast(t, src=src)
    if t is not tensor:
        tensor.copy_(t)
    return tensor


def broadcast_object(obj, src: int = 0):
    """Process ``src``'s ``obj`` (any picklable object) on every process; ``obj`` itself in a single process."""
    if not is_distributed() or world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj) -> list | None:
    """Every process's ``obj`` as a list indexed by rank, on process 0 (None on the others); ``[obj]`` in a single
    process. Tensors inside ``obj`` should be on the CPU (they are pickled)."""
    if not is_distributed() or world_size() == 1:
        return [obj]
    out = [None] * world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


def all_gather_values(values: torch.Tensor) -> torch.Tensor:
    """Every process's ``values`` (a small tensor of the same shape everywhere) stacked by rank: (world_size, ...),
    on ``values``'s device; ``values[None]`` in a single process."""
    if not is_distributed() or world_size() == 1:
        return values.detach()[None]
    v = values.detach().to(_collective_device()).contiguous()
    parts = [torch.empty_like(v) for _ in range(world_size())]
    dist.all_gather(parts, v)
    return torch.stack(parts).to(values.device)


def first_failure(error: BaseException | None) -> tuple[int, str, str] | None:
    """Collective agreement on failures: every process passes the exception it caught (or None); all receive
    ``(rank, exception class name, message)`` of the lowest-ranked process that failed, or None when none did.

    One small all-reduce when nothing failed (the common case), plus one object gather when something did. Lets every
    process stop together with the same message instead of leaving the others waiting in the next collective.
    """
    if not is_distributed() or world_size() == 1:
        return None if error is None else (0, type(error).__name__, str(error))
    flag = torch.tensor([0 if error is None else 1], device=_collective_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if int(flag.item()) == 0:
        return None
    info = None if error is None else (type(error).__name__, str(error))
    everyone = [None] * world_size()
    dist.all_gather_object(everyone, info)
    r = next(i for i, e in enumerate(everyone) if e is not None)
    return (r, *everyone[r])
