"""``BaseTransformer``: a multimodal transformer is a backend (embeddings +
encoder layers), one encoder per modality, and a list of heads."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from minimmf.common.registry import registry
from minimmf.models.base_model import BaseModel
from minimmf.utils.general import as_plain_dict


class BaseTransformer(BaseModel):
    def build(self) -> None:
        self.build_backend()
        self.build_encoders()
        self.build_heads()
        self.build_losses()
        self.init_weights()

    @classmethod
    def config_for_inference(cls, config: DictConfig) -> DictConfig:
        """The encoders start without pretrained weights: the archive has them all, nothing is fetched."""
        config = config.copy()
        for modality in config.get("modalities", []):
            params = (modality.get("encoder") or {}).get("params")
            if params is not None and params.get("pretrained"):
                params.pretrained = False
        return config

    @property
    def num_labels(self) -> int:
        """The labels of the first head that has them (the one that gives ``scores``)."""
        for head in self.heads:
            if hasattr(head, "num_labels"):
                return int(head.num_labels)
        raise NotImplementedError(f"no head of {type(self).__name__} says how many labels it scores")

    def describe(self) -> dict[str, Any]:
        transformer = self.backend.transformer_config
        return {
            **super().describe(),
            "transformer_base": self.config.get("transformer_base"),
            "hidden_size": transformer.hidden_size,
            "num_hidden_layers": transformer.num_hidden_layers,
            "modalities": [{"key": m.key, "type": m.type, "encoder": (m.get("encoder") or {}).get("type", "identity")}
                           for m in self.config.modalities],
        }

    def build_backend(self) -> None:
        backend_config = self.config.get("backend", None) or {}
        backend_type = backend_config.get("type", "huggingface")
        backend_class = registry.require("transformer_backend", backend_type)
        self.backend = backend_class(self.config)
        if backend_config.get("freeze", False):
            self.backend.requires_grad_(False)

    def build_encoders(self) -> None:
        pass

    def build_losses(self) -> None:
        """A hook for models whose losses need building with the model (MMF's)."""

    def build_heads(self) -> None:
        self.heads = nn.ModuleList()
        for head_config in self.config.get("heads", []):
            head_type = head_config.get("type", "mlp")
            head_class = registry.require("transformer_head", head_type)
            head = head_class(head_config)
            if head_config.get("freeze", False):
                head.requires_grad_(False)
            self.heads.append(head)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(self.config.initializer_mean, self.config.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(self.config.layer_norm_weight_fill)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    def init_weights(self) -> None:
        # As MMF: with a named transformer base, modules keep the initialisation
        # they were built with (BERT's own, torchvision's, PyTorch's defaults).
        if not self.config.get("random_initialize", False) and self.config.get("transformer_base") is None:
            self.apply(self._init_weights)
        self.tie_weights()

    def tie_weights(self) -> None:
        pass

    def get_optimizer_parameters(self, config: Any) -> list[dict[str, Any]]:
        """BERT-style parameter groups (no weight decay on biases and LayerNorms);
        a head with ``lr_multiplier`` != 1 gets its own learning rate."""
        base_lr = config.optimizer.params.lr
        groups: list[dict[str, Any]] = []
        shared: list[tuple[str, nn.Parameter]] = []
        for name, module in self.named_children():
            if name != "heads":
                shared += list(module.named_parameters(prefix=name))
                continue
            for head_config, head in zip(self.config.get("heads", []), self.heads, strict=True):
                multiplier = head_config.get("lr_multiplier", 1.0)
                if multiplier != 1.0:
                    groups += bert_parameter_groups(list(head.named_parameters()), base_lr * multiplier)
                else:
                    shared += list(head.named_parameters())
        return groups + bert_parameter_groups(shared)


_NO_WEIGHT_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")


def bert_parameter_groups(named_parameters: list[tuple[str, nn.Parameter]], lr: float | None = None,
                          weight_decay: float = 0.01) -> list[dict[str, Any]]:
    """MMF's ``get_bert_configured_parameters``: decay 0.01 except biases and LayerNorms."""
    trainable = [(n, p) for n, p in named_parameters if p.requires_grad]
    groups = [
        {"params": [p for n, p in trainable if not any(nd in n for nd in _NO_WEIGHT_DECAY)],
         "weight_decay": weight_decay},
        {"params": [p for n, p in trainable if any(nd in n for nd in _NO_WEIGHT_DECAY)], "weight_decay": 0.0},
    ]
    if lr is not None:
        for group in groups:
            group["lr"] = lr
    return groups


class BaseTransformerHead(nn.Module):
    """A head's config is its class defaults updated with the config node."""

    defaults: dict[str, Any] = {"type": None, "freeze": False, "lr_multiplier": 1.0}

    def __init__(self, config: Any):
        super().__init__()
        self.config = OmegaConf.create({**self.defaults, **as_plain_dict(config)})

    def tie_weights(self, module: nn.Module | None = None) -> None:
        pass

    def forward(self, sequence_output: Tensor, encoded_layers: list[Tensor] | None = None,
                processed_sample_list: dict[str, Any] | None = None) -> dict[str, Tensor]:
        raise NotImplementedError
