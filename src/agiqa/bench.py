"""Training throughput of our path against a plain fp32 reference loop on the same model and data.

Our path is the fold trainer: frozen-encoder features computed once and cached (when the model's
encoders are frozen), images decoded once per job, AMP on GPU, pinned memory and loader workers.
The reference decodes every image from disk at every step and runs the whole model in fp32.
Both train the same model for the same number of epochs over the same synthetic images; the
cached path's time includes computing its features from an empty cache ("cold"), and a second
run shows the warm cache that later folds and configs see.

``bench_images`` (``agiqa bench --data ROOT``) times the image path alone on a real dataset: the
shared decoded-image cache (cold and warm) against a plain PIL loop that decodes and resizes
every image at every epoch.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from agiqa.data.manifest import Manifest
from agiqa.data.readers import read_dataset
from agiqa.data.splits import Protocol, make_splits, read_split, write_splits
from agiqa.data.synthetic import generate
from agiqa.errors import ConfigError
from agiqa.models import build_model
from agiqa.models.base import PartData
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


def bench_job(
    folder: Path, model_name: str, model_config: dict, threads: int, device: str
) -> FoldJob:
    """The fold job of split 0 over the data ``prepare_data`` wrote into ``folder``."""
    return FoldJob(
        dataset="bench",
        root=str(folder / "images"),
        manifest=str(folder / "manifest.csv"),
        splits=str(folder / "splits.csv"),
        split=0,
        protocol="image_split",
        model_name=model_name,
        model_config=model_config,
        out_dir=str(folder / "run"),
        threads=threads,
        device=device,
    )


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
    """A plain loop: decode from disk every step, full forward, fp32, no workers, no caches.

    It draws the model's own training samples (``make_dataset``: SCVA's two crops per image,
    for instance), so both paths do the same work per image.
    """
    manifest = Manifest.load(job.manifest)
    frame = split_parts(manifest, read_split(job.splits, job.split), job.splits)["train"]
    batch_size = TrainSettings.from_config(job.model_config.get("train")).batch_size
    started = time.perf_counter()
    seed_everything(job.seed)
    model = build_model(job.model_config, manifest.dimensions)
    device = choose_device(job.device, type(model).uses_gpu)
    model.to(device).train()
    descriptions = [""] * len(frame) if type(model).uses_descriptions else None  # as the job's
    images = ManifestImages(frame, job.root, manifest.source)
    targets = normalised_targets(frame, manifest.dimensions)
    data = PartData("train", frame, images, targets, descriptions)  # nothing decoded ahead
    dataset = model.make_dataset(data, train=True)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=model.collate)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    for _ in range(epochs):
        for inputs, targets, _ in loader:
            pred = model.forward_batch({k: v.to(device) for k, v in inputs.items()})
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
        prepare_data(Path(folder), n_images, image_size)
        for attempt in range(repeats):
            job = replace(
                bench_job(Path(folder), model_name, model_config, threads, device),
                feature_cache_dir=str(Path(folder) / f"features{attempt}"),
                image_cache_dir=str(Path(folder) / f"images{attempt}"),
            )
            runs = [
                time_reference(job, epochs),
                replace(time_ours(job, epochs), name="ours (cold cache)"),
                replace(time_ours(job, epochs), name="ours (warm cache)"),
            ]
            for run in runs:
                timings.setdefault(run.name, []).append(run)
    return [min(runs, key=lambda r: r.seconds) for runs in timings.values()]


# --- the image path on real data (`agiqa bench --data ROOT`) ---------------------------------

#: OpenAI CLIP's normalisation, used by the ViT-L/14 and ViT-B/32 backbones of the paper grid.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_TRANSFORMS = ("clip", "uint8")


def image_transform(kind: str, size: int) -> Callable[[Image.Image], torch.Tensor]:
    """The per-image transform both paths apply, every epoch.

    ``clip`` is open_clip's eval transform (bicubic resize of the short side, centre crop, float
    tensor, normalisation), what agiqa's CLIP models run per image. ``uint8`` stops at a uint8
    tensor, as timm's loader does when it normalises whole batches on the GPU.
    """
    geometry = [T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)]
    if kind == "clip":
        return T.Compose([*geometry, T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])
    if kind == "uint8":
        return T.Compose([*geometry, T.PILToTensor()])
    raise ConfigError(f"unknown transform {kind!r}: one of {IMAGE_TRANSFORMS}")


class PlainImages(Dataset):
    """The reference image path: open, convert, resize and make a tensor at every access.

    Items have ImageTextDataset's form, so both paths share the loader and its collation.
    """

    def __init__(
        self, paths: Sequence[Path], transform: Callable[[Image.Image], torch.Tensor]
    ) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, int]:
        with Image.open(self.paths[index]) as image:
            pixels = self.transform(image.convert("RGB"))
        return {"images": pixels, "tokens": torch.zeros(1, dtype=torch.long)}, torch.zeros(1), index


def _iterate(dataset: Dataset, epochs: int, batch_size: int) -> int:
    """Run ``epochs`` passes of an in-process loader (the fold trainer's on CPU); images seen."""
    seen = 0
    for _ in range(epochs):
        for _, targets, _ in DataLoader(dataset, batch_size=batch_size, shuffle=True):
            seen += len(targets)
    return seen


def time_plain_images(
    images: ManifestImages, transform: Callable, epochs: int, batch_size: int
) -> BenchResult:
    started = time.perf_counter()
    seen = _iterate(PlainImages(images.paths, transform), epochs, batch_size)
    return BenchResult("plain PIL loop", seen, time.perf_counter() - started)


def time_agiqa_images(
    images: ManifestImages,
    transform: Callable,
    epochs: int,
    batch_size: int,
    *,
    short_side: int,
    threads: int,
    cache_dir: Path,
    name: str,
) -> BenchResult:
    """agiqa's path: the shared decoded-image cache, then the transform on in-memory images."""
    started = time.perf_counter()
    decoded = images.preload(short_side, threads, cache_dir)
    n = len(decoded)
    dataset = ImageTextDataset(
        images,
        transform,
        torch.zeros(n, 1, dtype=torch.long),
        np.zeros((n, 1), np.float32),
        decoded,
    )
    seen = _iterate(dataset, epochs, batch_size)
    return BenchResult(name, seen, time.perf_counter() - started)


def bench_images(
    root: str | Path,
    reader: str = "agiqa-3k",
    *,
    n_images: int | None = None,
    size: int = 224,
    short_side: int | None = None,
    transform: str = "clip",
    epochs: int = 3,
    batch_size: int = 32,
    threads: int = 2,
    repeats: int = 3,
) -> list[BenchResult]:
    """Images/s of the plain PIL loop, then agiqa's path from an empty and from a full cache.

    Every path turns the same images into the same tensors for ``epochs`` epochs; each runs
    ``repeats`` times (interleaved, so load changes hit all alike) and keeps its best time.

    Args:
        root: Dataset root in its official layout.
        reader: Dataset reader (``agiqa datasets list``).
        n_images: First N labelled images (default: all).
        size: Model input size (centre crop side).
        short_side: Cache size (default ``size``: the transform's resize is then a no-op).
        transform: ``clip`` or ``uint8`` (see ``image_transform``).
        epochs: Passes over the images per timed run.
        batch_size: Loader batch size.
        threads: Decoding threads of agiqa's path.
        repeats: Runs per path; the best is kept.
    """
    # One torch thread, as in a loader worker: per-image tensors are too small for the intra-op
    # pool, whose threads spin on a busy machine (2 threads made ToTensor 5-50x slower here).
    torch.set_num_threads(1)
    manifest = read_dataset(reader, root)
    frame = manifest.labelled().reset_index(drop=True)
    frame = frame if n_images is None else frame.iloc[:n_images]
    images = ManifestImages(frame, root, manifest.source)
    per_image = image_transform(transform, size)
    timings: dict[str, list[BenchResult]] = {}
    with tempfile.TemporaryDirectory(prefix="agiqa-bench-images-") as folder:
        for attempt in range(repeats):
            cached = partial(
                time_agiqa_images,
                images,
                per_image,
                epochs,
                batch_size,
                short_side=short_side or size,
                threads=threads,
                cache_dir=Path(folder) / f"images{attempt}",
            )
            runs = [
                time_plain_images(images, per_image, epochs, batch_size),
                cached(name="agiqa (cold cache)"),
                cached(name="agiqa (warm cache)"),
            ]
            for run in runs:
                timings.setdefault(run.name, []).append(run)
    return [min(runs, key=lambda r: r.seconds) for runs in timings.values()]


# --- multimodal LLMs (`agiqa bench --model deqa|depictqa_compare|mllm_zeroshot`) ---------------


@dataclass(frozen=True)
class PhaseResult:
    """One timed phase (training or scoring) of one path, with its peak GPU memory."""

    name: str
    images: int
    seconds: float
    #: Peak allocated GPU memory in GiB; None on the CPU.
    peak_gib: float | None = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds


def _timed_phase(name: str, images: int, device: torch.device, work: Callable[[], object]):
    """Run ``work`` and time it (device work included), recording peak GPU memory."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    work()
    _synchronise(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return PhaseResult(name, images, seconds, peak)


def _plain_parts(job: FoldJob, model: torch.nn.Module) -> dict:
    """Train and test parts as the plain loop sees them: no decoded-image cache."""
    from agiqa.models.base import PartData

    manifest = Manifest.load(job.manifest)
    parts = split_parts(manifest, read_split(job.splits, job.split), job.splits)
    found, training = {}, None
    for part in ("train", "test"):
        frame = parts[part]
        notes = [""] * len(frame) if type(model).uses_descriptions else None
        images = ManifestImages(frame, job.root, manifest.source)
        targets = normalised_targets(frame, model.dimensions)
        found[part] = PartData(part, frame, images, targets, notes, None, training)
        training = training or found[part]
    return found


def mllm_reference(job: FoldJob, epochs: int) -> list[PhaseResult]:
    """The plain loop: no autocast, every image decoded at every step, no workers; it scores
    one image per forward pass (batch 1, as pyiqa's MLLM metrics do)."""
    seed_everything(job.seed)
    model = build_model(job.model_config, Manifest.load(job.manifest).dimensions)
    device = choose_device(job.device, type(model).uses_gpu)
    model.to(device)
    parts = _plain_parts(job, model)
    settings = TrainSettings.from_config(job.model_config.get("train"))
    results = []
    if type(model).trainable:
        train = model.make_dataset(parts["train"], train=True)
        loader = DataLoader(train, settings.batch_size, shuffle=True, collate_fn=model.collate)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])

        def fit() -> None:
            model.train()
            for _ in range(epochs):
                for inputs, targets, _ in loader:
                    loss = model.loss(
                        model.forward_batch(_to(inputs, device)).float(), _to(targets, device)
                    )
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()

        n_train = epochs * len(parts["train"].frame)
        results.append(_timed_phase("train reference", n_train, device, fit))
    test = model.make_dataset(parts["test"], train=False)

    @torch.no_grad()
    def score() -> None:
        model.eval()
        outputs, rows = [], []
        for index in range(len(test)):  # one sample (image, question) per forward pass
            inputs, _, row = model.collate([test[index]])
            outputs.append(model.forward_batch(_to(inputs, device)).float().cpu().numpy())
            rows.append(row.numpy())
        n_rows = len(parts["test"].frame)
        model.reduce_predictions(np.concatenate(outputs), np.concatenate(rows), n_rows)

    results.append(_timed_phase("score reference", len(parts["test"].frame), device, score))
    return results


def mllm_ours(job: FoldJob, epochs: int) -> list[PhaseResult]:
    """The fold trainer: decoded-image cache, AMP on GPU, loader workers, batched scoring."""
    trainer = FoldTrainer(job)
    results = []
    if type(trainer.model).trainable:
        optimizer, scheduler = trainer.optimization()

        def fit() -> None:
            for _ in range(epochs):
                trainer.train_epoch(optimizer, scheduler)

        n_train = epochs * len(trainer.parts["train"])
        results.append(_timed_phase("train ours", n_train, trainer.device, fit))
    score = _timed_phase(
        f"score ours (batch {trainer.settings.eval_batch_size})",
        len(trainer.parts["test"]),
        trainer.device,
        lambda: trainer.predict("test"),
    )
    return [*results, score]


def _to(value: object, device: torch.device) -> object:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value


def run_mllm_bench(
    model_name: str,
    model_config: dict,
    *,
    device: str = "cpu",
    epochs: int = 1,
    n_images: int = 40,
    image_size: int = 64,
    threads: int = 2,
    repeats: int = 1,
) -> list[PhaseResult]:
    """Training and scoring images/s and peak GPU memory of an MLLM model: the plain loop,
    then the fold trainer, on the same synthetic images; best of ``repeats`` per phase.

    An image counts once per training row (deqa also forwards its pair partner, depictqa_compare
    the partner image) and once per scored row (whatever the model's samples per row).
    """
    torch.set_num_threads(threads)
    timings: dict[str, list[PhaseResult]] = {}
    with tempfile.TemporaryDirectory(prefix="agiqa-bench-mllm-") as folder:
        prepare_data(Path(folder), n_images, image_size)
        job = bench_job(Path(folder), model_name, model_config, threads, device)
        for _ in range(repeats):
            for run in [*mllm_reference(job, epochs), *mllm_ours(job, epochs)]:
                timings.setdefault(run.name, []).append(run)
    return [min(runs, key=lambda r: r.seconds) for runs in timings.values()]
