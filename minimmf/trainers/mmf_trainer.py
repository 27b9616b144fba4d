"""MMF's trainer, plainly: build the data, model, optimizer and scheduler
from the config, then train for ``max_updates``, evaluating every
``evaluation_interval`` updates, checkpointing every ``checkpoint_interval``,
keeping the best model by ``early_stop.criteria``, and finishing with
``mmf_transformer_final.pth`` (the best model's plain state dict).

Runs in one process or under torchrun (DistributedDataParallel; only rank 0
writes files).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from minimmf.common.registry import registry
from minimmf.common.sample import SampleList
from minimmf.modules.losses import total_loss
from minimmf.modules.metrics import build_metrics
from minimmf.utils import distributed
from minimmf.utils.build import build_model, build_optimizer, build_scheduler
from minimmf.utils.checkpoint import Checkpoint
from minimmf.utils.env import set_seed
from minimmf.utils.logger import MetricsLogger, add_file_handler

logger = logging.getLogger(__name__)

RUN_TYPES = ("train", "val", "test", "inference")


def parse_run_type(run_type: str) -> set[str]:
    """``train_val`` -> {"train", "val"}; ``inference`` means val and test."""
    parts = set(str(run_type).split("_"))
    unknown = parts - set(RUN_TYPES)
    if not parts or unknown:
        raise ValueError(f"run_type={run_type!r}: unknown part(s) {sorted(unknown)}; use train, val, test "
                         "or an _-joined combination such as train_val")
    if "inference" in parts:
        parts = (parts - {"inference"}) | {"val", "test"}
    return parts


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
        self.device = distributed.init_from_environment()
        self.is_main = distributed.is_main()
        if not self.is_main:  # one rank reports
            logging.getLogger("minimmf").setLevel(logging.WARNING)
        seed = self.training_config.seed
        # every rank starts from the same weights; data order still differs per rank via the sampler
        self.seed = set_seed(distributed.broadcast_object(set_seed(seed)) if seed == -1 else seed)
        self.num_updates = 0
        self.current_epoch = 0
        self.best_update = 0
        self.best_metric: float | None = None

    # ------------------------------------------------------------------ set-up

    def load(self) -> None:
        if self.is_main:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            add_file_handler(self.save_dir / "train.log")
            OmegaConf.save(self.config, self.save_dir / "config.yaml")
        logger.info("seed %d, device %s, world size %d", self.seed, self.device, distributed.get_world_size())
        self.load_datasets()
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
        self.checkpoint = Checkpoint(self)
        self.checkpoint.load_state_dict()
        if distributed.is_dist_initialized():
            self.model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(self.training_config.find_unused_parameters))
        self.metrics = build_metrics(self.config.evaluation.metrics)
        self.metrics_logger = MetricsLogger(self.save_dir) if self.is_main else None

    def load_datasets(self) -> None:
        self.dataset_name = self.config.datasets.split(",")[0]
        builder = registry.require("builder", self.dataset_name)()
        dataset_config = self.config.dataset_config[self.dataset_name]
        splits = set(self.run_types)
        if "train" in splits:
            splits.add("val")
        self.datasets = {split: builder.load(dataset_config, split) for split in sorted(splits)}
        for split, dataset in self.datasets.items():
            logger.info("%s split: %d videos", split, len(dataset))
            if len(dataset) == 0:
                raise RuntimeError(f"the {split} split of {self.dataset_name} has no videos; check env.data_dir "
                                   f"(now {self.config.env.data_dir})")
        self.text_processor = next(iter(self.datasets.values())).text_processor
        if self.is_main and hasattr(self.text_processor, "save_vocabulary"):
            self.text_processor.save_vocabulary(self.save_dir)

    def dataloader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.datasets[split]
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=self.seed) \
            if distributed.is_dist_initialized() else None
        workers = int(self.training_config.num_workers)
        return DataLoader(
            dataset, batch_size=int(self.training_config.batch_size), shuffle=shuffle and sampler is None,
            sampler=sampler, num_workers=workers, collate_fn=BatchCollator(self.dataset_name, split),
            pin_memory=self.device.type == "cuda" and bool(self.training_config.pin_memory),
            persistent_workers=workers > 0 and bool(self.training_config.persistent_workers),
            drop_last=False,
        )

    @property
    def unwrapped_model(self) -> torch.nn.Module:
        return self.model.module if isinstance(self.model, DistributedDataParallel) else self.model

    # ---------------------------------------------------------------- training

    def train(self) -> None:
        loader = self.dataloader("train", shuffle=True)
        max_updates = self._max_updates(len(loader))
        early_stop = self.training_config.early_stop
        log_interval = int(self.training_config.log_interval)
        progress = tqdm(total=max_updates, initial=self.num_updates, desc="training", unit="update",
                        disable=not (self.is_main and sys.stderr.isatty()), dynamic_ncols=True)
        start, start_updates = time.time(), self.num_updates
        running_loss, running_count = 0.0, 0
        stop = self.num_updates >= max_updates
        self.model.train()
        while not stop:
            if isinstance(loader.sampler, DistributedSampler):
                loader.sampler.set_epoch(self.current_epoch)
            for batch in loader:
                loss = self.run_training_batch(batch)
                self.num_updates += 1
                running_loss, running_count = running_loss + loss, running_count + 1
                progress.update(1)
                progress.set_postfix(loss=f"{loss:.4f}", lr=f"{self.current_lr():.2e}")
                if self.num_updates % log_interval == 0 or self.num_updates == max_updates:
                    self._log_training(running_loss / running_count, start, start_updates, max_updates)
                    running_loss, running_count = 0.0, 0
                if self.num_updates % int(self.training_config.evaluation_interval) == 0 \
                        or self.num_updates == max_updates:
                    improved = self.evaluate_for_early_stop()
                    if early_stop.enabled and not improved and \
                            self.num_updates - self.best_update > int(early_stop.patience):
                        logger.info("early stop: no improvement of %s for %d updates", early_stop.criteria,
                                    self.num_updates - self.best_update)
                        stop = True
                    self.model.train()
                if self.num_updates % int(self.training_config.checkpoint_interval) == 0 or \
                        self.num_updates == max_updates or stop:
                    self.checkpoint.save(self.num_updates)
                if self.num_updates >= max_updates or stop:
                    stop = True
                    break
            self.current_epoch += 1
        progress.close()
        self.checkpoint.finalize()

    def _max_updates(self, batches_per_epoch: int) -> int:
        max_epochs = self.training_config.get("max_epochs")
        if max_epochs is not None:
            return int(math.ceil(max_epochs * batches_per_epoch))
        return int(self.training_config.max_updates)

    def run_training_batch(self, batch: SampleList) -> float:
        batch = batch.to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            output = self.model(batch)
            loss = total_loss(output["losses"])
        if self.training_config.exit_on_nan_losses and not torch.isfinite(loss):
            raise RuntimeError(f"loss became {loss.item()} at update {self.num_updates + 1}; lower optimizer.params.lr "
                               "or turn off training.fp16")
        self.scaler.scale(loss).backward()
        if self.training_config.clip_gradients:
            self.scaler.unscale_(self.optimizer)
            max_norm = self.training_config.max_grad_l2_norm
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(max_norm if max_norm is not None else 1.0))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        return float(distributed.reduce_mean(loss.detach()))

    def autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _log_training(self, loss: float, start: float, start_updates: int, max_updates: int) -> None:
        elapsed = time.time() - start
        done = self.num_updates - start_updates
        eta = elapsed / max(1, done) * (max_updates - self.num_updates)
        key = f"train/{self.dataset_name}/logit_bce"
        logger.info("progress: %d/%d, %s: %.4f, lr: %.3e, ups: %.2f, time: %.0fs, eta: %.0fs",
                    self.num_updates, max_updates, key, loss, self.current_lr(), done / max(elapsed, 1e-9),
                    elapsed, eta)
        if self.metrics_logger:
            self.metrics_logger.log(self.num_updates, {"train/loss": loss, "train/lr": self.current_lr()})

    # -------------------------------------------------------------- evaluation

    def evaluate_for_early_stop(self) -> bool:
        report = self.evaluate("val")
        criteria = str(self.training_config.early_stop.criteria)
        key = criteria if criteria.startswith("val/") else f"val/{criteria}"
        if key not in report:
            key = f"val/{self.dataset_name}/loss"
        value = report[key]
        minimize = bool(self.training_config.early_stop.minimize) if key.endswith(criteria) else True
        improved = self.best_metric is None or (value < self.best_metric if minimize else value > self.best_metric)
        if improved:
            self.best_metric, self.best_update = value, self.num_updates
            self.checkpoint.save_best()
        logger.info("best %s so far: %.4f at update %d", key, self.best_metric, self.best_update)
        return improved

    @torch.inference_mode()
    def predict_scores(self, split: str) -> tuple[list[Any], torch.Tensor, torch.Tensor]:
        """Scores of every video of ``split`` (gathered from every rank, each video once)."""
        model = self.unwrapped_model
        model.eval()
        ids, scores, targets = [], [], []
        for batch in tqdm(self.dataloader(split, shuffle=False), desc=f"evaluating {split}", unit="batch",
                          disable=not (self.is_main and sys.stderr.isatty()), leave=False):
            batch = batch.to(self.device)
            with self.autocast():
                output = model(batch)
            ids += list(batch.id)
            scores.append(output["scores"].float().cpu())
            targets.append(batch.targets.float().cpu())
        local = (ids, torch.cat(scores), torch.cat(targets))
        merged: dict[Any, tuple[torch.Tensor, torch.Tensor]] = {}
        for rank_ids, rank_scores, rank_targets in distributed.all_gather_objects(local):
            for index, item_id in enumerate(rank_ids):
                merged.setdefault(item_id, (rank_scores[index], rank_targets[index]))
        all_ids = list(merged)
        return all_ids, torch.stack([merged[i][0] for i in all_ids]), torch.stack([merged[i][1] for i in all_ids])

    def evaluate(self, split: str, write_predictions: bool = False) -> dict[str, float]:
        """Loss and metrics of ``split``; with ``write_predictions``, also MMF's prediction file."""
        ids, scores, targets = self.predict_scores(split)
        if write_predictions:
            self.write_predictions(split, ids, scores)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(scores, targets) * targets.size(1)
        report = {f"{split}/{self.dataset_name}/loss": float(loss)}
        for name, metric in self.metrics.items():
            report[f"{split}/{self.dataset_name}/{name}"] = metric(scores, targets)
        logger.info("%s at update %d: %s", split, self.num_updates,
                    ", ".join(f"{key}: {value:.4f}" for key, value in report.items()))
        if self.metrics_logger:
            self.metrics_logger.log(self.num_updates, report)
        return report

    def write_predictions(self, split: str, ids: list[Any], scores: torch.Tensor) -> Path | None:
        """MMF's prediction file: ``[{"id": ..., "labels": [...]}, ...]``."""
        if not self.is_main:
            return None
        predictions = self.datasets[split].format_for_prediction(ids, scores)
        path = self.save_dir / f"{self.dataset_name}_{split}_predictions.json"
        path.write_text(json.dumps(predictions, indent=1))
        logger.info("wrote %d predictions to %s", len(predictions), path)
        return path

    # --------------------------------------------------------------------- run

    def run(self) -> dict[str, dict[str, float]]:
        self.load()
        reports: dict[str, dict[str, float]] = {}
        if "train" in self.run_types:
            self.train()
            self.checkpoint.restore_best()
        for split in ("val", "test"):
            if split in self.run_types:
                reports[split] = self.evaluate(split, write_predictions=bool(self.config.evaluation.predict))
        if self.metrics_logger:
            self.metrics_logger.plot()
        distributed.shutdown()
        return reports
