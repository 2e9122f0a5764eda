"""SCVA-AGIQA: semantic consistency and visual attention (methods.md sections 1 and 9.1).

Architecture, per sample (one crop in per-crop training, ``K`` crops otherwise):

- **BLIP image-grounded text encoder** (``blip`` config; published: ImageReward-v1.0's BLIP,
  ``blip.source: imagereward``): the whole image resized to the BLIP vision tower's native input
  size ``W`` (224 for ImageReward's ViT-L/16, 384 for the BLIP ITM checkpoints) goes through the
  vision tower; the prompt and the description are each encoded by the BLIP text encoder
  cross-attending to those patch embeddings (last hidden state, ``max_length`` tokens), then
  projected to ``dim``.
- **timm ViT** (``vit`` config; published: ``vit_base_patch16_224``, which the pinned timm 0.6.13
  resolved to the ``augreg_in21k_ft_in1k`` weights) on each ``S x S`` crop at native resolution:
  the patch tokens of ``feature_blocks`` (published: 8-11) are concatenated and reduced by
  Conv1x1 -> Conv3x3 + ReLU -> LayerNorm to ``dim`` channels.
- **Visual tokens cross-attend to the description** (``heads`` heads; published: LayerNorm on
  the text, no padding mask, a plain residual).
- **CSF-weighted attention pooling** (``scva_parts.CsfPooling``): spatial and channel gates,
  pooled with the per-patch CSF map; published form ``sum(f w) / sum(w) + 0.4 sum(f)``.
- **Semantic-consistency branch**: description tokens aligned to prompt tokens (published:
  Hungarian matching), gated two-key Gemini fusion, pooling (published: ``Linear(L -> 1)`` over
  the token positions) (``scva_parts.SemanticConsistency``).
- **Mixture-of-experts regressor** on ``[visual, consistency]``: 4 experts (``Linear -> ReLU
  -> Linear``, no dropout), top-3 gating (a softmax over the three kept logits, as published),
  each expert on a fixed random half of the features plus 32 shared dims from a
  cross-attention in which the visual feature queries the consistency token.
- **Crops**: with ``crop_training: per_crop`` (published) every random training crop is its own
  sample with the image's target and its own loss (``train_crops`` samples per image per epoch,
  so the batch counts crops and an epoch has ``train_crops`` times as many steps); at evaluation
  the predictions of ``test_crops`` crops are averaged. ``crop_training: averaged`` instead
  averages the ``train_crops`` crops of an image inside ``forward``, before the loss.
- **Loss**: SmoothL1 with beta ``loss_beta`` on the native MOS scale (published: 1 on raw MOS),
  computed on targets normalised to [0, 1] with beta ``loss_beta / (high - low)`` per dimension
  (0.2 on a 0-5 scale, 0.01 on AIGCIQA2023's 0-100): the same loss up to a constant factor, which
  Adam's update ignores.

Dimension kinds: the regressor has one output per trained dimension whatever its kind (the
inputs hold the image, the prompt and the description). The paper preset trains quality only
(``dimensions: [quality]``; ``[overall]`` on AIGIQA-20K, whose single MOS the published code
regressed).

The defaults are the published head (``normalisation: swapped``, ``token_alignment:
hungarian``, ``consistency_pooling: linear``, ``description_attention: published``, ``fusion:
published``, ``shared_attention: cross``, ``dropout: 0``); each setting this project used before
stays a switch (docs/methods.md lists them with their measured effect).

Deliberate differences from the published code, each with its reason and, where the published
behaviour is worth measuring, the switch that restores it (docs/methods.md has the table):

- the CSF map is computed per image (grey min-max and map min-max per image): the published code
  took both over the batch tensor, so a prediction depended on its batch-mates (a bug; no
  switch). It is vectorised with ``unfold`` + ``torch.fft`` on the device (no 196-step Python
  loop; same values); the upsample-to-224-and-back of the map is dropped (the identity on the
  patch grid up to interpolation blur); the radial frequency is ``hypot(fx, fy)`` with the
  published ``fftfreq(patch, d=0.02)`` scaling (``csf_sample_spacing``);
- switches, not defaults: ``normalisation: matched`` gives each backbone its own statistics
  (the crops the timm ViT's, 0.5/0.5 for the ``augreg`` weights; the whole image BLIP's), where
  the published code swaps them on AGIQA-1K/3K and AIGCIQA2023 (``swapped``) and uses
  ImageNet's for both on AIGIQA-20K (``imagenet``); ``token_alignment: soft`` replaces the
  Hungarian ``TokenAligner`` (CPU, a loop over the batch, padding matched too) by a
  differentiable soft alignment over real tokens; ``consistency_pooling: attention`` replaces
  the ``Linear(35 -> 1)`` over token positions (padding included) by a masked attention
  pooling;
- the MoE expert feature masks are fixed random halves registered as buffers (``mask_seed``): the
  published learnable ``mask_logits`` never trained (top-k passes no gradient), so this is what
  they did in effect, stated honestly (no switch: the behaviour is the same);
- the experts' output bias starts at 0.5, the middle of the normalised scale (the published code
  regressed raw MOS from PyTorch's default initialisation);
- with ``crop_training: averaged`` (not the published default) the BLIP tower and the texts run
  once per image, not once per crop;
- evaluation crops are a fixed grid over the image (deterministic given the image) instead of
  random crops replayed by a fixed worker seed; images whose short side is below the crop size
  are upscaled (bicubic, aspect kept) to it; ``resize_below`` (published on AIGIQA-20K: 500,
  ``AdaptiveResize``) first scales images whose short side is below it up to it;
- the published worker seeding (every worker and epoch replays the same random crops) is not
  reproduced: crops are drawn from the fold's seeded generator;
- an empty description (``""`` or ``descriptions=None``: the "no description" ablation) falls back
  to the prompt, so the visual cross-attention then reads the prompt and the consistency branch
  compares the prompt with itself (the published data has a description for every image);
- the training recipe is the model entry's ``train:`` section; the paper preset sets the
  published AdamW (no decay on biases and 1-D parameters), 3-epoch warmup, step decay x0.1 every
  3 epochs, fp16 and no clipping (docs/methods.md).

Frozen vs trainable (``freeze``): ``blip_fraction`` f freezes the BLIP text embeddings + the first
``int(f * text layers)`` layers and the vision embeddings + the first ``int(f * vision layers)``
layers (published: 0.5, i.e. text 0-5 and ViT-L 0-11); ``vit`` is ``"none"`` (published: fully
fine-tuned), ``"full"`` or N (patch embedding + first N blocks). ViT blocks past the last feature
block, its final norm and head are pruned; BLIP's projections and ITM head are not kept.

ImageReward-v1.0 weights (``blip.source: imagereward``, the published backbone) are converted from
ImageReward's BLIP (BLIP ViT-L/16 + ``med.py`` BERT) to transformers' ``BlipVisionModel`` and
``BlipTextModel`` by ``scva_imagereward`` (key renames only, strict load, sizes read from the
checkpoint). ``encode_text`` already encodes as ImageReward and the published code do (``[CLS]``
first, not BLIP ITM's ``[ENC]``). The pickled ``full_model.pth`` is refused (re-save its state
dict).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from agiqa.data.manifest import Dimension
from agiqa.errors import ConfigError
from agiqa.models.base import MODELS, AgiqaModel, PartData
from agiqa.models.crops import RepeatedSamples, upscale_to
from agiqa.models.scva_parts import (
    CONSISTENCY_POOLING,
    CSF_POOLING,
    DESCRIPTION_ATTENTION,
    FUSION,
    SHARED_ATTENTION,
    TOKEN_ALIGNMENT,
    CsfPooling,
    DescriptionAttention,
    MoeRegressor,
    SemanticConsistency,
    VisualNeck,
    csf_filter,
    csf_weights,
)
from agiqa.weights_record import (
    WeightsNotRecordedError,
    hub_offline,
    verify_hf_repo,
    weights_only_loads,
)

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer

# BLIP (like CLIP) was trained with these statistics.
BLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
BLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Tiny random BLIP for the demo and the tests (kwargs of ``BlipConfig``).
TINY_BLIP: dict[str, Any] = {
    "text_config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 64,
        "encoder_hidden_size": 32,
    },
    "vision_config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    },
}
#: Tiny timm ViT (``VisionTransformer`` kwargs) for the demo and the tests.
TINY_VIT: dict[str, Any] = {
    "img_size": 32,
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 4,
    "num_heads": 2,
    "mlp_ratio": 2.0,
}
# Fallback vocabulary when a config-built BLIP names no vocab file: WordPiece then spells any
# word with single characters, which is enough for a random tiny model.
_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"-()/&"
BLIP_SOURCES = ("config", "transformers", "imagereward")
#: The keys of a ``blip`` entry beside ``source``, per source (see the builders below).
BLIP_KEYS = {
    "config": ("config", "vocab_file"),
    "transformers": ("name_or_path", "local_files_only", "cache_dir"),
    "imagereward": ("checkpoint", "tokenizer", "vision_heads", "text_heads"),
}
CROP_TRAINING = ("per_crop", "averaged")
NORMALISATIONS = ("swapped", "imagenet", "matched")


class ScvaTransform:
    """PIL image -> ``[K + 1, 3, M, M]``: ``K`` crops (``S x S``) then the whole image (``W x W``).

    Crops and whole image have their own sizes (the ViT's and the BLIP vision tower's native
    inputs), so each is zero-padded at the bottom and right to ``M = max(S, W)``; ``Scva.forward``
    slices them back. Picklable (a plain class, not a closure), so data-loader workers can use it.
    """

    def __init__(
        self,
        size: int,
        crops: int,
        train: bool,
        vit_stats: tuple[Sequence[float], Sequence[float]],
        blip_stats: tuple[Sequence[float], Sequence[float]],
        whole_size: int | None = None,
        resize_below: int | None = None,
    ) -> None:
        self.size = size
        self.crops = crops
        self.train = train
        self.vit_stats = (list(vit_stats[0]), list(vit_stats[1]))
        self.blip_stats = (list(blip_stats[0]), list(blip_stats[1]))
        self.whole_size = int(whole_size or size)
        self.resize_below = resize_below

    def __repr__(self) -> str:  # deterministic: transforms' reprs key caches
        settings = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"ScvaTransform({settings})"

    def __call__(self, image: Image.Image) -> torch.Tensor:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        image = image.convert("RGB")
        whole = TF.resize(
            TF.to_tensor(image),
            [self.whole_size, self.whole_size],
            InterpolationMode.BICUBIC,
            antialias=True,
        )
        whole = TF.normalize(whole.clamp(0, 1), *self.blip_stats)
        if self.resize_below:
            image = upscale_to(image, self.resize_below)  # published AdaptiveResize (AIGIQA-20K)
        native = TF.to_tensor(upscale_to(image, self.size))
        crops = [TF.normalize(crop, *self.vit_stats) for crop in self._crops(native)]
        side = max(self.size, self.whole_size)
        return torch.stack([_pad_to(part, side) for part in [*crops, whole]])

    def _crops(self, image: torch.Tensor) -> list[torch.Tensor]:
        from torchvision.transforms import functional as TF

        height, width = image.shape[-2:]
        if self.train:
            out = []
            for _ in range(self.crops):
                top = int(torch.randint(0, height - self.size + 1, ()).item())
                left = int(torch.randint(0, width - self.size + 1, ()).item())
                crop = image[:, top : top + self.size, left : left + self.size]
                out.append(TF.hflip(crop) if torch.rand(()).item() < 0.5 else crop)
            return out
        return [
            image[:, top : top + self.size, left : left + self.size]
            for top, left in grid_offsets(height, width, self.size, self.crops)
        ]


def _pad_to(image: torch.Tensor, side: int) -> torch.Tensor:
    """Zero-pad ``[3, h, w]`` at the bottom and right to ``[3, side, side]``."""
    height, width = image.shape[-2:]
    return F.pad(image, (0, side - width, 0, side - height))


def grid_offsets(height: int, width: int, size: int, count: int) -> list[tuple[int, int]]:
    """``count`` crop corners on a near-square grid over the image (row-major, deterministic)."""
    rows = max(1, math.isqrt(count))
    cols = math.ceil(count / rows)
    tops = _spread(height - size, rows)
    lefts = _spread(width - size, cols)
    return [(top, left) for top in tops for left in lefts][:count]


def _spread(span: int, count: int) -> list[int]:
    if count == 1:
        return [span // 2]
    return [round(i * span / (count - 1)) for i in range(count)]


@MODELS.register("scva")
class Scva(AgiqaModel):
    """SCVA-AGIQA; the deliberate differences and their switches are in the module docstring.

    Args:
        dimensions: The trained dimensions; one output column each, in order, whatever the kind.
        blip: ``{source: config, config: {BlipConfig kwargs}, vocab_file: path|None}`` (tiny
            random model, the default), ``{source: transformers, name_or_path, local_files_only,
            cache_dir}`` (a BLIP ITM checkpoint, e.g. ``Salesforce/blip-itm-base-coco``, fed at
            its native resolution) or ``{source: imagereward, checkpoint, tokenizer,
            vision_heads, text_heads}`` (ImageReward-v1.0 state dict + local bert-base-uncased
            tokenizer, the published backbone, see ``scva_imagereward``).
        vit: ``{name, pretrained, checkpoint, offline}`` for ``timm.create_model`` (``offline``:
            fail at once when the weights are not cached) or a dict of ``VisionTransformer``
            kwargs, optionally with a ``checkpoint`` state dict whose classifier ``head.*`` is
            dropped (default: a tiny random ViT).
        feature_blocks: ViT blocks whose patch tokens feed the head (published: 8-11).
        freeze: ``{blip_fraction: float, vit: "none" | "full" | int}``.
        dim: Width of the head (published 512).
        neck_channels: Width after the Conv1x1 of the visual neck (published 768).
        heads: Heads of the visual-to-description cross-attention (published 8).
        max_length: Token length of prompt and description (published 35).
        train_crops: Random crops per image and epoch in training (published 2-7).
        test_crops: Crops averaged at evaluation (published 12-15).
        crop_training: ``per_crop`` (published: each crop a sample with its own loss) or
            ``averaged`` (an image's crops averaged before the loss).
        crop_size: Crop side ``S`` (default: the ViT's input size).
        resize_below: Scale images whose short side is below this up to it before cropping
            (published on AIGIQA-20K: 500); None: only up to the crop size.
        normalisation: ``swapped`` (published for AGIQA-1K/3K and AIGCIQA2023: crops with
            CLIP's statistics, whole image with ImageNet's), ``imagenet`` (published for
            AIGIQA-20K: ImageNet's for both) or ``matched`` (each backbone its own statistics).
        csf_pooling: ``published`` (``sum(f w) / sum(w) + floor * sum(f)``) or
            ``weighted_mean`` (``sum(f (w + floor)) / sum(w + floor)``).
        csf_floor: The 0.4 of either pooling form (published 0.4).
        csf_sample_spacing: ``d`` of ``fftfreq`` for the CSF frequencies (published 0.02).
        se_reduction: Squeeze-excite reduction of the pooling (published 16).
        token_alignment: ``hungarian`` (published) or ``soft`` (differentiable).
        consistency_pooling: ``linear`` (published ``Linear(L -> 1)``) or ``attention`` (masked).
        description_attention: ``published`` (LayerNorm on the text, no mask, no norm after the
            residual) or ``masked`` (padding masked, LayerNorm after the residual).
        fusion: ``published`` Gemini fusion (noise before the key projection, bias-free q/k/v,
            ``d/4 -> GELU`` relation gate) or ``offset`` (zero-initialised offset after it,
            biased q/k/v, ``d -> ReLU`` gate).
        shared_attention: ``cross`` (published: the visual feature queries the consistency
            token) or ``self`` (self-attention over both, then their mean).
        align_temperature: Softmax temperature of the soft token alignment.
        experts: MoE experts (published 4).
        top_k: Experts kept per sample (published 3).
        expert_hidden: Hidden width of each expert (published 128).
        shared_dim: Shared cross-attention dims fed to every expert (published 32).
        shared_heads: Heads of that cross-attention (published 4).
        shared_head_dim: Width of each of its heads (published 16).
        dropout: Dropout in the description attention and the experts (published: none).
        mask_seed: Seed of the fixed expert feature masks.
        loss_beta: SmoothL1 beta on the native MOS scale (published 1), divided by each
            dimension's scale width for the normalised targets.
    """

    trainable = True
    uses_gpu = True
    uses_descriptions = True
    backbone_name = "BLIP text encoder + timm ViT"

    def __init__(
        self,
        dimensions: Sequence[Dimension],
        blip: Mapping[str, Any] | None = None,
        vit: Mapping[str, Any] | None = None,
        feature_blocks: Sequence[int] | None = None,
        freeze: Mapping[str, Any] | None = None,
        dim: int = 64,
        neck_channels: int = 64,
        heads: int = 4,
        max_length: int = 35,
        train_crops: int = 1,
        test_crops: int = 4,
        crop_training: str = "per_crop",
        crop_size: int | None = None,
        resize_below: int | None = None,
        normalisation: str = "swapped",
        csf_pooling: str = "published",
        csf_floor: float = 0.4,
        csf_sample_spacing: float = 0.02,
        se_reduction: int = 16,
        token_alignment: str = "hungarian",
        consistency_pooling: str = "linear",
        description_attention: str = "published",
        fusion: str = "published",
        shared_attention: str = "cross",
        align_temperature: float = 0.1,
        experts: int = 4,
        top_k: int = 3,
        expert_hidden: int = 128,
        shared_dim: int = 32,
        shared_heads: int = 4,
        shared_head_dim: int = 16,
        dropout: float = 0.0,
        mask_seed: int = 0,
        loss_beta: float = 1.0,
    ) -> None:
        super().__init__(dimensions)
        self.check_settings(locals())
        self.max_length = int(max_length)
        self.train_crops = int(train_crops)
        self.test_crops = int(test_crops)
        self.crop_training = crop_training
        self.resize_below = None if resize_below is None else int(resize_below)
        self.csf_floor = float(csf_floor)
        blip_config = dict(blip or {})
        blip_source = blip_config.get("source", "config")
        self.blip_vision, self.text_encoder, self.tokenizer = build_blip(blip_config)
        text_width = self.text_encoder.config.hidden_size
        if self.text_encoder.config.max_position_embeddings < self.max_length:
            raise ConfigError(
                f"max_length {max_length} exceeds the BLIP text encoder's "
                f"{self.text_encoder.config.max_position_embeddings} positions"
            )
        self.vit, vit_stats = build_vit(vit)
        self.feature_blocks = self._feature_blocks(feature_blocks)
        self.vit.prune_intermediate_layers(self.feature_blocks, prune_norm=True, prune_head=True)
        self.patch = int(self.vit.patch_embed.patch_size[0])
        self.crop_size = int(crop_size or self.vit.patch_embed.img_size[0])
        if tuple(self.vit.patch_embed.img_size) != (self.crop_size, self.crop_size):
            raise ConfigError(
                f"crop_size {self.crop_size} differs from the ViT input size "
                f"{self.vit.patch_embed.img_size}"
            )
        #: The BLIP vision tower's native input side: the whole image is resized to it.
        self.whole_size = int(self.blip_vision.config.image_size)
        self.crop_stats, self.whole_stats = _input_stats(normalisation, vit_stats)
        self.backbone_name = f"BLIP ({blip_source}) + timm {_vit_label(vit)}"
        vit_width = self.vit.embed_dim
        # The published text projection: a bias-free matrix, N(0, 1 / text_width) at init.
        self.text_proj = nn.Linear(text_width, dim, bias=False)
        nn.init.normal_(self.text_proj.weight, std=text_width**-0.5)
        self.neck = VisualNeck(len(self.feature_blocks) * vit_width, neck_channels, dim)
        self.cross = DescriptionAttention(dim, heads, dropout, description_attention)
        self.pooling = CsfPooling(dim, se_reduction, csf_floor, csf_pooling)
        self.consistency = SemanticConsistency(
            dim, align_temperature, self.max_length, token_alignment, consistency_pooling, fusion
        )
        self.head = MoeRegressor(
            dim, len(self.dimensions), experts, top_k, expert_hidden, shared_dim, shared_heads,
            dropout, mask_seed, shared_attention, shared_head_dim,
        )  # fmt: skip
        for expert in self.head.experts:
            nn.init.constant_(expert[-1].bias, 0.5)
        self.register_buffer("csf", csf_filter(self.patch, csf_sample_spacing), persistent=False)
        # Published beta on the raw MOS = beta / (high - low) on the normalised targets.
        betas = [float(loss_beta) / (d.high - d.low) for d in self.dimensions]
        self.register_buffer("loss_betas", torch.tensor(betas), persistent=False)
        self._freeze(dict(freeze or {}))

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        super().check_settings(settings)
        get = settings.get
        _check_positive(
            dim=get("dim"), neck_channels=get("neck_channels"), max_length=get("max_length"),
            train_crops=get("train_crops"), test_crops=get("test_crops"),
            loss_beta=get("loss_beta"),
        )  # fmt: skip
        _check_choices(
            crop_training=(get("crop_training"), CROP_TRAINING),
            normalisation=(get("normalisation"), NORMALISATIONS),
            csf_pooling=(get("csf_pooling"), CSF_POOLING),
            token_alignment=(get("token_alignment"), TOKEN_ALIGNMENT),
            consistency_pooling=(get("consistency_pooling"), CONSISTENCY_POOLING),
            description_attention=(get("description_attention"), DESCRIPTION_ATTENTION),
            fusion=(get("fusion"), FUSION),
            shared_attention=(get("shared_attention"), SHARED_ATTENTION),
        )
        if get("dim") % get("heads"):
            raise ConfigError(f"heads {get('heads')} must divide dim {get('dim')}")
        if get("resize_below") is not None:
            _check_positive(resize_below=get("resize_below"))
        check_blip(get("blip"))
        check_vit(get("vit"))
        parse_freeze(get("freeze"))

    @classmethod
    def without_weights(cls, entry: dict[str, Any]) -> dict[str, Any]:
        """The entry with every pretrained weight replaced by a random init of the same sizes.

        ImageReward's BLIP is built from its known sizes (``scva_imagereward.IMAGEREWARD_V1``),
        a BLIP ITM checkpoint from its cached config; the timm ViT by name without weights.
        Nothing is downloaded; only the tokenizer is a stand-in (it has no parameters).
        """
        entry = copy.deepcopy(entry)
        entry["blip"] = _blip_without_weights(dict(entry.get("blip") or {}))
        vit = entry.get("vit")
        if isinstance(vit, Mapping):
            vit = dict(vit)
            vit["checkpoint"] = None
            vit.pop("offline", None)
            if "name" in vit:
                vit["pretrained"] = False
            entry["vit"] = vit
        return entry

    # -- contract ---------------------------------------------------------------------------

    def image_transform(self, train: bool) -> Callable[[Image.Image], torch.Tensor]:
        if train:
            crops = 1 if self.crop_training == "per_crop" else self.train_crops
        else:
            crops = self.test_crops
        return ScvaTransform(
            self.crop_size,
            crops,
            train,
            self.crop_stats,
            self.whole_stats,
            self.whole_size,
            self.resize_below,
        )

    def make_dataset(self, data: PartData, train: bool) -> Dataset:
        """Per-crop training: ``train_crops`` samples per image, each one random crop."""
        dataset = super().make_dataset(data, train)
        if train and self.crop_training == "per_crop" and self.train_crops > 1:
            return RepeatedSamples(dataset, self.train_crops)
        return dataset

    def tokenize(
        self, prompts: Sequence[str], descriptions: Sequence[str] | None = None
    ) -> torch.Tensor:
        """-> LongTensor ``[n, 2, 2, max_length]``: [prompt, description] x [ids, mask].

        An empty or missing description falls back to the prompt (the "no description" case).
        """
        prompts = [str(p) for p in prompts]
        if descriptions is None:
            descriptions = [""] * len(prompts)
        if len(descriptions) != len(prompts):
            raise ValueError(f"{len(descriptions)} descriptions for {len(prompts)} prompts")
        texts = [
            str(d) if str(d).strip() else p for p, d in zip(prompts, descriptions, strict=True)
        ]
        return torch.stack([self._encode_texts(prompts), self._encode_texts(texts)], dim=1)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``images`` [B, K + 1, 3, M, M] (``ScvaTransform``), ``tokens`` [B, 2, 2, L].

        Returns ``[B, n_dims]``, the mean over the ``K`` crops of each sample.
        """
        batch, crops = images.shape[0], images.shape[1] - 1
        whole = images[:, -1, :, : self.whole_size, : self.whole_size]
        crop_pixels = images[:, :-1, :, : self.crop_size, : self.crop_size].flatten(0, 1)
        prompt, prompt_mask, description, description_mask = self.encode_text(whole, tokens)
        consistency = self.consistency(prompt, prompt_mask, description, description_mask)
        visual = self.visual_features(
            crop_pixels,
            description.repeat_interleave(crops, dim=0),
            description_mask.repeat_interleave(crops, dim=0),
        )
        scores = self.head(visual, consistency.repeat_interleave(crops, dim=0))
        return scores.view(batch, crops, -1).mean(dim=1)

    def loss(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """SmoothL1 with each dimension's beta (``loss_betas``), averaged over all entries."""
        difference = (predictions - targets).abs()
        betas = self.loss_betas.to(difference.dtype)
        quadratic = 0.5 * difference**2 / betas
        return torch.where(difference < betas, quadratic, difference - 0.5 * betas).mean()

    # -- parts ------------------------------------------------------------------------------

    def encode_text(
        self, whole: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """BLIP image-grounded encoding of prompt and description -> features [B, L, d], masks."""
        image_embeds = self.blip_vision(pixel_values=whole).last_hidden_state
        batch, _, _, length = tokens.shape
        ids = tokens[:, :, 0].reshape(2 * batch, length)
        mask = tokens[:, :, 1].reshape(2 * batch, length)
        # Prompt and description of an image run as one batch, both grounded on that image.
        grounded = image_embeds.repeat_interleave(2, dim=0)
        text = self.text_encoder(
            input_ids=ids,
            attention_mask=mask,
            encoder_hidden_states=grounded,
            encoder_attention_mask=torch.ones(
                grounded.shape[:2], dtype=torch.long, device=ids.device
            ),
        ).last_hidden_state
        text = self.text_proj(text).view(batch, 2, length, -1)
        masks = mask.view(batch, 2, length).bool()
        return text[:, 0], masks[:, 0], text[:, 1], masks[:, 1]

    def visual_features(
        self, crops: torch.Tensor, description: torch.Tensor, description_mask: torch.Tensor
    ) -> torch.Tensor:
        """Crops [N, 3, S, S] -> CSF-pooled visual feature [N, d]."""
        levels = self.vit.forward_intermediates(
            crops, indices=self.feature_blocks, intermediates_only=True, output_fmt="NCHW"
        )
        tokens = self.neck(torch.cat(levels, dim=1))
        tokens = self.cross(tokens, description, description_mask)
        return self.pooling(tokens, self.csf_map(crops).flatten(1))

    def csf_map(self, crops: torch.Tensor) -> torch.Tensor:
        """Per-image CSF saliency [N, S / patch, S / patch] in [0, 1] (without the floor)."""
        return csf_weights(crops, self.patch, self.csf)

    # -- helpers ----------------------------------------------------------------------------

    def _encode_texts(self, texts: list[str]) -> torch.Tensor:
        if not texts:  # an empty part (cross_train has no test part); the tokenizer fails on []
            return torch.zeros(0, 2, self.max_length, dtype=torch.long)
        encoded = self.tokenizer(
            texts,
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return torch.stack([encoded["input_ids"], encoded["attention_mask"]], dim=1).long()

    def _feature_blocks(self, feature_blocks: Sequence[int] | None) -> list[int]:
        depth = len(self.vit.blocks)
        blocks = list(range(max(0, depth - 4), depth)) if feature_blocks is None else feature_blocks
        blocks = sorted({int(b) for b in blocks})
        if not blocks or blocks[0] < 0 or blocks[-1] >= depth:
            raise ConfigError(f"feature_blocks must lie in [0, {depth - 1}]; got {feature_blocks}")
        return blocks

    def _freeze(self, freeze: dict[str, Any]) -> None:
        fraction, vit_mode = parse_freeze(freeze)
        text_layers = self.text_encoder.encoder.layer
        vision_layers = self.blip_vision.encoder.layers
        if fraction > 0:
            self.text_encoder.embeddings.requires_grad_(False)
            self.blip_vision.embeddings.requires_grad_(False)
        for layer in list(text_layers)[: int(fraction * len(text_layers))]:
            layer.requires_grad_(False)
        for layer in list(vision_layers)[: int(fraction * len(vision_layers))]:
            layer.requires_grad_(False)
        if fraction >= 1.0:
            self.blip_vision.requires_grad_(False)
        self._freeze_vit(vit_mode)

    def _freeze_vit(self, mode: str | int) -> None:
        if mode == "none":
            return
        if mode == "full":
            self.vit.requires_grad_(False)
            return
        assert isinstance(mode, int)  # parse_freeze checked it
        if mode > len(self.vit.blocks):
            raise ConfigError(f"freeze.vit {mode} exceeds the {len(self.vit.blocks)} kept blocks")
        for name, parameter in self.vit.named_parameters():
            if not name.startswith(("blocks.", "norm.", "head", "fc_norm.")):
                parameter.requires_grad_(False)  # patch/position embeddings, tokens, norm_pre
        for block in list(self.vit.blocks)[:mode]:
            block.requires_grad_(False)


def _input_stats(
    normalisation: str, vit_stats: tuple[list, list]
) -> tuple[tuple[list, list], tuple[list, list]]:
    """(crop stats, whole-image stats) of a ``normalisation`` setting."""
    imagenet = (list(IMAGENET_MEAN), list(IMAGENET_STD))
    if normalisation == "swapped":  # the published AGIQA-1K/3K/AIGCIQA2023 configs
        return (list(BLIP_MEAN), list(BLIP_STD)), imagenet
    if normalisation == "imagenet":  # the published AIGIQA-20K config
        return imagenet, imagenet
    return vit_stats, (list(BLIP_MEAN), list(BLIP_STD))


def _vit_label(vit: Mapping[str, Any] | None) -> str:
    if isinstance(vit, Mapping) and "name" in vit:
        return str(vit["name"])
    return "VisionTransformer (config)"


def _blip_without_weights(blip: dict[str, Any]) -> dict[str, Any]:
    """A ``blip`` config of the same sizes that builds with random weights, offline."""
    source = blip.get("source", "config")
    if source == "imagereward":
        from agiqa.models.scva_imagereward import IMAGEREWARD_V1

        return {"source": "config", "config": copy.deepcopy(IMAGEREWARD_V1)}
    if source == "transformers":
        from transformers import BlipConfig

        name = blip.get("name_or_path")
        try:
            config = BlipConfig.from_pretrained(
                name, local_files_only=True, cache_dir=blip.get("cache_dir")
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"the BLIP ITM config of {name!r} is not on this machine, so its size is unknown "
                f"offline: {str(exc).splitlines()[0]}"
            ) from None
        text = config.text_config.to_dict()
        text["encoder_hidden_size"] = config.vision_config.hidden_size
        return {
            "source": "config",
            "config": {"text_config": text, "vision_config": config.vision_config.to_dict()},
        }
    return blip


def build_blip(config: dict[str, Any]) -> tuple[nn.Module, nn.Module, Any]:
    """BLIP vision tower, cross-attending text encoder and tokenizer from a ``blip`` config."""
    source = config.pop("source", "config")
    if source == "config":
        return _blip_from_config(config)
    if source == "transformers":
        return _blip_from_transformers(config)
    if source == "imagereward":
        from agiqa.models.scva_imagereward import blip_from_imagereward

        return blip_from_imagereward(config)
    raise ConfigError(f"blip.source must be one of {BLIP_SOURCES}; got {source!r}")


def _blip_from_config(config: dict[str, Any]) -> tuple[nn.Module, nn.Module, Any]:
    from transformers import BertTokenizer, BlipConfig
    from transformers.models.blip.modeling_blip import BlipVisionModel
    from transformers.models.blip.modeling_blip_text import BlipTextModel

    kwargs = config.pop("config", None) or TINY_BLIP
    vocab_file = config.pop("vocab_file", None)
    if config:
        raise ConfigError(f"blip: unknown keys {sorted(config)} for source 'config'")
    vocab = _read_vocab(vocab_file)
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True)
    special_ids = {
        "pad_token_id": vocab["[PAD]"],
        "bos_token_id": vocab["[CLS]"],
        "sep_token_id": vocab["[SEP]"],
        "eos_token_id": vocab["[SEP]"],
    }
    text_kwargs = {"vocab_size": len(vocab), **special_ids, **dict(kwargs.get("text_config", {}))}
    if text_kwargs["vocab_size"] < len(vocab):
        raise ConfigError(f"blip text vocab_size {text_kwargs['vocab_size']} < {len(vocab)} tokens")
    blip_config = BlipConfig(**{**dict(kwargs), "text_config": text_kwargs})
    text_config = blip_config.text_config
    # The text layers cross-attend to the vision tower's output.
    text_config.encoder_hidden_size = blip_config.vision_config.hidden_size
    vision = BlipVisionModel(blip_config.vision_config)
    text = BlipTextModel(text_config, add_pooling_layer=False)
    return vision, text, tokenizer


def _read_vocab(vocab_file: str | Path | None) -> dict[str, int]:
    if vocab_file is None:
        words = [*_SPECIALS, *_CHARS, *(f"##{c}" for c in _CHARS)]
    else:
        path = Path(vocab_file)
        if not path.is_file():
            raise ConfigError(f"blip.vocab_file {path} does not exist")
        words = [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines()]
        words = [w for w in words if w]
    missing = [token for token in _SPECIALS if token not in words]
    if missing:
        raise ConfigError(f"blip vocabulary lacks the special tokens {missing}")
    return {word: index for index, word in enumerate(dict.fromkeys(words))}


def _blip_from_transformers(config: dict[str, Any]) -> tuple[nn.Module, nn.Module, Any]:
    from transformers import AutoTokenizer, BlipForImageTextRetrieval

    name = config.pop("name_or_path", None)
    local_only = bool(config.pop("local_files_only", True))
    cache_dir = config.pop("cache_dir", None)
    if config:
        raise ConfigError(f"blip: unknown keys {sorted(config)} for source 'transformers'")
    if not name:
        raise ConfigError("blip.source 'transformers' needs blip.name_or_path")
    if not Path(name).is_dir():  # a hub id: its cached files against the fetch record
        try:
            verify_hf_repo(str(name), cache_dir, f"BLIP ITM {name}")
        except WeightsNotRecordedError as error:
            raise ConfigError(f"cannot load the BLIP ITM checkpoint {name!r}: {error}") from None
    try:
        model = BlipForImageTextRetrieval.from_pretrained(
            name, local_files_only=local_only, cache_dir=cache_dir
        )
        tokenizer = AutoTokenizer.from_pretrained(
            name, local_files_only=local_only, cache_dir=cache_dir
        )
    except (OSError, ValueError) as exc:
        hint = " (offline: download it first or point name_or_path at a local copy)"
        raise ConfigError(
            f"cannot load the BLIP ITM checkpoint {name!r}{hint if local_only else ''}: {exc}"
        ) from None
    # Only the vision tower and the text encoder are used; projections and ITM head are dropped.
    return model.vision_model, model.text_encoder, tokenizer


def build_vit(config: Mapping[str, Any] | None) -> tuple[VisionTransformer, tuple[list, list]]:
    """timm ViT and its own normalisation (mean, std) from a ``vit`` config."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    config = dict(config or TINY_VIT)
    if "name" not in config:
        checkpoint = config.pop("checkpoint", None)
        vit = VisionTransformer(**{"num_classes": 0, **config})
        if checkpoint is not None:
            load_vit_weights(vit, Path(checkpoint))
        return vit, (list(IMAGENET_MEAN), list(IMAGENET_STD))
    name = config.pop("name")
    pretrained = bool(config.pop("pretrained", False))
    checkpoint = config.pop("checkpoint", None)
    offline = bool(config.pop("offline", False))
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise ConfigError(f"vit.checkpoint {checkpoint} does not exist")
    try:
        if pretrained:  # the cached files against the fetch record, before timm reads them
            from agiqa.weights import verify_timm

            verify_timm(str(name))
    except WeightsNotRecordedError as error:
        raise ConfigError(f"cannot build the timm ViT {name!r}: {error}") from None
    try:
        # Offline, a missing cache fails at once instead of retrying the hub for a minute.
        with hub_offline(offline and pretrained), weights_only_loads():
            vit = timm.create_model(
                name, pretrained=pretrained, checkpoint_path=checkpoint or None, **config
            )
    except (OSError, RuntimeError, ValueError) as exc:
        hint = ""
        if offline and pretrained:
            hint = (
                " (vit.offline is true: fetch the weights once where there is network, "
                "`agiqa weights fetch --configfile <config>`, into the same HF cache)"
            )
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"cannot build the timm ViT {name!r}{hint}: {first}") from None
    if not isinstance(vit, VisionTransformer):
        raise ConfigError(f"vit {name!r} is not a timm VisionTransformer")
    data = timm.data.resolve_data_config({}, model=vit)
    return vit, (list(data["mean"]), list(data["std"]))


def load_vit_weights(vit: VisionTransformer, checkpoint: Path) -> None:
    """Weights of a config-built ViT from a state dict file; a classifier ``head.*`` is dropped."""
    if not checkpoint.is_file():
        raise ConfigError(f"vit.checkpoint {checkpoint} does not exist")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    state = {key: value for key, value in state.items() if not key.startswith("head.")}
    try:
        vit.load_state_dict(state)
    except RuntimeError as error:
        message = f"vit.checkpoint {checkpoint} does not fit the ViT config: {error}"
        raise ConfigError(message) from None


def parse_freeze(freeze: Mapping[str, Any] | None) -> tuple[float, str | int]:
    """``freeze: {blip_fraction, vit}`` as (fraction, vit mode); the block count is checked
    against the ViT when it is built."""
    freeze = dict(freeze or {})
    fraction = freeze.pop("blip_fraction", 0.5)
    vit_mode = freeze.pop("vit", "none")
    if freeze:
        raise ConfigError(f"freeze: unknown keys {sorted(freeze)} (known: blip_fraction, vit)")
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise ConfigError(f"freeze.blip_fraction must be a number in [0, 1]; got {fraction!r}")
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"freeze.blip_fraction must be in [0, 1]; got {fraction}")
    valid_count = isinstance(vit_mode, int) and not isinstance(vit_mode, bool) and vit_mode >= 0
    if vit_mode not in ("none", "full") and not valid_count:
        raise ConfigError(f"freeze.vit must be 'none', 'full' or a block count; got {vit_mode!r}")
    return float(fraction), vit_mode


def check_blip(blip: Mapping[str, Any] | None) -> None:
    """A ``blip`` entry's source and its keys (``BLIP_KEYS``), without building anything."""
    if blip is None:
        return
    if not isinstance(blip, Mapping):
        raise ConfigError(f"blip must be a mapping; got {blip!r}")
    source = blip.get("source", "config")
    if source not in BLIP_SOURCES:
        raise ConfigError(f"blip.source must be one of {BLIP_SOURCES}; got {source!r}")
    unknown = sorted(set(blip) - {"source", *BLIP_KEYS[source]})
    if unknown:
        raise ConfigError(
            f"blip: unknown keys {unknown} for source '{source}' (known: {BLIP_KEYS[source]})"
        )


def check_vit(vit: Mapping[str, Any] | None) -> None:
    """A ``vit`` entry's own keys; the rest are timm's, which it checks when it builds."""
    if vit is None:
        return
    if not isinstance(vit, Mapping):
        raise ConfigError(f"vit must be a mapping; got {vit!r}")
    for key in ("pretrained", "offline"):
        if key in vit and not isinstance(vit[key], bool):
            raise ConfigError(f"vit.{key} must be true or false; got {vit[key]!r}")
    if ("pretrained" in vit or "offline" in vit) and "name" not in vit:
        raise ConfigError("vit.pretrained and vit.offline need vit.name (a timm model name)")


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(f"{name} must be positive; got {value!r}")


def _check_choices(**settings: tuple[str, Sequence[str]]) -> None:
    for name, (value, choices) in settings.items():
        if value not in choices:
            raise ConfigError(f"{name} must be one of {tuple(choices)}; got {value!r}")
