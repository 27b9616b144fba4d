"""Tensor functions on videos laid out as (C, T, H, W)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def video_crop(vid: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    return vid[..., top : top + height, left : left + width]


def video_center_crop(vid: torch.Tensor, output_size: Sequence[int]) -> torch.Tensor:
    height, width = vid.shape[-2:]
    target_h, target_w = output_size
    top = int(round((height - target_h) / 2.0))
    left = int(round((width - target_w) / 2.0))
    return video_crop(vid, top, left, target_h, target_w)


def video_hflip(vid: torch.Tensor) -> torch.Tensor:
    return vid.flip(dims=(-1,))


def video_normalize(vid: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Per-channel normalisation of a (C, ...) video."""
    shape = (-1,) + (1,) * (vid.dim() - 1)
    mean_t = torch.as_tensor(mean, dtype=vid.dtype, device=vid.device).reshape(shape)
    std_t = torch.as_tensor(std, dtype=vid.dtype, device=vid.device).reshape(shape)
    return (vid - mean_t) / std_t


def video_to_normalized_float_tensor(vid: torch.Tensor) -> torch.Tensor:
    """(T, H, W, C) uint8 -> (C, T, H, W) float32 in [0, 1]."""
    # converting in memory order, then dividing in place, then permuting the view gives the same
    # values in the same layout as permuting first, at half the cost
    return vid.to(torch.float32).div_(255).permute(3, 0, 1, 2)
