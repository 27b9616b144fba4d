"""``metrics.csv`` and ``curves.png``: every metric the run logged is drawn,
the final evaluation is marked as such, and the file holds one run (a new
run starts it anew, a resumed run continues it from its checkpoint)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from minimmf.cli.run import run
from minimmf.utils.configuration import build_config
from minimmf.utils.logger import MetricsLogger, curve_panels, draw_curves, read_metrics
from tests.conftest import run_args


def metric_keys(save_dir) -> list[str]:
    """The metric keys the run's config names (tiny.yaml: f1 micro and macro, map, localization_map)."""
    metrics = build_config(save_dir / "config.yaml").evaluation.metrics
    return [m if isinstance(m, str) else m.get("key", m.type) for m in metrics]


def colored_pixels(image: Image.Image) -> int:
    """Pixels of a saturated colour: lines and markers, not the white, black and grey of axes, grid and text."""
    rgb = np.asarray(image.convert("RGB")).astype(int)
    return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 60).sum())


def test_every_panel_of_the_trained_runs_png_has_lines(trained):
    """The PNG mmf_run wrote (4 updates, evaluated at 2 and 4): both halves hold drawn curves."""
    with Image.open(trained / "curves.png") as image:
        width, height = image.size
        loss_half, metrics_half = image.crop((0, 0, width // 2, height)), image.crop((width // 2, 0, width, height))
        assert colored_pixels(loss_half) > 200 and colored_pixels(metrics_half) > 200


def test_the_plot_draws_each_metric_and_marks_the_final_evaluation(trained):
    frame = read_metrics(trained / "metrics.csv")
    keys = metric_keys(trained)
    assert {"multilabel_micro_f1", "multilabel_macro_f1", "map", "localization_map"} <= set(keys)
    panels = curve_panels(frame, keys)
    training = {panel: {c.name: c for c in curves if not c.final} for panel, curves in panels.items()}
    final = {panel: {c.name: c for c in curves if c.final} for panel, curves in panels.items()}
    assert set(training["loss"]) == {"train/total_loss", "val/total_loss"}
    assert set(training["metrics"]) == {f"val/charades/{key}" for key in keys}
    assert training["loss"]["train/total_loss"].updates == [1, 2, 3, 4]
    assert all(curve.updates == [2, 4] for curve in training["metrics"].values())
    # the final evaluation: one point per val name, at the update of the weights it scored (best.ckpt's)
    assert set(final["loss"]) == {"val/total_loss"} and set(final["metrics"]) == set(training["metrics"])
    best = int(frame[frame["stage"] == "final"]["update"].iloc[0])
    assert best in (2, 4) and all(curve.updates == [best] for curve in final["metrics"].values())

    figure = draw_curves(panels)
    loss_axis, metrics_axis = figure.axes
    for axis, panel in ((loss_axis, "loss"), (metrics_axis, "metrics")):
        lines = {line.get_label(): line for line in axis.get_lines()}
        for name, curve in training[panel].items():
            assert list(lines[name].get_xdata()) == curve.updates
            # nan_ok: the AP metrics are NaN while a class has no positive in the 4 validation videos
            assert list(lines[name].get_ydata()) == pytest.approx(curve.values, nan_ok=True)
        marked = [label for label in lines if "final evaluation" in label]
        assert len(marked) == len(final[panel])
        assert all(lines[label].get_linestyle() == "None" for label in marked)  # a marker, not a curve's point


def test_a_new_file_for_a_new_run_kept_rows_for_a_resumed_one(tmp_path):
    first = MetricsLogger(tmp_path)
    for update in (1, 2, 3):
        first.log(update, {"train/total_loss": 1.0 / update})
    first.final(2)
    first.log(3, {"val/total_loss": 0.4})
    assert list(read_metrics(tmp_path / "metrics.csv")["stage"]) == ["training"] * 3 + ["final"]
    assert read_metrics(tmp_path / "metrics.csv")["update"].iloc[-1] == 2

    MetricsLogger(tmp_path, keep_until=2).log(3, {"train/total_loss": 0.2})
    resumed = read_metrics(tmp_path / "metrics.csv")
    assert list(resumed["update"]) == [1, 2, 3] and list(resumed["stage"]) == ["training"] * 3
    assert resumed["value"].iloc[-1] == pytest.approx(0.2)

    MetricsLogger(tmp_path)
    assert read_metrics(tmp_path / "metrics.csv").empty


def test_a_file_from_before_the_stage_column_reads_as_training(tmp_path):
    (tmp_path / "metrics.csv").write_text("update,name,value\n1,train/total_loss,2.5\n")
    MetricsLogger(tmp_path, keep_until=1).log(2, {"train/total_loss": 2.0})
    assert list(read_metrics(tmp_path / "metrics.csv")["stage"]) == ["training", "training"]


def test_a_resumed_run_continues_the_curve_of_its_checkpoint(trained, synthetic_data_dir, tmp_path):
    """Resumed from update 4 to 6: one row per update, in order, and one final evaluation (the new run's)."""
    for name in ("current.ckpt", "best.ckpt", "config.yaml", "metrics.csv"):
        shutil.copy(trained / name, tmp_path / name)
    run(run_args(synthetic_data_dir, tmp_path, "checkpoint.resume=True", "training.max_updates=6",
                 "scheduler.params.num_training_steps=6", "training.checkpoint_interval=100"))
    frame = pd.read_csv(tmp_path / "metrics.csv")
    losses = frame[(frame["name"] == "train/total_loss")]
    assert list(losses["update"]) == [1, 2, 3, 4, 5, 6] and set(losses["stage"]) == {"training"}
    val = frame[(frame["name"] == "val/total_loss")]
    assert list(val[val["stage"] == "training"]["update"]) == [2, 4, 6]
    assert len(val[val["stage"] == "final"]) == 1
