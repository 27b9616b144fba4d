"""MMF-style config assembly: defaults, includes, overrides, interpolation."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from minimmf.common.sample import Sample, SampleList
from minimmf.utils.configuration import ConfigError, build_config, decode_value, load_yaml
from tests.conftest import DIRECT_CONFIG, TINY_CONFIG


def test_include_chain_and_order(tmp_path):
    (tmp_path / "base.yaml").write_text("training:\n  batch_size: 2\n  max_updates: 7\n")
    (tmp_path / "child.yaml").write_text("includes:\n  - base.yaml\ntraining:\n  batch_size: 5\n")
    config = load_yaml(tmp_path / "child.yaml")
    assert OmegaConf.to_container(config) == {"training": {"batch_size": 5, "max_updates": 7}}


def test_tiny_config_inherits_direct_and_shrinks_the_work():
    config = build_config(TINY_CONFIG, ["model=mmf_transformer", "dataset=charades"])
    model = config.model_config.mmf_transformer
    assert model.num_hidden_layers == 2 and model.heads[0].num_labels == 8
    assert [m.encoder.type for m in model.modalities[1:]] == ["r2plus1d_18", "resnet18_audio"]
    assert config.dataset_config.charades.frames_per_clip == 8
    assert config.optimizer.type == "adam_w" and config.scheduler.type == "warmup_cosine"
    assert config.training.early_stop.criteria == "charades/multilabel_micro_f1"


def test_synthetic_full_config_is_direct_with_the_synthetic_classes():
    """bench/precision.py's trained full-size model: direct.yaml's architecture
    and inputs (the same modules, widths and processors), an 8-class head."""
    overrides = ["model=mmf_transformer", "dataset=charades"]
    direct = build_config(DIRECT_CONFIG, overrides)
    synthetic = build_config(TINY_CONFIG.with_name("synthetic_full.yaml"), overrides)
    assert synthetic.model_config.mmf_transformer.heads[0].num_labels == 8
    synthetic.model_config.mmf_transformer.heads[0].num_labels = direct.model_config.mmf_transformer.heads[0].num_labels
    assert OmegaConf.to_container(synthetic.model_config) == OmegaConf.to_container(direct.model_config)
    assert synthetic.dataset_config.charades.frames_per_clip == direct.dataset_config.charades.frames_per_clip
    assert OmegaConf.to_container(synthetic.dataset_config.charades.processors) == \
        OmegaConf.to_container(direct.dataset_config.charades.processors)
    assert synthetic.training.max_updates == synthetic.scheduler.params.num_training_steps


def test_overrides_types_lists_and_interpolation():
    config = build_config(DIRECT_CONFIG, [
        "model=mmf_transformer", "dataset=charades", "training.batch_size=4",
        "training.find_unused_parameters=True", "model_config.mmf_transformer.heads[0].num_labels=10",
        "env.data_dir=/tmp/somewhere", "training.fp16=false",
    ])
    assert config.training.batch_size == 4 and config.training.find_unused_parameters is True
    assert config.training.fp16 is False
    assert config.model_config.mmf_transformer.heads[0].num_labels == 10
    assert config.dataset_config.charades.data_dir == "/tmp/somewhere/datasets"
    assert config.model == "mmf_transformer" and config.datasets == "charades"


def test_unknown_keys_fail_naming_the_key():
    with pytest.raises(ConfigError, match="training.batch_sise"):
        build_config(DIRECT_CONFIG, ["training.batch_sise=4"])
    with pytest.raises(ConfigError, match=r"heads\[3\]"):
        build_config(DIRECT_CONFIG, ["model_config.mmf_transformer.heads[3].num_labels=4"])
    with pytest.raises(ConfigError, match="key=value"):
        build_config(DIRECT_CONFIG, ["training.batch_size"])
    with pytest.raises(ConfigError, match="model='nope'"):
        build_config(DIRECT_CONFIG, ["model=nope"])


def test_saved_config_builds_the_same_config(tmp_path):
    config = build_config(DIRECT_CONFIG, ["training.batch_size=3"])
    saved = tmp_path / "config.yaml"
    OmegaConf.save(config, saved)
    again = build_config(saved)
    assert OmegaConf.to_container(again) == {**OmegaConf.to_container(config), "config": str(saved)}


@pytest.mark.parametrize("raw, value", [("4", 4), ("1e-3", 1e-3), ("[1, 2]", [1, 2]), ("null", None),
                                        ("True", True), ("abc", "abc"), ("./x/y", "./x/y")])
def test_decode_value(raw, value):
    assert decode_value(raw) == value


def test_sample_list_collates_tensors_and_keeps_other_fields():
    samples = [Sample({"video": torch.full((3, 2), float(i)), "id": f"v{i}", "nested": {"a": torch.tensor([i])}})
               for i in range(2)]
    batch = SampleList(samples)
    assert batch.video.shape == (2, 3, 2) and batch.id == ["v0", "v1"]
    assert torch.equal(batch.nested.a, torch.tensor([[0], [1]]))
    assert batch.get_batch_size() == 2
    assert batch.to("cpu").video.device.type == "cpu"
    with pytest.raises(AttributeError, match="no field 'missing'"):
        _ = batch.missing
    with pytest.raises(ValueError, match="different shapes"):
        SampleList([Sample({"x": torch.zeros(2)}), Sample({"x": torch.zeros(3)})])
