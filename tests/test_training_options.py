"""MMF's training options: every key of MMF's defaults.yaml is accepted, the
ones that change training do so (one short run with many of them on), the
ones that cannot apply are refused by name, and user mistakes end in one
clear message before any work starts."""

from __future__ import annotations

import csv
import json
import logging

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from minimmf.cli.run import run
from minimmf.trainers.config_checks import check_config, config_warnings
from minimmf.utils import distributed
from minimmf.utils.build import build_optimizer
from minimmf.utils.checkpoint import load_checkpoint_file
from minimmf.utils.configuration import ConfigError, build_config
from minimmf.utils.general import clip_gradients, get_batch_size, get_max_updates
from minimmf.utils.logger import ColorfulFormatter
from tests.conftest import TINY_CONFIG, git_head, run_args

# every leaf key of MMF's mmf/configs/defaults.yaml (main branch)
MMF_DEFAULT_KEYS = [
    "config_version", "training.trainer", "training.seed", "training.experiment_name", "training.max_updates",
    "training.max_epochs", "training.log_interval", "training.logger_level", "training.log_format",
    "training.log_detailed_config", "training.should_not_log", "training.colored_logs", "training.tensorboard",
    "training.cudnn_benchmark", "training.wandb.enabled", "training.wandb.entity", "training.wandb.project",
    "training.wandb.name", "training.wandb.log_checkpoint", "training.batch_size", "training.batch_size_per_device",
    "training.update_frequency", "training.num_workers", "training.fast_read",
    "training.dataset_size_proportional_sampling", "training.pin_memory", "training.persistent_workers",
    "training.checkpoint_interval", "training.evaluation_interval", "training.clip_gradients",
    "training.clip_norm_mode", "training.early_stop.enabled", "training.early_stop.patience",
    "training.early_stop.criteria", "training.early_stop.minimize", "training.lr_scheduler", "training.lr_steps",
    "training.lr_ratio", "training.use_warmup", "training.warmup_factor", "training.warmup_iterations",
    "training.device", "training.local_rank", "training.verbose_dump", "training.find_unused_parameters",
    "training.evaluate_metrics", "training.detect_anomaly", "training.fp16", "training.callbacks",
    "training.exit_on_nan_losses", "trainer.type", "trainer.params.gpus", "trainer.params.num_nodes",
    "trainer.params.precision", "trainer.params.deterministic", "trainer.params.benchmark",
    "trainer.params.max_steps", "trainer.params.max_epochs", "trainer.params.gradient_clip_val",
    "trainer.params.num_sanity_val_steps", "trainer.params.enable_checkpointing",
    "trainer.params.accumulate_grad_batches", "trainer.params.val_check_interval",
    "trainer.params.log_every_n_steps", "trainer.params.logger", "trainer.params.limit_val_batches",
    "trainer.params.enable_progress_bar", "trainer.params.resume_from_checkpoint", "evaluation.metrics",
    "evaluation.use_cpu", "evaluation.predict", "evaluation.predict_file_format", "evaluation.reporter.type",
    "evaluation.reporter.params", "model_config", "dataset_config", "datasets", "model", "config", "run_type",
    "optimizer.allow_unused_parameters", "optimizer.enable_state_sharding", "scheduler", "env.cache_dir",
    "env.dataset_zoo", "env.model_zoo", "env.data_dir", "env.save_dir", "env.log_dir", "env.report_dir",
    "env.tensorboard_logdir", "env.wandb_logdir", "env.user_dir", "distributed.init_method", "distributed.rank",
    "distributed.port", "distributed.backend", "distributed.world_size", "distributed.no_spawn",
    "checkpoint.resume", "checkpoint.resume_file", "checkpoint.resume_best", "checkpoint.resume_pretrained",
    "checkpoint.resume_zoo", "checkpoint.zoo_config_override", "checkpoint.pretrained_state_mapping",
    "checkpoint.max_to_keep", "checkpoint.save_git_details", "checkpoint.reset.all", "checkpoint.reset.optimizer",
    "checkpoint.reset.counts", "checkpoint.reset.fp16_scaler", "multitasking.enabled", "multitasking.type",
    "multitasking.params",
]

TINY = ["model=mmf_transformer", "dataset=charades"]

# registered from env.user_dir: a metric that reports what the training process
# switched on, and a constant loss, to see the validation losses come from the model's
PROBE_PACKAGE = '''
import torch
from minimmf.common.registry import registry


@registry.register_metric("process_state")
def process_state(scores, targets, what="anomaly"):
    if what == "anomaly":
        return float(torch.is_anomaly_enabled())
    return float(torch.backends.cudnn.benchmark)


@registry.register_loss("constant_one")
class ConstantOne(torch.nn.Module):
    def forward(self, sample_list, model_output):
        return model_output["scores"].sum() * 0 + 1.0
'''

PROBE_METRICS = ("[{'type': 'process_state', 'key': 'anomaly_on', 'params': {'what': 'anomaly'}}, "
                 "{'type': 'process_state', 'key': 'cudnn_benchmark_on', 'params': {'what': 'cudnn_benchmark'}}, "
                 "'map']")


@pytest.fixture(scope="module")
def options_run(synthetic_data_dir, tmp_path_factory):
    """Two updates of two batches of 2, with many of MMF's options on."""
    root = tmp_path_factory.mktemp("options")
    (root / "probe_components").mkdir()
    (root / "probe_components" / "__init__.py").write_text(PROBE_PACKAGE)
    save_dir = root / "save"
    run(run_args(synthetic_data_dir, save_dir,
                 "training.max_updates=2", "scheduler.params.num_training_steps=2",
                 "training.update_frequency=2", "training.batch_size_per_device=2",
                 "training.evaluation_interval=2", "training.checkpoint_interval=1", "checkpoint.max_to_keep=1",
                 "training.tensorboard=true", f"env.tensorboard_logdir={root / 'tb'}", f"env.log_dir={root / 'logs'}",
                 "training.clip_gradients=true", "training.max_grad_l2_norm=1.0",
                 "training.log_format=json", "training.seed=null", "training.detect_anomaly=true",
                 "training.cudnn_benchmark=true", "training.evaluate_metrics=true",
                 f"env.user_dir={root / 'probe_components'}", f"evaluation.metrics={PROBE_METRICS}",
                 "training.early_stop.criteria=charades/map", "training.early_stop.minimize=false",
                 "model_config.mmf_transformer.losses=[{'type': 'logit_bce'}, {'type': 'constant_one'}]",
                 "evaluation.predict=true", "evaluation.predict_file_format=csv"))
    return root


def metric_values(save_dir, name):
    metrics = pd.read_csv(save_dir / "metrics.csv")
    return metrics[metrics["name"] == name].set_index("update")["value"]


def test_update_frequency_accumulates_batches_into_one_update(options_run):
    checkpoint = load_checkpoint_file(options_run / "save" / "current.ckpt")
    assert (checkpoint["num_updates"], checkpoint["current_iteration"]) == (2, 4)
    assert checkpoint["lr_scheduler"]["last_epoch"] == 2
    assert all(int(state["step"]) == 2 for state in checkpoint["optimizer"]["state"].values())
    assert "batch size 2 per process, update frequency 2" in (options_run / "save" / "train.log").read_text()


def test_json_log_format(options_run):
    lines = [line.split(" : ", 1)[1] for line in (options_run / "save" / "train.log").read_text().splitlines()
             if '"progress": "2/2"' in line]
    progress = [json.loads(line) for line in lines]
    assert any(entry.get("train/total_loss") for entry in progress)


def test_seed_null_picks_a_seed_logs_and_saves_it(options_run):
    seed = OmegaConf.load(options_run / "save" / "config.yaml").training.seed
    assert isinstance(seed, int)
    assert f"Using seed {seed}" in (options_run / "save" / "train.log").read_text()


def test_anomaly_detection_and_cudnn_benchmark_are_on_while_training(options_run):
    save_dir = options_run / "save"
    assert metric_values(save_dir, "train/charades/anomaly_on").tolist() == [1.0, 1.0]  # evaluate_metrics
    assert metric_values(save_dir, "val/charades/anomaly_on").iloc[0] == 1.0  # validation during training
    assert metric_values(save_dir, "val/charades/cudnn_benchmark_on").iloc[0] == 1.0
    assert not torch.is_anomaly_enabled()  # and off again after the run
    torch.backends.cudnn.benchmark = False


def test_validation_losses_come_from_the_models_losses(options_run):
    save_dir = options_run / "save"
    assert metric_values(save_dir, "val/charades/constant_one").tolist() == [1.0, 1.0]
    total = metric_values(save_dir, "val/total_loss")
    bce = metric_values(save_dir, "val/charades/logit_bce")
    assert total.tolist() == pytest.approx((bce + 1).tolist(), rel=1e-5)


def test_tensorboard_scalars_in_tensorboard_logdir(options_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [folder] = (options_run / "tb").glob("tensorboard_*")
    events = EventAccumulator(str(folder))
    events.Reload()
    assert {"train/total_loss", "train/lr", "val/total_loss", "val/charades/map"} <= set(events.Tags()["scalars"])
    # MMF's steps are iterations: two batches per update here
    assert [event.step for event in events.Scalars("train/total_loss")] == [2, 4]
    assert [event.step for event in events.Scalars("grad_norm")] == [2, 4]  # the norm before clipping


def test_predictions_as_csv_in_mmfs_report_layout(options_run):
    seed = OmegaConf.load(options_run / "save" / "config.yaml").training.seed
    [report] = (options_run / "save" / f"charades_mmf_transformer_{seed}" / "reports").glob("charades_run_val_*.csv")
    with open(report, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and set(rows[0]) == {"id", "labels"}


def test_max_to_keep_and_git_details_and_log_dir(options_run):
    save_dir = options_run / "save"
    assert sorted(path.name for path in (save_dir / "models").iterdir()) == ["model_2.ckpt"]
    assert load_checkpoint_file(save_dir / "current.ckpt").get("git/commit_hash") == git_head()
    [run_log] = (options_run / "logs").glob("train_*.log")
    assert "Using seed" in run_log.read_text()


def test_logging_options(trained, synthetic_data_dir, tmp_path):
    evaluate = [f"config={trained / 'config.yaml'}", "run_type=val", f"env.data_dir={synthetic_data_dir}",
                f"checkpoint.resume_file={trained / 'mmf_transformer_final.pth'}"]
    run([*evaluate, f"env.save_dir={tmp_path / 'quiet'}", "training.should_not_log=true"])
    assert (tmp_path / "quiet" / "metrics.csv").is_file()
    assert not (tmp_path / "quiet" / "train.log").exists() and not (tmp_path / "quiet" / "logs").exists()
    run([*evaluate, f"env.save_dir={tmp_path / 'warnings'}", "training.logger_level=warning"])
    assert " | INFO | " not in (tmp_path / "warnings" / "train.log").read_text()
    run([*evaluate, f"env.save_dir={tmp_path / 'detailed'}", "training.log_detailed_config=true"])
    assert "config:\n" in (tmp_path / "detailed" / "train.log").read_text()


# ------------------------------------------------------------- config checks


def test_every_key_of_mmfs_defaults_is_accepted():
    config = build_config(TINY_CONFIG, TINY)
    missing = [key for key in MMF_DEFAULT_KEYS if OmegaConf.select(config, key, default=KeyError) is KeyError]
    assert missing == []
    check_config(build_config(TINY_CONFIG, [
        *TINY, "training.update_frequency=2", "training.batch_size_per_device=2", "training.tensorboard=true",
        "training.log_format=json", "training.detect_anomaly=true", "training.cudnn_benchmark=true",
        "checkpoint.reset.all=true", "checkpoint.resume_pretrained=true",
        "checkpoint.pretrained_state_mapping={'backend': 'backend'}", "checkpoint.save_git_details=false",
        "evaluation.reporter.type=file", "distributed.port=29511", "distributed.no_spawn=true",
        "optimizer.allow_unused_parameters=true", "trainer.params.gpus=2", "multitasking.enabled=false",
        "training.seed=None", "evaluation.use_cpu=true", "evaluation.predict_file_format=csv",
        "training.clip_norm_mode=all", "training.device=cpu",
    ]))


def test_the_default_config_warns_about_nothing_and_inert_changes_are_named():
    assert config_warnings(build_config(TINY_CONFIG, TINY)) == []
    messages = config_warnings(build_config(TINY_CONFIG, [*TINY, "training.fast_read=true", "trainer.params.gpus=2",
                                                          "training.clip_gradients=true"]))
    assert [message.split("=")[0] for message in messages] == ["training.fast_read", "trainer.params",
                                                               "training.clip_gradients"]
    assert "nothing is clipped" in messages[-1]


@pytest.mark.parametrize("option, expected", [
    ("training.trainer=lightning", "PyTorch Lightning is not part of minimmf"),
    ("trainer.type=lightning", "set trainer.type=mmf"),
    ("training.wandb.enabled=true", "Weights & Biases"),
    ("training.callbacks=[{'type': 'mine'}]", "env.user_dir"),
    ("optimizer.enable_state_sharding=true", "fairscale"),
    ("training.device=xla", "xla (TPUs) is not part of minimmf"),
    ("training.clip_norm_mode=per_layer", "training.clip_norm_mode='per_layer'"),
    ("evaluation.predict_file_format=xml", "use json or csv"),
    ("evaluation.reporter.type=wandb", "evaluation.reporter.type='wandb'"),
    ("checkpoint.resume_zoo=mmf_transformer.charades", "download the checkpoint yourself"),
    ("training.update_frequency=0", "training.update_frequency=0"),
    ("training.batch_size_per_device=0", "training.batch_size_per_device=0"),
    ("training.seed=abc", "training.seed='abc'"),
    ("training.logger_level=loud", "training.logger_level='loud'"),
    ("checkpoint.pretrained_state_mapping={backend: backend}", "e.g. \"{'backend': 'backend'}\""),
    ("datasets=charades,charades", "one dataset at a time"),
    ("distributed.world_size=two", "distributed.world_size='two'"),
    ("model_config.mmf_transformer.losses=[]", "training needs a loss"),
])
def test_what_cannot_apply_is_refused_by_name(synthetic_data_dir, tmp_path, capsys, option, expected):
    with pytest.raises(SystemExit) as exit_info:
        run(run_args(synthetic_data_dir, tmp_path, option))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("mmf_run: error: ") and expected in error and "Traceback" not in error


def test_head_and_class_count_mismatch_names_both_and_the_key(synthetic_data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        run(run_args(synthetic_data_dir, tmp_path, "model_config.mmf_transformer.heads[0].num_labels=157"))
    error = capsys.readouterr().err
    assert "heads[0].num_labels=157 but the charades data has 8 classes" in error
    assert "set model_config.mmf_transformer.heads[0].num_labels=8" in error
    assert not (tmp_path / "config.yaml").exists()  # before any work


def test_missing_dataset_says_where_and_how_to_make_one(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run(run_args(tmp_path / "nowhere", tmp_path / "save"))
    error = capsys.readouterr().err
    assert f"{tmp_path / 'nowhere'}/datasets/charades/defaults/Charades/Charades_v1_classes.txt does not exist" in error
    assert "env.data_dir" in error and "MMF_DATA_DIR" in error
    assert f"make_synthetic_charades.py --out {tmp_path / 'nowhere'}" in error


def test_unknown_early_stop_criteria_lists_the_known_ones(synthetic_data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        run(run_args(synthetic_data_dir, tmp_path, "training.early_stop.criteria=charades/mapp"))
    error = capsys.readouterr().err
    assert "training.early_stop.criteria='charades/mapp'" in error
    assert "charades/logit_bce, total_loss, charades/multilabel_micro_f1, charades/multilabel_macro_f1, " \
           "charades/map" in error


def test_global_batch_must_divide_among_the_processes(synthetic_data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        run(run_args(synthetic_data_dir, tmp_path, "training.batch_size=5", "distributed.world_size=2"))
    assert "training.batch_size=5 is the global batch (as in MMF) and must divide among the 2 processes" in \
        capsys.readouterr().err


def test_missing_resume_file_is_a_clear_error(synthetic_data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        run(run_args(synthetic_data_dir, tmp_path, f"checkpoint.resume_file={tmp_path / 'nope.ckpt'}"))
    assert f"checkpoint.resume_file={tmp_path / 'nope.ckpt'}: no such file" in capsys.readouterr().err


def test_config_is_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = build_config("projects/mmf_transformer/configs/charades/tiny.yaml", TINY)
    assert config.model_config.mmf_transformer.num_hidden_layers == 2
    with pytest.raises(FileNotFoundError, match=f"looked in {tmp_path}/projects"):
        build_config("projects/nope.yaml", TINY)


def test_user_dir_that_does_not_exist(tmp_path):
    with pytest.raises(ConfigError, match="env.user_dir=.*not a package directory"):
        build_config(TINY_CONFIG, [*TINY, f"env.user_dir={tmp_path / 'absent'}"])


# ------------------------------------------------------------ the pieces


def test_global_and_per_device_batch_sizes():
    training = OmegaConf.create({"batch_size": 8, "batch_size_per_device": None})
    assert get_batch_size(training, 1) == 8 and get_batch_size(training, 4) == 2
    training.batch_size_per_device = 3
    assert get_batch_size(training, 4) == 3


def test_max_epochs_counts_updates_of_update_frequency_batches():
    assert get_max_updates(100, None, batches_per_epoch=7, update_frequency=2) == 100
    assert get_max_updates(100, 2, batches_per_epoch=7, update_frequency=2) == 8


def test_gradients_are_clipped_only_with_a_norm():
    layer = torch.nn.Linear(4, 4)
    layer.weight.grad = torch.full((4, 4), 3.0)
    layer.bias.grad = torch.zeros(4)
    assert clip_gradients(layer.parameters(), OmegaConf.create({"clip_gradients": True,
                                                                "max_grad_l2_norm": None})) is None
    assert float(layer.weight.grad.norm()) == pytest.approx(12.0)
    norm = clip_gradients(layer.parameters(), OmegaConf.create({"clip_gradients": True, "max_grad_l2_norm": 0.5}))
    assert float(norm) == pytest.approx(12.0) and float(layer.weight.grad.norm()) == pytest.approx(0.5, rel=1e-4)


class TwoLayers(torch.nn.Module):
    """A model whose optimizer groups leave its second layer out."""

    def __init__(self):
        super().__init__()
        self.first, self.second = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)

    def get_optimizer_parameters(self, config):
        return [{"params": list(self.first.parameters())}]


def test_parameters_the_optimizer_leaves_out_are_an_error_unless_allowed():
    config = OmegaConf.create({"optimizer": {"type": "SGD", "params": {"lr": 0.1},
                                             "allow_unused_parameters": False}})
    with pytest.raises(ConfigError, match="second.weight, second.bias.*allow_unused_parameters=True"):
        build_optimizer(TwoLayers(), config)
    config.optimizer.allow_unused_parameters = True
    assert isinstance(build_optimizer(TwoLayers(), config), torch.optim.SGD)  # torch.optim names, as MMF


def test_colored_logs_colour_warnings_only():
    formatter = ColorfulFormatter("%(levelname)s %(message)s")
    warning = logging.LogRecord("minimmf", logging.WARNING, __file__, 1, "careful", None, None)
    info = logging.LogRecord("minimmf", logging.INFO, __file__, 1, "fine", None, None)
    assert formatter.format(warning).startswith("\x1b[31m") and formatter.format(info) == "INFO fine"


@pytest.mark.parametrize("options, spawns, processes", [
    ([], False, 1),
    (["distributed.world_size=2"], True, 2),
    (["distributed.world_size=2", "distributed.no_spawn=true"], False, 1),
    (["distributed.world_size=2", "distributed.init_method=tcp://127.0.0.1:29500", "distributed.rank=1"], False, 2),
])
def test_who_starts_the_processes(options, spawns, processes, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    config = build_config(TINY_CONFIG, [*TINY, "training.device=cpu", *options])
    assert (distributed.should_spawn(config), distributed.planned_world_size(config)) == (spawns, processes)
    monkeypatch.setenv("WORLD_SIZE", "3")  # under torchrun, torchrun's processes
    assert (distributed.should_spawn(config), distributed.planned_world_size(config)) == (False, 3)
