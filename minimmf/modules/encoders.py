"""Modality encoders, registered under MMF's names.

The pooled encoders are torchvision networks without their last two children
(average pool and fc), followed by an adaptive average pool to
``num_output_features`` positions: (B, C, ...) -> (B, num_output_features, C).
Weights are never downloaded: ``pretrained: true`` only works when the
torchvision weight file is already in the torch hub cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models import ResNet18_Weights, WeightsEnum
from torchvision.models.video import R2Plus1D_18_Weights

from minimmf.common.registry import registry


class Encoder(nn.Module):
    """Base class of every encoder; built from its ``params`` config node."""


@registry.register_encoder("identity")
class IdentityEncoder(Encoder):
    def __init__(self, config: Any):
        super().__init__()
        self.module = nn.Identity()
        self.in_dim = self.out_dim = config.get("in_dim", 100)

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x)


class PooledEncoder(Encoder):
    """Backbone + adaptive average (or max) pooling, flattened to (B, N, C)."""

    default_out_dim = 512

    def __init__(self, config: Any):
        super().__init__()
        self.encoder = self.build_encoder(config)
        num_features = config.get("num_output_features", 1)
        use_avg = config.get("pool_type", "avg") == "avg"
        if num_features == -1:
            self.pool: nn.Module = nn.Identity()
        elif config.get("three_d", False):
            pool_class = nn.AdaptiveAvgPool3d if use_avg else nn.AdaptiveMaxPool3d
            self.pool = pool_class((num_features, 1, 1))
        else:
            pool_class = nn.AdaptiveAvgPool2d if use_avg else nn.AdaptiveMaxPool2d
            self.pool = pool_class((num_features, 1))
        # informative only, as in MMF: the real width is the backbone's
        self.out_dim = config.get("out_dim", self.default_out_dim)

    def build_encoder(self, config: Any) -> nn.Module:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        features = self.pool(self.encoder(x))
        return torch.flatten(features, start_dim=2).transpose(1, 2).contiguous()


def cached_torchvision_weights(weights: WeightsEnum, pretrained: bool) -> WeightsEnum | None:
    """``weights`` if ``pretrained`` and its file is already cached, else None.

    Raises when pretrained weights are asked for but would have to be
    downloaded, since nothing is downloaded at run time.
    """
    if not pretrained:
        return None
    file_name = Path(weights.url).name
    cached = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    if not cached.is_file():
        raise FileNotFoundError(
            f"pretrained weights {file_name} are not in the torch hub cache ({cached}). "
            "Nothing is downloaded at run time: copy the file there, or set the "
            "encoder's `pretrained: false`."
        )
    return weights


@registry.register_encoder("r2plus1d_18")
class R2Plus1D18VideoEncoder(PooledEncoder):
    """torchvision's R(2+1)D-18 on (B, 3, T, H, W) clips -> (B, 1, 512)."""

    def build_encoder(self, config: Any) -> nn.Module:
        weights = cached_torchvision_weights(
            R2Plus1D_18_Weights.KINETICS400_V1, config.get("pretrained", False)
        )
        model = torchvision.models.video.r2plus1d_18(weights=weights)
        return nn.Sequential(*list(model.children())[:-2])


@registry.register_encoder("resnet18_audio")
class ResNet18AudioEncoder(PooledEncoder):
    """ResNet-18 with a one-channel stem, on (B, 1, H, W) spectrogram images."""

    def build_encoder(self, config: Any) -> nn.Module:
        weights = cached_torchvision_weights(
            ResNet18_Weights.IMAGENET1K_V1, config.get("pretrained", False)
        )
        model = torchvision.models.resnet18(weights=weights)
        model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        return nn.Sequential(*list(model.children())[:-2])
