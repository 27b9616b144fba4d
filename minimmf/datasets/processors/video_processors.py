"""``video_transforms`` and the video processors, on (C, T, H, W) clips.

A transform name is looked up as MMF does: first among the pytorchvideo
transforms the Charades pipelines use (re-implemented here: ``Permute``,
``Div255``, ``Normalize``), then in the processor registry, then in
torchvision, whose image transforms are applied to the clip as a (T, C, H, W)
batch of frames, so that random crops and flips are the same for every frame.
"""

from __future__ import annotations

import collections.abc
import random
from collections.abc import Sequence
from typing import Any

import torch
from torchvision import transforms as tv_transforms

from minimmf.common.registry import registry
from minimmf.datasets.processors import functional as F
from minimmf.datasets.processors.image_processors import instantiate, transform_specs
from minimmf.datasets.processors.processors import BaseProcessor


class Permute(torch.nn.Module):
    def __init__(self, dims: Sequence[int]):
        super().__init__()
        self.dims = tuple(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


class Div255(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / 255.0


class Normalize(torch.nn.Module):
    """Per-channel mean/std on (C, T, H, W) (pytorchvideo's video Normalize)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], inplace: bool = False):
        super().__init__()
        self.mean, self.std = list(mean), list(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.video_normalize(x, self.mean, self.std)


PYTORCHVIDEO_TRANSFORMS = {"Permute": Permute, "Div255": Div255, "Normalize": Normalize}


class OnFrames(torch.nn.Module):
    """Apply an image transform to every frame: (C,T,H,W) -> (T,C,H,W) and back."""

    def __init__(self, transform: Any):
        super().__init__()
        self.transform = transform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform(x.permute(1, 0, 2, 3)).permute(1, 0, 2, 3)


@registry.register_processor("permute_and_rescale")
class PermuteAndRescale(BaseProcessor):
    """(T, H, W, C) uint8 frames -> (C, T, H, W) float in [0, 1]."""

    def __call__(self, vid: torch.Tensor) -> torch.Tensor:
        return F.video_to_normalized_float_tensor(vid)


@registry.register_processor("video_to_tensor")
class VideoToTensor(PermuteAndRescale):
    pass


class _SizedCrop(BaseProcessor):
    """A crop to ``size`` (height, width), the same for every frame."""

    def __init__(self, *args: Any, size: Sequence[int] | None = None, **kwargs: Any):
        super().__init__()
        if size is None:
            raise TypeError(f"{type(self).__name__} needs 'size'")
        self.size = tuple(size)


@registry.register_processor("video_random_crop")
class VideoRandomCrop(_SizedCrop):
    def __call__(self, vid: torch.Tensor) -> torch.Tensor:
        height, width = vid.shape[-2:]
        target_h, target_w = self.size
        top = random.randint(0, height - target_h)
        left = random.randint(0, width - target_w)
        return F.video_crop(vid, top, left, target_h, target_w)


@registry.register_processor("video_center_crop")
class VideoCenterCrop(_SizedCrop):
    def __call__(self, vid: torch.Tensor) -> torch.Tensor:
        return F.video_center_crop(vid, self.size)


@registry.register_processor("video_normalize")
class VideoNormalize(BaseProcessor):
    def __init__(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None, **kwargs: Any):
        super().__init__()
        if mean is None or std is None:
            raise TypeError("video_normalize needs 'mean' and 'std'")
        self.mean, self.std = list(mean), list(std)

    def __call__(self, vid: torch.Tensor) -> torch.Tensor:
        return F.video_normalize(vid, self.mean, self.std)


@registry.register_processor("video_random_horizontal_flip")
class VideoRandomHorizontalFlip(BaseProcessor):
    def __init__(self, p: float = 0.5, **kwargs: Any):
        super().__init__()
        self.p = p

    def __call__(self, vid: torch.Tensor) -> torch.Tensor:
        return F.video_hflip(vid) if random.random() < self.p else vid


def build_video_transform(name: str, params: Any) -> Any:
    if name in PYTORCHVIDEO_TRANSFORMS:
        return instantiate(PYTORCHVIDEO_TRANSFORMS[name], params)
    processor_class = registry.get_processor_class(name)
    if processor_class is not None:
        return instantiate(processor_class, params)
    image_transform = getattr(tv_transforms, name, None)
    if image_transform is None:
        raise ValueError(f"video transform {name!r} is in neither pytorchvideo's set, the registry nor torchvision")
    return OnFrames(instantiate(image_transform, params))


def acts_on_each_frame_alone(transform: Any) -> bool:
    """True for a transform that treats every frame on its own and the same
    way each time: the uint8 -> float conversion and resizing."""
    if isinstance(transform, PermuteAndRescale):
        return True
    return isinstance(transform, OnFrames) and isinstance(transform.transform, tv_transforms.Resize)


@registry.register_processor("video_transforms")
class VideoTransforms(BaseProcessor):
    def __init__(self, config: Any, *args: Any, **kwargs: Any):
        super().__init__()
        self.specs = transform_specs(config.transforms)
        self.transforms = [build_video_transform(name, params) for name, params in self.specs]
        self.transform = tv_transforms.Compose(self.transforms)

    def __call__(self, x: Any) -> Any:
        if isinstance(x, collections.abc.Mapping):
            return {"video": self.transform(x["video"])}
        return self.transform(x)

    def split_per_frame(self) -> tuple[tv_transforms.Compose, tv_transforms.Compose] | None:
        """(per-frame part, rest) of the pipeline: its leading transforms that
        act on each frame alone, starting with ``permute_and_rescale``, and the
        others. The first applied to (T, H, W, 3) runs of frames and the second
        to the runs concatenated along time give what the whole pipeline gives
        for the clip, without ever holding the full-size clip as floats. None
        when the pipeline does not start that way."""
        count = self._per_frame_count()
        if count == 0:
            return None
        return tv_transforms.Compose(self.transforms[:count]), tv_transforms.Compose(self.transforms[count:])

    def per_frame_specs(self) -> list[tuple[str, Any]]:
        """The (name, params) of the per-frame part's transforms (empty when the
        pipeline does not split): what shapes its output, for a cache key."""
        return self.specs[:self._per_frame_count()]

    def _per_frame_count(self) -> int:
        if not self.transforms or not isinstance(self.transforms[0], PermuteAndRescale):
            return 0
        count = 1
        while count < len(self.transforms) and acts_on_each_frame_alone(self.transforms[count]):
            count += 1
        return count
