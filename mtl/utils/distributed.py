"""Data-parallel helpers over ``torch.distributed``: ranks, sharding, gradient all-reduce, rank-0 writes.

The trainers of this toolkit split each batch (a meta-batch of tasks, or a multi-task mini-batch)
across the processes that ``torchrun`` starts, all-reduce the gradients (synchronous data
parallelism, as in Goyal et al. 2017, "Accurate, Large Minibatch SGD", and the all-reduce
training of Sergeev & Del Balso 2018, "Horovod") and step identical optimizers, so every rank
holds the same parameters and only rank 0 has to write checkpoints and logs.

Without ``torchrun`` (no ``WORLD_SIZE`` in the environment, or ``WORLD_SIZE=1``) every helper
is a cheap no-op: rank 0 of a world of 1.

Typical use::

    ctx = init_distributed("cpu")          # gloo on CPU, nccl on CUDA; reads torchrun's variables
    mine = shard_indices(batch_size)       # this rank's share of a batch
    ...; loss.backward()
    all_reduce_gradients(model.parameters())
    if is_main_process(): save_checkpoint(...)
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from torch import nn

from mtl.errors import ConfigError

__all__ = [
    "DistributedContext",
    "all_reduce_gradients",
    "all_reduce_sum",
    "any_process",
    "average_buffers",
    "barrier",
    "broadcast_state",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "launched_by_torchrun",
    "local_rank",
    "rank",
    "shard_indices",
    "shutdown_distributed",
    "world_size",
]

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
"""What ``torchrun`` (``python -m torch.distributed.run``) sets for each process it starts."""


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank, the world size, its local rank and device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the process that writes checkpoints, logs and results)."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer, got {text!r}") from None


def launched_by_torchrun() -> bool:
    """Whether the environment describes a world of more than one process (``torchrun`` sets it)."""
    return _env_int("WORLD_SIZE", 1) > 1


def is_distributed() -> bool:
    """Whether a process group with more than one process is initialised."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes in the initialised group (1 without one)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the initialised group (0 without one)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``; 0 without torchrun)."""
    return _env_int("LOCAL_RANK", 0)


def is_main_process() -> bool:
    """Whether this process is rank 0: the only one that writes checkpoints, logs and results."""
    return rank() == 0


def init_distributed(device: str | torch.device = "cpu", backend: str | None = None,
                     timeout_seconds: float = 1800.0) -> DistributedContext:
    """Join the process group described by torchrun's environment variables (no-op for one process).

    Args:
        device: the device asked for; ``cuda`` becomes ``cuda:LOCAL_RANK`` (one GPU per process).
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (CUDA); default: nccl for CUDA, gloo otherwise.
        timeout_seconds: how long a collective may wait for the other processes.

    Raises:
        ConfigError: an inconsistent environment, an unavailable backend, or more local
            processes than GPUs.
    """
    device = torch.device(device)
    if not launched_by_torchrun():
        return DistributedContext(0, 1, 0, device, None)
    import torch.distributed as dist

    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed; start a single process (without torchrun)")
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE > 1 but {', '.join(missing)} not set; start the processes with torchrun")
    world, rnk, local = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rnk < world:
        raise ConfigError(f"RANK={rnk} is outside 0..{world - 1} (WORLD_SIZE={world})")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device cuda was requested but CUDA is not available here")
        if local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={local} but only {torch.cuda.device_count()} GPU(s) here; "
                              "start at most one process per GPU (--nproc_per_node)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    chosen = backend or ("nccl" if device.type == "cuda" else "gloo")
    if chosen not in ("gloo", "nccl", "mpi"):
        raise ConfigError(f"backend must be gloo, nccl or mpi, got {chosen!r}")
    if chosen == "gloo" and not dist.is_gloo_available():
        raise ConfigError("the gloo backend is not available in this PyTorch build")
    if chosen == "nccl" and not dist.is_nccl_available():
        raise ConfigError("the nccl backend is not available in this PyTorch build; use --device cpu (gloo)")
    if not dist.is_initialized():
        dist.init_process_group(chosen, timeout=timedelta(seconds=timeout_seconds))
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local, device, chosen)


def shutdown_distributed() -> None:
    """Leave the process group (no-op without one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shard_indices(n: int, rank_: int | None = None, world: int | None = None) -> list[int]:
    """This rank's share of ``n`` items: positions ``rank, rank + world, ...`` (strided).

    Every item goes to exactly one rank, so the ranks together cover a batch exactly once; with
    ``world = 1`` the share is everything.
    """
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"n must be an integer >= 0, got {n!r}")
    if not (isinstance(world, int) and world >= 1 and isinstance(rank_, int) and 0 <= rank_ < world):
        raise ConfigError(f"rank must be in 0..world-1 with world >= 1, got rank={rank_!r}, world={world!r}")
    return list(range(rank_, n, world))


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, in place; returns it (no-op for one process)."""
    if not is_distributed():
        return tensor
    import torch.distributed as dist

    comm = _comm_device()
    if tensor.device == comm:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor
    moved = tensor.to(comm)
    dist.all_reduce(moved, op=dist.ReduceOp.SUM)
    tensor.copy_(moved.to(tensor.device))
    return tensor


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (e.g. a time budget ran out somewhere): a collective."""
    if not is_distributed():
        return bool(flag)
    value = torch.tensor([1.0 if flag else 0.0], dtype=torch.float64)
    return bool(all_reduce_sum(value).item() > 0)


def barrier() -> None:
    """Wait for every rank (no-op for one process)."""
    if is_distributed():
        import torch.distributed as dist

        dist.barrier()


def all_reduce_gradients(params: Iterable[nn.Parameter], divisor: float = 1.0) -> None:
    """Sum every parameter's ``.grad`` over the ranks (one flat buffer), then divide by ``divisor``.

    A gradient that is ``None`` on some ranks counts as zeros there; one that is ``None`` on every
    rank stays ``None``, so optimizers skip exactly the parameters a single process would skip.
    """
    if not is_distributed():
        if divisor != 1.0:
            for p in params:
                if p.grad is not None:
                    p.grad.div_(divisor)
        return
    params = list(params)
    if not params:
        return
    has = torch.tensor([0.0 if p.grad is None else 1.0 for p in params], dtype=torch.float64)
    all_reduce_sum(has)
    used = [p for p, h in zip(params, has.tolist()) if h > 0]
    if not used:
        return
    comm = _comm_device()
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(comm, torch.float64)
                      for p in used])
    all_reduce_sum(flat)
    if divisor != 1.0:
        flat.div_(divisor)
    offset = 0
    for p in used:
        chunk = flat[offset:offset + p.numel()].view_as(p).to(p.device, p.dtype)
        offset += p.numel()
        if p.grad is None:
            p.grad = chunk.clone()
        else:
            p.grad.copy_(chunk)


def average_buffers(module: nn.Module) -> None:
    """Average the floating-point buffers (e.g. BatchNorm running statistics) over the ranks."""
    if not is_distributed():
        return
    world = world_size()
    for buf in module.buffers():
        if buf.is_floating_point():
            all_reduce_sum(buf).div_(world)


def broadcast_state(state: dict[str, Any] | None, src: int = 0) -> dict[str, Any]:
    """Send rank ``src``'s ``state`` (tensors, numbers, strings, containers) to every rank.

    The state travels as ``torch.save`` bytes and is read back with ``weights_only=True``, the
    same safe loader as checkpoints, so no rank ever unpickles arbitrary objects.
    """
    if not is_distributed():
        if state is None:
            raise ConfigError("broadcast_state needs a state on the source rank")
        return state
    import torch.distributed as dist

    comm = _comm_device()
    if rank() == src:
        if state is None:
            raise ConfigError("broadcast_state needs a state on the source rank")
        buffer = io.BytesIO()
        torch.save(state, buffer)
        payload = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8).to(comm)
        size = torch.tensor([payload.numel()], dtype=torch.int64, device=comm)
    else:
        size = torch.zeros(1, dtype=torch.int64, device=comm)
    dist.broadcast(size, src)
    if rank() != src:
        payload = torch.empty(int(size.item()), dtype=torch.uint8, device=comm)
    dist.broadcast(payload, src)
    if rank() == src:
        return state  # type: ignore[return-value]
    return torch.load(io.BytesIO(payload.cpu().numpy().tobytes()), map_location="cpu", weights_only=True)
