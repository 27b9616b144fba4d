"""``Sample`` (one example) and ``SampleList`` (a collated batch), as in MMF.

Both are ordered dicts with attribute access. A SampleList built from Samples
stacks tensor fields along a new batch dimension and keeps other fields as
lists; fields that are nested dicts become nested SampleLists.
"""

from __future__ import annotations

import collections.abc
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import torch


class Sample(OrderedDict):
    """One example: ``sample.video = tensor`` is ``sample["video"] = tensor``."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


class SampleList(OrderedDict):
    """A batch. ``SampleList([s1, s2])`` collates; ``SampleList(dict)`` wraps."""

    def __init__(self, samples: Iterable[Any] | collections.abc.Mapping | None = None):
        super().__init__()
        if samples is None:
            return
        if isinstance(samples, collections.abc.Mapping):
            self.update(samples)
            return
        samples = list(samples)
        if samples:
            self._collate(samples)

    def _collate(self, samples: list[collections.abc.Mapping]) -> None:
        for field in samples[0].keys():
            values = [sample[field] for sample in samples]
            self[field] = _collate_field(field, values)

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(
                f"SampleList has no field {key!r}; fields: {list(self.keys())}"
            ) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def get_batch_size(self) -> int:
        for value in self.values():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                return value.size(0)
            if isinstance(value, list):
                return len(value)
        return 0

    def to(self, device: torch.device | str, non_blocking: bool = True) -> SampleList:
        """A copy with every tensor (also in nested SampleLists) on ``device``."""
        moved = SampleList()
        for key, value in self.items():
            if isinstance(value, (torch.Tensor, SampleList)):
                value = value.to(device, non_blocking=non_blocking)
            moved[key] = value
        return moved

    def pin_memory(self) -> SampleList:
        pinned = SampleList()
        for key, value in self.items():
            if isinstance(value, (torch.Tensor, SampleList)):
                value = value.pin_memory()
            pinned[key] = value
        return pinned

    def copy(self) -> SampleList:
        return SampleList(dict(self))


def _collate_field(field: str, values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, torch.Tensor):
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) != 1:
            raise ValueError(
                f"cannot batch field {field!r}: samples have different shapes {sorted(shapes)}"
            )
        return torch.stack(values)
    if isinstance(first, collections.abc.Mapping):
        return SampleList(values)
    return list(values)


def to_device(sample_list: Any, device: torch.device | str) -> Any:
    """Move a SampleList (or a dict, converted to one) to ``device``."""
    if isinstance(sample_list, collections.abc.Mapping) and not isinstance(
        sample_list, SampleList
    ):
        sample_list = SampleList(sample_list)
    if isinstance(sample_list, SampleList):
        return sample_list.to(device)
    return sample_list
