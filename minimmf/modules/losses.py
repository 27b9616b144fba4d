"""Losses, registered under MMF's names, and the ``Losses`` wrapper that
names each result ``"<dataset_type>/<dataset_name>/<loss>"``."""

from __future__ import annotations

import collections.abc
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minimmf.common.registry import registry


@registry.register_loss("logit_bce")
class LogitBinaryCrossEntropy(nn.Module):
    """Mean binary cross-entropy on logits, times the number of classes."""

    def forward(self, sample_list: Mapping[str, Any], model_output: Mapping[str, Tensor]) -> Tensor:
        targets = sample_list["targets"]
        scores = model_output["scores"]
        loss = F.binary_cross_entropy_with_logits(scores, targets.to(scores.dtype), reduction="mean")
        return loss * targets.size(1)


def _single_name(value: Any) -> str:
    # a collated SampleList holds one string per sample; they are all the same
    if isinstance(value, (list, tuple)):
        return str(value[0]) if value else ""
    return str(value)


def loss_name(params: Any) -> str:
    """The name a configured loss reports under (its type)."""
    if isinstance(params, str):
        return params
    if isinstance(params, collections.abc.Mapping) and "type" in params:
        return str(params["type"])
    raise ValueError(f"a loss must be a name or have a 'type' field, got {params!r}")


class MMFLoss(nn.Module):
    """One configured loss (``{type: logit_bce, params: {...}}`` or a name)."""

    def __init__(self, params: Any):
        super().__init__()
        name = loss_name(params)
        loss_params = {} if isinstance(params, str) else (params.get("params", None) or {})
        loss_class = registry.require("loss", name)
        self.name = name
        self.loss_criterion = loss_class(**loss_params)

    def forward(self, sample_list: Mapping[str, Any], model_output: Mapping[str, Tensor]) -> dict[str, Tensor]:
        value = self.loss_criterion(sample_list, model_output)
        if value.dim() == 0:
            value = value.view(1)
        dataset_type = _single_name(sample_list.get("dataset_type", "train"))
        dataset_name = _single_name(sample_list.get("dataset_name", ""))
        return {f"{dataset_type}/{dataset_name}/{self.name}": value}


class Losses(nn.Module):
    """All losses of a model; empty output when the batch has no targets."""

    def __init__(self, loss_list: Any):
        super().__init__()
        self.losses = nn.ModuleList(MMFLoss(loss) for loss in loss_list)

    def forward(self, sample_list: Mapping[str, Any], model_output: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if "targets" not in sample_list:
            return {}
        output: dict[str, Tensor] = {}
        for loss in self.losses:
            output.update(loss(sample_list, model_output))
        return output


def total_loss(losses: Mapping[str, Tensor]) -> Tensor:
    """Sum of every loss value (what the trainer back-propagates)."""
    return torch.stack([value.sum() for value in losses.values()]).sum()
