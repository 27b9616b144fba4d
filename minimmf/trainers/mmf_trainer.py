"""MMF's trainer, plainly: build the data, model, optimizer and scheduler
from the config, then train for ``max_updates`` updates of
``update_frequency`` batches each, evaluating every ``evaluation_interval``
updates, checkpointing every ``checkpoint_interval``, keeping the best model
by ``early_stop.criteria``, and finishing with ``mmf_transformer_final.pth``
(the best model's plain state dict).

Runs in one process or in several (DistributedDataParallel; only the main
process writes files). A stop signal (SIGTERM, SIGUSR1, SIGINT) ends
training after the update in flight with a checkpoint, in every process
(``trainers/core/preemption.py``); a resumed run continues the interrupted
one update for update (``trainers/core/exact_resume.py``).
"""

from __future__ import annotations

import itertools
import logging
import math
import sys
import time
from collections.abc import Iterable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from minimmf.common import test_reporter
from minimmf.common.sample import SampleList
from minimmf.modules.metrics import build_metrics
from minimmf.trainers.config_checks import config_warnings
from minimmf.trainers.core.evaluation_loop import LossSums, evaluate_set
from minimmf.trainers.core.exact_resume import ResumableSampler, SeededItems, rng_states, set_rng_states
from minimmf.trainers.core.preemption import EXIT_CHECKPOINT_WRITE_FAILED, Preemption, TrainingStopped
from minimmf.utils import distributed
from minimmf.utils.build import build_dataset, build_model, build_optimizer, build_scheduler, dataloader_options
from minimmf.utils.checkpoint import Checkpoint
from minimmf.utils.configuration import ConfigError, dataset_names, parse_run_type, splits_to_load
from minimmf.utils.early_stopping import EarlyStopping
from minimmf.utils.env import pick_seed, set_seed
from minimmf.utils.file_io import atomic_write, remove_stale_temporaries
from minimmf.utils.general import clip_gradients, get_batch_size, get_max_updates
from minimmf.utils.logger import MetricsLogger, RunLogging, TensorboardLogger, log_folder, log_progress
from minimmf.utils.manifest import RunManifest, new_run_id
from minimmf.utils.signals import exit_status, ignore_stop_signals, signal_name

logger = logging.getLogger(__name__)


class BatchCollator:
    """Samples -> SampleList, tagged with the dataset's name and split (as MMF)."""

    def __init__(self, dataset_name: str, dataset_type: str):
        self.dataset_name, self.dataset_type = dataset_name, dataset_type

    def __call__(self, samples: list[Any]) -> SampleList:
        batch = SampleList(samples)
        batch.dataset_name, batch.dataset_type = self.dataset_name, self.dataset_type
        return batch


class MMFTrainer:
    def __init__(self, config: DictConfig):
        self.config = config
        self.training_config = config.training
        self.run_types = parse_run_type(config.run_type)
        self.save_dir = Path(config.env.save_dir)
        self.num_updates = 0
        self.current_iteration = 0
        self.current_epoch = 0
        self.run_logging: RunLogging | None = None
        self.metrics_logger: MetricsLogger | None = None
        self.tensorboard: TensorboardLogger | None = None
        self.run_id = new_run_id()
        self.inference_files: dict[str, str] = {}
        self.window: _LossWindow | None = None
        # where the run is in its epoch: positions taken before this run started it, batches since
        self.epoch_start, self.epoch_batches = 0, 0
        # from the checkpoint resumed: its position in the epoch and this process's state
        self.resume_position: dict[str, int] | None = None
        self.saved_rank_state: dict[str, Any] | None = None
        self.checkpoint_seed: int | None = None

    # ------------------------------------------------------------------ set-up

    def load(self) -> None:
        self.configure_device()
        self.configure_seed()
        self.run_logging = RunLogging(self.config, self.is_main)
        self.record_what_runs()
        if self.is_main:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            self.remove_leftovers()
            with atomic_write(self.save_dir / "config.yaml") as handle:
                OmegaConf.save(self.config, handle)
            for message in config_warnings(self.config):
                logger.warning(message)
            if self.training_config.log_detailed_config:
                logger.info("config:\n%s", OmegaConf.to_yaml(self.config))
        self.load_datasets()
        self.load_model_and_optimizer()
        self.early_stopping = EarlyStopping(self.training_config.early_stop)
        self.checkpoint = Checkpoint(self)
        self.checkpoint.load_state_dict()
        self.parallelize_model()
        self.metrics = {key: metric for key, metric in build_metrics(self.config.evaluation.metrics).items()
                        if metric.applies_to(self.dataset_name)}
        if self.is_main:
            # a training run's curves start at its first update (a resumed one's, at the checkpoint's);
            # an evaluation-only run adds its evaluation to the curves already there
            keep_until = self.num_updates if "train" in self.run_types else math.inf
            self.metrics_logger = MetricsLogger(self.save_dir, keep_until)
            if self.training_config.tensorboard:
                self.tensorboard = TensorboardLogger(self.config.env.tensorboard_logdir or log_folder(self.config))

    def configure_device(self) -> None:
        self.device = distributed.choose_device(str(self.training_config.device))
        self.backend = distributed.init_process_group(self.config, self.device)
        self.is_main = distributed.is_main()
        self.batch_size = get_batch_size(self.training_config, distributed.get_world_size())

    def configure_seed(self) -> None:
        # one base seed for every process (their samplers must agree), and, as MMF,
        # each process's random streams seeded with base + rank
        self.seed = distributed.broadcast_object(pick_seed(self.training_config.seed))
        set_seed(self.seed + distributed.get_rank())
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = bool(self.training_config.cudnn_benchmark)

    def remove_leftovers(self) -> None:
        """The temporary files of a run killed while it wrote (see utils/file_io.py)."""
        for folder in {self.save_dir, test_reporter.report_folder(self.config)}:
            for path in remove_stale_temporaries(folder, recursive=True, ours_too=True):
                logger.info("removed %s, left by a run killed while it wrote", path)

    def record_what_runs(self) -> None:
        """The saved config says what ran, not what was asked for."""
        self.config.training.seed = self.seed
        self.config.training.device = self.device.type
        self.config.distributed.world_size = distributed.get_world_size()
        if self.backend is not None:
            self.config.distributed.backend = self.backend
        logger.info("Using seed %d", self.seed)
        logger.info("device %s, world size %d, batch size %d per process, update frequency %d", self.device,
                    distributed.get_world_size(), self.batch_size, self.training_config.update_frequency)

    def load_datasets(self) -> None:
        self.dataset_name = dataset_names(self.config)[0]
        dataset_config = self.config.dataset_config[self.dataset_name]
        self.datasets = {split: build_dataset(self.dataset_name, dataset_config, split)
                         for split in splits_to_load(self.run_types)}
        for split, dataset in self.datasets.items():
            logger.info("%s split: %d videos", split, len(dataset))
            if len(dataset) == 0:
                raise ConfigError(f"the {split} split of {self.dataset_name} has no videos; check env.data_dir "
                                  f"(now {self.config.env.data_dir})")
        if self.is_main:
            # what a served model needs besides its weights and config: the class list, the vocabulary
            self.inference_files = next(iter(self.datasets.values())).inference_files(self.save_dir)

    def write_manifest(self) -> None:
        """``save/manifest.json``: the run's files for serving, by role, with their digests."""
        files = {"weights": Path(self.checkpoint.final_path).name, "config": "config.yaml", **self.inference_files}
        paths = {role: self.save_dir / name for role, name in files.items()}
        RunManifest.of_files(self.run_id, self.config.model, self.dataset_name, paths).write(self.save_dir)

    def load_model_and_optimizer(self) -> None:
        self.model = build_model(self.config).to(self.device)
        parameters = sum(p.numel() for p in self.model.parameters())
        logger.info("model %s: %s parameters", self.config.model, f"{parameters:,}")
        self.optimizer = build_optimizer(self.model, self.config)
        self.scheduler = build_scheduler(self.optimizer, self.config)
        use_fp16 = bool(self.training_config.fp16)
        if use_fp16 and self.device.type != "cuda":
            # as in MMF, mixed precision is a CUDA feature (CPU bfloat16 conv3d backward gives non-finite gradients)
            logger.warning("training.fp16 needs a CUDA device; training in float32 on %s", self.device)
            use_fp16 = False
        self.autocast_dtype = torch.float16 if use_fp16 else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_fp16)

    def parallelize_model(self) -> None:
        if distributed.is_dist_initialized():
            self.model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(self.training_config.find_unused_parameters))

    def dataloader(self, split: str, shuffle: bool) -> DataLoader:
        """The split's batches. ``shuffle`` (training): in an order a checkpoint
        can resume from, each sample's random transforms seeded on their own,
        the workers leaving stop signals to this process; else in order,
        shared among the processes."""
        dataset = self.datasets[split]
        options = dataloader_options(self.config.dataset_config[self.dataset_name], self.training_config,
                                     self.device)
        collate = BatchCollator(self.dataset_name, split)
        if shuffle:
            rank = distributed.get_rank()
            sampler = ResumableSampler(len(dataset), self.data_seed, rank, distributed.get_world_size())
            # its own generator: the workers' seeds are not drawn from the model's random stream
            generator = torch.Generator().manual_seed(self.data_seed + rank)
            return DataLoader(SeededItems(dataset, self.data_seed), batch_size=self.batch_size, sampler=sampler,
                              collate_fn=collate, drop_last=False, generator=generator,
                              worker_init_fn=_leave_stop_signals_to_the_trainer, **options)
        sampler = DistributedSampler(dataset, shuffle=False) if distributed.is_dist_initialized() else None
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, collate_fn=collate,
                          drop_last=False, **options)

    @property
    def data_seed(self) -> int:
        """The seed of the data order and augmentations: the run's, or that of the checkpoint it resumed."""
        return self.seed if self.checkpoint_seed is None else self.checkpoint_seed

    @property
    def unwrapped_model(self) -> torch.nn.Module:
        return self.model.module if isinstance(self.model, DistributedDataParallel) else self.model

    # ---------------------------------------------------------------- training

    def train(self) -> None:
        loader = self.dataloader("train", shuffle=True)
        update_frequency = int(self.training_config.update_frequency)
        self.max_updates = get_max_updates(self.training_config.max_updates, self.training_config.max_epochs,
                                           loader.sampler.batches_per_epoch(self.batch_size), update_frequency)
        if self.training_config.max_epochs is not None and self.training_config.max_updates is not None:
            logger.info("both max_updates and max_epochs are set: max_epochs wins (%d updates)", self.max_updates)
        self.progress = tqdm(total=self.max_updates, initial=self.num_updates, desc="training", unit="update",
                             disable=not (self.is_main and sys.stderr.isatty()), dynamic_ncols=True)
        self.window = _LossWindow()
        anomaly_before = torch.is_anomaly_enabled()
        torch.autograd.set_detect_anomaly(bool(self.training_config.detect_anomaly))
        self.preemption = Preemption(self.device)
        try:
            with self.preemption:
                self.model.train()
                self.restore_rank_state()  # last: from here on the random streams are the interrupted run's
                stop = self.num_updates >= self.max_updates
                while not stop:
                    stop = self.run_training_epoch(loader, update_frequency)
        finally:
            torch.autograd.set_detect_anomaly(anomaly_before)
            self.progress.close()
        self.checkpoint.finalize()
        if self.is_main:
            self.write_manifest()

    def run_training_epoch(self, loader: DataLoader, update_frequency: int) -> bool:
        """One pass over the training data (or what a checkpoint left of it), in
        updates of ``update_frequency`` batches (the last one takes what is
        left); True when training is over."""
        self.epoch_start, self.epoch_batches = self.begin_epoch(), 0
        loader.sampler.set_epoch(self.current_epoch, self.epoch_start)
        batches = iter(loader)
        remaining = len(loader)
        while remaining:
            count = min(update_frequency, remaining)
            losses, outputs = self.run_update(itertools.islice(batches, count), count)
            remaining -= count
            self.epoch_batches += count
            if self.after_update(losses, outputs):
                return True
        return False

    def begin_epoch(self) -> int:
        """Start the next epoch, or go on with the one the checkpoint resumed
        from stopped in; returns how many of its positions were taken already."""
        position, self.resume_position = self.resume_position, None
        if position is not None and int(position["epoch"]) == self.current_epoch \
                and 0 < int(position["samples_done"]) < len(self.datasets["train"]):
            logger.info("epoch %d goes on after %d of its %d samples", self.current_epoch,
                        int(position["samples_done"]), len(self.datasets["train"]))
            return int(position["samples_done"])
        self.current_epoch += 1
        return 0

    def train_position(self) -> dict[str, int]:
        """Where the run is in its epoch, for the checkpoint: the positions of
        the epoch's order taken by all processes, and the seed of that order."""
        taken = self.epoch_start + self.epoch_batches * self.batch_size * distributed.get_world_size()
        return {"epoch": self.current_epoch, "samples_done": min(taken, len(self.datasets["train"])),
                "seed": self.data_seed}

    def rank_state(self) -> dict[str, Any]:
        """This process's part of the checkpoint: its random streams and the losses not logged yet."""
        return {"rng": rng_states(self.device), "loss_window": self.window.state() if self.window else None}

    def resume_at(self, position: dict[str, int], rank_state: dict[str, Any] | None) -> None:
        """Continue where a checkpoint stopped (called while it loads)."""
        self.resume_position, self.saved_rank_state = position, rank_state
        self.checkpoint_seed = int(position.get("seed", self.seed))
        if self.data_seed != self.seed:
            logger.info("the data order and augmentations go on with the checkpoint's seed %d (training.seed is "
                        "%d in this run)", self.data_seed, self.seed)

    def restore_rank_state(self) -> None:
        state, self.saved_rank_state = self.saved_rank_state, None
        if state is None:
            return
        set_rng_states(state["rng"], self.device)
        if state.get("loss_window"):
            self.window.load(state["loss_window"], self.device)

    def run_update(self, batches: Iterable[SampleList], count: int) -> tuple[dict[str, Tensor], list[tuple]]:
        """Accumulate the gradients of ``count`` batches, then step once. Returns
        the update's losses and, with ``evaluate_metrics``, its (scores, targets)."""
        self.optimizer.zero_grad(set_to_none=True)
        losses: dict[str, Tensor] = {}
        outputs = []
        for index, batch in enumerate(batches):
            self.current_iteration += 1
            with self.gradient_sync(last=index == count - 1):
                batch_losses, scores = self.run_training_batch(batch, count)
            for key, value in batch_losses.items():
                losses[key] = losses.get(key, 0) + value
            if self.training_config.evaluate_metrics:
                outputs.append((scores.float().cpu(), batch.targets.float().cpu()))
        self.finish_update()
        return losses, outputs

    def gradient_sync(self, last: bool):
        """Processes average their gradients once per update, on its last batch."""
        if last or not isinstance(self.model, DistributedDataParallel):
            return nullcontext()
        return self.model.no_sync()

    def run_training_batch(self, batch: SampleList, loss_divisor: int) -> tuple[dict[str, Tensor], Tensor]:
        batch = batch.to(self.device, non_blocking=True)
        with self.autocast():
            output = self.model(batch)
        losses = {key: value.mean() / loss_divisor for key, value in output["losses"].items()}
        if self.training_config.exit_on_nan_losses:
            self.check_nan_losses(losses)
        self.scaler.scale(sum(losses.values())).backward()
        return {key: value.detach() for key, value in losses.items()}, output["scores"].detach()

    def check_nan_losses(self, losses: dict[str, Tensor]) -> None:
        nan_keys = [key for key, value in losses.items() if torch.isnan(value).any()]
        if nan_keys:
            raise RuntimeError(f"NaN in the loss(es) {', '.join(nan_keys)} at update {self.num_updates + 1}; lower "
                               "optimizer.params.lr or turn off training.fp16 (training.exit_on_nan_losses=false "
                               "goes on regardless)")

    def finish_update(self) -> None:
        self.scaler.unscale_(self.optimizer)  # clipping sees the true gradients
        grad_norm = clip_gradients(self.model.parameters(), self.training_config)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        self.num_updates += 1
        if self.tensorboard is not None and grad_norm is not None:
            self.tensorboard.add_scalars({"grad_norm": float(grad_norm)}, self.current_iteration)

    def after_update(self, losses: dict[str, Tensor], outputs: list[tuple]) -> bool:
        """Log, evaluate and checkpoint when due; True when training is over."""
        self.progress.update(1)
        self.window.add(losses)
        at_end = self.num_updates >= self.max_updates
        if self.num_updates % int(self.training_config.log_interval) == 0 or at_end:
            self.log_training(outputs)
        stop = False
        if self.num_updates % int(self.training_config.evaluation_interval) == 0 or at_end:
            stop = self.evaluate_for_early_stop()
            self.model.train()
        if self.num_updates % int(self.training_config.checkpoint_interval) == 0 or at_end or stop:
            self.checkpoint.save()
        self.stop_if_asked()
        return stop or at_end

    def stop_if_asked(self) -> None:
        """Between two updates: when any process got a stop signal, save this
        update's checkpoint (unless saved already) and stop every process; when a
        checkpoint could not be written, stop rather than train on without a
        way back. Raises ``TrainingStopped``."""
        signum, write_failed = self.preemption.agreed(self.checkpoint.write_failed is not None)
        if not (signum or write_failed):
            return
        if not write_failed and self.checkpoint.saved_update != self.num_updates:
            self.checkpoint.save(periodic=False)
            _, write_failed = self.preemption.agreed(self.checkpoint.write_failed is not None)
        if write_failed:
            reason = f"training stopped after update {self.num_updates}: {self.checkpoint.write_failed}"
            status = EXIT_CHECKPOINT_WRITE_FAILED
        else:
            newest = self.checkpoint.newest[0] if self.checkpoint.newest else self.save_dir / "current.ckpt"
            reason = (f"stopped by {signal_name(signum)} after update {self.num_updates}/{self.max_updates}, "
                      f"saved in {newest}; continue with checkpoint.resume=True")
            status = exit_status(signum)
        if self.is_main:
            (logger.error if write_failed else logger.warning)("%s", reason)
        distributed.barrier()  # the checkpoint is written before any process exits
        raise TrainingStopped(reason, status)

    def autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def log_training(self, outputs: list[tuple]) -> None:
        values = self.window.averages()
        values["train/total_loss"] = sum(values.values())
        if outputs:
            scores, targets = (torch.cat(parts) for parts in zip(*outputs, strict=True))
            entries = {"scores": scores, "targets": targets,
                       "prediction_threshold": self.datasets["train"].prediction_threshold}
            values.update(self.compute_metrics("train", entries, reduce=True))
        elapsed = time.time() - self.window.started
        ups = self.window.updates / max(elapsed, 1e-9)
        info = {"progress": f"{self.num_updates}/{self.max_updates}",
                **{key: f"{value:.4f}" for key, value in values.items()},
                "experiment": self.training_config.experiment_name, "epoch": self.current_epoch,
                "num_updates": self.num_updates, "iterations": self.current_iteration,
                "max_updates": self.max_updates, "lr": f"{self.current_lr():.3e}", "ups": f"{ups:.2f}",
                "time": f"{elapsed:.0f}s", "eta": f"{(self.max_updates - self.num_updates) / max(ups, 1e-9):.0f}s"}
        self.progress.set_postfix(loss=info["train/total_loss"], lr=info["lr"])
        log_progress(logger, info, self.training_config.log_format)
        self.log_scalars({**values, "train/lr": self.current_lr()})
        self.window = _LossWindow()

    def log_scalars(self, values: dict[str, float]) -> None:
        """metrics.csv by update; TensorBoard by iteration, as MMF."""
        if self.metrics_logger is not None:
            self.metrics_logger.log(self.num_updates, values)
        if self.tensorboard is not None:
            self.tensorboard.add_scalars(values, self.current_iteration)

    # -------------------------------------------------------------- evaluation

    def evaluate_for_early_stop(self) -> bool:
        """Evaluate on val, keep the best checkpoint; True when early stopping says stop."""
        started = time.time()
        report = self.evaluate("val")
        if self.early_stopping.update(report, self.num_updates, self.current_iteration):
            self.checkpoint.save_best()
        log_progress(logger, {"progress": f"{self.num_updates}/{self.max_updates}", "num_updates": self.num_updates,
                              "epoch": self.current_epoch, "iterations": self.current_iteration,
                              "val_time": f"{time.time() - started:.0f}s", **self.early_stopping.info()},
                     self.training_config.log_format)
        stop = self.early_stopping.should_stop(self.num_updates)
        if stop:
            logger.info("early stop: no improvement of %s for %d updates", self.early_stopping.criteria,
                        self.num_updates - self.early_stopping.best_update)
        return stop

    def evaluate(self, split: str, write_predictions: bool = False) -> dict[str, float]:
        """The split's losses (from the model's own losses) and metrics, each
        computed from the report entries it requires, which the dataset's
        evaluation sets provide; with ``write_predictions``, also MMF's
        prediction file."""
        entries, losses = self.evaluation_report(split, write_predictions)
        report = losses.means()
        report[f"{split}/total_loss"] = sum(report.values())
        report.update(self.compute_metrics(split, entries))
        report[f"{split}/{self.dataset_name}/unreadable_videos"] = float(entries.get("unreadable_videos", 0))
        log_progress(logger, {"update": self.num_updates, "split": split,
                              **{key: f"{value:.4f}" for key, value in report.items()}},
                     self.training_config.log_format)
        self.log_scalars(report)
        if write_predictions and self.is_main:
            self.write_predictions(split, entries)
        return report

    def write_predictions(self, split: str, entries: dict[str, Any]) -> None:
        """MMF's prediction file, and the files of the dataset's own forms beside it."""
        dataset = self.datasets[split]
        stem = test_reporter.prediction_stem(self.config, self.dataset_name, split)
        predictions = dataset.format_for_prediction(entries["ids"], entries["scores"])
        path = test_reporter.write_predictions(self.config, predictions, stem)
        logger.info("wrote %d predictions to %s", len(predictions), path.resolve())
        dataset.write_prediction_files(entries, path.parent, stem)

    def evaluation_report(self, split: str, for_predictions: bool = False) -> tuple[dict[str, Any], LossSums]:
        """Every report entry the metrics require (and the video-level scores,
        which the losses come from, and with ``for_predictions`` what the
        prediction files need), from the dataset's evaluation sets, and the model's losses."""
        required = {name for metric in self.metrics.values() for name in metric.required_params}
        if for_predictions:
            required |= self.datasets[split].prediction_entries()
        entries: dict[str, Any] = {}
        losses = LossSums()
        options = dataloader_options(self.config.dataset_config[self.dataset_name], self.training_config,
                                     self.device)
        for evaluation_set in self.datasets[split].evaluation_sets().values():
            if not (evaluation_set.with_losses or required & set(evaluation_set.provides)):
                continue
            provided, set_losses = evaluate_set(self.unwrapped_model, evaluation_set, self.dataset_name, split,
                                                self.batch_size, self.device, options, self.autocast)
            entries.update(provided)
            losses = losses.merged([set_losses])
        missing = required - set(entries)
        if missing:
            raise ConfigError(f"evaluation.metrics need {sorted(missing)}, which the {self.dataset_name} dataset "
                              "does not provide")
        return entries, losses

    def compute_metrics(self, split: str, entries: dict[str, Any], reduce: bool = False) -> dict[str, float]:
        """``<split>/<dataset>/<metric key>`` of every metric whose entries ``entries``
        holds; ``reduce`` averages each process's value (for the training batches,
        which differ per process)."""
        keep_on = torch.device("cpu") if self.config.evaluation.use_cpu else self.device
        entries = {key: value.to(keep_on) if isinstance(value, Tensor) else value for key, value in entries.items()}
        values = {}
        for key, metric in self.metrics.items():
            if not set(metric.required_params) <= set(entries):
                continue
            value = torch.tensor(float(metric(entries)), dtype=torch.float64, device=self.device)
            values[f"{split}/{self.dataset_name}/{key}"] = float(distributed.reduce_mean(value) if reduce else value)
        return values

    # --------------------------------------------------------------------- run

    def run(self) -> dict[str, dict[str, float]]:
        """Train and/or evaluate as ``run_type`` says; returns the final reports."""
        try:
            self.load()
            reports: dict[str, dict[str, float]] = {}
            if "train" in self.run_types:
                self.train()
                self.checkpoint.restore_best()
            if self.metrics_logger is not None:
                restored_best = "train" in self.run_types and self.checkpoint.best_state is not None
                self.metrics_logger.final(self.early_stopping.best_update if restored_best else self.num_updates)
            for split in ("val", "test"):
                if split in self.run_types:
                    reports[split] = self.evaluate(split, write_predictions=bool(self.config.evaluation.predict))
            if self.metrics_logger is not None:
                self.metrics_logger.plot(list(self.metrics))
        except BaseException:
            self.teardown(completed=False)
            raise
        self.teardown(completed=True)
        return reports

    def teardown(self, completed: bool) -> None:
        """Close what the run opened, so that the process can run again."""
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.run_logging is not None:
            self.run_logging.close()
        distributed.shutdown(wait=completed)


def _leave_stop_signals_to_the_trainer(worker_id: int) -> None:
    """A training DataLoader worker outlives a stop signal, so that the update in flight gets its batches."""
    ignore_stop_signals()


class _LossWindow:
    """The training losses since the last log line, for their averages."""

    def __init__(self):
        self.started = time.time()
        self.updates = 0
        self.totals: dict[str, Tensor] = {}

    def state(self) -> dict[str, Any]:
        return {"updates": self.updates, "totals": {key: value.detach().cpu() for key, value in self.totals.items()}}

    def load(self, state: dict[str, Any], device: torch.device) -> None:
        self.updates = int(state["updates"])
        self.totals = {key: value.to(device) for key, value in state["totals"].items()}

    def add(self, losses: dict[str, Tensor]) -> None:
        self.updates += 1
        for key, value in losses.items():
            self.totals[key] = self.totals.get(key, 0) + value

    def averages(self) -> dict[str, float]:
        """Averaged over the updates, then over the processes."""
        return {key: float(distributed.reduce_mean(total / self.updates)) for key, total in self.totals.items()}
