"""What a resumed run needs to continue the interrupted one update for update
(on the CPU, with as many processes as before):

- each process's random number generators (Python's, NumPy's, torch's and,
  on a GPU, CUDA's): the model's dropout draws from them;
- the position in the epoch: an epoch's order is a permutation drawn from
  (seed, epoch), the same in every run, so the position is the number of its
  samples already taken, over all processes (``ResumableSampler``);
- each sample's random transforms (the training split's crop and flip) draw
  from generators seeded from (seed, epoch, index) for that sample alone
  (``SeededItems``), so that they depend neither on which DataLoader worker
  loads it, nor on how many workers there are, nor on where in the epoch a
  run started.

The states go into the checkpoint as extra keys (``rank_states``,
``train_position``) of plain tensors and numbers, which MMF ignores and
``torch.load(weights_only=True)`` reads.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def rng_states(device: torch.device) -> dict[str, Any]:
    """This process's random number generator states."""
    version, keys, gauss = random.getstate()
    _, numpy_keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    states = {
        "python": {"version": version, "keys": torch.tensor(keys, dtype=torch.int64), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(numpy_keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    """Put back what ``rng_states`` returned."""
    python = states["python"]
    random.setstate((python["version"], tuple(python["keys"].tolist()), python["gauss"]))
    numpy = states["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    torch.set_rng_state(states["torch"].cpu())
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"].cpu(), device)


class ResumableSampler(Sampler[tuple[int, int]]):
    """This process's share of an epoch, in the order ``DistributedSampler``
    (shuffle, ``seed``) gives it: a permutation seeded with seed + epoch,
    padded to a multiple of ``world_size`` with its first indices, every
    ``world_size``-th position from ``rank`` on. ``set_epoch(epoch, start)``
    starts the epoch after its first ``start`` positions (taken by all the
    processes together), the rest shared the same way, so that a run resumed
    with another number of processes still takes each sample once.

    Yields (index, epoch): the key ``SeededItems`` seeds a sample's transforms from.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def epoch_order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def _shares(self) -> list[int]:
        """The positions left in the epoch, padded for an even share (as DistributedSampler pads)."""
        order = self.epoch_order()
        left = order[self.start:]
        padding = -len(left) % self.world_size
        repeats = math.ceil(padding / len(order)) if order else 0
        return left + (order * repeats)[:padding]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self._shares()[self.rank::self.world_size]:
            yield index, self.epoch

    def __len__(self) -> int:
        return math.ceil((self.size - self.start) / self.world_size)

    def batches_per_epoch(self, batch_size: int) -> int:
        """This process's batches in a whole epoch."""
        return math.ceil(math.ceil(self.size / self.world_size) / batch_size)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 64-bit seed for one sample of one epoch, well mixed (NumPy's SeedSequence)."""
    high, low = np.random.SeedSequence([seed % 2**64, epoch, index]).generate_state(2)
    return int(high) << 32 | int(low)


@contextmanager
def seeded_randomness(seed: int) -> Iterator[None]:
    """Python's, NumPy's and torch's (CPU) global generators seeded with ``seed``
    inside the block, and put back as they were after it. CUDA's is left
    alone: the model's dropout on a GPU draws from it."""
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


class SeededItems(Dataset):
    """``dataset[index]`` for the key (index, epoch) a ``ResumableSampler``
    yields, with the random transforms seeded from (seed, epoch, index)."""

    def __init__(self, dataset: Any, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, epoch = key
        with seeded_randomness(sample_seed(self.seed, epoch, index)):
            return self.dataset[index]
