"""DCMPLN: Deep Cross-Modal Prompt Learning Network on a frozen CLIP (methods.md section 2).

DCMPLN never released code; its README and a deleted checkpoint (``AGIQA3k_aux.pth``) show it grew
out of CLIP-AGIQA (methods.md 2.2-2.3, 9.2). The structure below is the proxy's, plus the two
parts DCMPLN's README adds (MPA, image adapter); every choice no source settles is marked
*inferred*. docs/methods.md lists the deliberate differences with their switches.

Architecture:

- **Frozen CLIP** (paper: ViT-B/32 ``openai``): every backbone weight has ``requires_grad=False``
  and the backbone always runs in eval mode.
- **Deep prompts** (MaPLe/IVLP style), ``n_ctx`` tokens per prompted layer, in the first
  ``prompt_depth`` blocks of both towers:

  - text: each class name becomes ``"X X ... X <class>."``; at layer 0 the ``n_ctx`` placeholder
    embeddings are replaced by a learned class context (CoOp; positional embeddings are then added
    as to any token); before block ``i`` (``0 < i < prompt_depth``) the hidden states at those
    positions are replaced by that layer's learned deep prompts. The EOT token is pooled as usual.
  - vision: ``n_ctx`` learned tokens are appended after the patch tokens *before* ``ln_pre``, as
    the proxy does; before block ``i`` they are replaced by layer ``i``'s prompts and they are
    dropped before pooling. Past ``prompt_depth`` the last prompts flow on unchanged.

  The deleted checkpoint's shapes (context 8x512, 11 deep text layers, 12 visual layers on ViT-B)
  match ``prompt_depth=12``, the default ``None`` (= every block of the shallower tower).
- **Two prompt learners, as the proxy** (``visual_prompt_sets: 2``): the *auxiliary* branch
  ("aligned photo" / "misaligned photo") and the *target* branch ("good photo" / "bad photo")
  each have their own class context, deep text prompts and deep visual prompts. Per layer the
  target branch's visual prompts are ``Linear(2 Wv -> Wv)([aux, target])`` (``Linear(1536 ->
  768)`` on ViT-B), so the auxiliary task's visual prompts guide the main ones, and the image
  tower runs twice: once with the auxiliary prompts (scored by the auxiliary classes), once with
  the fused ones (scored by the main classes). ``visual_prompt_sets: 1`` is the lighter variant
  this module had before: one visual set (the auxiliary one) shared by both branches, one image
  pass.
- **Multimodal Prompt Attention** (MPA, DCMPLN's, *inferred* design): at each prompted layer, the
  prompt tokens of every text group (both branches) and of every visual set are layer-normalised,
  projected per modality to ``mpa_dim``, given a learned per-layer embedding, and attend to each
  other in one ``mpa_heads``-head attention over the joint set; the result is projected back per
  modality and added residually, before the fusion. One module serves all layers. The output
  projections start at zero, so training starts from the proxy's plain deep prompts.
- **Image adapter** (DCMPLN's): a bottleneck MLP ``embed -> embed // adapter_reduction -> embed``
  (ReLU) on the L2-normalised image feature, fused as ``f' = r * adapter(f) + (1 - r) * f`` with
  ``r = adapter_ratio`` (CLIP-Adapter style) and L2-normalised again; one adapter serves both
  image passes (*inferred*).
- **Scores**: ``softmax(logit_scale * cos(f', [t_pos, t_neg]))[pos]`` with CLIP's frozen logit
  scale; one column per dataset dimension in dataset order. Dimension kinds: ``quality`` and
  ``overall`` (AIGIQA-20K: quality with alignment mixed in, scored as the proxy scores a single
  MOS) -> main branch; ``alignment`` -> auxiliary branch. A dataset with several main or several
  auxiliary dimensions gets one class context per dimension, sharing the branch's deep prompts
  (*inferred*). Without an alignment dimension the auxiliary branch is never scored and its
  image pass is skipped, but its prompts still shape the main ones (fusion, MPA).
- **Loss**: mean MSE over main dimensions + ``aux_weight`` (0.1) x mean MSE over auxiliary
  dimensions, on normalised targets (CLIP-AGIQA: MOS/5).
- **Inputs** (``input_transform: native_crops``, the proxy's): training takes one random
  ``S x S`` crop (``S`` = CLIP's input size, 224) of the image at native resolution plus a random
  horizontal flip; evaluation averages the predictions over every ``S x S`` crop at stride
  ``test_stride`` (64), as ``unfold`` takes them (the remainder past the last full stride is not
  covered). Images smaller than ``S`` are scaled up to it first. Statistics: ImageNet mean/std as
  the proxy (``normalisation: imagenet``), although CLIP was trained with its own
  (``normalisation: clip``). ``input_transform: resized`` uses CLIP's transforms instead
  (RandomResizedCrop 0.8-1 + flip; resize + one centre crop at evaluation). The fold job's
  decoded-image cache must keep native size: the paper preset sets
  ``train.decode_cache_short_side: null``.

The generation prompt is not used: ``forward`` receives its tokens to honour the model contract and
ignores them (CLIP-AGIQA replaces it by a constant sentence).

Trainable parameters, with ``Wt``/``Wv`` the text/vision widths, ``E`` the embedding dim,
``n = n_ctx``, ``L = prompt_depth``, ``K`` the number of main dimensions,
``M = max(1, number of alignment dimensions)``, ``V = visual_prompt_sets``, ``d = mpa_dim``,
``h = E // adapter_reduction``::

    prompts  = (K + M) n Wt + 2 (L - 1) n Wt + V L n Wv + (V - 1) L (2 Wv Wv + Wv)
    mpa      = 2 Wt + 2 Wv + (Wt + 1) d + (Wv + 1) d + L d + 4 d^2 + 4 d + (d + 1)(Wt + Wv)
    adapter  = 2 E h + h + E

Only these (names ``prompts.``, ``mpa.``, ``adapter.``) require gradients. Paper preset (ViT-B/32:
``Wt = E = 512``, ``Wv = 768``, ``n = 8``, ``L = 12``, ``d = 256``, reduction 4) on AGIQA-3K
(``K = M = 1``): prompts 14,410,752 (the proxy's two learners: 245,760 prompt vectors and
14,164,992 in the twelve fusion layers, "about 14.4 M") + MPA 925,952 + adapter 131,712 =
15,468,416; with ``visual_prompt_sets: 1``, 172,032 + 925,952 + 131,712 = 1,229,696. Because the
MPA output projections start at zero, the MPA's inner weights receive their first non-zero
gradient on the second step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from agiqa.data.manifest import Dimension
from agiqa.errors import ConfigError
from agiqa.models.base import MODELS, PartData
from agiqa.models.clip_backbone import ClipModel, _ToRGB, open_clip_module, train_transform
from agiqa.models.crops import CropGridDataset, NativeCrop, mean_by_row

if TYPE_CHECKING:
    from open_clip.transformer import VisionTransformer

QUALITY_CLASSES = ("good photo", "bad photo")
#: The proxy's auxiliary class names (methods.md 9.2).
ALIGNMENT_CLASSES = ("aligned photo", "misaligned photo")
PLACEHOLDER = "X"
PROMPT_INIT_STD = 0.02  # CoOp / MaPLe initialisation of learned prompt vectors
INPUT_TRANSFORMS = ("native_crops", "resized")
NORMALISATIONS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}
#: Dimension kinds scored by the main (good/bad photo) branch; the rest by the auxiliary one.
MAIN_KINDS = ("quality", "overall")


# ---------------------------------------------------------------------------------------------
# Prompted encoders over open_clip's CLIP internals


def check_backbone(clip: nn.Module) -> tuple[int, int]:
    """Refuse backbones the prompted encoders cannot run; return (vision, text) block counts."""
    from open_clip.transformer import VisionTransformer

    visual = getattr(clip, "visual", None)
    if not isinstance(clip, open_clip_module().CLIP) or not isinstance(visual, VisionTransformer):
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
            patch tokens before ``ln_pre`` (as the proxy), entry ``i`` replaces those tokens'
            hidden states before block ``i``. Empty: exactly ``clip.encode_image``.

    Returns:
        [B, embed_dim] unnormalised image features.
    """
    visual = clip.visual
    x = _vision_stem(visual, images)
    n_prompts = layer_prompts[0].shape[-2] if layer_prompts else 0
    if layer_prompts:
        x = torch.cat([x, _rows(layer_prompts[0], x)], dim=1)
    x = visual.ln_pre(x)

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
    from open_clip.transformer import text_global_pool  # loaded by the backbone already

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
    """Patch embedding, class token, positions and patch dropout, as open_clip (no ``ln_pre``)."""
    x = visual.conv1(images)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    return visual.patch_dropout(x)


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
    """The prompts of one layer: text groups (main first, then aux) and the visual sets.

    ``visual`` is the auxiliary branch's set (shared by both branches with one set);
    ``main_visual`` the target branch's own set before fusion (None with one set).
    """

    text: list[torch.Tensor]
    visual: torch.Tensor
    main_visual: torch.Tensor | None = None


class DeepPrompts(nn.Module):
    """Class contexts and deep text prompts of both branches, the visual sets and their fusion."""

    def __init__(
        self,
        n_ctx: int,
        depth: int,
        main_groups: int,
        aux_groups: int,
        widths: tuple[int, int],
        visual_sets: int = 2,
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
        self.main_visual = vectors(depth if visual_sets == 2 else 0, vision_width)
        # The proxy's per-layer Linear(1536 -> 768) on ViT-B: [aux, target] -> target prompts.
        self.fusion = nn.ModuleList(
            nn.Linear(2 * vision_width, vision_width) for _ in range(len(self.main_visual))
        )

    @property
    def two_sets(self) -> bool:
        return len(self.main_visual) > 0

    def forward(self) -> list[LayerPrompts]:
        """Per prompted layer: layer 0 has one text group per class context, deeper layers two."""
        main_visual: list[torch.Tensor | None] = list(self.main_visual) or [None] * len(self.visual)
        layers = [
            LayerPrompts([*self.main_context, *self.aux_context], self.visual[0], main_visual[0])
        ]
        deeper = zip(self.main_deep, self.aux_deep, self.visual[1:], main_visual[1:], strict=True)
        for main, aux, visual, own in deeper:
            layers.append(LayerPrompts([main, aux], visual, own))
        return layers

    def fuse(self, layer: int, prompts: LayerPrompts) -> torch.Tensor:
        """The target branch's visual prompts of a layer: fused with two sets, else shared."""
        if prompts.main_visual is None:
            return prompts.visual
        joint = torch.cat([prompts.visual, prompts.main_visual], dim=-1)
        return self.fusion[layer](joint)


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
        sets = [prompts.visual] + ([prompts.main_visual] if prompts.main_visual is not None else [])
        visual = torch.cat(sets)
        joint = torch.cat(
            [self.text_in(self.text_norm(text)), self.vision_in(self.vision_norm(visual))]
        )
        joint = (joint + self.layer_embedding[layer]).unsqueeze(0)
        mixed = self.attention(joint, joint, joint, need_weights=False)[0].squeeze(0)
        text = text + self.text_out(mixed[: len(text)])
        visual = visual + self.vision_out(mixed[len(text) :])
        new_sets = visual.split([len(v) for v in sets])
        return LayerPrompts(
            list(text.split([len(p) for p in prompts.text])),
            new_sets[0],
            new_sets[1] if len(new_sets) > 1 else None,
        )


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
    """Frozen CLIP with two coupled prompt learners (main and auxiliary) and an image adapter.

    Args:
        dimensions: The dataset's rated dimensions; the output columns follow their order.
        backbone: ``{arch, pretrained, cache_dir, offline, image_size}`` for ``load_clip``; the
            default is the tiny random-init ``agiqa-tiny-clip``, the paper uses ``ViT-B-32`` with
            ``pretrained: openai``. Must be a CLIP with ViT towers.
        n_ctx: Learned prompt tokens per prompted layer and modality.
        prompt_depth: Number of blocks, from the first, that get prompts in both towers;
            ``None`` means every block of the shallower tower (12 on ViT-B/32).
        visual_prompt_sets: 2 (the proxy: auxiliary and target visual prompts, fused per layer,
            two image passes) or 1 (one shared set, one image pass).
        mpa_dim: Common width of the Multimodal Prompt Attention.
        mpa_heads: Attention heads of the MPA (must divide ``mpa_dim``).
        adapter_reduction: Bottleneck reduction of the image adapter.
        adapter_ratio: Weight of the adapter output in the residual fusion, in [0, 1].
        aux_weight: Weight of the auxiliary alignment MSE in the loss.
        quality_classes: ``[positive, negative]`` class names of the main (quality) branch.
        alignment_classes: ``[positive, negative]`` class names of the auxiliary branch.
        input_transform: ``native_crops`` (the proxy: random crops at native resolution,
            stride-``test_stride`` crop averaging at test) or ``resized`` (CLIP's transforms).
        test_stride: Stride of the evaluation crop grid (the proxy: 64).
        normalisation: ``imagenet`` (the proxy) or ``clip`` (CLIP's own statistics).

    Dimension kinds: ``quality`` and ``overall`` -> main branch; ``alignment`` -> auxiliary.
    """

    trainable = True
    uses_gpu = True

    def __init__(
        self,
        dimensions: Sequence[Dimension],
        backbone: Mapping[str, Any] | None = None,
        n_ctx: int = 8,
        prompt_depth: int | None = None,
        visual_prompt_sets: int = 2,
        mpa_dim: int = 256,
        mpa_heads: int = 4,
        adapter_reduction: int = 4,
        adapter_ratio: float = 0.2,
        aux_weight: float = 0.1,
        quality_classes: Sequence[str] = QUALITY_CLASSES,
        alignment_classes: Sequence[str] = ALIGNMENT_CLASSES,
        input_transform: str = "native_crops",
        test_stride: int = 64,
        normalisation: str = "imagenet",
    ) -> None:
        super().__init__(dimensions, dict(backbone or {}))
        self.check_settings(locals())
        self.aux_weight = float(aux_weight)
        self.clip.requires_grad_(False)
        self.prompt_depth = _resolve_depth(prompt_depth, check_backbone(self.clip))
        self.n_ctx = n_ctx
        self.input_transform = input_transform
        self.test_stride = int(test_stride)
        self.normalisation = normalisation
        is_main = [dim.kind in MAIN_KINDS for dim in self.dimensions]
        main_groups = sum(is_main)
        scored_aux = len(is_main) - main_groups
        widths = (int(self.clip.transformer.width), int(self.clip.visual.transformer.width))
        self.prompts = DeepPrompts(
            n_ctx, self.prompt_depth, main_groups, max(1, scored_aux), widths, visual_prompt_sets
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
        group_branch = torch.tensor([0] * main_groups + [1] * scored_aux)
        self.register_buffer("group_branch", group_branch, persistent=False)
        self.register_buffer("columns", self._group_of_each_dimension(), persistent=False)
        self.register_buffer("is_main", torch.tensor(is_main), persistent=False)
        self.train(self.training)  # puts the frozen backbone in eval mode

    @classmethod
    def reads_prompt(cls, kind: str) -> bool:
        return False  # the proxy replaces the generation prompt by a constant sentence

    def train(self, mode: bool = True) -> Dcmpln:
        super().train(mode)
        self.clip.train(False)  # frozen backbone: no dropout, always as at inference
        return self

    def feature_key(self) -> str | None:
        # CLIP is frozen, but the learned prompts run inside it: its features cannot be cached.
        return None

    # -- inputs -----------------------------------------------------------------------------

    @property
    def crop_size(self) -> int:
        size = self.clip.visual.preprocess_cfg["size"]
        return int(size[0] if isinstance(size, list | tuple) else size)

    def image_transform(self, train: bool) -> Callable[[Image.Image], torch.Tensor]:
        """``native_crops``: a random native-resolution crop + flip (training) or the centre crop.

        With ``native_crops`` evaluation goes through ``make_dataset``'s crop grid; the centre
        crop only serves callers that transform single images. ``resized``: CLIP's transforms.
        """
        mean, std = NORMALISATIONS[self.normalisation]
        if self.input_transform == "native_crops":
            return NativeCrop(self.crop_size, mean, std, train=train)
        if self.normalisation == "clip":  # exactly CLIP's own transforms
            return self._preprocess.image(train)
        config = {**self.clip.visual.preprocess_cfg, "mean": mean, "std": std}
        if train:
            return train_transform(config)
        from torchvision import transforms as T

        size = self.crop_size
        return T.Compose(
            [
                _ToRGB(),
                T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
                T.CenterCrop(size),
                T.ToTensor(),
                T.Normalize(mean=mean, std=std),
            ]
        )

    def make_dataset(self, data: PartData, train: bool) -> Dataset:
        """Evaluation with ``native_crops``: one sample per grid crop, averaged per row."""
        if train or self.input_transform != "native_crops":
            return super().make_dataset(data, train)
        tokens = self.tokenize(data.frame["prompt"].tolist())
        crop = NativeCrop(self.crop_size, *NORMALISATIONS[self.normalisation], train=False)
        return CropGridDataset(
            data.images, crop, self.test_stride, tokens, data.targets, data.decoded
        )

    def reduce_predictions(self, outputs: np.ndarray, rows: np.ndarray, n_rows: int) -> np.ndarray:
        return mean_by_row(outputs, rows, n_rows)

    # -- forward ----------------------------------------------------------------------------

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """[B, n_dims] positive-class probabilities; ``tokens`` (the generation prompt) unused."""
        layers = [self.mpa(index, layer) for index, layer in enumerate(self.prompts())]
        main_prompts = [self.prompts.fuse(index, layer) for index, layer in enumerate(layers)]
        main = self.adapter(encode_image_prompted(self.clip, images, main_prompts))
        aux = main
        if self.prompts.two_sets and bool((self.group_branch == 1).any()):
            aux_prompts = [layer.visual for layer in layers]
            aux = self.adapter(encode_image_prompted(self.clip, images, aux_prompts))
        per_group = torch.stack([main, aux], dim=1)[:, self.group_branch]  # [B, G, E]
        text = F.normalize(self._class_features(layers), dim=-1).view(-1, 2, main.shape[-1])
        logits = self.clip.logit_scale.exp() * torch.einsum("bgd,gkd->bgk", per_group, text)
        return logits.softmax(dim=-1)[..., 0][:, self.columns]

    def loss(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        per_dimension = ((predictions - targets) ** 2).mean(dim=0)
        total = per_dimension.new_zeros(())
        if self.is_main.any():
            total = total + per_dimension[self.is_main].mean()
        if not self.is_main.all():
            total = total + self.aux_weight * per_dimension[~self.is_main].mean()
        return total

    def _class_features(self, layers: list[LayerPrompts]) -> torch.Tensor:
        """[2 x scored groups, embed_dim] features of every scored group's two class prompts."""
        scored = self.class_tokens.shape[0] // 2
        # Layer 0 lists main contexts then aux ones, so the scored groups are the first ones.
        per_layer = [torch.stack(layers[0].text[:scored]).repeat_interleave(2, dim=0)]
        # Deeper layers: each row takes its branch's prompt (0 main, 1 aux).
        per_layer += [torch.stack(layer.text)[self.row_branch] for layer in layers[1:]]
        return encode_text_prompted(self.clip, self.class_tokens, per_layer)

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        super().check_settings(settings)
        get = settings.get
        _check_hyperparameters(
            get("n_ctx"), get("mpa_dim"), get("mpa_heads"),
            get("adapter_reduction"), get("adapter_ratio"),
        )  # fmt: skip
        _check_inputs(
            get("visual_prompt_sets"), get("input_transform"), get("test_stride"),
            get("normalisation"),
        )  # fmt: skip
        _non_negative("aux_weight", get("aux_weight"))
        depth = get("prompt_depth")
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int)):
            raise ConfigError(f"prompt_depth must be an integer or null; got {depth!r}")
        _class_pair(get("quality_classes"))
        _class_pair(get("alignment_classes"))

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
        main_groups = sum(dim.kind in MAIN_KINDS for dim in self.dimensions)
        counters = {"main": 0, "aux": main_groups}
        columns = []
        for dim in self.dimensions:
            branch = "main" if dim.kind in MAIN_KINDS else "aux"
            columns.append(counters[branch])
            counters[branch] += 1
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


def _check_inputs(
    visual_prompt_sets: int, input_transform: str, test_stride: int, normalisation: str
) -> None:
    if visual_prompt_sets not in (1, 2) or isinstance(visual_prompt_sets, bool):
        raise ConfigError(f"visual_prompt_sets must be 1 or 2; got {visual_prompt_sets!r}")
    if input_transform not in INPUT_TRANSFORMS:
        raise ConfigError(
            f"input_transform must be one of {INPUT_TRANSFORMS}; got {input_transform!r}"
        )
    if isinstance(test_stride, bool) or not isinstance(test_stride, int) or test_stride < 1:
        raise ConfigError(f"test_stride must be a positive integer; got {test_stride!r}")
    if normalisation not in NORMALISATIONS:
        raise ConfigError(
            f"normalisation must be one of {sorted(NORMALISATIONS)}; got {normalisation!r}"
        )


def _non_negative(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{name} must be a non-negative number; got {value!r}")
    return float(value)


def _class_pair(classes: Sequence[str]) -> tuple[str, str]:
    pair = tuple(classes) if not isinstance(classes, str) else ()
    if len(pair) != 2 or not all(isinstance(name, str) and name.strip() for name in pair):
        raise ConfigError(f"class names must be a [positive, negative] pair; got {classes!r}")
    return pair[0].strip(), pair[1].strip()
