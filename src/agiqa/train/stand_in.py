"""Stand-in pretraining for the tiny offline backbones.

The published methods start from pretrained backbones: DCMPLN and the CLIP-IQA zero-shot score keep
a CLIP frozen, SCVA fine-tunes an ImageNet ViT. A randomly initialised tiny model is no substitute
(a random CLIP gives every image nearly the same feature, cosine ~0.98, and a tiny ViT trained from
scratch on a few hundred images predicts the mean), and real weights need a model hub that the demo
and the tests cannot reach. This module stands in for that pretraining, on a *separate* synthetic
dataset (its own seed, so no image or prompt of the evaluated data is seen):

- ``kind: clip``: symmetric CLIP contrastive training of a tiny open_clip model with captions that
  name the planted degradations (``"a degraded blurry noisy photo"``, ``"a clean photo"``). Only
  quality words: with the scene in the caption the towers learn colours and shapes first
  (measured: zero-shot quality SRCC 0.15 against 0.53 without). Identical captions in a batch
  are all positives (soft targets).
- ``kind: vit``: a config-built timm ViT learns to tell which degradations an image carries
  (multi-label, one logit per degradation, on random crops of the ViT's input size), as ImageNet
  classification pretrains the real one.
- ``kind: mllm``: the tiny Qwen2.5-VL (agiqa.models.mllm.backbone) is trained from scratch, every
  weight, with next-token cross-entropy on chat turns about the images (``tasks``): ``caption``
  (``"Describe the flaws of this image."`` -> the degradation caption above), ``quality`` and
  ``alignment`` (Q-Align-style ratings of this separate dataset's own MOS: "The quality of the
  image is good.") and ``compare`` (DepictQA's A/B question about two of its images: "The better
  one is Image A."), as instruction tuning on other IQA data (Q-Instruct, KonIQ, Co-Instruct)
  teaches a real MLLM these formats; a linear probe on its vision tokens learns the planted
  degradations meanwhile (the ``vit`` task), then is dropped. The checkpoint is
  ``{"state_dict", "tiny"}``, loaded through ``backbone.pretrained: <path>``.

The CLIP checkpoint is a ``{"state_dict": ...}`` file that open_clip loads through
``backbone.pretrained: <path>``, the code path of real weights; the ViT one is a timm state dict
that ``vit.checkpoint`` loads (its classifier head is dropped there).
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import functional as TF

from agiqa.data.synthetic import DEGRADATIONS, generate
from agiqa.errors import ConfigError, DataError
from agiqa.models.clip_backbone import load_clip
from agiqa.models.scva import IMAGENET_MEAN, IMAGENET_STD
from agiqa.train.data import load_rgb
from agiqa.train.feature_cache import atomic_write_bytes

log = logging.getLogger(__name__)

#: The word a caption uses for each planted degradation.
DEGRADATION_WORDS: dict[str, str] = {
    "blur": "blurry",
    "noise": "noisy",
    "jpeg": "blocky",
    "colour_cast": "tinted",
    "contrast": "faded",
    "pixelate": "pixelated",
}
assert set(DEGRADATION_WORDS) == set(DEGRADATIONS)
KINDS = ("clip", "vit", "mllm")
PLANTED = "planted.csv"
#: What the tiny MLLM stand-in learns to answer (see the module docstring).
MLLM_TASKS = ("caption", "quality", "alignment", "compare")
CAPTION_QUESTION = "Describe the flaws of this image."


@dataclass(frozen=True)
class PretrainSettings:
    epochs: int = 15
    batch_size: int = 64
    lr: float = 1.0e-3
    weight_decay: float = 0.1
    # A degradation counts as present (named, or labelled) from this planted severity (0-1) on.
    severity_threshold: float = 0.2
    seed: int = 0


def caption(severities: Mapping[str, float], threshold: float) -> str:
    """``"a clean photo"`` or ``"a degraded <words> photo"`` from planted severities."""
    words = [word for name, word in DEGRADATION_WORDS.items() if severities[name] > threshold]
    return "a clean photo" if not words else f"a degraded {' '.join(words)} photo"


def read_planted(root: Path) -> tuple[list[Path], pd.DataFrame]:
    """Image paths and the ``[n, degradations]`` planted severities of a synthetic dataset."""
    planted_csv = root / PLANTED
    if not planted_csv.is_file():
        raise DataError(f"{planted_csv}: missing; pretraining needs a synthetic dataset")
    planted = pd.read_csv(planted_csv)
    columns = [f"sev_{name}" for name in DEGRADATIONS]
    missing = sorted({"name", *columns} - set(planted.columns))
    if missing:
        raise DataError(f"{planted_csv}: missing columns {missing}")
    severities = planted[columns].set_axis(list(DEGRADATIONS), axis=1)
    return [root / name for name in planted["name"]], severities


def contrastive_loss(
    image: torch.Tensor, text: torch.Tensor, tokens: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE where every pair with an identical caption counts as positive."""
    logits = scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    same = (tokens[:, None, :] == tokens[None, :, :]).all(dim=-1).float()
    targets = same / same.sum(dim=1, keepdim=True)
    image_to_text = -(targets * logits.log_softmax(dim=1)).sum(dim=1).mean()
    text_to_image = -(targets * logits.T.log_softmax(dim=1)).sum(dim=1).mean()
    return (image_to_text + text_to_image) / 2


def pretrain_clip(
    arch: str, data_root: Path, out_path: Path, settings: PretrainSettings = PretrainSettings()
) -> float:
    """Contrastively train open_clip ``arch`` from scratch; returns the last batch loss."""
    torch.manual_seed(settings.seed)
    bundle = load_clip(arch)
    model, preprocess = bundle.model, bundle.preprocess
    paths, severities = read_planted(data_root)
    captions = [caption(row, settings.severity_threshold) for row in severities.to_dict("records")]
    images = _load_all(data_root, paths, preprocess.eval_transform)
    tokens = preprocess.tokenize(captions)

    def step(batch: torch.Tensor) -> torch.Tensor:
        flip = bool(torch.rand(()) < 0.5)
        pixels = images[batch].flip(-1) if flip else images[batch]
        return contrastive_loss(
            model.encode_image(pixels),
            model.encode_text(tokens[batch]),
            tokens[batch],
            model.logit_scale.exp(),
        )

    loss = _train(model, step, len(paths), settings, f"clip {arch}")
    _save({"state_dict": model.state_dict()}, out_path)
    return loss


def pretrain_vit(
    vit_config: Mapping[str, Any],
    data_root: Path,
    out_path: Path,
    settings: PretrainSettings = PretrainSettings(),
) -> float:
    """Train a config-built timm ViT to recognise the planted degradations; last batch loss."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(settings.seed)
    config = dict(vit_config)
    if "name" in config or "checkpoint" in config:
        raise ConfigError("a vit stand-in is built from VisionTransformer kwargs, not a name")
    vit = VisionTransformer(**{**config, "num_classes": len(DEGRADATIONS)})
    size = int(vit.patch_embed.img_size[0])
    paths, severities = read_planted(data_root)
    labels = torch.tensor((severities.to_numpy() > settings.severity_threshold), dtype=torch.float)
    images = _load_all(data_root, paths, _imagenet_tensor(size))

    def step(batch: torch.Tensor) -> torch.Tensor:
        top, left = (int(torch.randint(0, n - size + 1, ())) for n in images.shape[-2:])
        crops = images[batch, :, top : top + size, left : left + size]
        return F.binary_cross_entropy_with_logits(vit(crops), labels[batch])

    loss = _train(vit, step, len(paths), settings, "vit")
    _save(vit.state_dict(), out_path)
    return loss


def pretrain_stand_in(entry: Mapping[str, Any], out_path: Path) -> float:
    """One ``pretrained_backbones`` entry: render its data beside ``out_path``, then pretrain."""
    kind = entry.get("kind", "clip")
    if kind not in KINDS:
        raise ConfigError(f"pretrained backbone kind must be one of {KINDS}; got {kind!r}")
    needed = {"clip": "arch", "vit": "vit", "mllm": "mllm"}[kind]
    if needed not in entry:
        raise ConfigError(f"a pretrained backbone of kind {kind} needs '{needed}'")
    data = out_path.with_name(f"{out_path.stem}-data")
    if not (data / PLANTED).is_file():
        generate(data, **dict(entry["synthesize"]))
    settings = PretrainSettings(
        epochs=int(entry["epochs"]),
        batch_size=int(entry["batch_size"]),
        lr=float(entry["lr"]),
        weight_decay=float(entry.get("weight_decay", PretrainSettings.weight_decay)),
        seed=int(entry.get("seed", 0)),
    )
    if kind == "clip":
        return pretrain_clip(str(entry["arch"]), data, out_path, settings)
    if kind == "mllm":
        tasks = tuple(entry.get("tasks", MLLM_TASKS))
        size = int(entry.get("image_size", 64))
        return pretrain_mllm(entry["mllm"], data, out_path, settings, size, tasks)
    return pretrain_vit(entry["vit"], data, out_path, settings)


def mllm_turns(
    data_root: Path,
    image_size: int,
    fill: tuple[int, int, int],
    tasks: tuple[str, ...],
    settings: PretrainSettings,
) -> tuple[list[list], list[list[list[int]]], torch.Tensor]:
    """The MLLM stand-in's chat turns, grouped by image.

    Returns:
        ``turns[i]``: the turns about image ``i``, one per task; ``shown[i][t]``: the images turn
        ``t`` shows, in order; and which planted degradations each image carries
        ([images, degradations], 0/1).
    """
    from agiqa.models.mllm.backbone import Turn, square
    from agiqa.models.mllm.depictqa import DEFAULT_QUESTIONS
    from agiqa.models.mllm.deqa import TRAIN_QUESTIONS
    from agiqa.models.mllm.levels import DEFAULT_TEMPLATES, LEVEL_WORDS
    from agiqa.models.mllm.soft_labels import hard_level

    unknown = sorted(set(tasks) - set(MLLM_TASKS))
    if unknown or not tasks:
        raise ConfigError(f"mllm stand-in tasks must be a non-empty subset of {MLLM_TASKS}")
    paths, severities = read_planted(data_root)
    ratings = pd.read_csv(data_root / "data.csv").set_index("name").loc[[p.name for p in paths]]
    flags = torch.tensor(severities.to_numpy() > settings.severity_threshold, dtype=torch.float)
    planted_csv = str(data_root / PLANTED)
    images = [
        square(load_rgb(path, manifest=planted_csv, row=i + 2), image_size, fill)
        for i, path in enumerate(paths)
    ]
    quality = ratings["mos_quality"].to_numpy(float)
    rng = np.random.default_rng(settings.seed)
    turns, shown = [], []
    for i, row in enumerate(severities.to_dict("records")):
        mine, seen = [], []
        if "caption" in tasks:
            words = caption(row, settings.severity_threshold)
            mine.append(Turn((images[i],), CAPTION_QUESTION, "", answer=words))
            seen.append([i])
        for kind, column in (("quality", "mos_quality"), ("alignment", "mos_align")):
            if kind not in tasks:
                continue
            mos = ratings[column]
            level = LEVEL_WORDS[hard_level(mos.iloc[i], mos.min(), mos.max())]
            template = DEFAULT_TEMPLATES[kind]
            question = template["question"].replace("{prompt}", str(ratings["prompt"].iloc[i]))
            if kind == "quality":
                question = TRAIN_QUESTIONS[int(rng.integers(len(TRAIN_QUESTIONS)))]
            mine.append(Turn((images[i],), question, template["stem"], answer=f" {level}."))
            seen.append([i])
        if "compare" in tasks:
            # DepictQA's question about this image and a random other one, in a random order.
            other = int(rng.integers(len(images) - 1))
            other += other >= i
            pair = [i, other] if rng.random() < 0.5 else [other, i]
            better = "A" if quality[pair[0]] >= quality[pair[1]] else "B"
            stem = "The better one is Image"
            question = DEFAULT_QUESTIONS["quality"]
            tags = ("Image A:", "Image B:")
            pictures = (images[pair[0]], images[pair[1]])
            mine.append(Turn(pictures, question, stem, tags, f" {better}."))
            seen.append(pair)
        turns.append(mine)
        shown.append(seen)
    return turns, shown, flags


def pretrain_mllm(
    tiny: Mapping[str, Any],
    data_root: Path,
    out_path: Path,
    settings: PretrainSettings = PretrainSettings(),
    image_size: int = 64,
    tasks: tuple[str, ...] = MLLM_TASKS,
) -> float:
    """Train the tiny MLLM from scratch on chat turns about separate synthetic data.

    Each step takes, for every image of the batch, one of its tasks at random, so an epoch
    costs one turn per image whatever the number of tasks. Besides the answers'
    cross-entropy, a linear probe on the mean of each image's vision tokens learns which
    degradations it carries (the vit stand-in's task): a direct signal that makes the small
    vision tower useful within a few epochs, as a real MLLM's pretrained CLIP tower already
    is. The probe is dropped afterwards.
    """
    from agiqa.models.mllm.backbone import Prompter, TinySpec, build_tiny, stand_in_state
    from agiqa.models.mllm.common import encode_turns, message_labels

    torch.manual_seed(settings.seed)
    spec = TinySpec.from_dict(tiny)
    model, processor = build_tiny(spec)
    processor.tokenizer.padding_side = "left"
    prompter = Prompter(processor)
    mean = processor.image_processor.image_mean
    fill = (round(255 * mean[0]), round(255 * mean[1]), round(255 * mean[2]))
    turns, shown, present = mllm_turns(data_root, image_size, fill, tasks, settings)
    probe = torch.nn.Linear(spec.hidden_size, len(DEGRADATIONS))
    tokens: list[torch.Tensor] = []
    # The vision tower's merged tokens of every image, caught as the model runs.
    model.model.visual.register_forward_hook(lambda _m, _i, out: tokens.append(out.pooler_output))
    trained = torch.nn.ModuleDict({"model": model, "probe": probe})

    def step(batch: torch.Tensor) -> torch.Tensor:
        picks = [int(torch.randint(len(turns[int(i)]), ())) for i in batch]
        chosen = [turns[int(i)][t] for i, t in zip(batch, picks, strict=True)]
        images = [j for i, t in zip(batch, picks, strict=True) for j in shown[int(i)][t]]
        if bool(torch.rand(()) < 0.5):
            flip = Image.Transpose.FLIP_LEFT_RIGHT
            chosen = [
                replace(t, images=tuple(im.transpose(flip) for im in t.images)) for t in chosen
            ]
        inputs = encode_turns(processor, prompter, chosen, with_answers=True)
        labels, _ = message_labels(prompter, chosen, inputs["input_ids"])
        tokens.clear()
        answer_loss = model(**inputs, labels=labels, use_cache=False).loss
        pooled = tokens[0].reshape(len(images), -1, spec.hidden_size).mean(dim=1)
        probe_loss = F.binary_cross_entropy_with_logits(probe(pooled), present[images])
        return answer_loss + probe_loss

    loss = _train(trained, step, len(turns), settings, f"mllm {tasks}")
    _save(stand_in_state(model, spec), out_path)
    return loss


def _train(
    model: torch.nn.Module,
    step: Callable[[torch.Tensor], torch.Tensor],
    n_images: int,
    settings: PretrainSettings,
    name: str,
) -> float:
    """AdamW + one-cycle schedule over shuffled full batches; returns the last batch loss."""
    if n_images < settings.batch_size:
        raise DataError(f"{n_images} pretraining images < batch size {settings.batch_size}")
    steps_per_epoch = n_images // settings.batch_size
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=settings.lr, total_steps=settings.epochs * steps_per_epoch, pct_start=0.1
    )
    model.train()
    loss = torch.tensor(math.nan)
    for epoch in range(settings.epochs):
        for batch in _batches(n_images, settings.batch_size):
            loss = step(batch)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        log.info("pretrain %s epoch %d/%d: loss %.4f", name, epoch + 1, settings.epochs, loss)
    return float(loss.detach())


def _batches(n_images: int, batch_size: int) -> Iterator[torch.Tensor]:
    order = torch.randperm(n_images)
    for start in range(0, n_images - batch_size + 1, batch_size):
        yield order[start : start + batch_size]


def _imagenet_tensor(min_side: int) -> Callable[[Image.Image], torch.Tensor]:
    def transform(image: Image.Image) -> torch.Tensor:
        if min(image.size) < min_side:
            image = TF.resize(image, min_side)
        return TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)

    return transform


def _save(state: dict, out_path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(out_path, buffer.getvalue())  # parallel readers never see a torn file


def _load_all(
    root: Path, paths: list[Path], transform: Callable[[Image.Image], torch.Tensor]
) -> torch.Tensor:
    """Every image decoded and transformed; a bad one names its row of ``planted.csv``."""
    planted_csv = str(root / PLANTED)
    return torch.stack(
        [transform(load_rgb(path, manifest=planted_csv, row=i + 2)) for i, path in enumerate(paths)]
    )
