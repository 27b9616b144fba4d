"""The few torch.distributed helpers the trainer needs (no-ops in one process)."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def is_dist_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_initialized() else 1


def is_main() -> bool:
    return get_rank() == 0


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_from_environment() -> torch.device:
    """Join the process group torchrun describes; return this rank's device
    (gloo on CPU, nccl on GPU)."""
    use_cuda = torch.cuda.is_available()
    if launched_by_torchrun() and not is_dist_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def shutdown() -> None:
    """Wait for every rank, then leave the process group."""
    if is_dist_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_gather_objects(obj: Any) -> list[Any]:
    """One object from every rank, in rank order."""
    if not is_dist_initialized():
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not is_dist_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if not is_dist_initialized():
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / get_world_size()
