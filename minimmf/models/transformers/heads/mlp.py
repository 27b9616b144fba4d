"""The ``mlp`` classification head: BERT pooler on the first token, then
``num_layers`` x (dropout, dense + GELU + LayerNorm), then a linear layer."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from transformers.activations import ACT2FN

from minimmf.common.registry import registry
from minimmf.models.transformers.base import BaseTransformerHead


class BertPooler(nn.Module):
    """tanh(dense(h[:, 0])): the pooled [CLS] representation."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))

class PredictionHeadTransform(nn.Module):
    """dense(in_dim -> hidden) + activation + LayerNorm, keyed as in BERT."""

    def __init__(self, in_dim: int, hidden_size: int, hidden_act: str, layer_norm_eps: float):
        super().__init__()
        self.dense = nn.Linear(in_dim, hidden_size)
        self.transform_act_fn = ACT2FN[hidden_act]
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))

@registry.register_transformer_head("multilayer_mlp")
@registry.register_transformer_head("mlp")
class MLP(BaseTransformerHead):
    defaults = {
        **BaseTransformerHead.defaults,
        "type": "mlp",
        "num_labels": 2,
        "hidden_size": 768,
        "hidden_dropout_prob": 0.1,
        "layer_norm_eps": 1e-6,
        "hidden_act": "gelu",
        "pooler_name": "bert_pooler",
        "num_layers": 1,
        "in_dim": None,
    }

    def __init__(self, config: Any):
        super().__init__(config)
        cfg = self.config
        self.num_labels = cfg.num_labels
        self.hidden_size = cfg.hidden_size
        self.in_dim = cfg.hidden_size if cfg.in_dim is None else cfg.in_dim
        if cfg.pooler_name == "bert_pooler":
            self.pooler: nn.Module = BertPooler(self.in_dim)
        elif cfg.pooler_name == "identity":
            self.pooler = nn.Identity()
        else:
            raise NotImplementedError(f"pooler {cfg.pooler_name!r} is not implemented")
        if cfg.num_layers < 0:
            raise ValueError("the mlp head's num_layers must be >= 0")
        layers: list[nn.Module] = []
        in_dim = self.in_dim
        for _ in range(cfg.num_layers):
            layers.append(nn.Dropout(cfg.hidden_dropout_prob))
            layers.append(PredictionHeadTransform(in_dim, cfg.hidden_size, cfg.hidden_act, cfg.layer_norm_eps))
            in_dim = cfg.hidden_size
        self.classifier = nn.Sequential(*layers, nn.Linear(self.hidden_size, self.num_labels))

    def forward(self, sequence_output: Tensor, encoded_layers: list[Tensor] | None = None,
                processed_sample_list: dict[str, Any] | None = None) -> dict[str, Tensor]:
        if sequence_output.size(-1) != self.in_dim:
            raise ValueError(
                f"the mlp head expects width {self.in_dim} but the transformer gives "
                f"{sequence_output.size(-1)}: set the head's hidden_size to the BERT hidden_size"
            )
        scores = self.classifier(self.pooler(sequence_output))
        return {"scores": scores.view(-1, self.num_labels)}
