"""From a model's scores to predictions: the rules evaluation, the metrics and
serving share, so that a label means the same everywhere.

- A class is predicted when its probability reaches the threshold
  (inclusive): ``predicted`` for tensors, ``labels_above`` for names.
- A video scored by several clips takes their maximum (Charades' convention)
  or their mean (``CLIP_POOLINGS``): ``pool_clip_probabilities`` for
  probabilities; ``pool_clip_logits`` for logits, exactly (the maximum of the
  logits is the logit of the maximum, since the sigmoid is increasing; the
  mean is taken over float64 probabilities, so that pooling creates no
  ties that the logits did not have).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

CLIP_POOLINGS = ("max", "mean")


def check_pooling(pooling: str) -> str:
    if pooling not in CLIP_POOLINGS:
        raise ValueError(f"clip pooling {pooling!r}: use {' or '.join(CLIP_POOLINGS)}")
    return pooling


def predicted(probabilities: Tensor, threshold: float) -> Tensor:
    """Which classes are predicted: probability >= ``threshold``."""
    return probabilities >= threshold


def labels_above(probabilities: Tensor, classes: Sequence[str], threshold: float) -> list[str]:
    """The classes whose probability reaches ``threshold``, most probable first."""
    order = torch.argsort(probabilities, descending=True, stable=True).tolist()
    chosen = predicted(probabilities, threshold)
    return [classes[i] for i in order if chosen[i]]


def pool_clip_probabilities(probabilities: Tensor, pooling: str) -> Tensor:
    """One video's probabilities from its clips' (clips, classes)."""
    check_pooling(pooling)
    if len(probabilities) == 1:
        return probabilities[0]
    return probabilities.max(dim=0).values if pooling == "max" else probabilities.mean(dim=0)


def pool_clip_logits(logits: Tensor, pooling: str) -> Tensor:
    """One video's logits from its clips' (clips, classes), pooled as
    ``pool_clip_probabilities`` pools their probabilities."""
    check_pooling(pooling)
    if len(logits) == 1:
        return logits[0]
    if pooling == "max":
        return logits.max(dim=0).values
    return torch.logit(torch.sigmoid(logits.double()).mean(dim=0))
