"""Training throughput of our path against a plain fp32 reference loop on the same model and data.

Our path is the fold trainer: frozen-encoder features computed once and cached (when the model's
encoders are frozen), images decoded once per job, AMP on GPU, pinned memory and loader workers.
The reference decodes every image from disk at every step and runs the whole model in fp32.
Both train the same model for the same number of epochs over the same synthetic images; the
cached path's time includes computing its features from an empty cache ("cold"), and a second
run shows the warm cache that later folds and configs see.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from agiqa.data.manifest import Manifest
from agiqa.data.readers import read_dataset
from agiqa.data.splits import Protocol, make_splits, read_split, write_splits
from agiqa.data.synthetic import generate
from agiqa.models import build_model
from agiqa.train.data import ImageTextDataset, ManifestImages, normalised_targets
from agiqa.train.fold import (
    FoldJob,
    FoldTrainer,
    TrainSettings,
    choose_device,
    seed_everything,
    split_parts,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchResult:
    name: str
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds


def prepare_data(folder: Path, n_images: int, image_size: int) -> tuple[Path, Path, Path]:
    """Synthetic images, their manifest and a split whose part 0 trains on 80% of them."""
    root = folder / "images"
    generate(root, n_prompts=max(5, n_images // 4), images_per_prompt=4, image_size=image_size)
    manifest = read_dataset("agiqa-3k", root, dataset="bench")
    manifest_path = folder / "manifest.csv"
    manifest.save(manifest_path)
    splits = make_splits(manifest.labelled(), Protocol(type="image_split", folds=5))
    splits_path = folder / "splits.csv"
    write_splits(splits, splits_path)
    return root, manifest_path, splits_path


def time_ours(job: FoldJob, epochs: int) -> BenchResult:
    started = time.perf_counter()
    trainer = FoldTrainer(job)  # decodes images or computes/loads cached features
    optimizer, scheduler = trainer.optimization()
    for _ in range(epochs):
        trainer.train_epoch(optimizer, scheduler)
    _synchronise(trainer.device)
    images = epochs * len(trainer.parts["train"])
    return BenchResult("ours", images, time.perf_counter() - started)


def time_reference(job: FoldJob, epochs: int) -> BenchResult:
    """A plain loop: decode from disk every step, full forward, fp32, no workers, no caches."""
    manifest = Manifest.load(job.manifest)
    frame = split_parts(manifest, read_split(job.splits, job.split), job.splits)["train"]
    batch_size = TrainSettings.from_config(job.model_config.get("train")).batch_size
    started = time.perf_counter()
    seed_everything(job.seed)
    model = build_model(job.model_config, manifest.dimensions)
    device = choose_device(job.device, type(model).uses_gpu)
    model.to(device).train()
    dataset = ImageTextDataset(
        ManifestImages(frame, job.root, manifest.source),
        model.image_transform(train=True),
        model.tokenize(frame["prompt"].tolist()),
        normalised_targets(frame, manifest.dimensions),
    )
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    for _ in range(epochs):
        for inputs, targets, _ in loader:
            pred = model(inputs["images"].to(device), inputs["tokens"].to(device))
            loss = model.loss(pred, targets.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    _synchronise(device)
    return BenchResult("reference", epochs * len(frame), time.perf_counter() - started)


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_bench(
    model_name: str,
    model_config: dict,
    *,
    device: str = "cpu",
    epochs: int = 5,
    n_images: int = 160,
    image_size: int = 64,
    threads: int = 2,
    repeats: int = 3,
) -> list[BenchResult]:
    """Time the reference and ours (cold, then warm cache); keep each one's best of ``repeats``.

    The best of several runs is the usual way to read a timing on a shared, noisy machine.
    """
    torch.set_num_threads(threads)
    timings: dict[str, list[BenchResult]] = {}
    with tempfile.TemporaryDirectory(prefix="agiqa-bench-") as folder:
        root, manifest, splits = prepare_data(Path(folder), n_images, image_size)
        for attempt in range(repeats):
            job = FoldJob(
                dataset="bench",
                root=str(root),
                manifest=str(manifest),
                splits=str(splits),
                split=0,
                protocol="image_split",
                model_name=model_name,
                model_config=model_config,
                out_dir=str(Path(folder) / "run"),
                threads=threads,
                device=device,
                feature_cache_dir=str(Path(folder) / f"features{attempt}"),
            )
            runs = [
                time_reference(job, epochs),
                replace(time_ours(job, epochs), name="ours (cold cache)"),
                replace(time_ours(job, epochs), name="ours (warm cache)"),
            ]
            for run in runs:
                timings.setdefault(run.name, []).append(run)
    return [min(runs, key=lambda r: r.seconds) for runs in timings.values()]
