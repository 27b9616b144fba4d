"""The full-size Charades MMFTransformer has exactly MMF's checkpoint layout.

The expected keys and shapes are derived here from MMF's model code (the
huggingface backend, HuggingfaceEmbeddings, the pooled torchvision encoders
and the MLP head), independently of minimmf's own modules.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

HIDDEN, LAYERS, INTERMEDIATE, VOCAB, POSITIONS, LABELS = 768, 12, 3072, 30522, 512, 157


def _bert_keys() -> dict[str, tuple[int, ...]]:
    prefix = "backend.transformer."
    keys = {
        "embeddings.word_embeddings.weight": (VOCAB, HIDDEN),
        "embeddings.position_embeddings.weight": (POSITIONS, HIDDEN),
        "embeddings.token_type_embeddings.weight": (2, HIDDEN),
        "embeddings.LayerNorm.weight": (HIDDEN,),
        "embeddings.LayerNorm.bias": (HIDDEN,),
        "embeddings.position_ids": (1, POSITIONS),
        "pooler.dense.weight": (HIDDEN, HIDDEN),
        "pooler.dense.bias": (HIDDEN,),
    }
    per_layer = {
        "attention.self.query": (HIDDEN, HIDDEN),
        "attention.self.key": (HIDDEN, HIDDEN),
        "attention.self.value": (HIDDEN, HIDDEN),
        "attention.output.dense": (HIDDEN, HIDDEN),
        "intermediate.dense": (INTERMEDIATE, HIDDEN),
        "output.dense": (HIDDEN, INTERMEDIATE),
    }
    for layer in range(LAYERS):
        for name, shape in per_layer.items():
            keys[f"encoder.layer.{layer}.{name}.weight"] = shape
            keys[f"encoder.layer.{layer}.{name}.bias"] = (shape[0],)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            keys[f"encoder.layer.{layer}.{norm}.weight"] = (HIDDEN,)
            keys[f"encoder.layer.{layer}.{norm}.bias"] = (HIDDEN,)
    return {prefix + key: shape for key, shape in keys.items()}


def _multimodal_embedding_keys() -> dict[str, tuple[int, ...]]:
    prefix = "backend.embeddings."
    keys = {"token_embeddings.0.weight": (VOCAB, HIDDEN), "token_type_embeddings.weight": (3, HIDDEN)}
    for modality in (1, 2):  # video, audio: Linear(512, H) + LayerNorm(H)
        keys[f"token_embeddings.{modality}.0.weight"] = (HIDDEN, 512)
        keys[f"token_embeddings.{modality}.0.bias"] = (HIDDEN,)
        keys[f"token_embeddings.{modality}.1.weight"] = (HIDDEN,)
        keys[f"token_embeddings.{modality}.1.bias"] = (HIDDEN,)
    for modality in (0, 1, 2):
        keys[f"pos_embeddings.{modality}.weight"] = (POSITIONS, HIDDEN)
        keys[f"layer_norms.{modality}.weight"] = (HIDDEN,)
        keys[f"layer_norms.{modality}.bias"] = (HIDDEN,)
    return {prefix + key: shape for key, shape in keys.items()}


def _torchvision_trunk_keys(prefix: str, model: nn.Module) -> dict[str, tuple[int, ...]]:
    trunk = nn.Sequential(*list(model.children())[:-2])
    return {prefix + key: tuple(value.shape) for key, value in trunk.state_dict().items()}


def _encoder_keys() -> dict[str, tuple[int, ...]]:
    audio = torchvision.models.resnet18(weights=None)
    audio.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return {
        **_torchvision_trunk_keys("encoders.video.encoder.", torchvision.models.video.r2plus1d_18(weights=None)),
        **_torchvision_trunk_keys("encoders.audio.encoder.", audio),
    }


def _head_keys() -> dict[str, tuple[int, ...]]:
    return {
        "heads.0.pooler.dense.weight": (HIDDEN, HIDDEN),
        "heads.0.pooler.dense.bias": (HIDDEN,),
        "heads.0.classifier.1.dense.weight": (HIDDEN, HIDDEN),
        "heads.0.classifier.1.dense.bias": (HIDDEN,),
        "heads.0.classifier.1.LayerNorm.weight": (HIDDEN,),
        "heads.0.classifier.1.LayerNorm.bias": (HIDDEN,),
        "heads.0.classifier.2.weight": (LABELS, HIDDEN),
        "heads.0.classifier.2.bias": (LABELS,),
    }


def expected_mmf_state_dict_shapes() -> dict[str, tuple[int, ...]]:
    return {**_bert_keys(), **_multimodal_embedding_keys(), **_encoder_keys(), **_head_keys()}


def test_state_dict_keys_and_shapes_match_mmf(full_model):
    expected = expected_mmf_state_dict_shapes()
    actual = {key: tuple(value.shape) for key, value in full_model.state_dict().items()}
    assert sorted(set(expected) - set(actual)) == []
    assert sorted(set(actual) - set(expected)) == []
    assert actual == expected
    assert len(actual) == 569


def test_parameter_count_and_tied_weights(full_model):
    distinct = sum(p.numel() for p in full_model.parameters())
    assert distinct == 155_232_122
    counted_twice = sum(
        value.numel() for key, value in full_model.state_dict().items()
        if value.is_floating_point() and "running_" not in key
    )
    assert counted_twice == 178_674_554
    backend = full_model.backend
    assert backend.embeddings.token_embeddings[0].weight is backend.transformer.embeddings.word_embeddings.weight
    assert backend.embeddings.layer_norms[0].weight is backend.transformer.embeddings.LayerNorm.weight
    assert backend.embeddings.layer_norms[0].bias is backend.transformer.embeddings.LayerNorm.bias
    # position tables are copies, not ties
    assert backend.embeddings.pos_embeddings[0].weight is not backend.transformer.embeddings.position_embeddings.weight


def test_full_config_resolves_like_mmf(full_config):
    model_config = full_config.model_config.mmf_transformer
    assert [m.key for m in model_config.modalities] == ["text", "video", "audio"]
    # lists replace on merge: the text modality has no position_dim/embedding_dim
    assert "position_dim" not in model_config.modalities[0]
    assert list(model_config.heads) == [{"type": "mlp", "num_labels": 157}]
    assert model_config.losses == [{"type": "logit_bce"}]
    bert = full_config.model_config.mmf_transformer.transformer_base
    assert bert == "bert-base-uncased"


def test_full_model_forward_on_charades_shapes(full_model):
    from tests.conftest import random_batch

    batch = random_batch(batch_size=1, num_labels=LABELS, frames=16, crop=112, audio=224)
    with torch.inference_mode():
        output = full_model(batch)
    assert output["scores"].shape == (1, LABELS)
    assert set(output["losses"]) == {"test/charades/logit_bce"}
    assert output["losses"]["test/charades/logit_bce"].shape == (1,)
