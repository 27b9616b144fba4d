"""The Charades dataset, the synthetic data generator and the labels file."""

from __future__ import annotations

import csv
import logging

import pandas as pd
import pytest
import torch

from minimmf.common.sample import SampleList
from minimmf.datasets.builders.charades._utils import (
    make_charades_df,
    read_action_labels,
    read_classes_file,
)
from minimmf.datasets.builders.charades.builder import CharadesBuilder
from minimmf.utils.configuration import build_config
from scripts.generate_action_labels import main as generate_labels
from scripts.make_synthetic_charades import CSV_COLUMNS
from scripts.make_synthetic_charades import main as make_synthetic
from tests.conftest import ROOT, SYNTHETIC_CLASSES, TINY_CONFIG, synthetic_root


def load_split(data_dir, split):
    config = build_config(TINY_CONFIG, [f"env.data_dir={data_dir}"])
    return CharadesBuilder().load(config.dataset_config.charades, split)


def test_synthetic_layout_matches_charades(synthetic_data_dir):
    root = synthetic_root(synthetic_data_dir)
    with open(root / "Charades" / "Charades_v1_train.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        assert reader.fieldnames == CSV_COLUMNS
    assert len(rows) == 12
    classes = read_classes_file(root / "Charades" / "Charades_v1_classes.txt")
    assert list(classes) == [f"c{i:03d}" for i in range(SYNTHETIC_CLASSES)]
    seen = set()
    for row in rows:
        actions = row["actions"].split(";")
        assert 1 <= len(actions) <= 3
        for action in actions:
            class_id, start, end = action.split(" ")
            assert class_id in classes and 0 <= float(start) < float(end) <= float(row["length"])
            seen.add(class_id)
        assert (root / "Charades_v1_480" / f"{row['id']}.mp4").is_file()
    assert seen == set(classes)  # every class in the training split


def test_synthetic_data_is_deterministic(tmp_path):
    args = ["--num-classes", "3", "--num-train", "3", "--num-test", "1", "--duration", "1", "--width", "32",
            "--height", "32", "--quiet", "--seed", "7"]
    make_synthetic(["--out", str(tmp_path / "a"), *args])
    make_synthetic(["--out", str(tmp_path / "b"), *args])
    for name in ("Charades_v1_train.csv", "Charades_v1_test.csv", "Charades_v1_classes.txt"):
        assert (synthetic_root(tmp_path / "a") / "Charades" / name).read_text() == \
            (synthetic_root(tmp_path / "b") / "Charades" / name).read_text()


def test_dataset_items(synthetic_data_dir):
    dataset = load_split(synthetic_data_dir, "train")
    assert len(dataset) == 12
    assert dataset.classes == sorted(dataset.classes) and len(dataset.classes) == SYNTHETIC_CLASSES
    sample = dataset[0]
    assert sample.video.shape == (3, 8, 64, 64) and sample.audio.shape == (1, 64, 64)
    assert sample.input_ids.shape == (128,) and sample.targets.shape == (SYNTHETIC_CLASSES,)
    labels = dataset.df.iloc[0]["action_labels"]
    assert sorted(dataset.classes[i] for i in sample.targets.nonzero().flatten().tolist()) == sorted(labels)
    assert sample.id == dataset.df.iloc[0]["id"]
    assert float(sample.audio.abs().sum()) > 0  # the tones are heard
    batch = SampleList([dataset[i] for i in range(3)])
    assert batch.video.shape == (3, 3, 8, 64, 64) and len(batch.id) == 3


def test_splits_share_the_class_index(synthetic_data_dir):
    assert load_split(synthetic_data_dir, "train").classes == load_split(synthetic_data_dir, "test").classes


def test_missing_videos_are_skipped_and_counted(synthetic_data_dir, tmp_path, caplog):
    root = synthetic_root(synthetic_data_dir)
    csv_path = tmp_path / "with_missing.csv"
    df = pd.read_csv(root / "Charades" / "Charades_v1_test.csv", dtype=str, keep_default_na=False)
    extra = df.iloc[:2].copy()
    extra["id"] = ["NOPE1", "NOPE2"]
    pd.concat([df, extra]).to_csv(csv_path, index=False)
    with caplog.at_level(logging.WARNING):
        loaded = make_charades_df(csv_path, root / "Charades_v1_480", root / "Charades" / "Charades_v1_classes.txt")
    assert len(loaded) == len(df)
    assert "2 of 6 videos are missing" in caplog.text


def test_videos_without_actions_have_empty_targets(synthetic_data_dir, tmp_path):
    root = synthetic_root(synthetic_data_dir)
    df = pd.read_csv(root / "Charades" / "Charades_v1_test.csv", dtype=str, keep_default_na=False)
    df.loc[0, "actions"] = ""
    csv_path = tmp_path / "no_actions.csv"
    df.to_csv(csv_path, index=False)
    loaded = make_charades_df(csv_path, root / "Charades_v1_480", root / "Charades" / "Charades_v1_classes.txt")
    assert loaded.iloc[0]["action_labels"] == []


def test_format_for_prediction(synthetic_data_dir):
    dataset = load_split(synthetic_data_dir, "test")
    scores = torch.full((2, SYNTHETIC_CLASSES), -5.0)
    scores[0, 2] = scores[1, 0] = scores[1, 5] = 5.0
    assert dataset.format_for_prediction(["A", "B"], scores) == [
        {"id": "A", "labels": [dataset.classes[2]]}, {"id": "B", "labels": [dataset.classes[0], dataset.classes[5]]}]


def test_labels_csv_from_script_and_notebook(synthetic_data_dir, tmp_path, monkeypatch):
    import nbformat

    script_out = tmp_path / "script.csv"
    assert generate_labels(["--data-dir", str(synthetic_data_dir), "--out", str(script_out)]) == 0
    classes = read_action_labels(script_out)
    assert classes == load_split(synthetic_data_dir, "train").classes
    notebook_out = tmp_path / "notebook.csv"
    monkeypatch.setenv("CHARADES_DATA_DIR", str(synthetic_data_dir))
    monkeypatch.setenv("CHARADES_LABELS_OUT", str(notebook_out))
    notebook = nbformat.read(ROOT / "notebooks" / "Generating_Charades_action_labels.ipynb", as_version=4)
    namespace: dict = {}
    for cell in notebook.cells:
        if cell.cell_type == "code":
            exec(compile(cell.source, "notebook", "exec"), namespace)  # noqa: S102
    assert notebook_out.read_text() == script_out.read_text()


def test_shipped_labels_csv_defines_the_demo_classes():
    classes = read_action_labels(ROOT / "charades_action_labels.csv")
    assert len(classes) == SYNTHETIC_CLASSES and classes == sorted(classes)


def test_labels_reader_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,labels\n0,x\n")
    with pytest.raises(ValueError, match="action_labels"):
        read_action_labels(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text(",action_labels\n0,[]\n")
    with pytest.raises(ValueError, match="lists no action labels"):
        read_action_labels(empty)
