"""The timeline of a model that has learnt something: two different videos
joined end to end, through the handler, answer window by window as each
video answers alone, and each action is named where its video plays. The
model is the tiny config made smaller still (tests/configs/localizer.yaml),
trained for 240 updates on a synthetic set whose scripts name no action, so
that it must look and listen."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import pytest

from devtools.worker import extract, handle, load_handler
from minimmf.cli.run import run
from minimmf.datasets.builders.charades.layout import parse_action_intervals, read_classes_file
from minimmf.serving.torchserve import archive_model
from tests.conftest import ROOT, run_script, synthetic_layout
from tests.media import join_videos

pytestmark = pytest.mark.slow
LOCALIZER = ROOT / "tests" / "configs" / "localizer.yaml"
SCRIPT = "A person is at home."


@pytest.fixture(scope="module")
def localizer(tmp_path_factory):
    """(the trained handler and its context, the data folder)."""
    data = tmp_path_factory.mktemp("localizer_data")
    run_script("make_synthetic_charades.py", "--out", str(data), "--num-classes", "4", "--num-train", "32",
               "--num-test", "24", "--duration", "2", "--width", "64", "--height", "48", "--fps", "8",
               "--generic-script-fraction", "1.0", "--seed", "3", "--quiet")
    save = tmp_path_factory.mktemp("localizer_save")
    run([f"config={LOCALIZER}", "run_type=train_val", "dataset=charades", "model=mmf_transformer",
         f"env.data_dir={data}", f"env.save_dir={save}"])
    mar = archive_model(save, tmp_path_factory.mktemp("store"), model_config=ROOT / "model-config.yaml",
                        handler=ROOT / "handler.py")
    return load_handler(extract(mar, tmp_path_factory.mktemp("model"))), data


def single_action_videos(data) -> dict[str, str]:
    """One held-out video per action among those that show a single action."""
    layout = synthetic_layout(data)
    names = read_classes_file(layout.classes_file)
    found: dict[str, str] = {}
    for row in layout.read_split("test").itertuples():
        actions = parse_action_intervals(row.actions, names)
        if len(actions) == 1:
            found.setdefault(actions[0][0], row.path)
    return found


def timeline(handler, context, video: Path) -> list[dict]:
    (status, answer), = handle(handler, context, [{"data": bytearray(Path(video).read_bytes()), "script": SCRIPT,
                                                   "segment_seconds": "0.5"}])
    assert status == 200, answer
    return answer["timeline"]


def mean_score(action: str, windows: list[dict]) -> float:
    return sum(window["scores"].get(action, 0.0) for window in windows) / len(windows)


def separation(first: tuple[str, list[dict]], second: tuple[str, list[dict]]) -> float:
    """How much higher each action scores, on average, in its own windows than
    in the other's: the smaller of the two."""
    return min(mean_score(action, own) - mean_score(action, other)
               for (action, own), (_, other) in ((first, second), (second, first)))


def test_two_joined_videos_get_a_timeline_that_follows_them(localizer, tmp_path):
    (handler, context), data = localizer
    videos = single_action_videos(data)
    assert len(videos) >= 2, "the synthetic test split has too few single-action videos"
    alone = {action: timeline(handler, context, video) for action, video in videos.items()}
    # the two actions the model tells apart best, each seen alone (a tiny model may confuse others)
    first, second = max(combinations(alone.items(), 2), key=lambda pair: separation(*pair))
    joined = timeline(handler, context, join_videos(videos[first[0]], videos[second[0]], tmp_path / "joined.mkv"))

    assert [(w["start"], w["end"]) for w in joined] == [(0.5 * i, 0.5 * i + 0.5) for i in range(8)]
    # Window by window, the joined video's timeline is the first video's followed by the second's:
    # the same frames and samples (join_videos copies them exactly), so the same scores.
    for window, expected in zip(joined, first[1] + second[1], strict=True):
        actions = window["scores"].keys() | expected["scores"].keys()
        assert all(abs(window["scores"].get(a, 0.0) - expected["scores"].get(a, 0.0)) < 1e-3 for a in actions), \
            (window, expected)
    # ... and each action is named where its video plays, and scores higher there than where the other one does.
    for action, own in ((first[0], joined[:4]), (second[0], joined[4:])):
        assert sum(action in window["labels"] for window in own) >= 3, (action, joined)
    assert separation((first[0], joined[:4]), (second[0], joined[4:])) > 0.1, (first[0], second[0], joined)
