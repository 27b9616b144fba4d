"""Scoring an ``EvaluationSet`` (``minimmf.datasets.evaluation``) with a
model: each process takes every ``world_size``-th item, the DataLoader's
workers make the items while the model scores the ones before, samples of
consecutive items go through the model ``batch_size`` at a time, and the
scored items of every process are put back in the split's order before the
set combines them, so that one process and several give the same report."""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from minimmf.common.sample import Sample, SampleList
from minimmf.datasets.evaluation import EvaluationItem, EvaluationSet, ScoredItem
from minimmf.utils import distributed


@dataclass
class LossSums:
    """The model's losses summed over the samples they were averaged over."""

    sums: dict[str, float] = field(default_factory=dict)
    samples: int = 0

    def add(self, losses: dict[str, Tensor], samples: int) -> None:
        for key, value in losses.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value.mean()) * samples
        self.samples += samples

    def merged(self, others: Iterable[LossSums]) -> LossSums:
        total = LossSums(dict(self.sums), self.samples)
        for other in others:
            for key, value in other.sums.items():
                total.sums[key] = total.sums.get(key, 0.0) + value
            total.samples += other.samples
        return total

    def means(self) -> dict[str, float]:
        return {key: value / max(self.samples, 1) for key, value in self.sums.items()}


def as_it_is(item: Any) -> Any:
    """The collate function of a DataLoader with ``batch_size=None`` whose items are ready."""
    return item


def score_items(items: Iterable[EvaluationItem], score: Callable[[list[Sample]], Tensor],
                batch_size: int) -> Iterator[ScoredItem]:
    """Each item with its scores, in order. The samples of consecutive items
    share model batches of ``batch_size``; an item is handed back as soon as
    all of its samples are scored."""
    waiting: deque[EvaluationItem] = deque()
    pending: list[Sample] = []
    rows: list[Tensor] = []
    for item in items:
        waiting.append(item)
        pending += item.samples
        while len(pending) >= batch_size:
            rows += list(score(pending[:batch_size]))
            pending = pending[batch_size:]
            yield from _finished(waiting, rows)
        yield from _finished(waiting, rows)
    if pending:
        rows += list(score(pending))
    yield from _finished(waiting, rows)


def _finished(waiting: deque[EvaluationItem], rows: list[Tensor]) -> Iterator[ScoredItem]:
    while waiting and len(rows) >= len(waiting[0].samples):
        item = waiting.popleft()
        count = len(item.samples)
        scores = torch.stack(rows[:count]) if count else None
        del rows[:count]
        yield ScoredItem(item.index, scores, item.info, item.error)


@torch.inference_mode()
def evaluate_set(model: nn.Module, evaluation_set: EvaluationSet, dataset_name: str, split: str, batch_size: int,
                 device: torch.device, loader_options: dict[str, Any], autocast: Callable[[], Any],
                 show_progress: bool = True) -> tuple[dict[str, Any], LossSums]:
    """``evaluation_set``'s report entries, and the model's losses over its samples."""
    model.eval()
    mine = range(distributed.get_rank(), len(evaluation_set), distributed.get_world_size())
    # one pass: no workers kept for later
    loader = DataLoader(Subset(evaluation_set, mine), batch_size=None, collate_fn=as_it_is,
                        **{**loader_options, "persistent_workers": False})
    losses = LossSums()

    def score(samples: list[Sample]) -> Tensor:
        batch = SampleList(samples)
        batch.dataset_name, batch.dataset_type = dataset_name, split
        with autocast():
            output = model(batch.to(device, non_blocking=True))
        if evaluation_set.with_losses:
            losses.add(output["losses"], len(samples))
        return output["scores"].float().cpu()

    items = tqdm(loader, desc=f"{split}: {evaluation_set.name or 'evaluating'}", unit="video", leave=False,
                 disable=not (show_progress and distributed.is_main() and sys.stderr.isatty()))
    scored = list(score_items(items, score, batch_size))
    every_process = distributed.all_gather_objects((scored, losses))
    in_order = sorted((item for part, _ in every_process for item in part), key=lambda item: item.index)
    return evaluation_set.combine(in_order), LossSums().merged(part for _, part in every_process)
