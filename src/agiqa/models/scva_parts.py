"""Building blocks of the SCVA-AGIQA head (methods.md 1.1, 9.1): CSF map, pooling, fusion, MoE.

Every function here is per image and vectorised: no Python loop runs over the batch or the patches,
and nothing leaves the device, so a prediction never depends on the other images of a batch. The
one exception is the published Hungarian token matching (``token_alignment: hungarian``, the
default), which runs on the CPU, one sample at a time, as the published code does.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

#: How the visual features are pooled with the CSF map (``CsfPooling``).
CSF_POOLING = ("published", "weighted_mean")
#: How description tokens are matched to prompt tokens (``SemanticConsistency``).
TOKEN_ALIGNMENT = ("soft", "hungarian")
#: How the consistency tokens are pooled (``SemanticConsistency``).
CONSISTENCY_POOLING = ("attention", "linear")
#: How the visual tokens attend to the description (``DescriptionAttention``).
DESCRIPTION_ATTENTION = ("published", "masked")
#: The two-key fusion of the consistency branch (``SemanticConsistency``).
FUSION = ("published", "offset")
#: Where the experts' shared dims come from (``MoeRegressor``).
SHARED_ATTENTION = ("cross", "self")


def csf_filter(patch: int, sample_spacing: float) -> torch.Tensor:
    """Mannos-Sakrison-like CSF over the 2-D FFT grid of a ``patch`` x ``patch`` window.

    ``f`` is the radial frequency ``hypot(fx, fy)`` with ``fx = fftfreq(patch, d=sample_spacing)``;
    the published ``d=0.02`` maps a 16-pixel patch to frequencies of 0-35 "cycles per unit", which
    puts the CSF peak (f near 8) at about a quarter of the Nyquist frequency.
    """
    freqs = torch.fft.fftfreq(patch, d=sample_spacing, dtype=torch.float64)
    radial = torch.hypot(freqs[:, None], freqs[None, :])
    scaled = 0.114 * radial
    csf = 2.6 * (0.0192 + scaled) * torch.exp(-(scaled**1.1))
    return csf.float()


def csf_weights(
    crops: torch.Tensor, patch: int, csf: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Per-image CSF saliency on the patch grid, min-max normalised to [0, 1].

    As the published ``compute_csf_weight``, the grey image is the mean of the three channels of
    the crop as the ViT receives it (normalised), min-max normalised; each ``patch`` x ``patch``
    tile's FFT magnitude is weighted by ``csf`` and summed, and the grid of sums is min-max
    normalised. Every statistic is taken per image; the published code took them over the
    whole batch tensor, so an image's map depended on the images batched with it.

    Args:
        crops: Normalised crops ``[N, 3, H, W]`` with ``H`` and ``W`` multiples of ``patch``.
        patch: Patch side in pixels (the ViT's patch size, so the map matches its token grid).
        csf: ``csf_filter(patch, ...)`` on the crops' device.
        eps: Guards the min-max divisions of flat images.

    Returns:
        ``[N, H // patch, W // patch]``.
    """
    n, _, height, width = crops.shape
    grey = crops.mean(dim=1)
    grey = _minmax(grey.flatten(1), eps).view(n, height, width)
    # [N, H, W] -> [N, gh, gw, p, p]: one FFT over every patch of every image at once.
    tiles = grey.unfold(1, patch, patch).unfold(2, patch, patch)
    spectrum = torch.fft.fft2(tiles.float()).abs()
    energy = (spectrum * csf).sum(dim=(-1, -2))
    grid = _minmax(energy.flatten(1), eps).view_as(energy)
    return grid.to(crops.dtype)


def _minmax(values: torch.Tensor, eps: float) -> torch.Tensor:
    """Min-max normalise each row of ``values`` [N, M] to [0, 1]."""
    low = values.amin(dim=1, keepdim=True)
    high = values.amax(dim=1, keepdim=True)
    return (values - low) / (high - low).clamp_min(eps)


class VisualNeck(nn.Module):
    """Multi-level ViT patch features -> ``dim`` channels: Conv1x1, Conv3x3 + ReLU, LayerNorm."""

    def __init__(self, in_channels: int, mid_channels: int, dim: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, mid_channels, kernel_size=1)
        self.mix = nn.Conv2d(mid_channels, dim, kernel_size=3, padding=1)
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[N, C, gh, gw]`` -> tokens ``[N, gh * gw, dim]``."""
        mixed = F.relu(self.mix(self.reduce(features)))
        return self.norm(mixed.flatten(2).transpose(1, 2))


class CsfPooling(nn.Module):
    """IQAPooling: spatial gate x channel (squeeze-excite) gate, pooled with the CSF map.

    ``mode``:

    - ``published``: ``sum(f * w) / sum(w) + floor * sum(f)`` over the positions, the published
      form: on ViT-B/16's 196 positions the CSF-weighted mean is 1 / (1 + 0.4 * 196), about 1.3%,
      of the pooling weight, the plain sum the rest;
    - ``weighted_mean``: ``sum(f * (w + floor)) / sum(w + floor)``, where the CSF map shapes
      about half of the weight and the feature scale does not grow with the grid size.
    """

    def __init__(self, dim: int, reduction: int, floor: float, mode: str = "published") -> None:
        super().__init__()
        if mode not in CSF_POOLING:
            raise ValueError(f"csf pooling must be one of {CSF_POOLING}, not {mode!r}")
        self.spatial = nn.Linear(dim, 1)  # a 1x1 conv on tokens
        hidden = max(1, dim // reduction)
        self.channel = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim), nn.Sigmoid()
        )
        self.floor = floor
        self.mode = mode

    def forward(self, tokens: torch.Tensor, csf: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        """Tokens ``[N, T, dim]`` and CSF map ``[N, T]`` -> pooled ``[N, dim]``."""
        gated = tokens * torch.sigmoid(self.spatial(tokens))
        gated = gated * self.channel(tokens.mean(dim=1)).unsqueeze(1)
        if self.mode == "weighted_mean":
            weights = (csf + self.floor).unsqueeze(-1)
            return (gated * weights).sum(dim=1) / weights.sum(dim=1)
        weights = csf.unsqueeze(-1)
        weighted = (gated * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(eps)
        return weighted + self.floor * gated.sum(dim=1)


class TokenCrossAttention(nn.Module):
    """Multi-head cross-attention as the published ``CrossAttention``: q, k and v projections
    without bias to ``heads x head_dim``, scaled dot products, a biased output projection back
    to the query width. ``mask`` [N, L] (True = attend) is optional: the published code never
    passes one.
    """

    def __init__(self, query_dim: int, context_dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Linear(inner, query_dim)

    def forward(
        self, queries: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``queries`` [N, T, d_q], ``context`` [N, L, d_c] -> [N, T, d_q]."""
        q, k, v = (
            self._split(projection(x))
            for projection, x in ((self.to_q, queries), (self.to_k, context), (self.to_v, context))
        )
        attn_mask = None if mask is None else mask[:, None, None, :]
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.to_out(attended.transpose(1, 2).flatten(2))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """[N, L, h * dh] -> [N, h, L, dh]."""
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)


class DescriptionAttention(nn.Module):
    """Visual tokens attend to the description tokens, with a residual.

    ``mode``:

    - ``published``: ``visual + CrossAttention(visual, LayerNorm(text))``, every text position
      attended (padding too: the published code passes no mask), no norm after the residual;
    - ``masked`` (this project's earlier variant): ``LayerNorm(visual + MHA(visual, text))``
      with padding masked and attention dropout.
    """

    def __init__(self, dim: int, heads: int, dropout: float, mode: str = "published") -> None:
        super().__init__()
        if mode not in DESCRIPTION_ATTENTION:
            raise ValueError(f"description attention must be one of {DESCRIPTION_ATTENTION}")
        self.mode = mode
        self.norm = nn.LayerNorm(dim)
        if mode == "published":
            self.attention: nn.Module = TokenCrossAttention(dim, dim, heads, dim // heads)
            self.dropout = nn.Dropout(dropout)
        else:
            self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)

    def forward(self, visual: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``visual`` [N, T, d], ``text`` [N, L, d], ``mask`` [N, L] (True = real token)."""
        if self.mode == "published":
            return visual + self.dropout(self.attention(visual, self.norm(text)))
        attended, _ = self.attention(visual, text, text, key_padding_mask=~mask, need_weights=False)
        return self.norm(visual + attended)


class SemanticConsistency(nn.Module):
    """Description-to-prompt alignment, gated two-key fusion and pooling to one feature.

    ``alignment``: ``hungarian`` is the published ``TokenAligner``: the permutation of all
    description positions that maximises the summed cosine with the prompt positions (``scipy``
    on the CPU, one sample at a time, no gradient through the choice); ``soft`` gives each prompt
    position the softmax(cosine / tau)-weighted mean of the real description tokens,
    differentiable and on the device.

    ``GeminiFusionAttention`` follows: the aligned description token attends to two keys, its own
    and the prompt token's scaled by a sigmoid relation gate. ``fusion``: ``published`` adds a
    learned noise vector (standard normal at init) to the token *before* the key projection,
    its q/k/v projections have no bias and the relation gate is ``Linear(2d -> d/4) -> GELU ->
    Linear(d/4 -> 1)``; ``offset`` (this project's earlier variant) adds a zero-initialised
    offset *after* the key projection, with biased q/k/v and a ``Linear(2d -> d) -> ReLU`` gate.

    ``pooling``: ``linear`` is the published ``Linear(L -> 1)`` over every token position,
    padding included; ``attention`` is a masked attention pooling over the real prompt
    positions. A LayerNorm ends both.
    """

    def __init__(
        self,
        dim: int,
        temperature: float,
        length: int,
        alignment: str = "hungarian",
        pooling: str = "linear",
        fusion: str = "published",
    ) -> None:
        super().__init__()
        if alignment not in TOKEN_ALIGNMENT:
            raise ValueError(f"token alignment must be one of {TOKEN_ALIGNMENT}, not {alignment!r}")
        if pooling not in CONSISTENCY_POOLING:
            raise ValueError(f"pooling must be one of {CONSISTENCY_POOLING}, not {pooling!r}")
        if fusion not in FUSION:
            raise ValueError(f"fusion must be one of {FUSION}, not {fusion!r}")
        self.temperature = temperature
        self.alignment = alignment
        self.fusion = fusion
        published = fusion == "published"
        self.query = nn.Linear(dim, dim, bias=not published)
        self.key = nn.Linear(dim, dim, bias=not published)
        self.value = nn.Linear(dim, dim, bias=not published)
        self.noise = nn.Parameter(torch.randn(dim) if published else torch.zeros(dim))
        relation_width = max(1, dim // 4) if published else dim
        activation: nn.Module = nn.GELU() if published else nn.ReLU()
        self.relation = nn.Sequential(
            nn.Linear(2 * dim, relation_width), activation, nn.Linear(relation_width, 1)
        )
        self.pool_score = nn.Linear(dim, 1) if pooling == "attention" else None
        self.pool_positions = nn.Linear(length, 1) if pooling == "linear" else None
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        prompt: torch.Tensor,
        prompt_mask: torch.Tensor,
        description: torch.Tensor,
        description_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Token features ``[N, L, d]`` with masks ``[N, L]`` -> consistency feature ``[N, d]``."""
        if self.alignment == "hungarian":
            aligned = hungarian_align(prompt, description)
        else:
            aligned = self.align(prompt, description, description_mask)
        fused = self.fuse(aligned, prompt)
        if self.pool_positions is not None:
            pooled = self.pool_positions(fused.transpose(1, 2)).squeeze(-1)
            return self.norm(pooled)
        assert self.pool_score is not None
        scores = self.pool_score(fused).squeeze(-1).masked_fill(~prompt_mask, float("-inf"))
        pooled = (scores.softmax(dim=-1).unsqueeze(-1) * fused).sum(dim=1)
        return self.norm(pooled)

    def align(
        self, prompt: torch.Tensor, description: torch.Tensor, description_mask: torch.Tensor
    ) -> torch.Tensor:
        """For each prompt token, the similarity-weighted mean of the description tokens."""
        similarity = F.normalize(prompt, dim=-1) @ F.normalize(description, dim=-1).transpose(1, 2)
        similarity = similarity / self.temperature
        similarity = similarity.masked_fill(~description_mask.unsqueeze(1), float("-inf"))
        return similarity.softmax(dim=-1) @ description

    def fuse(self, own: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """Per token, attention over two keys: its own and the other modality's (gated)."""
        query = self.query(own)
        gate = torch.sigmoid(self.relation(torch.cat([own, other], dim=-1)))
        if self.fusion == "published":
            own_key = self.key(own + self.noise)
        else:
            own_key = self.key(own) + self.noise
        keys = torch.stack([own_key, gate * self.key(other)], dim=-2)
        values = torch.stack([self.value(own), self.value(other)], dim=-2)
        logits = (keys @ query.unsqueeze(-1)).squeeze(-1) / query.shape[-1] ** 0.5
        return own + (logits.softmax(dim=-1).unsqueeze(-1) * values).sum(dim=-2)


def hungarian_align(prompt: torch.Tensor, description: torch.Tensor) -> torch.Tensor:
    """Description tokens permuted to best match the prompt positions (cosine, Hungarian).

    The published ``TokenAligner``: all positions take part (padding too), the matching is
    computed without gradient, and the gradient flows through the gathered tokens.
    """
    from scipy.optimize import linear_sum_assignment

    with torch.no_grad():
        similarity = F.normalize(prompt.float(), dim=-1) @ F.normalize(
            description.float(), dim=-1
        ).transpose(1, 2)
        matrices = similarity.cpu().numpy()
    order = np.stack([linear_sum_assignment(m, maximize=True)[1] for m in matrices])
    index = torch.from_numpy(order).to(description.device)
    return description.gather(1, index.unsqueeze(-1).expand(-1, -1, description.shape[-1]))


class MoeRegressor(nn.Module):
    """Mixture of experts over ``[visual, consistency]`` with top-k gating and fixed feature masks.

    Each expert (``Linear -> ReLU -> Linear``, as published; ``dropout`` > 0 adds a dropout
    after the ReLU, this project's earlier variant) sees a fixed random half of the features (a
    buffer drawn from ``mask_seed``: the published learnable ``mask_logits`` never received a
    gradient through top-k, so it was a fixed random half in effect; here that is explicit) plus
    ``shared`` dims. The gate keeps the ``top_k`` largest logits and renormalises them with a
    softmax. Every expert outputs one value per rated dimension.

    ``shared_attention``: ``cross`` (published) is the published ``CrossAttention`` in which the
    visual feature queries the single consistency token; with one key the softmax is 1, so the
    shared dims are ``Linear(v(consistency))``, a function of the consistency feature alone (the
    query and key projections get no gradient: a quirk of the published code, kept).
    ``self`` (this project's earlier variant) is self-attention over [visual, consistency]
    followed by the mean of the two outputs.
    """

    def __init__(
        self,
        dim: int,
        outputs: int,
        experts: int,
        top_k: int,
        hidden: int,
        shared: int,
        shared_heads: int,
        dropout: float,
        mask_seed: int,
        shared_attention: str = "cross",
        shared_head_dim: int = 16,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= experts:
            raise ValueError(f"top_k must be in [1, {experts}], not {top_k}")
        if shared_attention not in SHARED_ATTENTION:
            raise ValueError(f"shared attention must be one of {SHARED_ATTENTION}")
        self.top_k = top_k
        self.shared_mode = shared_attention
        generator = torch.Generator().manual_seed(mask_seed)
        masks = torch.stack(
            [torch.randperm(2 * dim, generator=generator)[:dim] for _ in range(experts)]
        )
        self.register_buffer("feature_index", masks.sort(dim=1).values)
        if shared_attention == "cross":
            self.shared_attention: nn.Module = TokenCrossAttention(
                dim, dim, shared_heads, shared_head_dim
            )
        else:
            self.shared_attention = nn.MultiheadAttention(dim, shared_heads, batch_first=True)
        self.shared_proj = nn.Linear(dim, shared)
        self.gate = nn.Linear(2 * dim, experts)
        self.experts = nn.ModuleList(
            nn.Sequential(
                nn.Linear(dim + shared, hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, outputs),
            )
            for _ in range(experts)
        )

    def shared_features(self, visual: torch.Tensor, consistency: torch.Tensor) -> torch.Tensor:
        """The ``shared`` dims every expert reads: ``[N, d]`` x 2 -> ``[N, shared]``."""
        if self.shared_mode == "cross":
            mixed = self.shared_attention(visual.unsqueeze(1), consistency.unsqueeze(1))
            return self.shared_proj(mixed.squeeze(1))
        pair = torch.stack([visual, consistency], dim=1)
        mixed, _ = self.shared_attention(pair, pair, pair, need_weights=False)
        return self.shared_proj(mixed.mean(dim=1))

    def forward(self, visual: torch.Tensor, consistency: torch.Tensor) -> torch.Tensor:
        """``[N, d]`` and ``[N, d]`` -> ``[N, outputs]``."""
        features = torch.cat([visual, consistency], dim=-1)
        shared = self.shared_features(visual, consistency)
        expert_out = torch.stack(
            [
                expert(torch.cat([features[:, index], shared], dim=-1))
                for expert, index in zip(self.experts, self.feature_index, strict=True)
            ],
            dim=1,
        )  # [N, E, outputs]
        logits = self.gate(features)
        top_logits, top_index = logits.topk(self.top_k, dim=-1)
        weights = torch.zeros_like(logits).scatter(-1, top_index, top_logits.softmax(dim=-1))
        return (weights.unsqueeze(-1) * expert_out).sum(dim=1)
