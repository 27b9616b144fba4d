"""Processes and torch.distributed, as MMF's ``mmf_run`` sets them up.

A run has one process per ``distributed.world_size`` (by default one per
visible GPU): ``mmf_run`` starts them itself on a free local port, unless it
already runs under torchrun (which gives the process count) or
``distributed.no_spawn`` is set. With ``distributed.init_method`` this
process joins a process group started elsewhere, as ``distributed.rank``.
GPU processes use ``distributed.backend`` (nccl); CPU processes use gloo.

The process that starts the others passes the stop signals it gets on to
them (as torchrun does), and ends with their exit status.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing

from minimmf.utils.signals import StopSignals, exit_at_once

logger = logging.getLogger(__name__)


def is_dist_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_initialized() else 1


def is_main() -> bool:
    return get_rank() == 0


def torchrun_restarts() -> int:
    """How many times torchrun (``--max-restarts``) has restarted this run's processes."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def launched_by_torchrun() -> bool:
    """True under torchrun with several processes (and in mmf_run's own processes)."""
    return "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def planned_world_size(config: Any) -> int:
    """The number of processes the run will have, known before any starts."""
    if launched_by_torchrun():
        return int(os.environ["WORLD_SIZE"])
    if config.distributed.no_spawn and not config.distributed.init_method:
        return 1
    return int(config.distributed.world_size)


def should_spawn(config: Any) -> bool:
    """Whether ``mmf_run`` starts the run's processes itself."""
    distributed = config.distributed
    return (not launched_by_torchrun() and not distributed.init_method and not distributed.no_spawn
            and int(distributed.world_size) > 1)


def find_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(fn: Callable[[Any], None], config: Any) -> None:
    """Run ``fn(config)`` in ``distributed.world_size`` new local processes,
    each seeing the environment torchrun would give it. A stop signal is
    passed on to them; a second one kills them and exits at once. Raises
    ``ProcessExitedException`` when one of them fails."""
    world_size = int(config.distributed.world_size)
    port = int(config.distributed.port) if int(config.distributed.port) > 0 else find_free_port()
    logger.info("starting %d processes (port %d)", world_size, port)
    context = torch.multiprocessing.start_processes(_start_process, args=(fn, config, world_size, port),
                                                    nprocs=world_size, join=False, start_method="spawn")

    def signal_all(signum: int) -> None:
        for process in context.processes:
            if process.is_alive():
                os.kill(process.pid, signum)

    def kill_all(signum: int) -> None:
        signal_all(signal.SIGKILL)
        exit_at_once(signum)

    with StopSignals("passing it on to the run's processes", on_first=signal_all, on_second=kill_all):
        while not context.join():
            pass


def _start_process(local_rank: int, fn: Callable[[Any], None], config: Any, world_size: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size),
                      RANK=str(local_rank), LOCAL_RANK=str(local_rank))
    if "OMP_NUM_THREADS" not in os.environ:
        # as torchrun: the processes share the CPU cores instead of each claiming all of them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    fn(config)


def choose_device(requested: str) -> torch.device:
    """``training.device``: cpu, or cuda (this process's GPU; the CPU, with a
    warning, when no GPU is visible, as MMF)."""
    if requested == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        logger.warning("training.device=%s but no GPU is visible: running on the CPU", requested)
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init_process_group(config: Any, device: torch.device) -> str | None:
    """Join the run's process group if it has several processes; returns the
    backend used (None in a single process)."""
    if is_dist_initialized():
        return dist.get_backend()
    distributed = config.distributed
    if not launched_by_torchrun() and not distributed.init_method:
        return None
    backend = str(distributed.backend) if device.type == "cuda" else "gloo"
    if launched_by_torchrun():
        dist.init_process_group(backend=backend, **_store_of_this_attempt())
    else:
        dist.init_process_group(backend=backend, init_method=str(distributed.init_method),
                                rank=int(distributed.rank), world_size=int(distributed.world_size))
    return backend


def _store_of_this_attempt() -> dict[str, Any]:
    """After a torchrun restart, the process group's keys under a prefix of
    their own: torchrun's static rendezvous (``--master-port``) keeps one store
    across restarts, whose keys still hold the addresses of the previous
    attempt's processes, and gloo would connect to processes that are gone."""
    restarts = torchrun_restarts()
    if not restarts or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return {}
    world_size = int(os.environ["WORLD_SIZE"])
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=False)
    return {"store": dist.PrefixStore(f"minimmf/attempt_{restarts}", store), "rank": int(os.environ["RANK"]),
            "world_size": world_size}


def shutdown(wait: bool = True) -> None:
    """Leave the process group; with ``wait``, once every rank is done (not
    after an error, when the others may never come)."""
    if is_dist_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if is_dist_initialized():
        dist.barrier()


def all_reduce_max(values: list[int], device: torch.device) -> list[int]:
    """The largest of every rank's ``values``, element by element."""
    if not is_dist_initialized():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


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
