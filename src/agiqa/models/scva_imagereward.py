"""ImageReward-v1.0's BLIP as transformers ``BlipVisionModel`` + ``BlipTextModel`` (``blip.source:
imagereward`` of the SCVA model).

ImageReward (pip ``image-reward``; the published ``ImageReward.pt``) is ``ImageReward(blip, mlp)``
where ``blip`` is BLIP's ``BLIP_Pretrain``: ``visual_encoder`` (BLIP's own ViT, ViT-L/16 at 224 px
for v1.0), ``text_encoder`` (BLIP's ``med.py`` BERT-base with cross-attention), ``vision_proj`` and
``text_proj``. The SCVA head reads only the two towers, so the conversion keeps those.

Key mapping (after dropping a leading ``blip.``):

- ``visual_encoder.cls_token`` -> ``embeddings.class_embedding`` and ``visual_encoder.pos_embed``
  -> ``embeddings.position_embedding``: both are ``[1, 1, D]`` / ``[1, N + 1, D]`` parameters on
  either side, so nothing is reshaped;
- ``visual_encoder.patch_embed.proj`` -> ``embeddings.patch_embedding`` (the same Conv2d);
- ``visual_encoder.blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}`` ->
  ``encoder.layers.N.{layer_norm1, self_attn.qkv, self_attn.projection, layer_norm2, mlp.fc1,
  mlp.fc2}``. transformers' ``BlipAttention`` has a fused ``qkv`` Linear too and splits its output
  with the same ``reshape(B, T, 3, heads, head_dim)`` as BLIP's ViT, so the fused weight is copied
  as it is (rows: all query heads, then all key heads, then all value heads);
- ``visual_encoder.norm`` -> ``post_layernorm`` (both towers apply it to every token);
- ``text_encoder.*``: transformers' BLIP text model kept ``med.py``'s module names, so the keys map
  one to one; only ``embeddings.position_ids`` is dropped (a persistent ``arange`` buffer in
  ``med.py``, a non-persistent one that transformers rebuilds).

Dropped on purpose: ImageReward's ``mlp.*`` score head and BLIP's ``vision_proj`` / ``text_proj``
(and ``itm_head`` of BLIP ITM checkpoints): the SCVA head uses none of them. Any other key is an
error, as is any parameter of the built modules that the checkpoint lacks.

Sizes are read from the tensors (so a tiny checkpoint in the same layout works): widths, patch
size, image size (from the position-embedding count), depth, MLP width, vocabulary, positions and
the cross-attention width. Head counts are not visible in the shapes: they default to
``width // 64`` (ViT-L: 16, BERT-base: 12, as ImageReward) and can be set with ``vision_heads`` /
``text_heads``. Settings that match ImageReward's code: vision ``layer_norm_eps`` 1e-6 (BLIP's
ViT), exact GELU and no attention dropout; text ``layer_norm_eps`` 1e-12 and dropout 0.1 on hidden
states and attention probabilities (BLIP's ``med_config.json``, which the published SCVA
fine-tunes with). Not reproduced: the 0.1 stochastic depth of BLIP's ViT-L, which transformers'
BLIP vision tower does not have (training-time only; evaluation outputs are unaffected).

Checkpoint formats: a state dict, or a dict holding one under ``"state_dict"`` or ``"model"``.
Files are read with ``torch.load(weights_only=True)``: the pickled whole model the published SCVA
code loads (``full_model.pth``) is refused with the one-line command that re-saves its state dict,
so no code from a checkpoint runs here.

Tokenizer: ImageReward's is ``bert-base-uncased`` plus ``[DEC]`` (bos) and ``[ENC]`` (additional
special token), BLIP's ``init_tokenizer``; the same two tokens are added here, and the result
must have exactly as many tokens as the checkpoint's word embeddings, which also catches a wrong
or empty tokenizer directory. Text encoding: ImageReward (inference and training) and the
published SCVA code feed the tokenizer's ids unchanged (``[CLS]`` first, not BLIP ITM's
``[ENC]``), the tokenizer's padding mask as ``attention_mask`` and an all-ones mask over the image
tokens; SCVA's ``encode_text`` does the same.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agiqa.errors import ConfigError

#: ImageReward-v1.0's BLIP sizes (ViT-L/16 at 224 and BERT-base with cross-attention, BLIP's
#: ``med_config.json`` vocabulary of 30,524 = bert-base-uncased + ``[DEC]`` + ``[ENC]``), as
#: ``BlipConfig`` kwargs: the architecture without the checkpoint, for counting parameters
#: (``agiqa models list --no-weights``).
IMAGEREWARD_V1: dict[str, Any] = {
    "vision_config": {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "image_size": 224,
        "patch_size": 16,
        "layer_norm_eps": 1e-6,
    },
    "text_config": {
        "vocab_size": 30524,
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "max_position_embeddings": 512,
        "encoder_hidden_size": 1024,
        "layer_norm_eps": 1e-12,
    },
}
#: Keys (after the ``blip.`` prefix is removed) that are read but not used.
DROPPED_PREFIXES = ("mlp.", "vision_proj.", "text_proj.", "itm_head.")
_POSITION_IDS = "embeddings.position_ids"
_VISION_PREFIX = "visual_encoder."
_TEXT_PREFIX = "text_encoder."
_TEXT_MLP = "encoder.layer.0.intermediate.dense.weight"
_CROSS_KEY = "encoder.layer.0.crossattention.self.key.weight"
# BLIP ViT name -> transformers BlipVisionModel name; the first match applies.
_VISION_RENAMES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^cls_token$", "embeddings.class_embedding"),
        (r"^pos_embed$", "embeddings.position_embedding"),
        (r"^patch_embed\.proj\.(weight|bias)$", r"embeddings.patch_embedding.\1"),
        (r"^blocks\.(\d+)\.norm1\.(weight|bias)$", r"encoder.layers.\1.layer_norm1.\2"),
        (r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", r"encoder.layers.\1.self_attn.qkv.\2"),
        (
            r"^blocks\.(\d+)\.attn\.proj\.(weight|bias)$",
            r"encoder.layers.\1.self_attn.projection.\2",
        ),
        (r"^blocks\.(\d+)\.norm2\.(weight|bias)$", r"encoder.layers.\1.layer_norm2.\2"),
        (r"^blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)$", r"encoder.layers.\1.mlp.\2.\3"),
        (r"^norm\.(weight|bias)$", r"post_layernorm.\1"),
    )
)
_RESAVE = (
    "python -c \"import torch; m = torch.load('{path}', weights_only=False); "
    "torch.save(m.state_dict(), '{path}.state_dict.pt')\""
)


@dataclass
class ConvertedBlip:
    """An ImageReward state dict split into transformers' vision and text state dicts."""

    vision: dict[str, torch.Tensor] = field(default_factory=dict)
    text: dict[str, torch.Tensor] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def convert_state_dict(state: Mapping[str, torch.Tensor]) -> ConvertedBlip:
    """Rename ImageReward / BLIP keys to transformers' BLIP keys (pure; tensors are not copied)."""
    out = ConvertedBlip()
    for key, tensor in state.items():
        name = key.removeprefix("blip.")
        if name.startswith(DROPPED_PREFIXES) or name == _TEXT_PREFIX + _POSITION_IDS:
            out.dropped.append(key)
        elif name.startswith(_TEXT_PREFIX):
            out.text[name.removeprefix(_TEXT_PREFIX)] = tensor
        elif name.startswith(_VISION_PREFIX) and (
            target := _vision_name(name.removeprefix(_VISION_PREFIX))
        ):
            out.vision[target] = tensor
        else:
            out.unexpected.append(key)
    return out


def _vision_name(name: str) -> str | None:
    for pattern, replacement in _VISION_RENAMES:
        if pattern.match(name):
            return pattern.sub(replacement, name)
    return None


def build_modules(
    converted: ConvertedBlip,
    source: str | Path,
    vision_heads: int | None = None,
    text_heads: int | None = None,
) -> tuple[nn.Module, nn.Module]:
    """transformers vision and text modules sized from ``converted``, loaded strictly.

    ``source`` names the checkpoint in errors.
    """
    from transformers import BlipTextConfig, BlipVisionConfig
    from transformers.models.blip.modeling_blip import BlipVisionModel
    from transformers.models.blip.modeling_blip_text import BlipTextModel

    if converted.unexpected:
        raise ConfigError(
            f"{source}: not an ImageReward / BLIP checkpoint layout; unexpected keys: "
            f"{_listing(converted.unexpected)}"
        )
    vision_kwargs = vision_config(converted.vision, source, vision_heads)
    vision = BlipVisionModel(BlipVisionConfig(**vision_kwargs))
    text_kwargs = text_config(converted.text, source, text_heads)
    if text_kwargs["encoder_hidden_size"] != vision.config.hidden_size:
        raise ConfigError(
            f"{source}: the text encoder cross-attends to {text_kwargs['encoder_hidden_size']}-d "
            f"features but the vision tower is {vision.config.hidden_size}-d"
        )
    text = BlipTextModel(BlipTextConfig(**text_kwargs), add_pooling_layer=False)
    load_strict(vision, converted.vision, source, "vision tower")
    load_strict(text, converted.text, source, "text encoder")
    return vision, text


def vision_config(
    state: Mapping[str, torch.Tensor], source: str | Path, heads: int | None = None
) -> dict[str, Any]:
    """``BlipVisionConfig`` kwargs read from a converted vision state dict."""
    width = _tensor(state, "embeddings.class_embedding", source).shape[-1]
    patch = _tensor(state, "embeddings.patch_embedding.weight", source).shape[-1]
    positions = _tensor(state, "embeddings.position_embedding", source).shape[1] - 1
    grid = round(positions**0.5)
    if grid * grid != positions:
        raise ConfigError(f"{source}: {positions} vision patch positions is not a square grid")
    return {
        "hidden_size": width,
        "intermediate_size": _tensor(state, "encoder.layers.0.mlp.fc1.weight", source).shape[0],
        "num_hidden_layers": _depth(state, "encoder.layers.", source),
        "num_attention_heads": _heads(width, heads, source, "vision"),
        "image_size": grid * patch,
        "patch_size": patch,
        "hidden_act": "gelu",  # BLIP's ViT uses nn.GELU, the exact (erf) form
        "layer_norm_eps": 1e-6,  # BLIP's ViT: partial(nn.LayerNorm, eps=1e-6)
        "attention_dropout": 0.0,
    }


def text_config(
    state: Mapping[str, torch.Tensor], source: str | Path, heads: int | None = None
) -> dict[str, Any]:
    """``BlipTextConfig`` kwargs read from a converted text state dict."""
    vocab, width = _tensor(state, "embeddings.word_embeddings.weight", source).shape
    return {
        "vocab_size": vocab,
        "hidden_size": width,
        "intermediate_size": _tensor(state, _TEXT_MLP, source).shape[0],
        "num_hidden_layers": _depth(state, "encoder.layer.", source),
        "num_attention_heads": _heads(width, heads, source, "text"),
        "max_position_embeddings": _tensor(
            state, "embeddings.position_embeddings.weight", source
        ).shape[0],
        "encoder_hidden_size": _tensor(state, _CROSS_KEY, source).shape[1],
        "is_decoder": True,  # transformers builds the cross-attention layers only for a decoder
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,  # BLIP's med_config.json, as the rest of this block
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "pad_token_id": 0,
        "bos_token_id": None,  # generation ids; the encoder reads none of them
        "eos_token_id": None,
        "sep_token_id": None,
    }


def load_strict(
    module: nn.Module, state: Mapping[str, torch.Tensor], source: str | Path, part: str
) -> None:
    """``load_state_dict(strict=True)`` with a ConfigError naming the file and the keys."""
    expected = set(module.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ConfigError(
            f"{source}: the ImageReward {part} does not match transformers' BLIP; "
            f"missing keys: {_listing(missing)}; unexpected keys: {_listing(unexpected)}"
        )
    try:
        module.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:  # shape mismatches
        raise ConfigError(f"{source}: cannot load the ImageReward {part}: {exc}") from None


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a local checkpoint file, never unpickling arbitrary objects."""
    from agiqa.weights_record import verify_weights

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"blip.checkpoint {path} does not exist")
    # what `agiqa weights fetch` recorded for it, checked before a byte is unpickled
    verify_weights(path.parent, [path], "ImageReward checkpoint (blip.checkpoint)")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise ConfigError(f"{path}: cannot read the checkpoint: {exc}") from None
        raise ConfigError(
            f"{path} holds pickled Python objects (e.g. the whole ImageReward model, as the "
            "published SCVA full_model.pth), which are not loaded here because unpickling runs "
            "code from the file. Re-save its state dict once, where the image-reward package "
            "imports and only if you trust the file: "
            f"{_RESAVE.format(path=path)} (ImageReward's own ImageReward.pt is already a state "
            "dict)"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise ConfigError(f"{path}: cannot read the checkpoint: {exc}") from None
    return _state_dict(loaded, path)


def _state_dict(loaded: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(loaded, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(loaded.get(wrapper), Mapping):
                loaded = loaded[wrapper]
                break
    if not isinstance(loaded, Mapping) or not loaded:
        raise ConfigError(f"{path}: expected a state dict, got {type(loaded).__name__}")
    bad = [str(k) for k, v in loaded.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ConfigError(f"{path}: entries that are not tensors: {_listing(bad)}")
    return {str(k): v for k, v in loaded.items()}


def load_tokenizer(name_or_path: str, vocab_size: int) -> Any:
    """bert-base-uncased (local files only) with BLIP's ``[DEC]`` and ``[ENC]`` tokens added."""
    from transformers import BertTokenizer

    try:
        tokenizer = BertTokenizer.from_pretrained(str(name_or_path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the tokenizer {name_or_path!r}: {exc}") from None
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    # transformers returns an empty tokenizer for a name it cannot find offline; the count
    # check catches that and a tokenizer other than the one the embeddings were trained with.
    if len(tokenizer) != vocab_size:
        raise ConfigError(
            f"tokenizer {name_or_path!r} has {len(tokenizer)} tokens with [DEC] and [ENC], the "
            f"checkpoint's word embeddings {vocab_size}: point blip.tokenizer at a local "
            "bert-base-uncased tokenizer directory (vocab.txt)"
        )
    return tokenizer


def blip_from_imagereward(config: dict[str, Any]) -> tuple[nn.Module, nn.Module, Any]:
    """``blip`` config ``{checkpoint, tokenizer, vision_heads, text_heads}`` -> the SCVA triple."""
    checkpoint = config.pop("checkpoint", None)
    tokenizer_name = config.pop("tokenizer", "bert-base-uncased")
    vision_heads = config.pop("vision_heads", None)
    text_heads = config.pop("text_heads", None)
    if config:
        raise ConfigError(f"blip: unknown keys {sorted(config)} for source 'imagereward'")
    if not checkpoint:
        raise ConfigError("blip.source 'imagereward' needs blip.checkpoint (a local file)")
    converted = convert_state_dict(read_checkpoint(checkpoint))
    vision, text = build_modules(converted, checkpoint, vision_heads, text_heads)
    tokenizer = load_tokenizer(tokenizer_name, text.config.vocab_size)
    return vision, text, tokenizer


def _tensor(state: Mapping[str, torch.Tensor], key: str, source: str | Path) -> torch.Tensor:
    if key not in state:
        raise ConfigError(f"{source}: the checkpoint lacks {key} (transformers' name)")
    return state[key]


def _depth(state: Mapping[str, torch.Tensor], prefix: str, source: str | Path) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    if not indices:
        raise ConfigError(f"{source}: no {prefix}N layers in the checkpoint")
    if indices != set(range(len(indices))):
        raise ConfigError(f"{source}: {prefix}N layers are not numbered 0..{len(indices) - 1}")
    return len(indices)


def _heads(width: int, heads: int | None, source: str | Path, part: str) -> int:
    count = int(heads) if heads is not None else max(1, width // 64)
    if count < 1 or width % count:
        raise ConfigError(f"{source}: {part} width {width} does not split into {count} heads")
    return count


def _listing(keys: list[str], limit: int = 20) -> str:
    if not keys:
        return "none"
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more
