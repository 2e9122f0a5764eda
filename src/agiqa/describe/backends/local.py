"""A transformers image-to-text model run in-process (BLIP-style captioners or chat VLMs).

``model`` is a Hugging Face hub id or a local folder saved with ``save_pretrained``; it is
loaded with ``AutoProcessor`` and ``AutoModelForImageTextToText``. When the processor has a chat
template the template's system and user text are sent with the image; a plain captioner has no
way to take an instruction and writes its caption (optionally continuing ``prompt``). Decoding
is greedy by default and never sampled, so a rerun writes the same text, and an unusable reply
(empty, a failure message) fails at once rather than being generated again.
``local_files_only`` defaults to the ``HF_HUB_OFFLINE`` setting, so an offline node never tries
the network.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from typing import Any

from agiqa.describe.backends.base import (
    BACKENDS,
    Backend,
    BackendContext,
    ImageItem,
    PermanentError,
    Reply,
    Usage,
)
from agiqa.describe.templates import Template

log = logging.getLogger("agiqa.describe")
DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class LocalOptions:
    """Config keys of the ``local`` backend.

    Attributes:
        model: Hub id or local folder of an image-to-text model.
        revision: Hub revision (commit, tag, branch) to pin.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:N``.
        dtype: Weights dtype; ``auto`` keeps the checkpoint's.
        max_tokens: Most new tokens; a reply that reaches it without ending is a failure.
        min_new_tokens: Fewest new tokens before the end token may be produced.
        num_beams: Beam width (1 = greedy).
        prompt: Text a captioner without a chat template continues (e.g. "a picture of").
        local_files_only: Never download; None follows ``HF_HUB_OFFLINE``.
    """

    model: str
    revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    max_tokens: int = 120
    min_new_tokens: int | None = None
    num_beams: int = 1
    prompt: str | None = None
    local_files_only: bool | None = None

    def __post_init__(self) -> None:
        if not str(self.model or "").strip():
            raise ValueError("needs a model")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}")
        if self.max_tokens < 1 or self.num_beams < 1:
            raise ValueError("max_tokens and num_beams must be at least 1")


@BACKENDS.register("local")
class LocalBackend(Backend):
    """In-process generation; one image at a time (the model is not thread-safe)."""

    Options = LocalOptions
    max_concurrency = 1
    repeatable = True  # decoding never samples: a retry would write the same text

    def __init__(self, options: LocalOptions, context: BackendContext) -> None:
        super().__init__(options, context)
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}
        load = {
            "revision": options.revision,
            "local_files_only": offline
            if options.local_files_only is None
            else options.local_files_only,
        }
        self.device = _device(options.device, torch)
        dtype = "auto" if options.dtype == "auto" else getattr(torch, options.dtype)
        self.processor = AutoProcessor.from_pretrained(options.model, **load)
        model = AutoModelForImageTextToText.from_pretrained(options.model, dtype=dtype, **load)
        self.model = model.to(self.device).eval()
        self.chat = bool(getattr(self.processor, "chat_template", None))
        if not self.chat:
            log.warning(
                "%s has no chat template: it captions without the instruction text", options.model
            )

    def identity(self) -> dict[str, Any]:
        o = self.options
        return {
            "backend": "local",
            "model": o.model,
            "revision": o.revision,
            "generation": {
                "max_new_tokens": o.max_tokens,
                "min_new_tokens": o.min_new_tokens,
                "num_beams": o.num_beams,
                "prompt": o.prompt,
                "dtype": o.dtype,
            },
        }

    def describe(self, item: ImageItem, template: Template) -> Reply:
        import torch

        inputs = self._inputs(_open_rgb(item), template)
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.options.max_tokens,
            "num_beams": self.options.num_beams,
            "do_sample": False,
        }
        if self.options.min_new_tokens is not None:
            kwargs["min_new_tokens"] = self.options.min_new_tokens
        with torch.inference_mode():
            output = self.model.generate(**inputs, **kwargs)
        return self._reply(output[0], inputs.get("input_ids"))

    def _inputs(self, image: Any, template: Template) -> Any:
        if self.chat:
            messages: list[dict[str, Any]] = []
            if template.system:
                messages.append(
                    {"role": "system", "content": [{"type": "text", "text": template.system}]}
                )
            user = [{"type": "image", "image": image}, {"type": "text", "text": template.user}]
            messages.append({"role": "user", "content": user})
            inputs = self.processor.apply_chat_template(
                messages,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
            )
        else:
            inputs = self.processor(images=image, text=self.options.prompt, return_tensors="pt")
        return inputs.to(self.device, dtype=self.model.dtype)

    def _reply(self, sequence: Any, input_ids: Any) -> Reply:
        prompt_length = 0
        if input_ids is not None and _starts_with(sequence, input_ids[0]):
            prompt_length = int(input_ids.shape[-1])
        new = sequence[prompt_length:].tolist()
        ended = bool(_end_ids(self.model) & set(new))
        finish = "stop" if ended or len(new) < self.options.max_tokens else "length"
        text = self.processor.batch_decode([new], skip_special_tokens=True)[0].strip()
        usage = Usage(prompt_tokens=prompt_length, completion_tokens=len(new))
        return Reply(text=text, finish_reason=finish, usage=usage, model=self.options.model)

    def close(self) -> None:
        self.model = None


def _device(name: str, torch: Any) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _open_rgb(item: ImageItem) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(item.data)) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise PermanentError(f"cannot decode image: {error}") from None


def _starts_with(sequence: Any, prefix: Any) -> bool:
    n = int(prefix.shape[-1])
    return int(sequence.shape[-1]) >= n and bool((sequence[:n] == prefix.to(sequence.device)).all())


def _end_ids(model: Any) -> set[int]:
    config = model.generation_config
    ids = config.eos_token_id
    if ids is None:
        ids = getattr(getattr(model.config, "text_config", None), "sep_token_id", None)
    if ids is None:
        return set()
    return {int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])}
