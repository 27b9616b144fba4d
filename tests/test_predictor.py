"""The Predictor on a model folder made without training (fast): how it
finds its files (the manifest, or the names older runs used), what it
builds through the model's and the dataset's interfaces, and its samples,
probabilities and description."""

from __future__ import annotations

import shutil

import pytest
import torch

from minimmf.serving.model_files import check_weights_fit, read_config, run_manifest
from minimmf.serving.predictor import Predictor, inference_config
from minimmf.serving.settings import HandlerSettings
from minimmf.utils.checkpoint import CheckpointMismatchError
from minimmf.utils.manifest import MANIFEST_NAME, ManifestError, RunManifest
from tests.conftest import SMALL_MODEL_CLASSES
from tests.media import encode_video


@pytest.fixture(scope="module")
def predictor(small_model_dir):
    return Predictor.from_model_dir(small_model_dir, "mmf_transformer_final.pth", HandlerSettings())


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> bytes:
    return encode_video(tmp_path_factory.mktemp("video") / "v.mp4", frames=30, fps=10).read_bytes()


def test_built_through_the_interfaces(predictor, small_model_dir):
    assert predictor.classes == SMALL_MODEL_CLASSES and predictor.dataset_name == "charades"
    assert predictor.threshold == 0.5  # the config's prediction_threshold
    assert not predictor.model.training
    tokenizer = predictor.config.dataset_config.charades.processors.text_processor.params.tokenizer_config
    assert tokenizer.type == str(small_model_dir / "vocab.txt")  # the archived vocabulary


def test_samples_and_probabilities(predictor, video):
    samples = predictor.samples(video, "A person opens a door.")
    assert len(samples.clips) == 1 and not samples.windows and samples.window_seconds is None
    assert samples.clips[0].video.shape == (3, predictor.frames_per_clip, 64, 64)
    probabilities = predictor.predict(samples.clips)
    assert probabilities.shape == (1, len(SMALL_MODEL_CLASSES)) and probabilities.dtype == torch.float32
    assert ((0 <= probabilities) & (probabilities <= 1)).all()


def test_a_timeline_and_several_clips(small_model_dir, video):
    predictor = Predictor.from_model_dir(small_model_dir, "mmf_transformer_final.pth",
                                         HandlerSettings(clips=2, segment_seconds=1.0))
    samples = predictor.samples(video, "s")
    assert len(samples.clips) == 2 and samples.spans == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
    assert predictor.predict(samples.clips + samples.windows).shape == (5, len(SMALL_MODEL_CLASSES))


def test_the_settings_threshold_wins(small_model_dir):
    predictor = Predictor.from_model_dir(small_model_dir, "mmf_transformer_final.pth",
                                         HandlerSettings(prediction_threshold=0.7))
    assert predictor.threshold == 0.7


def test_describe_comes_from_the_model_and_the_dataset(predictor):
    description = predictor.describe()
    assert description["model"] == "MMFTransformer" and description["dataset"] == "charades"
    assert description["config"]["num_hidden_layers"] == 2 and description["config"]["frames_per_clip"] == 8
    assert [m["key"] for m in description["config"]["modalities"]] == ["text", "video", "audio"]


def test_the_serving_config_turns_pretrained_downloads_off(small_model_dir):
    config = read_config(small_model_dir / "config.yaml")
    config.model_config.mmf_transformer.modalities[1].encoder.params.pretrained = True
    edited = inference_config(config, None)
    assert edited.model_config.mmf_transformer.modalities[1].encoder.params.pretrained is False
    assert config.model_config.mmf_transformer.modalities[1].encoder.params.pretrained is True  # a copy


def test_a_folder_without_manifest_is_read_by_the_old_names(small_model_dir, tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(small_model_dir, folder)
    (folder / MANIFEST_NAME).unlink()
    (folder / "charades_action_labels.csv").rename(folder / "charades_action_lables.csv")  # the reference's
    manifest = run_manifest(folder)
    assert manifest.files == {"config": "config.yaml", "weights": "mmf_transformer_final.pth",
                              "labels": "charades_action_lables.csv", "vocabulary": "vocab.txt"}
    predictor = Predictor.from_model_dir(folder, "mmf_transformer_final.pth", HandlerSettings())
    assert predictor.classes == SMALL_MODEL_CLASSES


def test_a_renamed_model_is_found_by_its_manifest(small_model_dir, tmp_path):
    folder = tmp_path / "renamed"
    shutil.copytree(small_model_dir, folder)
    (folder / "mmf_transformer_final.pth").rename(folder / "weights.pth")
    manifest = RunManifest.read(folder)
    manifest.files["weights"] = "weights.pth"
    manifest.write(folder)
    assert run_manifest(folder).path(folder, "weights") == folder / "weights.pth"
    assert Predictor.from_model_dir(folder, "weights.pth", HandlerSettings()).classes == SMALL_MODEL_CLASSES


def test_the_manifest_catches_files_of_another_run(small_model_dir, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(small_model_dir, folder)
    config = folder / "config.yaml"
    config.write_text(config.read_text() + "\n# rewritten by an interrupted run\n")
    with pytest.raises(ManifestError, match="config.yaml \\(config\\) is not the file run small wrote"):
        run_manifest(folder).check(folder)


def test_weights_are_checked_against_their_config(small_model_dir, tmp_path):
    check_weights_fit(read_config(small_model_dir / "config.yaml"), small_model_dir / "mmf_transformer_final.pth")
    state = torch.load(small_model_dir / "mmf_transformer_final.pth", weights_only=True)
    output_layer = next(key for key, value in state.items() if key.startswith("heads.0.") and value.shape == (8, 128))
    state[output_layer] = torch.zeros(3, 128)  # a head of 3 labels
    torch.save(state, tmp_path / "other.pth")
    with pytest.raises(CheckpointMismatchError, match=f"of another shape: {output_layer}"):
        check_weights_fit(read_config(small_model_dir / "config.yaml"), tmp_path / "other.pth")


def test_labels_that_do_not_fit_the_model(small_model_dir, tmp_path):
    folder = tmp_path / "labels"
    shutil.copytree(small_model_dir, folder)
    (folder / "charades_action_labels.csv").write_text("index,action_labels\n0,['Only one']\n")
    with pytest.raises(ValueError, match="the model has 8 outputs but the labels file defines 1 classes"):
        Predictor.from_model_dir(folder, "mmf_transformer_final.pth", HandlerSettings())
