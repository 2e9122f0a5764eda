"""The figures' layout: titles that neither overlap nor run off the figure, statistics that hide
no point, per-split panels on one scale, and nothing smaller than the paper allows."""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from agiqa.report.figures import (
    FONT_SIZE,
    FULL_WIDTH,
    MAX_HEIGHT,
    STYLE,
    scatter_figure,
    splits_figure,
)
from agiqa.report.names import DisplayNames

MODELS = {
    "clip_residual": "CLIP residual",
    "dcmpln": "DCMPLN",
    "scva": "SCVA-AGIQA",
    "clip_zeroshot": "CLIP-IQA zero-shot",
    "mllm_zeroshot": "Q-Align zero-shot (tiny MLLM)",
    "deqa": "DeQA-Score (tiny MLLM)",
    "depictqa_compare": "DepictQA compare (tiny MLLM)",
}
NAMES = DisplayNames(models=MODELS, dimensions={"quality": "Quality", "align": "Alignment"})


def pooled(models: list[str]) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frames = []
    for model, dim in itertools.product(models, ("quality", "align")):
        target = rng.uniform(0, 5, 120)
        frames.append(
            pd.DataFrame(
                {
                    "dataset": "synthetic",
                    "model": model,
                    "dimension": dim,
                    "split": 0,
                    "image": [f"i{k}" for k in range(120)],
                    "pred": target + rng.normal(0, 1, 120),
                    "target": target,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def boxes(figure, artists) -> list:
    renderer = figure.canvas.get_renderer()
    return [a.get_window_extent(renderer) for a in artists if a.get_text()]


@pytest.mark.parametrize("count", [2, 4, 7])
def test_scatter_titles_stay_apart_and_inside_and_no_text_covers_points(count: int) -> None:
    with plt.rc_context(STYLE):
        figure = scatter_figure(pooled(list(MODELS)[:count]), "synthetic", NAMES)
        figure.canvas.draw()
    width, height = figure.get_size_inches()
    assert width <= FULL_WIDTH + 1e-9 and height <= MAX_HEIGHT + 1e-9
    axes = [ax for ax in figure.axes if ax.get_visible()]
    assert len(axes) == 2 * count
    titles = boxes(figure, [ax.title for ax in axes])
    frame = figure.bbox
    for title in titles:
        assert frame.x0 <= title.x0 and title.x1 <= frame.x1 and title.y1 <= frame.y1
    for a, b in itertools.combinations(titles, 2):
        assert not a.overlaps(b), "two panel titles overlap"
    for ax in axes:  # the statistics are in the title, outside the plotting area
        assert "SRCC" in ax.get_title() and "PLCC" in ax.get_title()
        assert not [t for t in ax.texts if t.get_text()]
    sizes = [t.get_fontsize() for ax in axes for t in [ax.title, *ax.get_xticklabels()]]
    assert min(sizes) >= FONT_SIZE
    plt.close(figure)


def test_per_split_panels_share_their_scale() -> None:
    rng = np.random.default_rng(1)
    rows = [
        {
            "protocol": "kfold_grouped",
            "dataset": "synthetic",
            "model": model,
            "dimension": dim,
            "part": "test",
            "split": split,
            "srcc": rng.uniform(0.0, 0.9) if dim == "quality" else rng.uniform(-0.6, 0.2),
        }
        for model in MODELS
        for dim in ("quality", "align")
        for split in range(3)
    ]
    per_split = pd.DataFrame(rows)
    summary = pd.DataFrame(columns=["protocol", "dataset", "model", "dimension", "part"])
    with plt.rc_context(STYLE):
        figure = splits_figure(per_split, summary, "synthetic", NAMES, {})
        figure.canvas.draw()
    first, second = figure.axes[:2]
    assert first.get_ylim() == second.get_ylim()
    low, high = first.get_ylim()
    assert low <= per_split["srcc"].min() and high >= per_split["srcc"].max()
    plt.close(figure)
