"""DCMPLN: Deep Cross-Modal Prompt Learning Network on a frozen CLIP (methods.md section 2).

DCMPLN never released code; its README and a deleted checkpoint (``AGIQA3k_aux.pth``) show it grew
out of CLIP-AGIQA (methods.md 2.2-2.3). What follows is our reading of both, with every choice the
sources leave open marked *inferred*.

Architecture:

- **Frozen CLIP** (paper: ViT-B/32 ``openai``): every backbone weight has ``requires_grad=False``
  and the backbone always runs in eval mode.
- **Deep prompts** (MaPLe/IVLP style), ``n_ctx`` tokens per prompted layer, in the first
  ``prompt_depth`` blocks of both towers:

  - text: each class name becomes ``"X X ... X <class>."``; at layer 0 the ``n_ctx`` placeholder
    embeddings are replaced by a learned class context (CoOp; positional embeddings are then added
    as to any token); before block ``i`` (``0 < i < prompt_depth``) the hidden states at those
    positions are replaced by that layer's learned deep prompts. The EOT token is pooled as usual.
  - vision: ``n_ctx`` learned tokens are appended after the patch tokens (after ``ln_pre``, so all
    layers' prompts live in the residual stream, *inferred*; MaPLe appends before ``ln_pre``);
    before block ``i`` they are replaced by layer ``i``'s prompts and they are dropped before
    pooling. Past ``prompt_depth`` the last prompts flow on unchanged.

  The checkpoint's shapes (context 8x512, 11 deep text layers, 12 visual layers on ViT-B) match
  ``prompt_depth=12``, the default ``None`` (= every block of the shallower tower).
- **Two prompt branches**: the *main* branch scores quality with the classes ("good photo",
  "bad photo"); the *auxiliary* branch scores "photo aligned/misaligned with the prompt". Each has
  its own class context and deep text prompts; there is one set of visual prompts, the aux
  branch's, which the main branch reuses as CLIP-AGIQA does. A dataset with several quality
  dimensions (AIGCIQA2023: quality, authenticity) gets one class context per dimension, all
  sharing the main deep prompts (*inferred*); likewise for several alignment dimensions. Without
  an alignment dimension the aux branch still exists (one context) and guides the main one through
  MPA and the shared visual prompts, but it is never scored and adds no loss.
- **Multimodal Prompt Attention** (MPA, *inferred* design): at each prompted layer, the prompt
  tokens of every text group (both branches) and the visual prompts are layer-normalised,
  projected per modality to ``mpa_dim``, given a learned per-layer embedding, and attend to each
  other in one ``mpa_heads``-head attention over the joint set; the result is projected back per
  modality and added residually. One module serves all layers. The output projections start at
  zero, so training starts from plain deep prompts (the CLIP-AGIQA proxy) and learns the coupling.
- **Image adapter**: a bottleneck MLP ``embed -> embed // adapter_reduction -> embed`` (ReLU) on the
  L2-normalised image feature, fused as ``f' = r * adapter(f) + (1 - r) * f`` with
  ``r = adapter_ratio`` (CLIP-Adapter style) and L2-normalised again.
- **Scores**: ``softmax(logit_scale * cos(f', [t_pos, t_neg]))[pos]`` with CLIP's frozen logit
  scale; one column per dataset dimension in dataset order: quality dimensions from the main
  branch, alignment dimensions from the aux branch. Outputs are probabilities, so they lie in
  [0, 1].
- **Loss**: mean MSE over quality dimensions + ``aux_weight`` (0.1) x mean MSE over alignment
  dimensions, on normalised targets (CLIP-AGIQA: MOS/5).

Differences from the CLIP-AGIQA proxy: images go through ``ClipModel``'s transforms (CLIP mean/std,
RandomResizedCrop + flip for training, one centre crop for evaluation) instead of ImageNet
statistics, RandomCrop 224 and test-time averaging over unfolded 224 crops; MPA and the adapter are
DCMPLN's additions, absent from the proxy.

The generation prompt is not used: ``forward`` receives its tokens to honour the model contract and
ignores them (CLIP-AGIQA replaces it by a constant sentence).

Trainable parameters, with ``Wt``/``Wv`` the text/vision widths, ``E`` the embedding dim,
``n = n_ctx``, ``L = prompt_depth``, ``K`` the number of quality dimensions,
``M = max(1, number of alignment dimensions)``, ``d = mpa_dim``, ``h = E // adapter_reduction``::

    prompts  = (K + M) n Wt + 2 (L - 1) n Wt + L n Wv
    mpa      = 2 Wt + 2 Wv + (Wt + 1) d + (Wv + 1) d + L d + 4 d^2 + 4 d + (d + 1)(Wt + Wv)
    adapter  = 2 E h + h + E

Only these (names ``prompts.``, ``mpa.``, ``adapter.``) require gradients. Paper preset (ViT-B/32:
``Wt = E = 512``, ``Wv = 768``, ``n = 8``, ``L = 12``, ``d = 256``, reduction 4) on AGIQA-3K
(``K = M = 1``): 172,032 + 925,952 + 131,712 = 1,229,696. Because the MPA output projections start
at zero, the MPA's inner weights receive their first non-zero gradient on the second step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer, text_global_pool
from torch import nn

from agiqa.data.manifest import Dimension
from agiqa.errors import ConfigError
from agiqa.models.base import MODELS
from agiqa.models.clip_backbone import ClipModel

QUALITY_CLASSES = ("good photo", "bad photo")
ALIGNMENT_CLASSES = ("photo aligned with the prompt", "photo misaligned with the prompt")
PLACEHOLDER = "X"
PROMPT_INIT_STD = 0.02  # CoOp / MaPLe initialisation of learned prompt vectors


# ---------------------------------------------------------------------------------------------
# Prompted encoders over open_clip's CLIP internals


def check_backbone(clip: nn.Module) -> tuple[int, int]:
    """Refuse backbones the prompted encoders cannot run; return (vision, text) block counts."""
    visual = getattr(clip, "visual", None)
    if not isinstance(clip, open_clip.CLIP) or not isinstance(visual, VisionTransformer):
        raise ConfigError(
            "dcmpln needs open_clip's CLIP class with native ViT image and text transformers; "
            f"this backbone is {type(clip).__name__} with a {type(visual).__name__} image tower"
        )
    pool_type = getattr(visual, "pool_type", "tok")
    if getattr(visual, "attn_pool", None) is not None or pool_type not in ("tok", "avg"):
        raise ConfigError(
            "dcmpln needs a ViT image tower pooled by class token or average, "
            f"not attentional pooling or pool_type '{pool_type}'"
        )
    if clip.text_pool_type == "none":
        raise ConfigError("dcmpln needs a text tower that pools one token per prompt")
    return len(visual.transformer.resblocks), len(clip.transformer.resblocks)


def encode_image_prompted(
    clip: nn.Module, images: torch.Tensor, layer_prompts: Sequence[torch.Tensor] = ()
) -> torch.Tensor:
    """Image features with visual prompts injected in the first ``len(layer_prompts)`` blocks.

    Args:
        clip: An open_clip ``CLIP`` with a ``VisionTransformer`` image tower.
        images: [B, 3, H, W] normalised images.
        layer_prompts: One [n, width] tensor per prompted block; entry 0 is appended after the
            patch tokens, entry ``i`` replaces those tokens before block ``i``. Empty: exactly
            ``clip.encode_image``.

    Returns:
        [B, embed_dim] unnormalised image features.
    """
    visual = clip.visual
    x = _vision_stem(visual, images)
    n_prompts = layer_prompts[0].shape[-2] if layer_prompts else 0
    if layer_prompts:
        x = torch.cat([x, _rows(layer_prompts[0], x)], dim=1)

    def replace(hidden: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        return torch.cat([hidden[:, :-n_prompts], _rows(prompt, hidden)], dim=1)

    x = _run_blocks(visual.transformer, x, layer_prompts, replace)
    if n_prompts:
        x = x[:, :-n_prompts]
    return _vision_pool(visual, x)


def encode_text_prompted(
    clip: nn.Module, tokens: torch.Tensor, layer_prompts: Sequence[torch.Tensor] = ()
) -> torch.Tensor:
    """Text features with prompts at token positions ``1..n`` of the first prompted blocks.

    Args:
        clip: An open_clip ``CLIP`` (text tower flattened onto the model).
        tokens: [R, context_length] token ids; positions ``1..n`` hold placeholders.
        layer_prompts: One [R, n, width] (or [n, width], shared) tensor per prompted block;
            entry 0 replaces the placeholders' token embeddings (positional embeddings are added
            afterwards), entry ``i`` replaces their hidden states before block ``i``. Empty:
            exactly ``clip.encode_text``.

    Returns:
        [R, embed_dim] unnormalised text features, pooled at the EOT token.
    """
    cast_dtype = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(tokens).to(cast_dtype)
    n_prompts = layer_prompts[0].shape[-2] if layer_prompts else 0

    def replace(hidden: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        prompt = _rows(prompt, hidden)
        return torch.cat([hidden[:, :1], prompt, hidden[:, 1 + n_prompts :]], dim=1)

    if layer_prompts:
        x = replace(x, layer_prompts[0])
    x = x + clip.positional_embedding.to(cast_dtype)
    x = _run_blocks(clip.transformer, x, layer_prompts, replace, clip.attn_mask)
    x = clip.ln_final(x)
    x = text_global_pool(x, tokens, clip.text_pool_type, getattr(clip, "text_eos_id", None))
    projection = clip.text_projection
    if isinstance(projection, nn.Linear):
        return projection(x)
    return x if projection is None else x @ projection


def _vision_stem(visual: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """Patch embedding, class token, positions, patch dropout and ``ln_pre``, as open_clip."""
    x = visual.conv1(images)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    return visual.ln_pre(visual.patch_dropout(x))


def _vision_pool(visual: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """Global pooling, ``ln_post`` and projection, in open_clip's order."""

    average = getattr(visual, "pool_type", "tok") == "avg"

    def pool(tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 1:].mean(dim=1) if average else tokens[:, 0]

    after = getattr(visual, "final_ln_after_pool", False)
    pooled = visual.ln_post(pool(x)) if after else pool(visual.ln_post(x))
    return pooled if visual.proj is None else pooled @ visual.proj


def _run_blocks(
    transformer: nn.Module,
    x: torch.Tensor,
    layer_prompts: Sequence[torch.Tensor],
    replace: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    attn_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the residual blocks on batch-first ``x``, swapping in layer ``i``'s prompts first."""
    if len(layer_prompts) > len(transformer.resblocks):
        raise ValueError(
            f"{len(layer_prompts)} prompted layers for {len(transformer.resblocks)} blocks"
        )
    batch_first = getattr(transformer, "batch_first", True)
    for index, block in enumerate(transformer.resblocks):
        if 0 < index < len(layer_prompts):
            x = replace(x, layer_prompts[index])
        if batch_first:
            x = block(x, attn_mask=attn_mask)
        else:
            x = block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)
    return x


def _rows(prompt: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast an [n, w] or [R, n, w] prompt to ``like``'s batch size and dtype."""
    if prompt.dim() == 2:
        prompt = prompt.unsqueeze(0)
    return prompt.expand(like.shape[0], -1, -1).to(like.dtype)


# ---------------------------------------------------------------------------------------------
# Learned parts


@dataclass(frozen=True)
class LayerPrompts:
    """The prompts of one layer: text groups (main first, then aux) and the visual tokens."""

    text: list[torch.Tensor]
    visual: torch.Tensor


class DeepPrompts(nn.Module):
    """Class contexts, deep text prompts of both branches and the shared visual prompts."""

    def __init__(
        self, n_ctx: int, depth: int, main_groups: int, aux_groups: int, widths: tuple[int, int]
    ) -> None:
        super().__init__()
        text_width, vision_width = widths

        def vectors(count: int, width: int) -> nn.ParameterList:
            return nn.ParameterList(
                nn.Parameter(torch.randn(n_ctx, width) * PROMPT_INIT_STD) for _ in range(count)
            )

        self.main_context = vectors(main_groups, text_width)
        self.aux_context = vectors(aux_groups, text_width)
        self.main_deep = vectors(depth - 1, text_width)
        self.aux_deep = vectors(depth - 1, text_width)
        self.visual = vectors(depth, vision_width)

    def forward(self) -> list[LayerPrompts]:
        """Per prompted layer: layer 0 has one text group per class context, deeper layers two."""
        layers = [LayerPrompts([*self.main_context, *self.aux_context], self.visual[0])]
        for main, aux, visual in zip(self.main_deep, self.aux_deep, self.visual[1:], strict=True):
            layers.append(LayerPrompts([main, aux], visual))
        return layers


class MultimodalPromptAttention(nn.Module):
    """Couples text and visual prompts: joint multi-head attention over all prompt tokens."""

    def __init__(self, widths: tuple[int, int], dim: int, heads: int, depth: int) -> None:
        super().__init__()
        text_width, vision_width = widths
        self.text_norm = nn.LayerNorm(text_width)
        self.vision_norm = nn.LayerNorm(vision_width)
        self.text_in = nn.Linear(text_width, dim)
        self.vision_in = nn.Linear(vision_width, dim)
        # One module serves every layer; the embedding tells it which layer it is coupling.
        self.layer_embedding = nn.Parameter(torch.randn(depth, dim) * PROMPT_INIT_STD)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.text_out = nn.Linear(dim, text_width)
        self.vision_out = nn.Linear(dim, vision_width)
        # Zero output projections: the coupling starts as the identity and is learned.
        for projection in (self.text_out, self.vision_out):
            nn.init.zeros_(projection.weight)
            nn.init.zeros_(projection.bias)

    def forward(self, layer: int, prompts: LayerPrompts) -> LayerPrompts:
        text = torch.cat(prompts.text, dim=0)
        joint = torch.cat(
            [self.text_in(self.text_norm(text)), self.vision_in(self.vision_norm(prompts.visual))]
        )
        joint = (joint + self.layer_embedding[layer]).unsqueeze(0)
        mixed = self.attention(joint, joint, joint, need_weights=False)[0].squeeze(0)
        text = text + self.text_out(mixed[: len(text)])
        visual = prompts.visual + self.vision_out(mixed[len(text) :])
        return LayerPrompts(list(text.split([len(p) for p in prompts.text])), visual)


class ImageAdapter(nn.Module):
    """Bottleneck MLP fused residually with the frozen image feature, then re-normalised."""

    def __init__(self, embed_dim: int, reduction: int, ratio: float) -> None:
        super().__init__()
        hidden = max(1, embed_dim // reduction)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, hidden), nn.ReLU(), nn.Linear(hidden, embed_dim)
        )
        self.ratio = ratio

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = F.normalize(features, dim=-1)
        fused = self.ratio * self.mlp(features) + (1 - self.ratio) * features
        return F.normalize(fused, dim=-1)


# ---------------------------------------------------------------------------------------------
# The model


@MODELS.register("dcmpln")
class Dcmpln(ClipModel):
    """Frozen CLIP with deep coupled text/visual prompts, an aux alignment task and an adapter.

    Args:
        dimensions: The dataset's rated dimensions; the output columns follow their order.
        backbone: ``{arch, pretrained, cache_dir, offline, image_size}`` for ``load_clip``; the
            default is the tiny random-init ``agiqa-tiny-clip``, the paper uses ``ViT-B-32`` with
            ``pretrained: openai``. Must be a CLIP with ViT towers.
        n_ctx: Learned prompt tokens per prompted layer and modality.
        prompt_depth: Number of blocks, from the first, that get prompts in both towers;
            ``None`` means every block of the shallower tower (12 on ViT-B/32).
        mpa_dim: Common width of the Multimodal Prompt Attention.
        mpa_heads: Attention heads of the MPA (must divide ``mpa_dim``).
        adapter_reduction: Bottleneck reduction of the image adapter.
        adapter_ratio: Weight of the adapter output in the residual fusion, in [0, 1].
        aux_weight: Weight of the auxiliary alignment MSE in the loss.
        quality_classes: ``[positive, negative]`` class names of the main (quality) branch.
        alignment_classes: ``[positive, negative]`` class names of the auxiliary branch.
    """

    trainable = True
    uses_gpu = True

    def __init__(
        self,
        dimensions: Sequence[Dimension],
        backbone: Mapping[str, Any] | None = None,
        n_ctx: int = 8,
        prompt_depth: int | None = None,
        mpa_dim: int = 256,
        mpa_heads: int = 4,
        adapter_reduction: int = 4,
        adapter_ratio: float = 0.2,
        aux_weight: float = 0.1,
        quality_classes: Sequence[str] = QUALITY_CLASSES,
        alignment_classes: Sequence[str] = ALIGNMENT_CLASSES,
    ) -> None:
        super().__init__(dimensions, dict(backbone or {}))
        _check_hyperparameters(n_ctx, mpa_dim, mpa_heads, adapter_reduction, adapter_ratio)
        self.aux_weight = _non_negative("aux_weight", aux_weight)
        self.clip.requires_grad_(False)
        self.prompt_depth = _resolve_depth(prompt_depth, check_backbone(self.clip))
        self.n_ctx = n_ctx
        kinds = [dim.kind for dim in self.dimensions]
        main_groups, scored_aux = kinds.count("quality"), kinds.count("alignment")
        widths = (int(self.clip.transformer.width), int(self.clip.visual.transformer.width))
        self.prompts = DeepPrompts(
            n_ctx, self.prompt_depth, main_groups, max(1, scored_aux), widths
        )
        self.mpa = MultimodalPromptAttention(widths, mpa_dim, mpa_heads, self.prompt_depth)
        self.adapter = ImageAdapter(self.embed_dim, adapter_reduction, adapter_ratio)
        main, aux = (
            self._class_tokens(classes) for classes in (quality_classes, alignment_classes)
        )
        rows = [main] * main_groups + [aux] * scored_aux
        self.register_buffer("class_tokens", torch.cat(rows), persistent=False)
        row_branch = torch.tensor([0] * (2 * main_groups) + [1] * (2 * scored_aux))
        self.register_buffer("row_branch", row_branch, persistent=False)
        self.register_buffer("columns", self._group_of_each_dimension(), persistent=False)
        is_quality = torch.tensor([kind == "quality" for kind in kinds])
        self.register_buffer("is_quality", is_quality, persistent=False)
        self.train(self.training)  # puts the frozen backbone in eval mode

    def train(self, mode: bool = True) -> Dcmpln:
        super().train(mode)
        self.clip.train(False)  # frozen backbone: no dropout, always as at inference
        return self

    def feature_key(self) -> str | None:
        # CLIP is frozen, but the learned prompts run inside it: its features cannot be cached.
        return None

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """[B, n_dims] positive-class probabilities; ``tokens`` (the generation prompt) unused."""
        layers = [self.mpa(index, layer) for index, layer in enumerate(self.prompts())]
        image = encode_image_prompted(self.clip, images, [layer.visual for layer in layers])
        image = self.adapter(image)
        text = F.normalize(self._class_features(layers), dim=-1).view(-1, 2, image.shape[-1])
        logits = self.clip.logit_scale.exp() * torch.einsum("bd,gkd->bgk", image, text)
        return logits.softmax(dim=-1)[..., 0][:, self.columns]

    def loss(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        per_dimension = ((predictions - targets) ** 2).mean(dim=0)
        total = per_dimension.new_zeros(())
        if self.is_quality.any():
            total = total + per_dimension[self.is_quality].mean()
        if not self.is_quality.all():
            total = total + self.aux_weight * per_dimension[~self.is_quality].mean()
        return total

    def _class_features(self, layers: list[LayerPrompts]) -> torch.Tensor:
        """[2 x scored groups, embed_dim] features of every scored group's two class prompts."""
        scored = self.class_tokens.shape[0] // 2
        # Layer 0 lists main contexts then aux ones, so the scored groups are the first ones.
        per_layer = [torch.stack(layers[0].text[:scored]).repeat_interleave(2, dim=0)]
        # Deeper layers: each row takes its branch's prompt (0 main, 1 aux).
        per_layer += [torch.stack(layer.text)[self.row_branch] for layer in layers[1:]]
        return encode_text_prompted(self.clip, self.class_tokens, per_layer)

    def _class_tokens(self, classes: Sequence[str]) -> torch.Tensor:
        """[2, context_length] tokens of ``"X ... X <class>."`` for a [positive, negative] pair."""
        pair = _class_pair(classes)
        placeholder = int(self.tokenize([PLACEHOLDER])[0, 1])
        context_length = self._preprocess.context_length
        texts = [" ".join([PLACEHOLDER] * self.n_ctx + [name]) + "." for name in pair]
        untruncated = self._preprocess.tokenizer(texts, context_length=context_length + 64)
        if int((untruncated != 0).sum(dim=1).max()) > context_length:
            raise ConfigError(
                f"class prompts {texts} exceed the text context of {context_length} tokens; "
                "use shorter class names or a smaller n_ctx"
            )
        tokens = self.tokenize(texts)
        if not bool((tokens[:, 1 : 1 + self.n_ctx] == placeholder).all()):
            raise ConfigError(f"class names {list(pair)} merge with the context placeholders")
        return tokens

    def _group_of_each_dimension(self) -> torch.Tensor:
        """Column of the score matrix for each dimension: main groups first, then aux groups."""
        main_groups = sum(dim.kind == "quality" for dim in self.dimensions)
        counters = {"quality": 0, "alignment": main_groups}
        columns = []
        for dim in self.dimensions:
            columns.append(counters[dim.kind])
            counters[dim.kind] += 1
        return torch.tensor(columns)


def _resolve_depth(prompt_depth: int | None, depths: tuple[int, int]) -> int:
    shallower = min(depths)
    if prompt_depth is None:
        return shallower
    valid = isinstance(prompt_depth, int) and not isinstance(prompt_depth, bool)
    if not valid or not 1 <= prompt_depth <= shallower:
        raise ConfigError(
            f"prompt_depth must be an integer in [1, {shallower}] for this backbone (blocks: "
            f"vision {depths[0]}, text {depths[1]}); got {prompt_depth!r}"
        )
    return prompt_depth


def _check_hyperparameters(
    n_ctx: int, mpa_dim: int, mpa_heads: int, adapter_reduction: int, adapter_ratio: float
) -> None:
    for name, value in (
        ("n_ctx", n_ctx),
        ("mpa_dim", mpa_dim),
        ("mpa_heads", mpa_heads),
        ("adapter_reduction", adapter_reduction),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer; got {value!r}")
    if mpa_dim % mpa_heads:
        raise ConfigError(f"mpa_heads ({mpa_heads}) must divide mpa_dim ({mpa_dim})")
    if not isinstance(adapter_ratio, int | float) or not 0 <= adapter_ratio <= 1:
        raise ConfigError(f"adapter_ratio must be a number in [0, 1]; got {adapter_ratio!r}")


def _non_negative(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{name} must be a non-negative number; got {value!r}")
    return float(value)


def _class_pair(classes: Sequence[str]) -> tuple[str, str]:
    pair = tuple(classes) if not isinstance(classes, str) else ()
    if len(pair) != 2 or not all(isinstance(name, str) and name.strip() for name in pair):
        raise ConfigError(f"class names must be a [positive, negative] pair; got {classes!r}")
    return pair[0].strip(), pair[1].strip()
