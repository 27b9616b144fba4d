"""MMFTransformer: one BERT-style transformer over the concatenated
embeddings of every modality (text tokens, one video feature, one audio
feature for Charades), classified from the text [CLS] position."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
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

    def tie_weights(self) -> None:
        """Each head may tie its weights to the text token embedding (the MLP head ties none)."""
        if "text" not in self.modality_type:
            return
        text_embedding = self.backend.embeddings.token_embeddings[self.modality_type.index("text")]
        for head in self.heads:
            head.tie_weights(text_embedding)

    # ---- turning a SampleList into per-modality transformer inputs ----
    # MMF's override points, in the order preprocess_sample calls them: a subclass
    # registered from env.user_dir changes one without copying the rest.

    def preprocess_sample(self, sample_list: Mapping[str, Any]) -> dict[str, dict[str, Tensor]]:
        input_ids = self._infer_input_ids(sample_list)
        position_ids = self._infer_position_ids(input_ids)
        masks = self._infer_masks(sample_list, input_ids)
        segment_ids = self._infer_segment_ids(sample_list, input_ids)
        mlm_labels = self._infer_mlm_labels(sample_list, input_ids)
        itm_labels = self._infer_itm_labels(sample_list, input_ids)
        return {"input_ids": input_ids, "position_ids": position_ids, "segment_ids": segment_ids, "masks": masks,
                "mlm_labels": mlm_labels, "itm_labels": itm_labels}

    def _check_keys_for_modality(self, sample_list: Mapping[str, Any], keys: Sequence[str]) -> Tensor:
        """The first of ``keys`` the sample list holds."""
        for name in keys:
            if name in sample_list:
                return sample_list[name]
        raise TypeError(f"missing modality in SampleList: expected one of {', '.join(keys)}")

    def _text_field(self, sample_list: Mapping[str, Any], field: str, text_index: int) -> Tensor:
        # several text modalities come stacked as (B, n_texts, L)
        value = sample_list[field]
        return value[:, text_index] if value.dim() > 2 else value

    def _text_indices(self) -> dict[str, int]:
        """Each text modality's index among the text modalities (their place in stacked text fields)."""
        keys = [key for key, kind in zip(self.modality_keys, self.modality_type, strict=True) if kind == "text"]
        return {key: index for index, key in enumerate(keys)}

    def _infer_input_ids(self, sample_list: Mapping[str, Any]) -> dict[str, Tensor]:
        """Each modality's encoded features: text token ids, (B, L) -> (B, L) ids;
        other features -> (B, N, D) (a single feature becomes N = 1)."""
        text_indices = self._text_indices()
        input_ids: dict[str, Tensor] = {}
        for key, kind in zip(self.modality_keys, self.modality_type, strict=True):
            if kind == "text":
                features = self._check_keys_for_modality(sample_list, ("input_ids", key))
                if features.dim() > 2:
                    features = features[:, text_indices[key]]
            elif kind == "image":
                features = self._check_keys_for_modality(sample_list, (key, "image", "input_modal", "image_feature_0"))
            else:
                features = self._check_keys_for_modality(sample_list, (key,))
            features = self.encoders[key](features)
            if kind != "text" and features.dim() == 2:
                features = features.unsqueeze(1)
            input_ids[key] = features
        return input_ids

    def _infer_position_ids(self, input_ids: dict[str, Tensor]) -> dict[str, Tensor]:
        return {key: torch.arange(ids.size(1), dtype=torch.long, device=ids.device).unsqueeze(0).expand(ids.shape[:2])
                for key, ids in input_ids.items()}

    def _infer_masks(self, sample_list: Mapping[str, Any], input_ids: dict[str, Tensor]) -> dict[str, Tensor]:
        text_indices = self._text_indices()
        masks: dict[str, Tensor] = {}
        for key, kind in zip(self.modality_keys, self.modality_type, strict=True):
            if kind == "text" and "input_mask" in sample_list:
                masks[key] = self._text_field(sample_list, "input_mask", text_indices[key])
            elif f"{key}_mask" in sample_list:
                masks[key] = sample_list[f"{key}_mask"]
            else:
                masks[key] = torch.ones(input_ids[key].shape[:2], dtype=torch.long, device=input_ids[key].device)
        return masks

    def _infer_segment_ids(self, sample_list: Mapping[str, Any], input_ids: dict[str, Tensor]) -> dict[str, Tensor]:
        """Segment ids of the modalities that have a ``segment_id`` (the others get none)."""
        text_indices = self._text_indices()
        segment_ids: dict[str, Tensor] = {}
        for key, kind, segment in zip(self.modality_keys, self.modality_type, self.modality_segments, strict=True):
            if segment == -1:
                continue
            if kind == "text" and "segment_ids" in sample_list:
                segment_ids[key] = self._text_field(sample_list, "segment_ids", text_indices[key])
            else:
                segment_ids[key] = torch.full(input_ids[key].shape[:2], segment, dtype=torch.long,
                                              device=input_ids[key].device)
        return segment_ids

    def _infer_mlm_labels(self, sample_list: Mapping[str, Any], input_ids: dict[str, Tensor]) -> dict[str, Tensor]:
        """Masked-language-model labels per modality (-1: not a target), and all of them joined."""
        text_indices = self._text_indices()
        labels: dict[str, Tensor] = {}
        for key, kind in zip(self.modality_keys, self.modality_type, strict=True):
            if kind == "text" and "lm_label_ids" in sample_list:
                labels[key] = self._text_field(sample_list, "lm_label_ids", text_indices[key])
            else:
                labels[key] = torch.full(input_ids[key].shape[:2], -1, dtype=torch.long,
                                         device=input_ids[key].device)
        labels["combined_labels"] = torch.cat([labels[key] for key in self.modality_keys], dim=-1)
        return labels

    def _infer_itm_labels(self, sample_list: Mapping[str, Any], input_ids: dict[str, Tensor]) -> dict[str, Tensor]:
        """Image-text matching labels: the sample list's ``is_correct``, else "matching"."""
        if "is_correct" in sample_list:
            return {"is_correct": sample_list["is_correct"]}
        device = next(iter(input_ids.values())).device
        return {"is_correct": torch.tensor(True, dtype=torch.long, device=device)}

    def forward(self, sample_list: Mapping[str, Any]) -> dict[str, Tensor]:
        processed = self.preprocess_sample(sample_list)
        processed["target_key"] = sample_list
        masks = [processed["masks"][key] for key in self.modality_keys]
        sequence_output, encoded_layers = self.backend(
            processed["input_ids"], processed["position_ids"], processed["segment_ids"], masks
        )
        return self.postprocess_output(sequence_output, encoded_layers, processed)

    def postprocess_output(self, sequence_output: Tensor, encoded_layers: list[Tensor],
                           processed_sample_list: dict[str, Any]) -> dict[str, Tensor]:
        """The heads' outputs, merged."""
        output: dict[str, Tensor] = {}
        for head in self.heads:
            output.update(head(sequence_output, encoded_layers, processed_sample_list))
        return output
