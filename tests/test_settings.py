"""The handler's settings: one declaration (HandlerSettings, and LiveSettings
for the live model's handler.live), from which model-config.yaml's and
model-config-live.yaml's handler: blocks and README's tables are generated;
the checks of each value, and the renamed settings."""

from __future__ import annotations

import logging

import pytest
import yaml

from minimmf.serving.settings import HandlerSettings, LiveSettings, SettingsError, markdown_table, yaml_section
from tests.conftest import ROOT


def test_model_config_holds_the_generated_handler_block():
    shipped = (ROOT / "model-config.yaml").read_text()
    assert yaml_section() in shipped, "regenerate it: python -m minimmf.serving.settings yaml"
    assert HandlerSettings.from_model_yaml(yaml.safe_load(shipped)) == HandlerSettings()


def test_readme_holds_the_generated_settings_table():
    assert markdown_table() in (ROOT / "README.md").read_text(), \
        "regenerate it: python -m minimmf.serving.settings markdown"


def live_yaml() -> dict:
    return yaml.safe_load((ROOT / "model-config-live.yaml").read_text())


def test_the_live_model_config_holds_the_generated_handler_block():
    shipped = (ROOT / "model-config-live.yaml").read_text()
    assert yaml_section(live=True) in shipped, "regenerate it: python -m minimmf.serving.settings yaml-live"
    assert HandlerSettings.from_model_yaml(yaml.safe_load(shipped)) == HandlerSettings(live=LiveSettings())
    assert markdown_table(LiveSettings) in (ROOT / "README.md").read_text(), \
        "regenerate it: python -m minimmf.serving.settings markdown-live"
    # the same workers as the model for whole videos, with sequence batching on
    plain = yaml.safe_load((ROOT / "model-config.yaml").read_text())
    live = live_yaml()
    assert {key: live[key] for key in ("minWorkers", "maxWorkers", "responseTimeout")} == \
        {key: plain[key] for key in ("minWorkers", "maxWorkers", "responseTimeout")}
    assert live["sequenceBatching"] and live["continuousBatching"] and live["sequenceMaxIdleMSec"] > 0
    assert live["handler"]["live"]["max_streams"] >= live["maxNumSequence"]


@pytest.mark.parametrize("change, message", [
    ({"handler": {"live": {"window_seconds": 0}}}, "handler.live.window_seconds must be seconds > 0"),
    ({"handler": {"live": {"max_streams": "8"}}}, "handler.live.max_streams must be an int"),
    ({"handler": {"live": {"max_streams": 4}}}, "must hold at least the 8 streams one batch may bring"),
    ({"handler": {"live": {"window": 3}}}, "unknown handler.live setting(s) ['window']"),
    ({"handler": {"live": [1]}}, "'handler.live' must be a mapping"),
    ({"sequenceMaxIdleMSec": 0}, "sequenceBatching needs sequenceMaxIdleMSec > 0"),
    ({"sequenceBatching": False}, "handler.live is for a live model: it needs sequenceBatching: true"),
])
def test_bad_live_settings_name_the_setting(change, message):
    config = live_yaml()
    for key, value in change.items():
        if key == "handler":
            config["handler"]["live"] = value["live"] if not isinstance(value["live"], dict) else \
                {**config["handler"]["live"], **value["live"]}
        else:
            config[key] = value
    with pytest.raises(SettingsError) as error:
        HandlerSettings.from_model_yaml(config)
    assert message in str(error.value)


def test_a_live_model_without_continuous_batching_is_warned_about(caplog):
    config = {**live_yaml(), "continuousBatching": False}
    with caplog.at_level(logging.WARNING, logger="minimmf"):
        assert HandlerSettings.from_model_yaml(config).live == LiveSettings()
    assert "frees its maxNumSequence slot only after sequenceMaxIdleMSec" in caplog.text


def test_every_setting_is_described():
    section = yaml.safe_load(yaml_section(live=True))["handler"]
    live = section.pop("live")
    for declared, generated in ((HandlerSettings, section), (LiveSettings, live)):
        fields = {name: f for name, f in declared.__dataclass_fields__.items() if "section" not in f.metadata}
        assert list(generated) == list(fields)
        for name, field in fields.items():
            assert field.metadata["doc"], name


def test_values_are_typed():
    settings = HandlerSettings.from_model_yaml({"handler": {"max_decode_seconds": 5, "prediction_threshold": 1}})
    assert settings.max_decode_seconds == 5.0 and isinstance(settings.max_decode_seconds, float)
    assert settings.prediction_threshold == 1.0
    assert HandlerSettings.from_model_yaml(None) == HandlerSettings.from_model_yaml({"handler": None})


@pytest.mark.parametrize("section, message", [
    ({"precision": "fp8"}, "handler.precision must be one of"),
    ({"quantize_bert": True}, "handler.quantize_bert is no longer a setting; set handler.precision: int8"),
    ({"top_k": "3"}, "handler.top_k must be an int"),
    ({"top_k": True}, "handler.top_k must be an int"),
    ({"top_k": -1}, "handler.top_k must be >= 0"),
    ({"prediction_threshold": 1.5}, "must be a probability in [0, 1] or null"),
    ({"channels_last": "yes"}, "handler.channels_last must be a bool"),
    ({"clip_pooling": "median"}, "handler.clip_pooling must be one of"),
    ({"segment_seconds": -1}, "handler.segment_seconds must be 0 (off)"),
    ({"max_segments": None}, "handler.max_segments must not be null"),
    ({"max_video_bytes": 0}, "handler.max_video_bytes must be > 0"),
    ({"treshold": 0.3}, "unknown handler setting(s) ['treshold']"),
])
def test_bad_values_name_the_setting(section, message):
    with pytest.raises(SettingsError) as error:
        HandlerSettings.from_model_yaml({"handler": section})
    assert message in str(error.value)


def test_a_handler_section_must_be_a_mapping():
    with pytest.raises(SettingsError, match="must be a mapping"):
        HandlerSettings.from_model_yaml({"handler": [1, 2]})


def test_the_old_threshold_name_still_works_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="minimmf"):
        settings = HandlerSettings.from_model_yaml({"handler": {"threshold": 0.3}})
    assert settings.prediction_threshold == 0.3
    assert "handler.threshold is now called handler.prediction_threshold" in caplog.text
    with pytest.raises(SettingsError, match="old name of handler.prediction_threshold"):
        HandlerSettings.from_model_yaml({"handler": {"threshold": 0.3, "prediction_threshold": 0.4}})
