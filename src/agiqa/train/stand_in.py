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

The CLIP checkpoint is a ``{"state_dict": ...}`` file that open_clip loads through
``backbone.pretrained: <path>``, the code path of real weights; the ViT one is a timm state dict
that ``vit.checkpoint`` loads (its classifier head is dropped there).
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
KINDS = ("clip", "vit")
PLANTED = "planted.csv"


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
    needed = "arch" if kind == "clip" else "vit"
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
    return pretrain_vit(entry["vit"], data, out_path, settings)


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
