"""Building blocks of the SCVA-AGIQA head (methods.md 1.1): CSF map, pooling, fusion and MoE.

Every function here is per image and vectorised: no Python loop runs over the batch or the patches,
and nothing leaves the device, so a prediction never depends on the other images of a batch.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# ITU-R BT.601 luma weights: the grey conversion of the published ``compute_csf_weight``.
_LUMA = (0.299, 0.587, 0.114)


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
    crops: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    patch: int,
    csf: torch.Tensor,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Per-image CSF saliency on the patch grid, min-max normalised to [0, 1].

    Args:
        crops: Normalised crops ``[N, 3, H, W]`` with ``H`` and ``W`` multiples of ``patch``.
        mean: Per-channel mean ``[3]`` used to normalise the crops (undone here).
        std: Per-channel std ``[3]`` used to normalise the crops.
        patch: Patch side in pixels (the ViT's patch size, so the map matches its token grid).
        csf: ``csf_filter(patch, ...)`` on the crops' device.
        eps: Guards the min-max divisions of flat images.

    Returns:
        ``[N, H // patch, W // patch]``; every statistic is taken per image, never over the batch.
    """
    n, _, height, width = crops.shape
    pixels = crops * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)
    luma = torch.tensor(_LUMA, device=crops.device, dtype=crops.dtype).view(1, 3, 1, 1)
    grey = (pixels * luma).sum(dim=1)
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
    """IQAPooling: spatial gate x channel (squeeze-excite) gate, pooled with CSF weights + floor."""

    def __init__(self, dim: int, reduction: int, floor: float) -> None:
        super().__init__()
        self.spatial = nn.Linear(dim, 1)  # a 1x1 conv on tokens
        hidden = max(1, dim // reduction)
        self.channel = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim), nn.Sigmoid()
        )
        self.floor = floor

    def forward(self, tokens: torch.Tensor, csf: torch.Tensor) -> torch.Tensor:
        """Tokens ``[N, T, dim]`` and CSF map ``[N, T]`` -> pooled ``[N, dim]``."""
        gated = tokens * torch.sigmoid(self.spatial(tokens))
        gated = gated * self.channel(tokens.mean(dim=1)).unsqueeze(1)
        weights = (csf + self.floor).unsqueeze(-1)
        # A weighted mean, not a sum: the feature scale then does not grow with the grid size.
        return (gated * weights).sum(dim=1) / weights.sum(dim=1)


class TextCrossAttention(nn.Module):
    """Visual tokens attend to text tokens (padding masked), with a residual and LayerNorm."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, visual: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``visual`` [N, T, d], ``text`` [N, L, d], ``mask`` [N, L] (True = real token)."""
        attended, _ = self.attention(visual, text, text, key_padding_mask=~mask, need_weights=False)
        return self.norm(visual + attended)


class SemanticConsistency(nn.Module):
    """Description-to-prompt soft alignment, gated two-key fusion, masked attention pooling.

    Replaces the published Hungarian ``TokenAligner`` (CPU, not differentiable) by a soft
    alignment: each prompt position takes the softmax(cosine / tau)-weighted mean of the
    description tokens. ``GeminiFusionAttention`` follows: the aligned description token attends
    to two keys, its own (plus a learned noise offset) and the prompt token's scaled by a sigmoid
    relation gate. The published ``Linear(35 -> 1)`` over token positions also pooled padding; a
    masked attention pooling over the real prompt positions replaces it.
    """

    def __init__(self, dim: int, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.noise = nn.Parameter(torch.zeros(dim))
        self.relation = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, 1))
        self.pool_score = nn.Linear(dim, 1)
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        prompt: torch.Tensor,
        prompt_mask: torch.Tensor,
        description: torch.Tensor,
        description_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Token features ``[N, L, d]`` with masks ``[N, L]`` -> consistency feature ``[N, d]``."""
        aligned = self.align(prompt, description, description_mask)
        fused = self.fuse(aligned, prompt)
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
        keys = torch.stack([self.key(own) + self.noise, gate * self.key(other)], dim=-2)
        values = torch.stack([self.value(own), self.value(other)], dim=-2)
        logits = (keys @ query.unsqueeze(-1)).squeeze(-1) / query.shape[-1] ** 0.5
        return own + (logits.softmax(dim=-1).unsqueeze(-1) * values).sum(dim=-2)


class MoeRegressor(nn.Module):
    """Mixture of experts over ``[visual, consistency]`` with top-k gating and fixed feature masks.

    Each expert sees a fixed random half of the features (a buffer drawn from ``mask_seed``: the
    published learnable ``mask_logits`` never received a gradient through top-k, so it was a fixed
    random half in effect; here that is explicit) plus ``shared`` dims from a cross-attention
    between the two halves. The gate keeps the ``top_k`` largest logits and renormalises them with
    a softmax. Every expert outputs one value per rated dimension.
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
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= experts:
            raise ValueError(f"top_k must be in [1, {experts}], not {top_k}")
        self.top_k = top_k
        generator = torch.Generator().manual_seed(mask_seed)
        masks = torch.stack(
            [torch.randperm(2 * dim, generator=generator)[:dim] for _ in range(experts)]
        )
        self.register_buffer("feature_index", masks.sort(dim=1).values)
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

    def forward(self, visual: torch.Tensor, consistency: torch.Tensor) -> torch.Tensor:
        """``[N, d]`` and ``[N, d]`` -> ``[N, outputs]``."""
        features = torch.cat([visual, consistency], dim=-1)
        pair = torch.stack([visual, consistency], dim=1)
        mixed, _ = self.shared_attention(pair, pair, pair, need_weights=False)
        shared = self.shared_proj(mixed.mean(dim=1))
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
