"""The Charades dataset, the synthetic data generator and the labels file."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pandas as pd
import pytest
import torch

from minimmf.common.sample import SampleList
from minimmf.datasets.builders.charades.builder import CharadesBuilder
from minimmf.datasets.builders.charades.layout import (
    make_charades_df,
    parse_action_intervals,
    read_action_labels,
    read_classes_file,
    takes_turns,
)
from minimmf.utils.configuration import build_config
from tests.conftest import ROOT, SYNTHETIC_CLASSES, TINY_CONFIG, run_script, synthetic_layout

# the columns of the real Charades_v1_{train,test}.csv
CHARADES_CSV_COLUMNS = ["id", "subject", "scene", "quality", "relevance", "verified", "script", "objects",
                        "descriptions", "actions", "length"]


def load_split(data_dir, split):
    config = build_config(TINY_CONFIG, [f"env.data_dir={data_dir}"])
    return CharadesBuilder().load(config.dataset_config.charades, split)


def test_synthetic_layout_matches_charades(synthetic_data_dir):
    layout = synthetic_layout(synthetic_data_dir)
    root = synthetic_data_dir / "datasets" / "charades" / "defaults"
    assert layout.annotations["train"] == [root / "Charades" / "Charades_v1_train.csv"]
    assert layout.videos["train"] == [root / "Charades_v1_480"]
    with open(layout.annotations["train"][0], newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        assert reader.fieldnames == CHARADES_CSV_COLUMNS
    assert len(rows) == 12
    classes = read_classes_file(layout.classes_file)
    assert list(classes) == [f"c{i:03d}" for i in range(SYNTHETIC_CLASSES)]
    seen = set()
    for row in rows:
        actions = row["actions"].split(";")
        assert 1 <= len(actions) <= 3
        for action in actions:
            class_id, start, end = action.split(" ")
            assert class_id in classes and 0 <= float(start) < float(end) <= float(row["length"])
            seen.add(class_id)
        assert (layout.videos["train"][0] / f"{row['id']}.mp4").is_file()
    assert seen == set(classes)  # every class in the training split


def test_synthetic_data_is_deterministic(tmp_path):
    args = ["--num-classes", "3", "--num-train", "3", "--num-test", "1", "--duration", "1", "--width", "32",
            "--height", "32", "--quiet", "--seed", "7"]
    run_script("make_synthetic_charades.py", "--out", str(tmp_path / "a"), *args)
    run_script("make_synthetic_charades.py", "--out", str(tmp_path / "b"), *args)
    first, second = synthetic_layout(tmp_path / "a"), synthetic_layout(tmp_path / "b")
    for one, other in ((first.annotations["train"][0], second.annotations["train"][0]),
                       (first.annotations["test"][0], second.annotations["test"][0]),
                       (first.classes_file, second.classes_file)):
        assert one.read_text() == other.read_text()
    again = run_script("make_synthetic_charades.py", "--out", str(tmp_path / "a"), "--skip-existing")
    assert "already in" in again.stdout


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
    layout = synthetic_layout(synthetic_data_dir)
    csv_path = tmp_path / "with_missing.csv"
    df = pd.read_csv(layout.annotations["test"][0], dtype=str, keep_default_na=False)
    extra = df.iloc[:2].copy()
    extra["id"] = ["NOPE1", "NOPE2"]
    pd.concat([df, extra]).to_csv(csv_path, index=False)
    with caplog.at_level(logging.WARNING):
        loaded = make_charades_df(csv_path, layout.videos["test"][0], layout.classes_file)
    assert len(loaded) == len(df)
    assert "2 of 6 videos are missing" in caplog.text


def test_videos_without_actions_have_empty_targets(synthetic_data_dir, tmp_path):
    layout = synthetic_layout(synthetic_data_dir)
    df = pd.read_csv(layout.annotations["test"][0], dtype=str, keep_default_na=False)
    df.loc[0, "actions"] = ""
    csv_path = tmp_path / "no_actions.csv"
    df.to_csv(csv_path, index=False)
    loaded = make_charades_df(csv_path, layout.videos["test"][0], layout.classes_file)
    assert loaded.iloc[0]["action_labels"] == []


def test_format_for_prediction(synthetic_data_dir):
    dataset = load_split(synthetic_data_dir, "test")
    scores = torch.full((2, SYNTHETIC_CLASSES), -5.0)
    scores[0, 2] = scores[1, 0] = scores[1, 5] = 5.0
    assert dataset.format_for_prediction(["A", "B"], scores) == [
        {"id": "A", "labels": [dataset.classes[2]]}, {"id": "B", "labels": [dataset.classes[0], dataset.classes[5]]}]


def test_labels_csv_from_script_and_notebook(synthetic_data_dir, tmp_path, monkeypatch):
    """The script, and the notebook run by a real Jupyter kernel from notebooks/, write the same file."""
    import nbformat
    from nbclient import NotebookClient

    script_out = tmp_path / "script.csv"
    run_script("generate_action_labels.py", "--data-dir", str(synthetic_data_dir), "--out", str(script_out))
    classes = read_action_labels(script_out)
    assert classes == load_split(synthetic_data_dir, "train").classes
    notebook_out = tmp_path / "notebook.csv"
    monkeypatch.setenv("CHARADES_DATA_DIR", str(synthetic_data_dir))
    monkeypatch.setenv("CHARADES_LABELS_OUT", str(notebook_out))
    notebook = nbformat.read(ROOT / "notebooks" / "Generating_Charades_action_labels.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    assert notebook_out.read_text() == script_out.read_text()
    printed = "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    assert f"{len(classes)} classes" in printed


def test_every_annotation_file_of_a_split_is_read(synthetic_data_dir, tmp_path):
    """MMF concatenates a split's annotation files: the train split given as two halves."""
    layout = synthetic_layout(synthetic_data_dir)
    train = pd.read_csv(layout.annotations["train"][0], dtype=str, keep_default_na=False)
    halves = [tmp_path / "first.csv", tmp_path / "second.csv"]
    train.iloc[:5].to_csv(halves[0], index=False)
    train.iloc[5:].to_csv(halves[1], index=False)
    videos = str(layout.videos["train"][0])
    config = build_config(TINY_CONFIG, [f"env.data_dir={synthetic_data_dir}",
                                        f"dataset_config.charades.annotations.train={[str(h) for h in halves]}",
                                        f"dataset_config.charades.videos.train={[videos, videos]}"])
    dataset = CharadesBuilder().load(config.dataset_config.charades, "train")
    assert list(dataset.df["id"]) == list(train["id"])


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


def test_demo_requests_pick_held_out_videos(tmp_path):
    """scripts/demo_requests.py, as make demo runs it: info.json files beside each held-out video."""
    synthetic_data_dir = tmp_path / "data"
    run_script("make_synthetic_charades.py", "--out", str(synthetic_data_dir), "--num-classes", "4", "--num-train", "4",
               "--num-test", "6", "--duration", "1", "--width", "32", "--height", "32", "--localized-fraction", "1",
               "--seed", "0", "--quiet")
    listed = run_script("demo_requests.py", "--data-dir", str(synthetic_data_dir), "--count", "3", "--out",
                        str(tmp_path / "all")).stdout.split()
    assert len(listed) == 6 and all(Path(path).is_file() for path in listed)
    info = json.loads(Path(listed[1]).read_text())
    assert set(info) == {"script", "action_labels"} and info["action_labels"]
    turns = run_script("demo_requests.py", "--data-dir", str(synthetic_data_dir), "--count", "1", "--out",
                       str(tmp_path / "turns"), "--taking-turns").stdout.split()
    layout = synthetic_layout(synthetic_data_dir)
    row = layout.read_split("test").set_index("id").loc[Path(turns[0]).stem]
    assert takes_turns(parse_action_intervals(row["actions"], read_classes_file(layout.classes_file)))
