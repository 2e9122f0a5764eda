"""One fold job: a pure function of (model config, manifest, split file, seed) -> result files.

It trains on the split's ``train`` part and selects the best epoch on the protocol's selection
part: ``val`` for every honest protocol (agiqa's rule: mean SRCC, early stopping with patience),
after which ``test`` is predicted once; ``test`` only for the protocols that replicate the
literature's selection on the test split, to measure its inflation (see agiqa.data.splits), with
the model's seed-code rule (agiqa.train.selection). Outputs in ``out_dir``:
``predictions.csv`` (test), ``val_predictions.csv``, ``metrics.json``, ``history.csv``,
``config.yaml`` (resolved, with provenance) and ``checkpoint.pt`` (the trained parameters of the
best epoch; frozen backbone weights come from the backbone's own source). A rule that selects PLCC
separately (SCVA-AGIQA's) adds ``predictions_best_plcc.csv``: the test predictions of the epoch
with the best test PLCC, as evaluated during that epoch.

``metrics.json`` scores use the 4-parameter logistic; the tables recompute every metric from the
prediction files with the mapping the config selects.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import pickle
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import yaml
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader, Dataset, Subset

from agiqa.data.manifest import Manifest
from agiqa.data.splits import Protocol, read_split
from agiqa.describe.runner import read_descriptions
from agiqa.errors import ConfigError, DataError
from agiqa.evaluate.metrics import compute_metrics
from agiqa.models import AgiqaModel, build_model, trainable_parameter_count
from agiqa.models.base import PartData, PredictionDetails
from agiqa.provenance import file_sha256, provenance
from agiqa.train import recipe
from agiqa.train.checkpoint import save_checkpoint, trained_state
from agiqa.train.data import FeatureDataset, ImageTextDataset, ManifestImages, normalised_targets
from agiqa.train.feature_cache import FeatureCache
from agiqa.train.recipe import AMP_MODES, OPTIMIZERS, SCHEDULES
from agiqa.train.selection import RULES, selection_rule

if TYPE_CHECKING:
    from agiqa.track.live import LiveRun

log = logging.getLogger(__name__)

RESUME_FILE = "resume.pt"
VAL_PREDICTIONS = "val_predictions.csv"
#: Test predictions of the best-PLCC epoch, written only by rules that select PLCC separately.
BEST_PLCC_PREDICTIONS = "predictions_best_plcc.csv"
#: The logistic mapping behind metrics.json's plcc_logistic / rmse_logistic.
JOB_LOGISTIC = "logistic4"


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings of a model's ``train`` config entry."""

    epochs: int = 10
    batch_size: int = 32
    eval_batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-4
    #: adamw or adam (agiqa.train.recipe).
    optimizer: str = "adamw"
    #: Adam's (beta1, beta2).
    betas: tuple[float, float] = (0.9, 0.999)
    #: Exclude biases and 1-D parameters from weight decay.
    no_decay: bool = False
    #: constant, cosine or step (with milestones, in epochs, and gamma).
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    #: Linear warmup in epochs; when None, warmup_ratio of all steps.
    warmup_epochs: float | None = None
    warmup_ratio: float = 0.05
    #: Maximum gradient norm; 0 turns clipping off.
    grad_clip: float = 1.0
    patience: int = 5
    #: DataLoader workers; None = the job's threads on GPU, 0 (in-process) on CPU.
    num_workers: int | None = None
    #: Mixed precision on GPU: bf16, fp16 (with a gradient scaler) or off (true/false: bf16/off).
    amp: str | bool = "bf16"
    #: Train on cached frozen-encoder features when the model's encoders are frozen.
    feature_cache: bool = True
    #: Decode each image once per job and keep it in memory, shrunk to this short side.
    decode_cache: bool = True
    decode_cache_short_side: int | None = 256
    #: Epoch-selection rule of the test-selection protocols (agiqa.train.selection); None: the
    #: model type's seed code. Honest protocols always select with agiqa's rule on validation.
    replica_selection: str | None = None

    @classmethod
    def from_config(cls, config: dict | None) -> TrainSettings:
        config = dict(config or {})
        unknown = set(config) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown train settings {sorted(unknown)}")
        if "milestones" in config:
            config["milestones"] = tuple(config["milestones"])
        if "betas" in config:
            betas = config["betas"]
            if not isinstance(betas, list | tuple) or len(betas) != 2:
                raise ConfigError(f"train.betas must be two numbers; got {betas!r}")
            config["betas"] = tuple(float(b) for b in betas)
            if not all(0.0 <= b < 1.0 for b in config["betas"]):
                raise ConfigError(f"train.betas must lie in [0, 1); got {betas!r}")
        settings = cls(**config)
        for name in ("lr", "weight_decay", "warmup_ratio", "grad_clip", "gamma"):
            if not isinstance(getattr(settings, name), int | float):
                raise ConfigError(f"train.{name} must be a number (YAML needs 1.0e-4, not 1e-4)")
        if settings.optimizer not in OPTIMIZERS:
            raise ConfigError(f"train.optimizer must be one of {OPTIMIZERS}")
        if settings.schedule not in SCHEDULES:
            raise ConfigError(f"train.schedule must be one of {SCHEDULES}")
        if not isinstance(settings.amp, bool) and settings.amp not in AMP_MODES:
            raise ConfigError(f"train.amp must be one of {sorted(AMP_MODES)}")
        if settings.replica_selection is not None:
            RULES.get(settings.replica_selection)  # a ConfigError naming the known rules
        return settings


@dataclass(frozen=True)
class FoldJob:
    """Everything that determines a fold's result."""

    dataset: str
    root: str
    manifest: str
    splits: str
    split: int
    protocol: str
    model_name: str
    model_config: dict
    out_dir: str
    seed: int = 0
    threads: int = 1
    device: str = "auto"
    feature_cache_dir: str = "resources/features"
    #: Decoded-image cache shared by every job (agiqa.train.image_cache); None: decode per job.
    image_cache_dir: str | None = None
    #: Table of VLM descriptions (image, description, status) for description-reading models.
    descriptions: str | None = None
    #: The protocol's resolved settings (agiqa.data.splits.Protocol.settings()).
    protocol_settings: dict = field(default_factory=lambda: Protocol().settings())
    #: Folders that symlinked images may point into (the dataset entry's allowed_link_roots).
    allowed_link_roots: tuple[str, ...] = ()

    @property
    def protocol_spec(self) -> Protocol:
        return Protocol.from_config(self.protocol_settings)

    def resolved_config(self) -> dict:
        return {
            "dataset": {"name": self.dataset, "root": self.root, "manifest": self.manifest},
            "protocol": {
                "name": self.protocol,
                **self.protocol_settings,
                "splits": self.splits,
                "split": self.split,
            },
            "model": {"name": self.model_name, **self.model_config},
            "seed": self.seed,
        }

    def config_hash(self) -> str:
        """What the result depends on in the config; all splits of one configuration share it."""
        config = self.resolved_config()
        for key in ("splits", "split"):
            del config["protocol"][key]
        return _short_hash(config)

    def resume_key(self) -> str:
        """A resume.pt is only valid for this exact job and these exact input files."""
        manifest_meta = Path(self.manifest).with_suffix(".json")
        return _short_hash(
            {
                "config": self.config_hash(),
                "split": self.split,
                "split_file": file_sha256(self.splits),
                "manifest": file_sha256(self.manifest),
                "dimensions": file_sha256(manifest_meta) if manifest_meta.exists() else None,
            }
        )


def _short_hash(value: object) -> str:
    canonical = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def choose_device(requested: str, model_class_uses_gpu: bool) -> torch.device:
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"the config asks for device '{requested}' but this machine has no usable CUDA "
            "device (torch.cuda.is_available() is False). Set `device: auto` (a GPU when "
            "present, else the CPU) or `device: cpu`."
        )
    if requested != "auto":
        return torch.device(requested)
    if model_class_uses_gpu and torch.cuda.is_available():
        return torch.device("cuda")
    if model_class_uses_gpu:
        log.info("no GPU available: running on CPU")
    return torch.device("cpu")


def trained_dimensions(manifest: Manifest, model_config: dict, model_name: str) -> tuple:
    """The manifest dimensions a model trains on and predicts (its entry's ``dimensions``).

    Epochs are selected on these dimensions only; the default is every rated dimension.
    """
    wanted = model_config.get("dimensions")
    if wanted is None:
        return manifest.dimensions
    known = {dim.name: dim for dim in manifest.dimensions}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ConfigError(
            f"model '{model_name}': dimensions {unknown} are not rated in {manifest.dataset} "
            f"(it rates {list(known)})"
        )
    return tuple(known[name] for name in wanted)


def split_parts(manifest: Manifest, roles: pd.Series, splits_path: str) -> dict[str, pd.DataFrame]:
    """Join the manifest's labelled rows with the split roles; refuse a stale split file."""
    frame = manifest.frame.copy()
    frame["manifest_row"] = np.arange(len(frame)) + 2
    labelled = frame[frame["labelled"]]
    missing = labelled.loc[~labelled["image"].isin(roles.index), "image"]
    extra = roles.index.difference(labelled["image"])
    if len(missing) or len(extra):
        example = missing.iloc[0] if len(missing) else extra[0]
        raise DataError(
            f"split file does not match the manifest ({len(missing)} labelled images missing, "
            f"{len(extra)} unknown images, e.g. '{example}'): rebuild the split file",
            file=splits_path,
        )
    role = labelled["image"].map(roles)
    return {
        name: labelled[role == name].reset_index(drop=True) for name in ("train", "val", "test")
    }


class FoldTrainer:
    """Trains and evaluates one model on one split."""

    def __init__(self, job: FoldJob) -> None:
        self.job = job
        self.manifest = Manifest.load(job.manifest)
        self.dimensions = trained_dimensions(self.manifest, job.model_config, job.model_name)
        self.settings = TrainSettings.from_config(job.model_config.get("train"))
        seed_everything(job.seed)
        self.model: AgiqaModel = build_model(job.model_config, self.dimensions)
        self.device = choose_device(job.device, type(self.model).uses_gpu)
        self.model.to(self.device)
        self.amp = recipe.amp_dtype(self.settings.amp, self.device)
        roles = read_split(job.splits, job.split)
        self.parts = split_parts(self.manifest, roles, job.splits)
        #: The part the best epoch is selected on (``test`` only in the inflation replicas).
        self.selection = job.protocol_spec.selection
        #: How the epoch is chosen on that part (agiqa's rule on val, the seed code's on test).
        self.rule = selection_rule(
            self.selection, job.model_config["type"], self.settings.replica_selection
        )
        if self.selection == "val" and type(self.model).trainable and not len(self.parts["val"]):
            raise DataError(
                f"split {job.split} has no validation images to select on", file=job.splits
            )
        self.history: list[dict] = []
        #: Called with each epoch's history row as soon as it is known (live MLflow logging).
        self.epoch_hooks: list[Callable[[dict], None]] = []
        #: The selection state of the last ``train`` (None before, or for untrained models).
        self.progress: Progress | None = None
        #: The last evaluation's per-sample (outputs, rows) of each part, for prediction_details.
        self.outputs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.training_data: PartData | None = None
        #: Each part as models see it (``calibrate`` gets the validation part from here).
        self.part_data: dict[str, PartData] = {}
        self.cache: FeatureCache | None = None
        self.datasets = self.build_datasets()

    def build_datasets(self) -> dict[tuple[str, bool], Dataset]:
        """(part, train) -> dataset: cached features when the encoders are frozen, else images."""
        key = self.model.feature_key() if self.settings.feature_cache else None
        if key is not None:
            self.cache = FeatureCache(self.job.feature_cache_dir, key)
            log.info("frozen encoders: training on cached features (%s)", key)
        datasets: dict[tuple[str, bool], Dataset] = {}
        training: PartData | None = None
        for part in ("train", "val", "test"):  # train first: the others may draw on it
            frame = self.parts[part]
            targets = normalised_targets(frame, self.dimensions)
            images = ManifestImages(
                frame, self.job.root, self.manifest.source, self.job.allowed_link_roots
            )
            if self.cache is not None:
                prompts = frame["prompt"].tolist()
                tokens = self.model.tokenize(prompts, self.descriptions_of(frame))
                features = self.cached_features(images, prompts, tokens)
                # Token ids are cheap and may feed a trained prompt encoder: never cached.
                features["tokens"] = tokens
                datasets[part, True] = datasets[part, False] = FeatureDataset(features, targets)
                # Described anyway: calibrate() gets the parts whatever the path.
                self.part_data[part] = PartData(part, frame, images, targets, None)
                training = training or self.part_data[part]
                continue
            decoded = None
            if self.settings.decode_cache:
                short_side = self.settings.decode_cache_short_side
                decoded = images.preload(short_side, self.job.threads, self.job.image_cache_dir)
            data = PartData(
                part, frame, images, targets, self.descriptions_of(frame), decoded, training
            )
            self.part_data[part] = data
            training = training or data
            # Only the training part is ever iterated in training mode; building the others so
            # would ask a pair model (deqa) for pairs in cross_train's empty test part.
            for train in (True, False) if part == "train" else (False,):
                datasets[part, train] = self.model.make_dataset(data, train=train)
        self.training_data = training
        return datasets

    def descriptions_of(self, frame: pd.DataFrame) -> list[str] | None:
        """One description per row ("" when none) for models that read them, else None."""
        if not type(self.model).uses_descriptions:
            return None
        if self.job.descriptions is None:
            log.info("no describer configured: the model sees no descriptions")
            return [""] * len(frame)
        # Failed rows keep an empty description: the model's "no description" fallback.
        lookup = read_descriptions(self.job.descriptions, require_complete=False)
        missing = int((~frame["image"].isin(lookup)).sum())
        if missing:
            log.warning("%d images have no description in %s", missing, self.job.descriptions)
        return [lookup.get(image, "") for image in frame["image"]]

    def cached_features(
        self, images: ManifestImages, prompts: list[str], tokens: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        assert self.cache is not None
        transform = self.model.image_transform(train=False)

        def encode_rows(rows: list[int]) -> dict[str, torch.Tensor]:
            dataset = ImageTextDataset(images, transform, tokens, np.zeros((len(prompts), 1)))
            loader = self.make_loader(Subset(dataset, rows), train=False)
            chunks: dict[str, list[torch.Tensor]] = {}
            self.model.eval()
            with torch.no_grad():
                for inputs, _, _ in loader:
                    with self.autocast():
                        encoded = self.model.encode(*self.to_device(inputs).values())
                    for kind, value in encoded.items():
                        chunks.setdefault(kind, []).append(value.float().cpu())
            return {kind: torch.cat(values) for kind, values in chunks.items()}

        uses_text = bool(getattr(self.model, "uses_text", True))
        return self.cache.features(images.paths, prompts, encode_rows, uses_text)

    def make_loader(self, dataset: Dataset, train: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.job.seed + len(self.history))
        workers = self.settings.num_workers
        if workers is None:  # one loader worker per job thread on GPU; the CPU needs them all
            workers = self.job.threads if self.device.type == "cuda" else 0
        if workers and isinstance(dataset, ImageTextDataset):
            dataset.prepare()  # before the workers fork, so that they share the crops
        return DataLoader(
            dataset,
            batch_size=self.settings.batch_size if train else self.settings.eval_batch_size,
            shuffle=train,
            drop_last=train and len(dataset) > self.settings.batch_size,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            generator=generator,
            collate_fn=self.model.collate,
        )

    def loader(self, part: str, train: bool) -> DataLoader:
        return self.make_loader(self.datasets[part, train], train)

    def to_device(self, value):
        """Tensors (also inside dicts, lists and tuples) moved to the job's device."""
        if isinstance(value, torch.Tensor):
            return value.to(self.device, non_blocking=True)
        if isinstance(value, dict):
            return {k: self.to_device(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.to_device(v) for v in value)
        return value

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.forward_batch(self.to_device(inputs))

    def autocast(self):
        return recipe.autocast(self.amp, self.device)

    @torch.no_grad()
    def run_outputs(self, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample outputs of a dataset the model built, in eval mode, and their rows."""
        self.model.eval()
        outputs, rows = [], []
        for inputs, _, index in self.make_loader(dataset, train=False):
            with self.autocast():
                pred = self.forward(inputs)
            outputs.append(pred.float().cpu().numpy())
            rows.append(np.asarray(index))
        if not outputs:
            return np.zeros((0, len(self.dimensions)), dtype=np.float32), np.zeros(0, dtype=int)
        return np.concatenate(outputs), np.concatenate(rows)

    @torch.no_grad()
    def predict(self, part: str) -> np.ndarray:
        """Normalised predictions for a part, in its row order, clipped to the scale [0, 1].

        Clipping is monotone (rank metrics barely change) and keeps RMSE and PLCC on the
        dimension's own scale: a model may output 6.0 on a 0-5 scale, no rater can.
        """
        outputs, rows = self.run_outputs(self.datasets[part, False])
        self.outputs[part] = (outputs, rows)
        n_rows = len(self.parts[part])
        if not len(rows):
            return np.zeros((n_rows, len(self.dimensions)), dtype=np.float32)
        predictions = self.model.reduce_predictions(outputs, rows, n_rows)
        if np.isnan(predictions).any():
            raise RuntimeError(f"{type(self.model).__name__} left {part} rows without a prediction")
        return np.clip(predictions, 0.0, 1.0)

    def calibrate(self) -> None:
        """The model's post-training fit (AgiqaModel.calibrate): the training part, and the
        validation part where the split has one."""
        if self.training_data is not None:
            validation = self.part_data.get("val")
            if validation is not None and not len(validation.frame):
                validation = None
            self.model.calibrate(self.training_data, self.run_outputs, validation)

    def details(self, part: str) -> PredictionDetails:
        """The model's extra columns and metrics for the part's last prediction."""
        outputs, rows = self.outputs.get(part, (None, None))
        if outputs is None or not len(rows):
            return PredictionDetails()
        return self.model.prediction_details(self.parts[part], outputs, rows)

    def evaluate(self, part: str, predictions: np.ndarray) -> dict[str, dict[str, float]]:
        frame = self.parts[part]
        results = {}
        for column, dim in enumerate(self.dimensions):
            native = dim.denormalise(predictions[:, column].astype(np.float64))
            target = frame[dim.mos_column].to_numpy(float)
            results[dim.name] = compute_metrics(native, target, logistic=JOB_LOGISTIC)
        return results

    def train(self) -> int | None:
        """Run the epochs; return the best epoch (1-based) the selection rule chose.

        A checkpoint (``resume.pt``) is written after every epoch; a rerun of the same job
        continues from it and ends with the same result as an uninterrupted run. SIGTERM or
        SIGUSR1 (a scheduler's preemption notice) stops at the next batch with ``Preempted``.
        """
        if not type(self.model).trainable:
            return None
        if self.model.fit(self.training_batches(), self.part_data["train"]):
            return None  # fitted in closed form: no epochs, nothing to select
        settings = self.settings
        optimizer, scheduler = self.optimization()
        progress = self.resume(optimizer, scheduler)
        self.progress = progress
        with StopOnSignal() as stop:
            while not progress.finished and len(self.history) < settings.epochs:
                self.run_epoch(optimizer, scheduler, progress, stop)
                self.save_resume(optimizer, scheduler, progress)
                if stop.requested:
                    raise Preempted(f"stopped by signal after epoch {len(self.history)}")
        if progress.best_state is not None:
            self.model.load_state_dict(progress.best_state, strict=False)
        return progress.best_epoch

    def training_batches(self) -> Iterator[tuple[dict, Any, np.ndarray]]:
        """Every training sample once, in order and eval mode, for ``AgiqaModel.fit``."""
        self.model.eval()
        with torch.no_grad():
            for inputs, targets, rows in self.loader("train", train=False):
                yield self.to_device(inputs), targets, np.asarray(rows)

    def optimization(self) -> tuple[torch.optim.Optimizer, LRScheduler]:
        """The optimizer and per-step schedule of the model's recipe (agiqa.train.recipe)."""
        settings = self.settings
        groups = recipe.parameter_groups(self.model, settings.weight_decay, settings.no_decay)
        optimizer = recipe.make_optimizer(settings.optimizer, groups, settings.lr, settings.betas)
        steps_per_epoch = max(1, len(self.loader("train", train=True)))
        total = settings.epochs * steps_per_epoch
        scheduler = recipe.make_scheduler(
            optimizer,
            schedule=settings.schedule,
            total_steps=total,
            steps_per_epoch=steps_per_epoch,
            warmup_steps=recipe.warmup_steps(
                settings.warmup_epochs, settings.warmup_ratio, steps_per_epoch, total
            ),
            milestones=settings.milestones,
            gamma=settings.gamma,
        )
        # fp16 needs loss scaling; bf16 and fp32 do not (the scaler is then a no-op).
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp is torch.float16)
        return optimizer, scheduler

    def run_epoch(
        self,
        optimizer: torch.optim.Optimizer,
        scheduler: LRScheduler,
        progress: Progress,
        stop: StopOnSignal,
    ) -> None:
        epoch = len(self.history) + 1
        started = time.perf_counter()
        loss = self.train_epoch(optimizer, scheduler, stop)
        part = self.selection
        predictions = self.predict(part)
        scores = self.evaluate(part, predictions)
        score = self.rule.score(scores, self.dimensions, "srcc")
        row = {"epoch": epoch, "train_loss": loss, self.selection_column: score}
        if self.rule.separate_plcc:
            row[self.plcc_column] = self.rule.score(scores, self.dimensions, "plcc")
        self.history.append(
            row | {"lr": scheduler.get_last_lr()[0], "seconds": time.perf_counter() - started}
        )
        log.info(
            "epoch %d/%d loss %.4f %s %.4f",
            epoch,
            self.settings.epochs,
            loss,
            self.selection_column,
            score,
        )
        for hook in self.epoch_hooks:
            hook(self.history[-1])
        self.select(epoch, score, row.get(self.plcc_column), predictions, progress)

    def select(
        self,
        epoch: int,
        score: float,
        plcc_score: float | None,
        predictions: np.ndarray,
        progress: Progress,
    ) -> None:
        """Keep this epoch if the rule prefers it; stop early if the rule says so."""
        if self.rule.last or score > progress.best_score:
            progress.best_score, progress.best_epoch = score, epoch
            progress.best_state = copy.deepcopy(trained_state(self.model))
        elif self.rule.early_stop and epoch - (progress.best_epoch or 0) >= self.settings.patience:
            patience = self.settings.patience
            log.info("early stop: no %s improvement for %d epochs", self.selection, patience)
            progress.finished = True
        if plcc_score is not None and plcc_score > progress.best_plcc_score:
            progress.best_plcc_score, progress.best_plcc_epoch = plcc_score, epoch
            progress.best_plcc_predictions = torch.from_numpy(predictions.copy())

    @property
    def selection_column(self) -> str:
        """History column of the selection score: the part it was measured on and what it
        averages (``mean`` over the trained dimensions, or the rule's dimension kind)."""
        return f"{self.selection}_srcc_{self.scored_kind}"

    @property
    def plcc_column(self) -> str:
        """History column of the separately selected PLCC (rules with ``separate_plcc``)."""
        return f"{self.selection}_plcc_{self.scored_kind}"

    @property
    def scored_kind(self) -> str:
        scored = self.rule.dimensions(self.dimensions)
        return self.rule.kind if self.rule.kind and len(scored) < len(self.dimensions) else "mean"

    @property
    def resume_path(self) -> Path:
        return Path(self.job.out_dir) / RESUME_FILE

    def save_resume(
        self, optimizer: torch.optim.Optimizer, scheduler: LRScheduler, progress: Progress
    ) -> None:
        # Plain types and tensors only, so that resuming can load with weights_only=True.
        state = {
            "resume_key": self.job.resume_key(),
            "model": trained_state(self.model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": self.history,
            "progress": asdict(progress),
            "rng": rng_states(),
        }
        self.resume_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.resume_path.with_suffix(".tmp")
        torch.save(state, temporary)
        os.replace(temporary, self.resume_path)  # a kill mid-write never leaves a torn file

    def resume(self, optimizer: torch.optim.Optimizer, scheduler: LRScheduler) -> Progress:
        if not self.resume_path.exists():
            return Progress()
        try:  # never unpickle: a planted file must not run code
            state = torch.load(self.resume_path, weights_only=True, map_location="cpu")
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
            log.warning(
                "ignoring %s: it does not load as plain tensors and types (%s); starting afresh",
                self.resume_path,
                str(error).splitlines()[0][:200],
            )
            return Progress()
        if not isinstance(state, dict) or state.get("resume_key") != self.job.resume_key():
            log.warning(
                "ignoring %s: it was written for another configuration, split file or manifest; "
                "starting afresh",
                self.resume_path,
            )
            return Progress()
        self.model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.history = state["history"]
        restore_rng_states(state["rng"])
        log.info("resumed from %s after epoch %d", self.resume_path, len(self.history))
        return Progress(**state["progress"])

    def train_epoch(
        self,
        optimizer: torch.optim.Optimizer,
        scheduler: LRScheduler,
        stop: StopOnSignal | None = None,
    ) -> float:
        self.model.train()
        total, count = 0.0, 0
        for inputs, targets, rows in self.loader("train", train=True):
            if stop is not None and stop.requested:
                # The partial epoch is dropped; the rerun repeats it from the last checkpoint.
                raise Preempted(f"stopped by signal during epoch {len(self.history) + 1}")
            with self.autocast():
                pred = self.forward(inputs)
                loss = self.model.loss(pred.float(), self.to_device(targets))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()}")
            optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.settings.grad_clip > 0:
                self.scaler.unscale_(optimizer)
                recipe.clip_gradients(self.model.parameters(), self.settings.grad_clip)
            self.scaler.step(optimizer)
            self.scaler.update()
            scheduler.step()
            total += loss.item() * len(rows)
            count += len(rows)
        return total / max(count, 1)


class Preempted(Exception):
    """A scheduler signal stopped training; the last epoch's checkpoint is on disk."""


@dataclass
class Progress:
    """Model selection state carried across epochs (and across a resume)."""

    best_score: float = -math.inf
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] | None = None
    finished: bool = False
    #: The separately selected PLCC (rules with ``separate_plcc``): score, epoch, and the
    #: selection part's normalised predictions of that epoch.
    best_plcc_score: float = -math.inf
    best_plcc_epoch: int | None = None
    best_plcc_predictions: torch.Tensor | None = None


class StopOnSignal:
    """Turn SIGTERM/SIGUSR1 into a flag the training loop checks after every batch."""

    signals = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, number: int, frame: object) -> None:
        log.warning("received signal %d: stopping after the current batch", number)
        self.requested = True

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for number in self.signals:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)  # type: ignore[arg-type]


def rng_states() -> dict:
    """Generator states as tensors and plain types (loadable with weights_only=True)."""
    algorithm, keys, position, has_gauss, cached = np.random.get_state()
    version, python_state, gauss = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "algorithm": str(algorithm),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": [version, list(python_state), gauss],
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    saved = states["numpy"]
    np.random.set_state(
        (
            saved["algorithm"],
            saved["keys"].numpy().astype(np.uint32),
            saved["position"],
            saved["has_gauss"],
            saved["cached_gaussian"],
        )
    )
    version, python_state, gauss = states["python"]
    random.setstate((version, tuple(python_state), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def prediction_frame(trainer: FoldTrainer, part: str, predictions: np.ndarray) -> pd.DataFrame:
    """image, split, then ``pred_<dim>`` and ``target_<dim>`` on the native scale."""
    frame = trainer.parts[part]
    table = pd.DataFrame({"image": frame["image"], "split": trainer.job.split})
    for column, dim in enumerate(trainer.dimensions):
        table[f"pred_{dim.name}"] = dim.denormalise(predictions[:, column].astype(np.float64))
        table[f"target_{dim.name}"] = frame[dim.mos_column].to_numpy(float)
    return table


def run_config(trainer: FoldTrainer) -> dict:
    """The run's resolved config with its training settings and provenance (``config.yaml``)."""
    job = trainer.job
    config = job.resolved_config()
    config["model"]["train"] = asdict(trainer.settings)
    config["provenance"] = provenance(job.splits, job.manifest)
    # Plain YAML types: what config.yaml holds, and what MLflow's params are made from.
    return yaml.safe_load(yaml.safe_dump(config, sort_keys=False))


def write_outputs(trainer: FoldTrainer, best_epoch: int | None, seconds: float) -> dict:
    job, out = trainer.job, Path(trainer.job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    test_pred = trainer.predict("test")
    # Empty (header only) for a split without a test part (cross-dataset training).
    test_metrics = trainer.evaluate("test", test_pred) if len(test_pred) else {}
    details = {"test": trainer.details("test")}
    test_frame = prediction_frame(trainer, "test", test_pred)
    test_frame.assign(**details["test"].columns).to_csv(out / "predictions.csv", index=False)
    # Empty (header only) for protocols without a validation part.
    val_pred = trainer.predict("val")
    val_metrics = trainer.evaluate("val", val_pred) if len(val_pred) else {}
    details["val"] = trainer.details("val")
    val_frame = prediction_frame(trainer, "val", val_pred).assign(**details["val"].columns)
    val_frame.to_csv(out / VAL_PREDICTIONS, index=False)
    scored = [trainer.selection_column]
    scored += [trainer.plcc_column] if trainer.rule.separate_plcc else []
    history = pd.DataFrame(
        trainer.history, columns=["epoch", "train_loss", *scored, "lr", "seconds"]
    )
    history.to_csv(out / "history.csv", index=False)
    best_plcc = write_best_plcc(trainer, out)
    config = run_config(trainer)
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    # Self-contained (model entry, dimensions, preprocessing, frozen-weight fingerprint), so
    # `agiqa score` needs no manifest or config; plain types and tensors for weights_only=True.
    save_checkpoint(trainer, config, best_epoch, out)
    metrics = {
        "dataset": job.dataset,
        "model": job.model_name,
        "protocol": job.protocol,
        "protocol_settings": job.protocol_settings,
        "selection": trainer.selection,
        "selection_rule": trainer.rule.name,
        "selection_dimensions": [d.name for d in trainer.rule.dimensions(trainer.dimensions)],
        "split": job.split,
        "n_train": len(trainer.parts["train"]),
        "n_val": len(trainer.parts["val"]),
        "n_test": len(trainer.parts["test"]),
        "best_epoch": best_epoch,
        "best_plcc_epoch": best_plcc,
        "epochs_run": len(trainer.history),
        "seconds": seconds,
        "device": str(trainer.device),
        "trainable_parameters": trainable_parameter_count(trainer.model),
        "config_hash": job.config_hash(),
        "provenance": config["provenance"],
        "logistic": JOB_LOGISTIC,
        "test": test_metrics,
        "val": val_metrics,
    }
    if any(found.metrics for found in details.values()):
        metrics["details"] = {part: found.metrics for part, found in details.items()}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=True) + "\n")
    return metrics


def write_best_plcc(trainer: FoldTrainer, out: Path) -> int | None:
    """``predictions_best_plcc.csv`` of a rule that selects PLCC separately; returns its epoch.

    Any older copy is removed otherwise, so that the tables never read a stale one.
    """
    path = out / BEST_PLCC_PREDICTIONS
    path.unlink(missing_ok=True)
    progress = trainer.progress
    if progress is None or progress.best_plcc_predictions is None:
        return None
    predictions = progress.best_plcc_predictions.numpy()
    prediction_frame(trainer, trainer.selection, predictions).to_csv(path, index=False)
    return progress.best_plcc_epoch


def run_fold(job: FoldJob, live: LiveRun | None = None) -> dict:
    """Train, select on val, evaluate on test and write the fold's outputs.

    With ``live`` (agiqa.track.live), the run is logged to MLflow as it trains: params at the
    start, each epoch's history row, the final metrics, files and status.
    """
    torch.set_num_threads(max(1, job.threads))
    started = time.perf_counter()
    trainer = FoldTrainer(job)
    log.info(
        "%s on %s (%s split %d): %d train / %d val / %d test images, %d trainable parameters, %s",
        job.model_name,
        job.dataset,
        job.protocol,
        job.split,
        *(len(trainer.parts[p]) for p in ("train", "val", "test")),
        trainable_parameter_count(trainer.model),
        trainer.device,
    )
    if live is not None:
        live.start(trainer, run_config(trainer))
        trainer.epoch_hooks.append(live.epoch)
    try:
        best_epoch = trainer.train()
        trainer.calibrate()
        metrics = write_outputs(trainer, best_epoch, time.perf_counter() - started)
    except BaseException as error:
        if live is not None:
            live.fail("KILLED" if isinstance(error, Preempted) else "FAILED")
        raise
    trainer.resume_path.unlink(missing_ok=True)  # done: a rerun must start afresh
    for dim, values in metrics["test"].items():
        log.info("test %s: %s", dim, ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
    if live is not None:
        live.finish(metrics, Path(job.out_dir))
    return metrics
