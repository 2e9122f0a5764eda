"""What a fold job's ``checkpoint.pt`` holds, written at the end of the job.

The checkpoint is self-contained: the trained parameters, the resolved model entry, the
dimensions (name, kind, native scale range), the preprocessing and a sha256 fingerprint of the
frozen weights, so ``agiqa score`` (agiqa.scoring) needs no manifest and no config. Frozen weights
that a standard hub id names (open_clip, transformers, torchvision) are not copied. Weight files
the entry names by path (the stand-in backbones, an ImageReward state dict) travel next to the
checkpoint, in ``weights/`` (a copy; files above 256 MiB are hard-linked where the file system
allows), so a run folder scores from any working directory.

The scorer imports this module; the fold trainer (agiqa.train.fold) calls ``save_checkpoint``.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from agiqa.fileops import place
from agiqa.provenance import file_sha256
from agiqa.weights_record import record_weights

if TYPE_CHECKING:
    from agiqa.train.fold import FoldTrainer

log = logging.getLogger(__name__)

FORMAT = "agiqa-checkpoint"
VERSION = 1
CHECKPOINT = "checkpoint.pt"
#: Folder beside the checkpoint that holds the weight files its model entry names.
BUNDLE_DIR = "weights"
#: Larger weight files are hard-linked there instead of copied (agiqa.fileops.place).
LINK_ABOVE_BYTES = 256 << 20


def trained_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What training changes: trainable parameters and buffers (e.g. batch-norm statistics).

    Frozen backbone weights are left out: they come from the backbone's own source.
    """
    keep = {name for name, p in model.named_parameters() if p.requires_grad}
    keep |= {name for name, _ in model.named_buffers()}
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in keep}


def save_checkpoint(
    trainer: FoldTrainer, config: dict, best_epoch: int | None, out_dir: Path
) -> Path:
    """Write ``out_dir/checkpoint.pt`` and bundle the weight files it names beside it."""
    payload = checkpoint_payload(trainer, config, best_epoch)
    refs = payload["weight_files"]
    # Two files of one name (in different folders) keep apart by their content hash.
    clash = len({Path(r["path"]).name for r in refs}) < len(refs)
    for ref in refs:
        name = Path(ref["path"]).name
        ref["bundled"] = bundle_weight_file(
            Path(ref["path"]), out_dir, f"{ref['sha256'][:12]}-{name}" if clash else name
        )
    if refs:
        # Loaders load a weights file only with a record beside it (agiqa.weights_record): the
        # bundle's files are the ones the job loaded (sha256 as the checkpoint names them).
        bundled = {out_dir / ref["bundled"]: ref["sha256"] for ref in refs}
        record_weights(out_dir / BUNDLE_DIR, bundled, fresh=True, expected=bundled)
    path = out_dir / CHECKPOINT
    torch.save(payload, path)
    return path


def bundle_weight_file(source: Path, out_dir: Path, name: str) -> str:
    """Link (or copy) ``source`` to ``out_dir/weights/<name>``; that path relative to
    ``out_dir``."""
    place(source, out_dir / BUNDLE_DIR / name, LINK_ABOVE_BYTES)
    return f"{BUNDLE_DIR}/{name}"


def checkpoint_payload(trainer: FoldTrainer, config: dict, best_epoch: int | None) -> dict:
    """What ``checkpoint.pt`` holds: plain types and tensors only (``weights_only=True`` loads).

    Args:
        trainer: The fold trainer after training (best epoch restored).
        config: The run's resolved config (``config.yaml``, with provenance).
        best_epoch: The selected epoch (None for models that do not train).
    """
    state = trained_state(trainer.model)
    model_config = copy.deepcopy(config["model"])
    name = model_config.pop("name")
    return {
        "format": FORMAT,
        "version": VERSION,
        "trained_state": state,
        "config": config,
        "best_epoch": best_epoch,
        "model": {"name": name, "entry": model_config},
        "dimensions": [
            {"name": d.name, "kind": d.kind, "low": float(d.low), "high": float(d.high)}
            for d in trainer.dimensions
        ],
        "preprocessing": preprocessing_of(trainer),
        "frozen": frozen_fingerprint(trainer.model, set(state)),
        "weight_files": referenced_files(model_config),
        "seed": int(trainer.job.seed),
        "uses_descriptions": bool(type(trainer.model).uses_descriptions),
    }


def preprocessing_of(trainer: FoldTrainer) -> dict:
    """How the job turned an image file into the model's input at evaluation time.

    Frozen-feature models encode images as decoded; the others see the decoded-image cache,
    shrunk to ``decode_cache_short_side`` when the cache is on.
    """
    from agiqa.train.data import SHRINK_DECODER

    settings = trainer.settings
    short_side = None
    if trainer.cache is None and settings.decode_cache:
        short_side = settings.decode_cache_short_side
    return {
        "decode": "agiqa.data.decode.to_rgb (8-bit RGB, transparency over white)",
        # agiqa.train.data.load_shrunk's identity: its JPEG draft decoding changes pixels.
        "decoder": SHRINK_DECODER,
        "short_side": short_side,
        "transform": repr(trainer.model.image_transform(train=False)),
    }


def frozen_fingerprint(model: torch.nn.Module, trained: set[str]) -> dict:
    """sha256 over every state tensor the checkpoint does not carry (the frozen weights)."""
    digest = hashlib.sha256()
    count = 0
    for name, tensor in sorted(model.state_dict().items()):
        if name in trained:
            continue
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
        count += 1
    return {"sha256": digest.hexdigest(), "tensors": count}


def referenced_files(entry: Any, where: str = "") -> list[dict]:
    """Weight files a model entry names (string values that are existing files), with sha256."""
    found: list[dict] = []
    if isinstance(entry, dict):
        for key, value in entry.items():
            if key != "train":
                found += referenced_files(value, f"{where}{key}.")
    elif isinstance(entry, str) and entry and Path(entry).is_file():
        found.append({"slot": where.rstrip("."), "path": entry, "sha256": file_sha256(entry)})
    return found
