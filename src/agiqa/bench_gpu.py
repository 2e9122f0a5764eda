"""The GPU campaign (``make bench-gpu``): speed of the paper's models against a seed-style loop.

For each model (``clip_residual`` ViT-L/14 with 18 frozen layers, ``dcmpln`` ViT-B/32, ``scva``
with an ImageReward-sized BLIP-L and a ViT-B/16, and an MLLM ``deqa`` entry when that model type
is registered) it measures, in one run on one device:

- **whole fold job**: ``epochs`` epochs of training, the validation part scored after each and the
  test part once, by agiqa's fold trainer (decoded-image cache, bf16 autocast, pinned memory,
  loader workers, checkpoints and outputs written) and by a **seed-style loop** (fp32, every image
  decoded at every step, no cache, no AMP, no workers); their ratio;
- training and scoring images/s and peak memory of both, on the same images;
- **levers**: one training step on a device-resident batch in fp32, with TF32, with bf16
  autocast, with fused AdamW, with channels_last and with ``torch.compile``, so it shows which
  pay; and the model FLOP utilisation (MFU) of the ViT-L/14 training step, with the FLOPs counted
  by ``torch.utils.flop_counter.FlopCounterMode`` from the model itself;
- **decoding**: JPEG decode + shrink images/s with PIL on one CPU thread and with
  ``torchvision.io.decode_jpeg`` on the GPU.

Every model is built at its real size with **random weights** (no download, no model hub): the
speed of a network does not depend on its weights. Images are synthetic 512 px JPEGs unless
``--data`` names a dataset (the real AGIQA-3K). ``--tiny --device cpu`` runs the same code on the
tiny models of ``config/config.yaml`` in under a minute: the CI smoke test, whose timings mean
nothing. The results go to a JSON file (rewritten after every section, so a run cut short still
leaves what it measured) and a Markdown summary.
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import math
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader

from agiqa.data.manifest import Manifest
from agiqa.data.readers import read_dataset
from agiqa.data.splits import Protocol, make_splits, read_split, write_splits
from agiqa.data.synthetic import generate
from agiqa.models import MODELS, build_model
from agiqa.models.base import PartData
from agiqa.models.scva_imagereward import IMAGEREWARD_V1
from agiqa.train.data import ManifestImages, load_shrunk, normalised_targets
from agiqa.train.feature_cache import atomic_write_bytes
from agiqa.train.fold import (
    FoldJob,
    FoldTrainer,
    TrainSettings,
    seed_everything,
    split_parts,
    trained_dimensions,
    write_outputs,
)

log = logging.getLogger(__name__)

PAPER_MODELS = ("clip_residual", "dcmpln", "scva")
#: Model types of the MLLM family; their first config entry joins the campaign when registered.
MLLM_TYPES = ("deqa",)
#: Dense bf16 tensor-core peaks in FLOP/s (vendor datasheets), first matching name fragment wins.
PEAK_BF16_FLOPS = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10", 125e12),
)


@dataclass(frozen=True)
class CampaignOptions:
    """What ``agiqa bench-gpu`` runs; ``for_mode`` fills the defaults of the full and tiny modes."""

    device: str = "cuda"
    tiny: bool = False
    models: tuple[str, ...] = ()
    data: str | None = None
    reader: str = "agiqa-3k"
    images: int = 384
    image_size: int = 512
    epochs: int = 2
    threads: int = 8
    steps: int = 10
    compile: bool = True
    budget_s: float = 420.0
    peak_tflops: float | None = None
    configfile: str | None = None

    @classmethod
    def for_mode(cls, tiny: bool, **given: Any) -> CampaignOptions:
        """Defaults of the mode, overridden by the ``given`` values that are not None."""
        defaults: dict[str, Any] = {"threads": min(8, os.cpu_count() or 1)}
        if tiny:
            defaults = {"images": 24, "image_size": 64, "epochs": 1, "threads": 1, "steps": 2}
            defaults |= {"compile": False, "budget_s": 120.0}
        chosen = {k: v for k, v in given.items() if v is not None}
        return cls(tiny=tiny, **(defaults | chosen))


@dataclass
class Phase:
    """Images processed in some seconds, with the peak device memory (None on a CPU)."""

    images: int
    seconds: float
    peak_gib: float | None = None
    #: For a compiled step: the warm-up that compiled it (paid once per job).
    compile_seconds: float | None = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_second": self.images_per_second}


@dataclass
class Report:
    """Everything measured; written as JSON after every section."""

    setup: dict[str, Any]
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    decoding: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return plain(
            {
                "setup": self.setup,
                "models": self.models,
                "decoding": self.decoding,
                "notes": self.notes,
            }
        )

    def save(self, path: Path) -> None:
        text = json.dumps(self.as_dict(), indent=2, allow_nan=True)
        atomic_write_bytes(path, (text + "\n").encode())


def plain(value: Any) -> Any:
    """JSON-ready copy: phases with their images/s, numpy and torch scalars as numbers."""
    if isinstance(value, Phase):
        return value.as_dict()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


# --- data ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchData:
    root: Path
    manifest: Path
    splits: Path
    protocol: Protocol
    source: str


def prepare_data(folder: Path, options: CampaignOptions) -> BenchData:
    """The images (synthetic, or ``options.data``), their manifest and a 5-fold grouped split."""
    if options.data:
        root = Path(options.data)
        manifest = read_dataset(options.reader, root)
        source = f"{options.reader} at {root}"
    else:
        root = folder / "images"
        n_prompts = max(5, math.ceil(options.images / 4))
        generate(root, n_prompts=n_prompts, images_per_prompt=4, image_size=options.image_size)
        manifest = read_dataset("agiqa-3k", root, dataset="bench")
        source = f"synthetic {options.image_size} px JPEGs"
    labelled = manifest.labelled()
    # Evenly spaced rows: a real dataset is sorted by generator, and sizes differ by generator.
    step = max(1, len(labelled) // options.images)
    subset = labelled.iloc[::step].iloc[: options.images].reset_index(drop=True)
    manifest = replace(manifest, frame=subset)
    manifest_path = folder / "manifest.csv"
    manifest.save(manifest_path)
    protocol = Protocol(type="kfold_grouped", folds=5)
    splits_path = folder / "splits.csv"
    write_splits(make_splits(manifest.labelled(), protocol), splits_path)
    return BenchData(root, manifest_path, splits_path, protocol, f"{len(subset)} {source}")


# --- model entries ------------------------------------------------------------------------------


def campaign_entries(options: CampaignOptions) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """name -> model entry with random weights of the real sizes (tiny ones with ``--tiny``).

    Returns the entries and notes on the MLLM types that could not join.
    """
    from agiqa.pipeline import model_entry

    default = "config/config.yaml" if options.tiny else "config/paper.yaml"
    config = yaml.safe_load(Path(options.configfile or default).read_text()) or {}
    mllm, notes = _mllm_entries(config)
    entries = {}
    for name in options.models or (*PAPER_MODELS, *mllm):
        entry = copy.deepcopy(model_entry(config, name))
        if entry.get("type") == "scva" and not options.tiny:
            entry["blip"] = {"source": "config", "config": copy.deepcopy(IMAGEREWARD_V1)}
        entries[name] = random_weights(entry)
    return entries, [] if options.models else notes


def _mllm_entries(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The first config entry of each registered MLLM type, and why the others are missing."""
    models = config.get("models") or {}
    found, notes = [], []
    for model_type in MLLM_TYPES:
        names = [n for n, e in models.items() if e.get("type") == model_type][:1]
        if model_type not in MODELS.names():
            notes.append(f"model type {model_type} is not registered here: skipped")
        elif not names:
            notes.append(f"the config has no {model_type} entry: skipped")
        found += names if model_type in MODELS.names() else []
    return found, notes


def random_weights(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry with every pretrained weight replaced by a random initialisation."""
    model_class = MODELS.get(entry["type"])
    if hasattr(model_class, "without_weights"):  # the model knows its own weight sources
        return model_class.without_weights(entry)
    entry = copy.deepcopy(entry)
    if isinstance(entry.get("backbone"), dict):
        entry["backbone"]["pretrained"] = None
    if isinstance(entry.get("vit"), dict):
        entry["vit"]["checkpoint"] = None
        entry["vit"]["pretrained"] = False
    return entry


def bench_entry(entry: dict[str, Any], epochs: int) -> dict[str, Any]:
    """The entry trained for ``epochs`` epochs with no early stop (the same work on both paths)."""
    entry = copy.deepcopy(entry)
    entry["train"] = {**(entry.get("train") or {}), "epochs": epochs, "patience": epochs + 1}
    return entry


# --- device helpers -----------------------------------------------------------------------------


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def timed(device: torch.device, images: int) -> Iterator[Phase]:
    """Time a block (device work included) and record its peak device memory."""
    phase = Phase(images, math.nan)
    if device.type == "cuda":
        synchronise(device)
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    yield phase
    synchronise(device)
    phase.seconds = time.perf_counter() - started
    if device.type == "cuda":
        phase.peak_gib = torch.cuda.max_memory_allocated(device) / 2**30


def set_tf32(enabled: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_device(v, device) for v in value)
    return value


# --- seed-style loop ----------------------------------------------------------------------------


class SeedStyleFold:
    """What the seed code does: fp32, decode every image at every step, no cache, no workers."""

    def __init__(self, job: FoldJob) -> None:
        self.job = job
        self.device = torch.device(job.device)
        manifest = Manifest.load(job.manifest)
        dims = trained_dimensions(manifest, job.model_config, job.model_name)
        self.parts = split_parts(manifest, read_split(job.splits, job.split), job.splits)
        self.settings = TrainSettings.from_config(job.model_config.get("train"))
        seed_everything(job.seed)
        self.model = build_model(job.model_config, dims).to(self.device)
        self.datasets = self._datasets(manifest, dims)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            trainable, lr=self.settings.lr, weight_decay=self.settings.weight_decay
        )

    def _datasets(self, manifest: Manifest, dims: tuple) -> dict[tuple[str, bool], Any]:
        datasets, training = {}, None
        for part in ("train", "val", "test"):
            frame = self.parts[part]
            descriptions = [""] * len(frame) if type(self.model).uses_descriptions else None
            images = ManifestImages(frame, self.job.root, manifest.source)
            data = PartData(
                part, frame, images, normalised_targets(frame, dims), descriptions, None, training
            )
            training = training or data
            datasets[part, True] = self.model.make_dataset(data, train=True)
            datasets[part, False] = self.model.make_dataset(data, train=False)
        return datasets

    def loader(self, part: str, train: bool) -> DataLoader:
        batch = self.settings.batch_size if train else self.settings.eval_batch_size
        return DataLoader(
            self.datasets[part, train],
            batch_size=batch,
            shuffle=train,
            collate_fn=self.model.collate,
        )

    def train_epoch(self) -> None:
        self.model.train()
        for inputs, targets, _ in self.loader("train", train=True):
            pred = self.model.forward_batch(to_device(inputs, self.device))
            loss = self.model.loss(pred, to_device(targets, self.device))
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()

    @torch.no_grad()
    def score(self, part: str) -> None:
        self.model.eval()
        for inputs, _, _ in self.loader(part, train=False):
            self.model.forward_batch(to_device(inputs, self.device)).float().cpu()

    def run(self, epochs: int) -> None:
        for _ in range(epochs):
            self.train_epoch()
            self.score("val")
        self.score("test")


def seed_style(job: FoldJob, epochs: int) -> tuple[dict[str, Phase], SeedStyleFold]:
    """Whole fold (model build included), then one more training epoch and test scoring."""
    set_tf32(False)  # the seed code ran plain fp32
    device = torch.device(job.device)
    with timed(device, 0) as whole:
        fold = SeedStyleFold(job)
        fold.run(epochs)
    sizes = {part: len(frame) for part, frame in fold.parts.items()}
    whole.images = epochs * (sizes["train"] + sizes["val"]) + sizes["test"]
    with timed(device, sizes["train"]) as train:
        fold.train_epoch()
    with timed(device, sizes["test"]) as score:
        fold.score("test")
    return {"whole_fold": whole, "train": train, "score": score}, fold


# --- agiqa's fold path --------------------------------------------------------------------------


def agiqa_fold(job: FoldJob, epochs: int) -> dict[str, Phase]:
    """The pipeline's fold job (warm image cache), then one more training epoch and scoring."""
    set_tf32(False)  # the trainer's own settings only: levers are measured separately
    device = torch.device(job.device)
    with timed(device, 0) as whole:
        trainer = FoldTrainer(job)
        best_epoch = trainer.train()
        write_outputs(trainer, best_epoch, 0.0)
    sizes = {part: len(frame) for part, frame in trainer.parts.items()}
    whole.images = epochs * (sizes["train"] + sizes["val"]) + sizes["test"]
    optimizer, scheduler = trainer.optimization()
    with timed(device, sizes["train"]) as train:
        trainer.train_epoch(optimizer, scheduler)
    with timed(device, sizes["test"]) as score:
        trainer.predict("test")
    del trainer, optimizer, scheduler
    free_memory()
    return {"whole_fold": whole, "train": train, "score": score}


def fill_image_cache(job: FoldJob) -> Phase:
    """Decode every image into the shared cache, as the dataset's first job does (cold cost)."""
    settings = TrainSettings.from_config(job.model_config.get("train"))
    manifest = Manifest.load(job.manifest)
    images = ManifestImages(manifest.labelled(), job.root, manifest.source)
    started = time.perf_counter()
    images.preload(settings.decode_cache_short_side, job.threads, job.image_cache_dir)
    return Phase(len(images.paths), time.perf_counter() - started)


# --- levers on one training step ----------------------------------------------------------------


@dataclass(frozen=True)
class Lever:
    name: str
    amp: torch.dtype | None = None
    tf32: bool = False
    fused: bool = False
    channels_last: bool = False
    compiled: bool = False


_BF16 = {"amp": torch.bfloat16, "tf32": True}
#: Cumulative, as open_clip's and timm's training scripts stack them; the seed code is ``fp32``.
LEVERS = (
    Lever("fp32"),
    Lever("fp32 + TF32", tf32=True),
    Lever("bf16 autocast", **_BF16),
    Lever("bf16 + fused AdamW", **_BF16, fused=True),
    Lever("bf16 + fused + channels_last", **_BF16, fused=True, channels_last=True),
    Lever("bf16 + fused + torch.compile", **_BF16, fused=True, compiled=True),
)


class StepBench:
    """One model on the device and one batch on it; times training steps under each lever."""

    def __init__(self, fold: SeedStyleFold) -> None:
        self.device = fold.device
        self.model = fold.model.train()
        inputs, targets, rows = next(iter(fold.loader("train", train=True)))
        self.inputs = to_device(inputs, self.device)
        self.targets = to_device(targets, self.device)
        self.batch_size = len(rows)

    def optimizer(self, fused: bool) -> torch.optim.Optimizer:
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(trainable, lr=1e-5, fused=True if fused else None)

    def step(self, optimizer: torch.optim.Optimizer, amp: torch.dtype | None) -> None:
        with torch.autocast(self.device.type, dtype=amp, enabled=amp is not None):
            pred = self.model.forward_batch(self.inputs)
            loss = self.model.loss(pred.float(), self.targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def measure(self, lever: Lever, steps: int) -> Phase:
        """Best-effort timing of ``steps`` steps after a warm-up (which compiles, if asked)."""
        set_tf32(lever.tf32)
        layout = torch.channels_last if lever.channels_last else torch.contiguous_format
        self.model.to(memory_format=layout)
        self.inputs = _with_layout(self.inputs, layout)
        optimizer = self.optimizer(lever.fused)
        if lever.compiled:
            self.model.compile()
        with timed(self.device, 0) as warm_up:
            for _ in range(3):
                self.step(optimizer, lever.amp)
        with timed(self.device, steps * self.batch_size) as phase:
            for _ in range(steps):
                self.step(optimizer, lever.amp)
        if lever.compiled:
            phase.compile_seconds = warm_up.seconds
        del optimizer
        free_memory()
        return phase

    def flops(self) -> int:
        """FLOPs of one training step (forward and backward), counted from the model's ops."""
        from torch.utils.flop_counter import FlopCounterMode

        optimizer = self.optimizer(fused=False)
        with FlopCounterMode(display=False) as counter:
            self.step(optimizer, None)  # the count does not depend on the dtype
        del optimizer
        return int(counter.get_total_flops())


def _with_layout(value: Any, layout: torch.memory_format) -> Any:
    """Image batches (4-D tensors) in ``layout``; everything else unchanged."""
    if isinstance(value, torch.Tensor):
        return value.contiguous(memory_format=layout) if value.dim() == 4 else value
    if isinstance(value, dict):
        return {k: _with_layout(v, layout) for k, v in value.items()}
    return value


def lever_table(
    fold: SeedStyleFold, options: CampaignOptions, with_mfu: bool, deadline: float
) -> dict[str, Any]:
    """Images/s of one training step under each lever, and the MFU of the fastest."""
    device = fold.device
    bench = StepBench(fold)
    results: dict[str, Any] = {"batch_size": bench.batch_size, "steps": {}}
    flops = bench.flops() if with_mfu else None  # before compiling: counted on eager ops
    for lever in LEVERS:
        if lever.compiled and not with_mfu:  # compiling costs minutes: only the MFU model
            results["steps"][lever.name] = "skipped: compiled for the MFU model only"
            continue
        results["steps"][lever.name] = _measure_lever(bench, lever, options, device, deadline)
    if flops is not None:
        results["mfu"] = mfu(flops, bench.batch_size, results["steps"], device, options)
    if with_mfu and options.compile:
        torch._dynamo.reset()  # drop the compiled graphs before the next model
    return results


def _measure_lever(
    bench: StepBench,
    lever: Lever,
    options: CampaignOptions,
    device: torch.device,
    deadline: float,
) -> Phase | str:
    if time.monotonic() > deadline:
        return "skipped: time budget spent"
    if lever.compiled and not (options.compile and device.type == "cuda"):
        return "skipped: needs a GPU and --compile"
    if (lever.amp is not None or lever.fused or lever.tf32) and device.type != "cuda":
        return "skipped: a CPU run measures fp32 only"
    try:
        return bench.measure(lever, options.steps)
    except Exception as error:  # a lever that fails is reported, not fatal
        log.warning("lever %s failed: %s", lever.name, error)
        return f"failed: {type(error).__name__}: {error}"[:500]


def mfu(
    flops: int,
    batch_size: int,
    steps: dict[str, Phase | str],
    device: torch.device,
    options: CampaignOptions,
) -> dict[str, Any]:
    """Model FLOP utilisation of the fastest measured step, against the device's bf16 peak."""
    timed_steps = {k: v for k, v in steps.items() if isinstance(v, Phase)}
    if not timed_steps:
        return {"mfu": None, "flops_per_step": flops, "note": "no step was measured"}
    name, best = max(timed_steps.items(), key=lambda item: item[1].images_per_second)
    per_second = flops * best.images_per_second / batch_size
    peak = options.peak_tflops * 1e12 if options.peak_tflops else device_peak(device)
    return {
        "lever": name,
        "flops_per_step": flops,
        "achieved_tflops": per_second / 1e12,
        "peak_tflops": None if peak is None else peak / 1e12,
        "mfu": None if peak is None else per_second / peak,
        "note": "" if peak is not None else "no bf16 peak known for this device (--peak-tflops)",
    }


def device_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for fragment, peak in PEAK_BF16_FLOPS if fragment in name), None)


# --- decoding -----------------------------------------------------------------------------------


def decoding(data: BenchData, device: torch.device, short_side: int, limit: int = 128) -> dict:
    """Decode + shrink images/s: PIL (DCT-domain downscaling) on one CPU thread, nvJPEG on GPU."""
    manifest = Manifest.load(data.manifest)
    images = ManifestImages(manifest.labelled().iloc[:limit], data.root, manifest.source)
    paths = images.paths
    started = time.perf_counter()
    for path in paths:
        load_shrunk(path, short_side, manifest="bench", row=None)
    results: dict[str, Any] = {
        "images": len(paths),
        "short_side": short_side,
        "pil_one_thread": len(paths) / (time.perf_counter() - started),
    }
    if device.type != "cuda":
        results["gpu_decode_jpeg"] = "skipped: needs a GPU"
        return results
    results["gpu_decode_jpeg"] = gpu_decode_rate(paths, device, short_side)
    return results


def gpu_decode_rate(paths: list[Path], device: torch.device, short_side: int) -> float | str:
    """torchvision.io.decode_jpeg on the GPU in one batch, then an antialiased shrink there."""
    from torchvision.io import decode_jpeg

    from agiqa.train.data import shrunk_size

    encoded = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in paths]
    if any(p.suffix.lower() not in (".jpg", ".jpeg") for p in paths):
        return "skipped: not every image is a JPEG"

    def run() -> None:
        for image in decode_jpeg(encoded, device=device):
            width, height = shrunk_size((image.shape[2], image.shape[1]), short_side)
            torch.nn.functional.interpolate(
                image[None].float(), size=(height, width), mode="bicubic", antialias=True
            )

    run()  # warm-up: nvJPEG handles and kernels
    with timed(device, len(paths)) as phase:
        run()
    return phase.images_per_second


# --- the campaign -------------------------------------------------------------------------------


def run_campaign(options: CampaignOptions, out: Path, summary: Path | None = None) -> Report:
    """Measure every model, then decoding; write ``out`` (JSON) and ``summary`` (Markdown)."""
    started = time.monotonic()
    deadline = started + options.budget_s
    device = torch.device(options.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda, but torch sees no CUDA device (use --device cpu)")
    torch.set_num_threads(max(1, options.threads))
    report = Report(setup=setup_record(options, device))
    with tempfile.TemporaryDirectory(prefix="agiqa-bench-gpu-") as tmp:
        folder = Path(tmp)
        data = prepare_data(folder, options)
        report.setup["images"] = data.source
        entries, notes = campaign_entries(options)
        report.notes += notes
        for name, entry in entries.items():
            report.models[name] = measure_model(name, entry, data, folder, options, deadline)
            report.save(out)
        short_side = TrainSettings().decode_cache_short_side or 256
        report.decoding = decoding(data, device, short_side)
    report.setup["wall_seconds"] = time.monotonic() - started
    report.save(out)
    if summary is not None:
        summary.write_text(markdown(report))
    return report


def measure_model(
    name: str,
    entry: dict[str, Any],
    data: BenchData,
    folder: Path,
    options: CampaignOptions,
    deadline: float,
) -> dict[str, Any]:
    """Both fold paths and the lever table of one model; a failure is recorded, not raised."""
    if time.monotonic() > deadline:
        return {"skipped": "time budget spent"}
    job = bench_job(name, bench_entry(entry, options.epochs), data, folder, options)
    record: dict[str, Any] = {"type": entry["type"], "entry": entry}
    try:
        record["cold_image_cache"] = fill_image_cache(job)
        record["agiqa"] = agiqa_fold(job, options.epochs)
        if time.monotonic() > deadline:
            raise TimeoutError("time budget spent before the seed-style loop")
        record["seed_style"], fold = seed_style(job, options.epochs)
        record["ratio"] = {
            phase: record["agiqa"][phase].images_per_second
            / record["seed_style"][phase].images_per_second
            for phase in ("whole_fold", "train", "score")
        }
        del fold.optimizer  # the levers make their own
        with_mfu = entry["type"] == "clip_residual"
        record["levers"] = lever_table(fold, options, with_mfu, deadline)
        del fold
    except Exception as error:  # one model's failure must not end the campaign
        log.exception("bench-gpu: %s failed", name)
        record["error"] = f"{type(error).__name__}: {error}"[:1000]
    free_memory()
    return record


def bench_job(
    name: str, entry: dict[str, Any], data: BenchData, folder: Path, options: CampaignOptions
) -> FoldJob:
    return FoldJob(
        dataset="bench",
        root=str(data.root),
        manifest=str(data.manifest),
        splits=str(data.splits),
        split=0,
        protocol=data.protocol.type,
        protocol_settings=data.protocol.settings(),
        model_name=name,
        model_config=entry,
        out_dir=str(folder / "runs" / name),
        threads=options.threads,
        device=options.device,
        feature_cache_dir=str(folder / "features"),
        image_cache_dir=str(folder / "image-cache"),
    )


def setup_record(options: CampaignOptions, device: torch.device) -> dict[str, Any]:
    record: dict[str, Any] = {
        "options": asdict(options),
        "device": str(device),
        "device_name": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "random_weights": True,
    }
    if device.type == "cuda":
        record["device_name"] = torch.cuda.get_device_name(device)
        record["cuda"] = torch.version.cuda
    return record


# --- Markdown summary ---------------------------------------------------------------------------


def markdown(report: Report) -> str:
    """A short human summary of the JSON report."""
    setup = report.setup
    lines = [
        "# bench-gpu",
        "",
        f"Device: {setup['device_name']} ({setup['device']}), torch {setup['torch']}; "
        f"images: {setup.get('images')}; wall time {setup.get('wall_seconds', math.nan):.0f} s.",
        "Models are built at their real sizes with **random weights** (nothing downloaded).",
        "",
        "| model | path | whole fold (s) | train images/s | score images/s | peak GiB |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, record in report.models.items():
        lines += _model_rows(name, record)
    lines += ["", "Training step under each lever (device-resident batch):", ""]
    for name, record in report.models.items():
        lines += _lever_lines(name, record)
    lines += ["", f"Decoding: {_format_decoding(report.decoding)}", ""]
    lines += [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def _model_rows(name: str, record: dict[str, Any]) -> list[str]:
    if "agiqa" not in record or "seed_style" not in record:
        reason = record.get("error") or record.get("skipped") or "not measured"
        return [f"| {name} | - | {reason} | | | |"]
    rows = []
    for path in ("seed_style", "agiqa"):
        phases = record[path]
        rows.append(
            f"| {name} | {path.replace('_', '-')} | {phases['whole_fold'].seconds:.1f} | "
            f"{phases['train'].images_per_second:.1f} | {phases['score'].images_per_second:.1f} | "
            f"{_gib(phases['train'].peak_gib)} |"
        )
    ratio = record["ratio"]
    rows.append(
        f"| {name} | **ratio** | **{ratio['whole_fold']:.2f}** | {ratio['train']:.2f} | "
        f"{ratio['score']:.2f} | |"
    )
    return rows


def _lever_lines(name: str, record: dict[str, Any]) -> list[str]:
    levers = record.get("levers")
    if not levers:
        return []
    parts = []
    for lever, value in levers["steps"].items():
        shown = f"{value.images_per_second:.1f} images/s" if isinstance(value, Phase) else value
        parts.append(f"{lever}: {shown}")
    lines = [f"- {name} (batch {levers['batch_size']}): " + "; ".join(parts)]
    measured = levers.get("mfu") or {}
    if measured.get("mfu") is not None:
        lines.append(
            f"  - MFU {measured['mfu']:.1%} ({measured['lever']}: "
            f"{measured['achieved_tflops']:.0f} of {measured['peak_tflops']:.0f} TFLOP/s, "
            f"{measured['flops_per_step'] / 1e12:.2f} TFLOP per step, counted)"
        )
    elif measured:
        lines.append(f"  - MFU not available ({measured.get('note', 'no bf16 peak known')})")
    return lines


def _format_decoding(decoding: dict[str, Any]) -> str:
    if not decoding:
        return "not measured"
    gpu = decoding.get("gpu_decode_jpeg")
    gpu_text = f"{gpu:.0f} images/s" if isinstance(gpu, float) else gpu
    return (
        f"PIL (DCT-domain shrink to {decoding['short_side']} px) "
        f"{decoding['pil_one_thread']:.0f} images/s on one CPU thread; GPU decode_jpeg {gpu_text}"
    )


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
