"""A model's training recipe: optimizer, weight-decay groups, schedule and mixed precision.

Everything here is set by the model entry's ``train:`` section (``TrainSettings`` in
agiqa.train.fold), so each method's preset carries its published recipe:

- ``optimizer``: ``adamw`` (decoupled weight decay) or ``adam`` (L2 in the gradient), with
  ``betas`` (default PyTorch's 0.9, 0.999);
- ``no_decay``: biases and every 1-D parameter (norm scales, embeddings' 1-D gains) get no
  weight decay, as timm's and open_clip's training scripts do;
- ``schedule``: ``constant``, ``cosine`` (to zero at the last step) or ``step`` (multiply by
  ``gamma`` at each epoch in ``milestones``), after a linear warmup of ``warmup_epochs`` epochs
  or, when that is unset, ``warmup_ratio`` of all steps (0 = none);
- ``amp``: ``bf16``, ``fp16`` (with a gradient scaler) or ``off``; on the CPU always off;
- ``grad_clip``: maximum gradient norm, 0 = no clipping.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("constant", "cosine", "step")
AMP_MODES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}


def parameter_groups(
    model: nn.Module, weight_decay: float, no_decay: bool
) -> list[dict[str, object]]:
    """Trainable parameters, split into decayed and (with ``no_decay``) undecayed groups."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not no_decay:
        return [{"params": [p for _, p in named], "weight_decay": weight_decay}]
    decayed = [p for n, p in named if p.ndim > 1 and not n.endswith(".bias")]
    plain = [p for n, p in named if p.ndim <= 1 or n.endswith(".bias")]
    groups = [{"params": decayed, "weight_decay": weight_decay}]
    return [*groups, {"params": plain, "weight_decay": 0.0}] if plain else groups


def make_optimizer(
    name: str,
    groups: list[dict[str, object]],
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {name!r}")


def lr_factor(
    step: int,
    *,
    schedule: str,
    total_steps: int,
    steps_per_epoch: int,
    warmup_steps: int,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
) -> float:
    """The learning-rate multiplier at optimisation ``step`` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    if schedule == "step":
        epoch = step // max(1, steps_per_epoch) + 1  # the epoch this step belongs to (1-based)
        return gamma ** sum(epoch > m for m in milestones)
    raise ValueError(f"schedule must be one of {SCHEDULES}, not {schedule!r}")


def warmup_steps(
    warmup_epochs: float | None, warmup_ratio: float, steps_per_epoch: int, total_steps: int
) -> int:
    if warmup_epochs is not None:
        return round(warmup_epochs * steps_per_epoch)
    return round(warmup_ratio * total_steps)


def make_scheduler(
    optimizer: torch.optim.Optimizer, **settings: object
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepping once per batch with ``lr_factor(step, **settings)``."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, **settings),  # type: ignore[arg-type]
    )


def amp_dtype(amp: str | bool, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a setting on a device (None: full precision)."""
    mode = {True: "bf16", False: "off"}.get(amp, amp) if isinstance(amp, bool) else amp
    if mode not in AMP_MODES:
        raise ValueError(f"amp must be one of {sorted(AMP_MODES)}, not {amp!r}")
    return AMP_MODES[mode] if device.type == "cuda" else None


def autocast(dtype: torch.dtype | None, device: torch.device) -> AbstractContextManager:
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def clip_gradients(parameters: Iterable[nn.Parameter], max_norm: float) -> None:
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(list(parameters), max_norm)
