"""MMFTransformer: one BERT-style transformer over the concatenated
embeddings of every modality (text tokens, one video feature, one audio
feature for Charades), classified from the text [CLS] position."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from minimmf.common.registry import registry
from minimmf.models.transformers.base import BaseTransformer
from minimmf.utils.build import build_encoder

logger = logging.getLogger(__name__)


@registry.register_model("mmft")
@registry.register_model("mmf_transformer")
class MMFTransformer(BaseTransformer):
    def __init__(self, config: Any, *args: Any, **kwargs: Any):
        super().__init__(config)
        self.modality_keys: list[str] = []
        self.modality_type: list[str] = []
        self.modality_segments: list[int] = []
        for modality in self.config.modalities:
            self.modality_keys.append(modality.key)
            self.modality_type.append(modality.type)
            self.modality_segments.append(modality.get("segment_id", -1))

    @classmethod
    def config_path(cls) -> str:
        return "configs/models/mmf_transformer/defaults.yaml"

    @classmethod
    def format_state_key(cls, key: str) -> str:
        # checkpoints of the first MMFT kept the head at the top level
        if key.startswith("pooler.") or key.startswith("classifier."):
            return "heads.0." + key
        return key

    def build_encoders(self) -> None:
        self.encoders = nn.ModuleDict()
        for modality in self.config.modalities:
            if "encoder" in modality:
                encoder_config = modality.encoder
            elif modality.type == "image" and "image_encoder" in self.config:
                encoder_config = self.config.image_encoder
            else:
                encoder_config = OmegaConf.create({"type": "identity", "params": {"in_dim": 100}})
            encoder = build_encoder(encoder_config)
            frozen = (modality.type == "image" and self.config.get("freeze_image_encoder", False)) or (
                modality.type == "text" and self.config.get("freeze_text_encoder", False)
            )
            if frozen:
                logger.info("freezing the %s encoder", modality.key)
                encoder.requires_grad_(False)
            self.encoders[modality.key] = encoder

    # ---- turning a SampleList into per-modality transformer inputs ----

    def _modality_input(self, sample_list: Mapping[str, Any], idx: int) -> Tensor:
        key, kind = self.modality_keys[idx], self.modality_type[idx]
        if kind == "text":
            candidates: tuple[str, ...] = ("input_ids", key)
        elif kind == "image":
            candidates = (key, "image", "input_modal", "image_feature_0")
        else:
            candidates = (key,)
        for name in candidates:
            if name in sample_list:
                return sample_list[name]
        raise TypeError(f"missing modality in SampleList: expected one of {', '.join(candidates)}")

    def _text_field(self, sample_list: Mapping[str, Any], field: str, text_index: int) -> Tensor:
        # several text modalities come stacked as (B, n_texts, L)
        value = sample_list[field]
        return value[:, text_index] if value.dim() > 2 else value

    def preprocess_sample(self, sample_list: Mapping[str, Any]) -> dict[str, dict[str, Tensor]]:
        input_ids: dict[str, Tensor] = {}
        masks: dict[str, Tensor] = {}
        segment_ids: dict[str, Tensor] = {}
        text_index = 0
        for idx, key in enumerate(self.modality_keys):
            is_text = self.modality_type[idx] == "text"
            features = self._modality_input(sample_list, idx)
            if is_text and features.dim() > 2:
                features = features[:, text_index]
            features = self.encoders[key](features)
            if not is_text and features.dim() == 2:
                features = features.unsqueeze(1)
            input_ids[key] = features
            shape, device = features.shape[:2], features.device

            if is_text and "input_mask" in sample_list:
                masks[key] = self._text_field(sample_list, "input_mask", text_index)
            elif f"{key}_mask" in sample_list:
                masks[key] = sample_list[f"{key}_mask"]
            else:
                masks[key] = torch.ones(shape, dtype=torch.long, device=device)

            if self.modality_segments[idx] != -1:
                if is_text and "segment_ids" in sample_list:
                    segment_ids[key] = self._text_field(sample_list, "segment_ids", text_index)
                else:
                    segment_ids[key] = torch.full(
                        shape, self.modality_segments[idx], dtype=torch.long, device=device
                    )
            if is_text:
                text_index += 1

        position_ids = {
            key: torch.arange(ids.size(1), device=ids.device).unsqueeze(0).expand(ids.shape[:2])
            for key, ids in input_ids.items()
        }
        return {"input_ids": input_ids, "position_ids": position_ids, "segment_ids": segment_ids, "masks": masks}

    def forward(self, sample_list: Mapping[str, Any]) -> dict[str, Tensor]:
        processed = self.preprocess_sample(sample_list)
        masks = [processed["masks"][key] for key in self.modality_keys]
        sequence_output, encoded_layers = self.backend(
            processed["input_ids"], processed["position_ids"], processed["segment_ids"], masks
        )
        output: dict[str, Tensor] = {}
        for head in self.heads:
            output.update(head(sequence_output, encoded_layers, processed))
        return output
