"""The ``huggingface`` transformer backend: a ``transformers`` BertModel
built from a config (never downloaded) plus MMF's multimodal embeddings."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from transformers import BertConfig, BertModel

from minimmf.common.registry import registry
from minimmf.utils.general import as_plain_dict

logger = logging.getLogger(__name__)

# Dimensions of the published BERT checkpoints, so that a config naming one
# builds the same architecture offline. Anything else must be a local
# directory holding a config.json (and optionally weights).
KNOWN_BERT_CONFIGS: dict[str, dict[str, Any]] = {
    "bert-base-uncased": {},
    "bert-base-cased": {"vocab_size": 28996},
    "bert-large-uncased": {
        "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
    },
    "bert-large-cased": {
        "vocab_size": 28996, "hidden_size": 1024, "num_hidden_layers": 24,
        "num_attention_heads": 16, "intermediate_size": 4096,
    },
}
_BERT_BASE_UNCASED = {
    "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 512, "type_vocab_size": 2,
    "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
}
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def bert_config_overrides(model_config: DictConfig | dict) -> dict[str, Any]:
    """Top-level model-config keys that name a BertConfig field (MMF passes
    the whole model config as keyword overrides to the transformer config)."""
    container = as_plain_dict(model_config)
    bert_fields = set(BertConfig().to_dict())
    return {key: value for key, value in container.items() if key in bert_fields}


def build_bert_config(transformer_base: str, overrides: dict[str, Any]) -> BertConfig:
    if Path(transformer_base).is_dir():
        return BertConfig.from_pretrained(transformer_base, local_files_only=True, **overrides)
    if transformer_base in KNOWN_BERT_CONFIGS:
        values = {**_BERT_BASE_UNCASED, **KNOWN_BERT_CONFIGS[transformer_base], **overrides}
        return BertConfig(**values)
    raise ValueError(
        f"transformer_base {transformer_base!r} is neither a known BERT "
        f"({', '.join(KNOWN_BERT_CONFIGS)}) nor a local directory with a config.json"
    )


def build_bert_model(transformer_base: str, config: BertConfig) -> BertModel:
    """A BertModel: the local directory's weights when it has them, else
    BERT's random initialisation (nothing is downloaded)."""
    base_dir = Path(transformer_base)
    if base_dir.is_dir() and any((base_dir / name).is_file() for name in _WEIGHT_FILES):
        logger.info("loading transformer weights from %s", base_dir)
        return BertModel.from_pretrained(base_dir, config=config, local_files_only=True)
    logger.info("transformer %s starts from random weights (no local weights given)", transformer_base)
    return BertModel(config)


class HuggingfaceEmbeddings(nn.Module):
    """One embedding stack per modality: token (or feature projection) +
    position + token-type, then LayerNorm and dropout; concatenated.

    The text modality shares BERT's word embeddings and LayerNorm, and every
    position table starts as a copy of BERT's.
    """

    def __init__(self, model_config: DictConfig, transformer_config: BertConfig, transformer: BertModel):
        super().__init__()
        self.model_config = model_config
        self.transformer_config = transformer_config
        self.token_embeddings = nn.ModuleList()
        self.pos_embeddings = nn.ModuleList()
        self.layer_norms = nn.ModuleList()
        self.dropouts = nn.ModuleList()
        self.modality_keys: list[str] = []
        self.build_layers()
        self.init_weights(transformer)

    def build_layers(self) -> None:
        hidden = self.transformer_config.hidden_size
        for modality in self.model_config.modalities:
            self.modality_keys.append(modality.key)
            eps = modality.get("layer_norm_eps", self.transformer_config.layer_norm_eps)
            position_dim = modality.get("position_dim", self.transformer_config.max_position_embeddings)
            dropout = modality.get("hidden_dropout_prob", self.transformer_config.hidden_dropout_prob)
            if modality.type == "text" and modality.get("consume_raw", True):
                token_embedding: nn.Module = nn.Embedding(
                    self.transformer_config.vocab_size, hidden, padding_idx=self.transformer_config.pad_token_id
                )
            else:
                token_embedding = nn.Sequential(
                    nn.Linear(modality.embedding_dim, hidden), nn.LayerNorm(hidden, eps=eps)
                )
            self.token_embeddings.append(token_embedding)
            self.pos_embeddings.append(nn.Embedding(position_dim, hidden))
            self.layer_norms.append(nn.LayerNorm(hidden, eps=eps))
            self.dropouts.append(nn.Dropout(dropout))
        self.token_type_embeddings = nn.Embedding(len(self.model_config.modalities), hidden)

    @torch.no_grad()
    def init_weights(self, transformer: BertModel) -> None:
        bert = transformer.embeddings
        for idx, modality in enumerate(self.model_config.modalities):
            if modality.type == "text":
                self.token_embeddings[idx] = bert.word_embeddings
                self.layer_norms[idx] = bert.LayerNorm
            self.pos_embeddings[idx].weight = nn.Parameter(copy.deepcopy(bert.position_embeddings.weight.data))
        # rows BERT has are copied; each extra modality gets their mean + noise
        known_rows = min(self.transformer_config.type_vocab_size, len(self.model_config.modalities))
        self.token_type_embeddings.weight[:known_rows].copy_(bert.token_type_embeddings.weight[:known_rows])
        mean_row = bert.token_type_embeddings.weight.mean(dim=0)
        for idx in range(known_rows, len(self.model_config.modalities)):
            noise = torch.normal(
                self.model_config.token_noise_mean, self.model_config.token_noise_std, size=mean_row.size(),
                device=mean_row.device,
            )
            self.token_type_embeddings.weight[idx].copy_(mean_row + noise)

    def forward(self, tokens_ids: dict[str, Tensor], position_ids: dict[str, Tensor],
                segment_ids: dict[str, Tensor]) -> Tensor:
        embeddings = []
        for idx, key in enumerate(self.modality_keys):
            total = self.token_embeddings[idx](tokens_ids[key])
            if key in position_ids:
                total = total + self.pos_embeddings[idx](position_ids[key])
            if key in segment_ids:
                total = total + self.token_type_embeddings(segment_ids[key])
            embeddings.append(self.dropouts[idx](self.layer_norms[idx](total)))
        return torch.cat(embeddings, dim=1)


@registry.register_transformer_backend("huggingface")
class HuggingfaceBackend(nn.Module):
    def __init__(self, config: DictConfig):
        super().__init__()
        self.config = config
        self.transformer_config = build_bert_config(config.transformer_base, bert_config_overrides(config))
        self.transformer = build_bert_model(config.transformer_base, self.transformer_config)
        # MMF's transformers saved position_ids; keep it in the state dict so
        # that checkpoints load both ways with strict=True
        embeddings = self.transformer.embeddings
        embeddings.register_buffer("position_ids", embeddings.position_ids, persistent=True)
        self.embeddings = HuggingfaceEmbeddings(config, self.transformer_config, self.transformer)

    @staticmethod
    def generate_attention_mask(masks: list[Tensor], dtype: torch.dtype) -> Tensor:
        """(B, L) 1/0 masks -> (B, 1, 1, L) additive mask: 0 kept, -10000 masked."""
        attention_mask = torch.cat(masks, dim=-1).to(dtype)
        return (1.0 - attention_mask[:, None, None, :]) * -10000.0

    def forward(self, tokens_ids: dict[str, Tensor], position_ids: dict[str, Tensor],
                segment_ids: dict[str, Tensor], masks: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        embedding = self.embeddings(tokens_ids, position_ids, segment_ids)
        attention_mask = self.generate_attention_mask(masks, embedding.dtype)
        sequence_output = self.transformer.encoder(embedding, attention_mask=attention_mask).last_hidden_state
        return sequence_output, [sequence_output]
