"""Multimodal LLMs that transformers supports natively, loaded by name with their processor.

Two paths build the same kind of object (an ``AutoModelForImageTextToText`` model and its
processor):

- **by name**: any native image-text-to-text checkpoint (``Qwen/Qwen2.5-VL-7B-Instruct``, the
  3B, Qwen2-VL, Qwen3-VL, LLaVA-OneVision, SmolVLM, or a local folder written by
  ``save_pretrained``) through ``AutoModelForImageTextToText.from_pretrained`` and
  ``AutoProcessor.from_pretrained``. ``local_files_only`` (the default) never touches the network:
  a checkpoint missing from ``cache_dir`` fails at once with a message that names it and says how
  to fetch it, as the CLIP backbones do.
- **tiny** (``name: tiny-qwen2.5-vl``): a Qwen2.5-VL built from a config object with random
  weights, for the tests and the demo. Its processor is the real ``Qwen2_5_VLProcessor`` with a
  byte-level BPE vocabulary trained in memory on a fixed corpus (deterministic), in which the
  level words and A/B are single tokens; its chat template is a minimal ChatML one. A stand-in
  checkpoint (``pretrained``: a state dict from ``agiqa pretrain-backbone``) replaces the
  random weights.

Scoring reads next-token logits after a prompt rendered with the processor's own chat template
(thinking off where the template supports ``enable_thinking``), the answer stem appended as raw
text, as Q-Align and Q-ReAlign do. Batches are left-padded, so the last position of every row is
the position to read; the models' rotary positions follow the attention mask, which keeps a
sample's logits the same whatever else is in its batch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from agiqa.errors import AgiqaError, ConfigError
from agiqa.weights_record import hub_offline

log = logging.getLogger(__name__)

TINY_NAME = "tiny-qwen2.5-vl"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: Modules that map vision features into the language model when they sit outside the tower.
PROJECTOR_NAMES = ("multi_modal_projector", "connector", "mm_projector")

# Special tokens of Qwen2.5-VL's vocabulary that its processor and model rely on.
_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# A minimal ChatML template (the format Qwen models use) for the tiny model; real checkpoints
# bring their own template.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# The text the tiny tokenizer's merges are learned from: the default templates, the level and
# answer words, and the words of the synthetic datasets and the stand-in captions. Any other text
# still tokenizes (byte fallback of byte-level BPE), in more pieces.
_TINY_CORPUS_LINES = (
    "system user assistant",
    "How would you rate the quality of this image?",
    "What do you think about the quality of this image?",
    "Can you rate the quality of this picture?",
    "Can you judge the quality of this image?",
    "How would you judge the quality of this image?",
    "What is your quality rating for this image?",
    "What's your opinion on the quality of this picture?",
    "Rate the quality of this image.",
    "Could you evaluate the quality of this image?",
    "How do you assess the quality of this image?",
    "The quality of the image is excellent.",
    "The quality of the image is good.",
    "The quality of the image is fair.",
    "The quality of the image is poor.",
    "The quality of the image is bad.",
    'This image was generated from the prompt "one red circle on a grey background".',
    "How well does the image match the prompt?",
    "The alignment of the image with the prompt is excellent.",
    "Which image has better quality, Image A or Image B?",
    "Which image matches its prompt better, Image A or Image B?",
    "Image A: Image B: The better one is Image A. The better one is Image B.",
    "Describe the flaws of this image. a clean photo. a degraded photo.",
    "a degraded blurry noisy blocky tinted faded pixelated photo",
    "one two three four red green blue yellow white black orange purple",
    "circle circles square squares triangle triangles star stars diamond diamonds cross crosses",
    "on a grey sky-blue beige mint background",
)


class BackboneUnavailableError(AgiqaError):
    """A multimodal LLM cannot be loaded (not in the cache while offline, unknown name)."""


@dataclass(frozen=True)
class TinySpec:
    """Sizes of the config-built Qwen2.5-VL (the transformers testers use hidden size 32).

    The defaults are the tiny model of the tests and the demo; ``REAL_SIZES`` holds the sizes of
    the published checkpoints, for random-weight builds at real size (``without_weights``).
    """

    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate_size: int = 128
    vision_depth: int = 2
    vision_hidden_size: int = 64
    vision_heads: int = 4
    #: Default: twice the vision hidden size.
    vision_intermediate_size: int | None = None
    patch_size: int = 8
    merge_size: int = 2
    #: Side of the vision tower's attention windows, in merged patches (4: a 64 px image).
    window: int = 4
    #: Vision blocks with global attention (default: the last one).
    full_attention_blocks: tuple[int, ...] | None = None
    #: Embedding rows (default: the tokenizer's size); real checkpoints pad theirs.
    vocab_size: int | None = None
    tie_word_embeddings: bool = False
    rope_theta: float = 10000.0
    #: Seeds the random initialisation, so every fold starts from the same weights.
    seed: int = 0

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any] | None) -> TinySpec:
        values = known_keys(cls, entry, "backbone.tiny")
        if values.get("full_attention_blocks") is not None:
            values["full_attention_blocks"] = tuple(values["full_attention_blocks"])
        return cls(**values)


_QWEN25_VISION = {
    "vision_depth": 32,
    "vision_hidden_size": 1280,
    "vision_heads": 16,
    "vision_intermediate_size": 3420,
    "patch_size": 14,
    "merge_size": 2,
    "window": 4,
    "full_attention_blocks": [7, 15, 23, 31],
    "rope_theta": 1000000.0,
}
#: The published checkpoints' sizes (their config.json), for random weights at real size.
REAL_SIZES: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-VL-7B-Instruct": {
        "hidden_size": 3584,
        "layers": 28,
        "heads": 28,
        "kv_heads": 4,
        "intermediate_size": 18944,
        "vocab_size": 152064,
        **_QWEN25_VISION,
    },
    "Qwen/Qwen2.5-VL-3B-Instruct": {
        "hidden_size": 2048,
        "layers": 36,
        "heads": 16,
        "kv_heads": 2,
        "intermediate_size": 11008,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
        **_QWEN25_VISION,
    },
}


@dataclass(frozen=True)
class BackboneSpec:
    """The ``backbone`` entry of a multimodal-LLM model."""

    #: A transformers checkpoint name or folder, or ``tiny-qwen2.5-vl`` (config-built).
    name: str = TINY_NAME
    #: Stand-in weights for the tiny model (a state-dict file); None keeps the random ones.
    pretrained: str | None = None
    cache_dir: str | None = None
    #: Never download: a checkpoint missing from the cache fails at once.
    local_files_only: bool = True
    #: Storage dtype of the frozen weights (trainable ones are kept in float32).
    dtype: str = "float32"
    attn_implementation: str | None = "sdpa"
    #: Images are padded to a square (mean colour) and resized to this side before the processor.
    image_size: int = 448
    gradient_checkpointing: bool = False
    #: Extra arguments of the chat template (e.g. ``enable_thinking: false`` for Qwen3).
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    tiny: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any] | None) -> BackboneSpec:
        spec = cls(**known_keys(cls, entry, "backbone"))
        if spec.dtype not in DTYPES:
            raise ConfigError(f"backbone.dtype must be one of {sorted(DTYPES)}; got {spec.dtype!r}")
        if not isinstance(spec.image_size, int) or spec.image_size < 16:
            raise ConfigError(
                f"backbone.image_size must be an integer >= 16; got {spec.image_size!r}"
            )
        if spec.pretrained is not None and spec.name != TINY_NAME:
            raise ConfigError(
                "backbone.pretrained names stand-in weights of the tiny model; a real checkpoint "
                f"is loaded by name ({spec.name!r}), so leave pretrained unset"
            )
        return spec

    @property
    def is_tiny(self) -> bool:
        return self.name == TINY_NAME

    @property
    def description(self) -> str:
        if self.is_tiny:
            return f"{TINY_NAME} ({'stand-in weights' if self.pretrained else 'random init'})"
        return self.name


def known_keys(cls: type, entry: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    """``entry`` as a dict, after refusing keys that are not fields of the dataclass ``cls``."""
    entry = dict(entry or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown} (known: {sorted(known)})")
    return entry


@dataclass
class Backbone:
    """A loaded multimodal LLM, its processor and the spec it came from."""

    model: nn.Module
    processor: Any
    spec: BackboneSpec

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def fill_colour(self) -> tuple[int, int, int]:
        """The processor's mean colour, which pads images to a square (DeQA-Score's ``pad``)."""
        mean = getattr(self.processor.image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
        red, green, blue = (round(255 * float(value)) for value in mean[:3])
        return red, green, blue


def load_backbone(spec: BackboneSpec) -> Backbone:
    """The model (on the CPU, in eval mode) and its left-padding processor."""
    if spec.is_tiny:
        model, processor = build_tiny(TinySpec.from_dict(spec.tiny), DTYPES[spec.dtype])
        if spec.pretrained is not None:
            load_stand_in(model, Path(spec.pretrained), TinySpec.from_dict(spec.tiny))
    else:
        model, processor = _from_pretrained(spec)
    # Left padding puts every row's last prompt token in the last column.
    processor.tokenizer.padding_side = "left"
    if spec.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.eval()
    return Backbone(model, processor, spec)


def _from_pretrained(spec: BackboneSpec) -> tuple[nn.Module, Any]:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from agiqa.weights_record import WeightsNotRecordedError, verify_hf_repo

    where = {"cache_dir": spec.cache_dir, "local_files_only": spec.local_files_only}
    if not Path(spec.name).is_dir():  # a hub id: its cached files against the fetch record
        try:
            verify_hf_repo(spec.name, spec.cache_dir, f"multimodal LLM {spec.name}")
        except WeightsNotRecordedError as error:
            raise BackboneUnavailableError(_load_failure(spec, error)) from None
    try:
        # local_files_only alone still lets transformers look for a PEFT adapter on the hub and
        # huggingface_hub fetch its agent registry: an offline node retried them for ~25 s per
        # load. The hub's offline switch (as for the CLIP weights) stops both.
        with hub_offline(spec.local_files_only):
            processor = AutoProcessor.from_pretrained(spec.name, **where)
            model = AutoModelForImageTextToText.from_pretrained(
                spec.name,
                dtype=DTYPES[spec.dtype],
                attn_implementation=spec.attn_implementation,
                **where,
            )
    except (OSError, ValueError, KeyError) as error:
        raise BackboneUnavailableError(_load_failure(spec, error)) from None
    if not hasattr(processor, "tokenizer") or not hasattr(processor, "apply_chat_template"):
        raise ConfigError(
            f"{spec.name}: its processor ({type(processor).__name__}) has no tokenizer or chat "
            "template; an image-text-to-text checkpoint with a chat template is needed"
        )
    return model, processor


def _load_failure(spec: BackboneSpec, error: BaseException) -> str:
    where = spec.cache_dir or "the default Hugging Face cache (HF_HUB_CACHE)"
    message = f"cannot load the multimodal LLM {spec.name!r} from {where}"
    if spec.local_files_only:
        message += (
            " with local_files_only=True: it is not in that cache (or not a native "
            "image-text-to-text checkpoint). Fetch it once where the hub is reachable with "
            "`agiqa weights fetch --configfile <config>` (it records the files' sha256, which "
            "every load checks), or point name at a local folder"
        )
    cause = str(error).splitlines()[0][:400] if str(error) else type(error).__name__
    return f"{message}. Cause: {cause}"


# --- the tiny model ----------------------------------------------------------------------------


def tiny_tokenizer() -> Any:
    """Qwen2's tokenizer class over a byte-level BPE vocabulary learned from a fixed corpus.

    Learning the merges is deterministic (same corpus, same vocabulary, in any process), so the
    stand-in checkpoints and every fold see the same token ids.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    # The same pre-tokenisation as Qwen2's: words keep their leading space ("Ġgood").
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(_TINY_CORPUS_LINES) * 4, trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(pair) for pair in state["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=state["vocab"], merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": list(_SPECIALS[1:])})
    return tokenizer


def tiny_processor(spec: TinySpec) -> Any:
    """The real Qwen2.5-VL processor around the tiny tokenizer."""
    from transformers import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    sizes = {
        "patch_size": spec.patch_size,
        "merge_size": spec.merge_size,
        "temporal_patch_size": 2,
    }
    unit = spec.patch_size * spec.merge_size
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            min_pixels=unit * unit, max_pixels=unit * unit * 4096, **sizes
        ),
        tokenizer=tiny_tokenizer(),
        video_processor=Qwen2VLVideoProcessor(**sizes),
        chat_template=TINY_CHAT_TEMPLATE,
    )


def tiny_config(spec: TinySpec, tokenizer: Any) -> Any:
    """A Qwen2.5-VL config of the given sizes, its special ids from the tiny tokenizer."""
    from transformers import Qwen2_5_VLConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in _SPECIALS}
    head_dim = spec.hidden_size // spec.heads
    if spec.hidden_size % spec.heads or head_dim % 4:
        raise ConfigError("backbone.tiny: hidden_size / heads must be a multiple of 4")
    # Multimodal rotary sections (temporal, height, width) filling half a head in Qwen2.5-VL's
    # proportions (16, 24, 24 of 64).
    half = head_dim // 2
    temporal = max(1, half // 4)
    height = (half - temporal) // 2
    sections = [temporal, height, half - temporal - height]
    vocab_size = max(spec.vocab_size or 0, len(tokenizer))
    vision_blocks = spec.full_attention_blocks or (spec.vision_depth - 1,)
    return Qwen2_5_VLConfig(
        tie_word_embeddings=spec.tie_word_embeddings,
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": spec.hidden_size,
            "intermediate_size": spec.intermediate_size,
            "num_hidden_layers": spec.layers,
            "num_attention_heads": spec.heads,
            "num_key_value_heads": spec.kv_heads,
            "max_position_embeddings": 1024,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": spec.rope_theta,
                "mrope_section": sections,
            },
            "tie_word_embeddings": spec.tie_word_embeddings,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": spec.vision_depth,
            "hidden_size": spec.vision_hidden_size,
            "intermediate_size": spec.vision_intermediate_size or 2 * spec.vision_hidden_size,
            "num_heads": spec.vision_heads,
            "patch_size": spec.patch_size,
            "spatial_merge_size": spec.merge_size,
            "temporal_patch_size": 2,
            "out_hidden_size": spec.hidden_size,
            # Off the flash-attention path every window is one attention call: few, large ones.
            "window_size": spec.window * spec.patch_size * spec.merge_size,
            "fullatt_block_indexes": list(vision_blocks),
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def build_tiny(spec: TinySpec, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, Any]:
    """A randomly initialised Qwen2.5-VL of ``spec``'s sizes (seeded) and its processor."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    processor = tiny_processor(spec)
    config = tiny_config(spec, processor.tokenizer)
    with _seeded(spec.seed):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
    return model, processor


def without_weights(backbone: Mapping[str, Any] | None) -> dict[str, Any]:
    """A backbone entry with random weights of the same sizes (nothing read or downloaded).

    The tiny model drops its stand-in weights; a published checkpoint named in ``REAL_SIZES`` is
    built from its sizes (with the tiny tokenizer: token ids, not text, set the compute).
    """
    entry = dict(backbone or {})
    name = entry.get("name", TINY_NAME)
    if name == TINY_NAME:
        return {**entry, "pretrained": None}
    if name not in REAL_SIZES:
        raise ConfigError(
            f"no random-weight sizes known for {name!r} (known: {sorted(REAL_SIZES)}); add its "
            "config.json sizes to agiqa.models.mllm.backbone.REAL_SIZES"
        )
    kept = {k: v for k, v in entry.items() if k in ("dtype", "attn_implementation", "image_size")}
    kept["gradient_checkpointing"] = entry.get("gradient_checkpointing", False)
    return {"name": TINY_NAME, "tiny": dict(REAL_SIZES[name]), **kept}


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's generator for the duration without disturbing the caller's RNG stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def stand_in_state(model: nn.Module, spec: TinySpec) -> dict[str, Any]:
    """The file content of a stand-in checkpoint: the weights and the sizes they fit."""
    return {"state_dict": model.state_dict(), "tiny": asdict(spec)}


def load_stand_in(model: nn.Module, path: Path, spec: TinySpec) -> None:
    """Load stand-in weights, refusing a file written for other sizes."""
    if not path.is_file():
        raise ConfigError(f"backbone.pretrained {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ConfigError(f"backbone.pretrained {path} is not a stand-in checkpoint")
    written = state.get("tiny")
    if not isinstance(written, dict) or TinySpec.from_dict(written) != spec:
        raise ConfigError(
            f"backbone.pretrained {path} was trained for tiny sizes {state.get('tiny')}, "
            f"but backbone.tiny asks for {asdict(spec)}"
        )
    model.load_state_dict(state["state_dict"])


# --- trainable parts ---------------------------------------------------------------------------


def language_model(model: nn.Module) -> nn.Module:
    """The decoder the LoRA adapters go into (transformers' own lookup)."""
    decoder = model.get_decoder()
    if decoder is model:
        raise ConfigError(f"{type(model).__name__} exposes no language model (get_decoder)")
    return decoder


def vision_modules(model: nn.Module) -> list[nn.Module]:
    """The vision tower plus a separate projector, when the architecture has one."""
    tower = model.get_encoder(modality="image")
    if tower is model or tower is model.get_decoder():
        raise ConfigError(f"{type(model).__name__} exposes no vision tower (get_encoder)")
    owner = getattr(model, "model", model)
    projectors = [getattr(owner, name) for name in PROJECTOR_NAMES if hasattr(owner, name)]
    return [tower, *projectors]


def lora_targets(model: nn.Module) -> list[str]:
    """Full names of every linear layer of the language model (DeQA-Score's LoRA targets)."""
    decoder = language_model(model)
    prefix = next(name for name, module in model.named_modules() if module is decoder)
    return [
        f"{prefix}.{name}"
        for name, module in decoder.named_modules()
        if isinstance(module, nn.Linear) and name
    ]


@dataclass(frozen=True)
class LoraSpec:
    """LoRA on the language model's linear layers (DeQA-Score: r 128, alpha 256, dropout 0.05)."""

    r: int = 128
    alpha: float = 256
    dropout: float = 0.05

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any] | None) -> LoraSpec:
        spec = cls(**known_keys(cls, entry, "lora"))
        if not isinstance(spec.r, int) or isinstance(spec.r, bool) or spec.r < 1:
            raise ConfigError(f"lora.r must be a positive integer; got {spec.r!r}")
        if not 0 <= spec.dropout < 1:
            raise ConfigError(f"lora.dropout must be in [0, 1); got {spec.dropout!r}")
        return spec


def add_lora(model: nn.Module, spec: LoraSpec, train_vision: bool) -> nn.Module:
    """Wrap ``model`` with peft LoRA adapters; only they (and, if asked, the vision side) train.

    Trainable weights are kept in float32 (the adapters by peft, an unfrozen vision tower here),
    so the optimiser never steps bf16 weights.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=lora_targets(model),
        bias="none",
    )
    vision = vision_modules(model) if train_vision else []
    wrapped = get_peft_model(model, config)
    for module in vision:
        module.float()
        module.requires_grad_(True)
    return wrapped


def freeze(model: nn.Module) -> None:
    model.requires_grad_(False)


# --- prompts and answer tokens -----------------------------------------------------------------


def square(image: Image.Image, size: int, fill: tuple[int, int, int]) -> Image.Image:
    """Pad to a square with ``fill`` (aspect kept, as DeQA-Score's ``pad``), then resize."""
    image = image.convert("RGB")
    side = max(image.size)
    if image.width != image.height:
        canvas = Image.new("RGB", (side, side), fill)
        canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        image = canvas
    if side != size:
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return image


@dataclass(frozen=True)
class Turn:
    """One user question about some images and the assistant's answer so far.

    The user message lists ``tags[i]`` then image ``i`` for each image, then ``question``. The
    assistant turn starts with ``stem`` (raw text after the generation prompt); the token read
    is the one that follows it. For training, ``answer`` is the rest of the assistant message
    after the stem (e.g. ``" good."``).
    """

    images: tuple[Image.Image, ...]
    question: str
    stem: str
    tags: tuple[str, ...] = ()
    answer: str | None = None

    def messages(self) -> list[dict[str, Any]]:
        content: list[dict[str, str]] = []
        tags = self.tags or ("",) * len(self.images)
        for tag in tags:
            if tag:
                content.append({"type": "text", "text": tag})
            content.append({"type": "image"})
        content.append({"type": "text", "text": self.question})
        return [{"role": "user", "content": content}]


class Prompter:
    """Renders turns with a processor's chat template and finds the answer tokens in them."""

    def __init__(self, processor: Any, chat_template_kwargs: Mapping[str, Any] | None = None):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.template_kwargs = dict(chat_template_kwargs or {})
        self.end_of_turn = self._end_of_turn()

    def prefix(self, turn: Turn) -> str:
        """Chat-formatted user turn + generation prompt + the stem."""
        rendered = self.processor.apply_chat_template(
            turn.messages(), tokenize=False, add_generation_prompt=True, **self.template_kwargs
        )
        return rendered + turn.stem

    def full(self, turn: Turn) -> str:
        """The prefix, the answer and the template's end-of-turn marker."""
        if turn.answer is None:
            return self.prefix(turn)
        return self.prefix(turn) + turn.answer + self.end_of_turn

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def continuation_id(self, stem: str, word: str) -> int:
        """The one token that ``" " + word`` adds after ``stem``; ConfigError if it adds more."""
        before = self.ids(stem)
        after = self.ids(f"{stem} {word}")
        added = after[len(before) :]
        if after[: len(before)] != before or len(added) != 1:
            pieces = self.tokenizer.convert_ids_to_tokens(added)
            raise ConfigError(
                f"the answer word {word!r} (with its leading space, after {stem!r}) is "
                f"{len(added)} tokens {pieces} for this tokenizer; choose words that are single "
                "tokens (Q-Align's excellent/good/fair/poor/bad are, for Qwen and LLaMA)"
            )
        return added[0]

    def _end_of_turn(self) -> str:
        """What the template writes after an assistant message (e.g. ``<|im_end|>``)."""
        probe = "PROBE"
        user = [{"role": "user", "content": [{"type": "text", "text": "q"}]}]
        assistant = {"role": "assistant", "content": [{"type": "text", "text": probe}]}
        apply = self.processor.apply_chat_template
        try:
            opened = apply(user, tokenize=False, add_generation_prompt=True, **self.template_kwargs)
            closed = apply([*user, assistant], tokenize=False, **self.template_kwargs)
        except Exception as error:  # templates raise anything (jinja, ValueError, TypeError)
            raise ConfigError(
                f"the processor's chat template cannot render a turn: {error}"
            ) from None
        head = opened + probe
        if not closed.startswith(head):
            # Templates that rewrite past turns (e.g. thinking blocks): fall back to EOS.
            return str(self.tokenizer.eos_token or "")
        return closed[len(head) :].rstrip()


def trainable_dtype_report(model: nn.Module) -> str:
    """``dtype: count`` of trainable parameters (logged once, to check the float32 rule)."""
    counts: dict[str, int] = {}
    for parameter in model.parameters():
        if parameter.requires_grad:
            key = str(parameter.dtype).removeprefix("torch.")
            counts[key] = counts.get(key, 0) + parameter.numel()
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"


def batch_ids(values: Sequence[int], device: torch.device | None = None) -> torch.Tensor:
    return torch.tensor(list(values), dtype=torch.long, device=device)
