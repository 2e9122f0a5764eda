"""The embedded default dataset ``synthetic``: rendered shapes with planted faults and ratings.

It lets the whole pipeline run with no download. Every image shows a prompt from a tiny grammar
("two red circles on a grey background"), sometimes rendered wrong on purpose (prompt mismatch),
and carries planted quality degradations (blur, noise, JPEG, colour cast, low contrast,
pixelation) with known severities. Quality and alignment MOS are deterministic functions of those
planted factors plus simulated rater noise, so a model that learns the factors must rank the
images well.

The output copies the real AGIQA-3K layout: ``data.csv`` with the header
``name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align`` and the JPEG images
beside it, plus ``planted.csv`` with the ground-truth factors for debugging.

Everything is drawn from numpy Generators seeded from ``seed`` (never global state), so one seed
always gives byte-identical files.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DATA_HEADER = (
    "name",
    "prompt",
    "adj1",
    "adj2",
    "style",
    "mos_quality",
    "std_quality",
    "mos_align",
    "std_align",
)

COUNT_WORDS = ("one", "two", "three", "four")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (245, 215, 20),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
    "orange": (250, 130, 10),
    "purple": (140, 40, 170),
}
SHAPES: dict[str, str] = {  # singular -> plural
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "star": "stars",
    "diamond": "diamonds",
    "cross": "crosses",
}
# Backgrounds are kept apart from the shape colours so a clean image is always legible.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "grey": (140, 140, 140),
    "sky-blue": (140, 200, 240),
    "beige": (225, 205, 160),
    "mint": (170, 225, 190),
}
ATTRIBUTES = ("count", "colour", "shape")
DEGRADATIONS = ("blur", "noise", "jpeg", "colour_cast", "contrast", "pixelate")
VARIANT = "normal"
SCALE_LOW, SCALE_HIGH = 0.0, 5.0
_SUPERSAMPLE = 2  # draw shapes at twice the size, then downsample for clean edges
_CSV_FLOAT = "{:.4f}"
_T = TypeVar("_T")


@dataclass(frozen=True)
class GeneratorProfile:
    """A fictional text-to-image model: how often and how badly it degrades its images."""

    name: str
    clean_prob: float
    # degradation -> (probability it is applied, mean severity when applied)
    faults: dict[str, tuple[float, float]] = field(default_factory=dict)


GENERATORS = (
    GeneratorProfile(
        "pixelsmith",
        0.45,
        {"blur": (0.2, 0.3), "noise": (0.2, 0.3), "jpeg": (0.3, 0.35), "pixelate": (0.15, 0.3)},
    ),
    GeneratorProfile(
        "dreamforge",
        0.25,
        {"blur": (0.6, 0.55), "contrast": (0.4, 0.5), "colour_cast": (0.3, 0.4)},
    ),
    GeneratorProfile(
        "quickdraw",
        0.1,
        {"noise": (0.5, 0.6), "jpeg": (0.6, 0.6), "pixelate": (0.4, 0.55), "blur": (0.2, 0.4)},
    ),
    GeneratorProfile(
        "neuralpaint",
        0.3,
        {"colour_cast": (0.6, 0.55), "contrast": (0.5, 0.5), "noise": (0.2, 0.4)},
    ),
)


@dataclass(frozen=True)
class Scene:
    """What a prompt asks for (or what an image actually shows)."""

    count: int
    colour: str
    shape: str
    background: str

    def prompt(self) -> str:
        noun = self.shape if self.count == 1 else SHAPES[self.shape]
        return (
            f"{COUNT_WORDS[self.count - 1]} {self.colour} {noun} on a {self.background} background"
        )


@dataclass(frozen=True)
class PlantedImage:
    """One image's planted ground truth."""

    index: int
    name: str
    generator: str
    prompt_index: int
    asked: Scene
    rendered: Scene
    mismatches: int
    severities: dict[str, float]

    @property
    def total_severity(self) -> float:
        return float(sum(self.severities.values()))


def generate(
    out_dir: Path,
    *,
    n_prompts: int = 60,
    images_per_prompt: int = 4,
    image_size: int = 64,
    seed: int = 0,
    mismatch_rate: float = 0.35,
    raters: int = 15,
    progress: bool = False,
) -> Path:
    """Write the synthetic dataset into ``out_dir`` and return the path of its ``data.csv``.

    Args:
        out_dir: Folder for ``data.csv``, ``planted.csv`` and the JPEG images (created if absent).
        n_prompts: Number of distinct prompts (one prompt group each).
        images_per_prompt: Images rendered per prompt, spread over the fictional generators.
        image_size: Width and height of every image in pixels.
        seed: Seed of every random draw; the same seed gives byte-identical output.
        mismatch_rate: Probability that an image renders 1 or 2 prompt attributes wrong.
        raters: Simulated raters per image and dimension (at least 2, for a sample std).
        progress: Show a rich progress bar while rendering.
    """
    _check_arguments(n_prompts, images_per_prompt, image_size, mismatch_rate, raters)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts = sample_prompts(n_prompts, np.random.default_rng([seed, 0]))
    planted = [
        plant_image(index, prompts, images_per_prompt, seed, mismatch_rate)
        for index in range(n_prompts * images_per_prompt)
    ]
    for item in _progress(planted, progress, "rendering synthetic images"):
        image = render(item, image_size, np.random.default_rng([seed, 1, item.index]))
        _save_jpeg(image, out_dir / item.name, quality=95)
    ratings = simulate_ratings(planted, raters, np.random.default_rng([seed, 2]))
    data_csv = out_dir / "data.csv"
    _write_data_csv(data_csv, planted, ratings)
    _write_planted_csv(out_dir / "planted.csv", planted, ratings)
    return data_csv


def _check_arguments(
    n_prompts: int, images_per_prompt: int, image_size: int, mismatch_rate: float, raters: int
) -> None:
    combos = len(COUNT_WORDS) * len(COLOURS) * len(SHAPES) * len(BACKGROUNDS)
    if not 1 <= n_prompts <= combos:
        raise ValueError(
            f"n_prompts must be in [1, {combos}] (the grammar's size), not {n_prompts}"
        )
    if images_per_prompt < 1:
        raise ValueError(f"images_per_prompt must be at least 1, not {images_per_prompt}")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 pixels, not {image_size}")
    if not 0.0 <= mismatch_rate <= 1.0:
        raise ValueError(f"mismatch_rate must be in [0, 1], not {mismatch_rate}")
    if raters < 2:
        raise ValueError(f"raters must be at least 2 (a sample std needs two), not {raters}")


def _progress(items: Sequence[PlantedImage], enabled: bool, label: str) -> Iterable[PlantedImage]:
    if not enabled:
        return items
    from rich.progress import track  # imported lazily: only needed for interactive runs

    return track(items, description=label)


# --- prompts and planted factors -------------------------------------------------------------


def sample_prompts(n_prompts: int, rng: np.random.Generator) -> list[Scene]:
    """Draw ``n_prompts`` distinct scenes from the grammar."""
    grammar = [
        Scene(count, colour, shape, background)
        for count in range(1, len(COUNT_WORDS) + 1)
        for colour in COLOURS
        for shape in SHAPES
        for background in BACKGROUNDS
    ]
    chosen = rng.choice(len(grammar), size=n_prompts, replace=False)
    return [grammar[int(i)] for i in chosen]


def plant_image(
    index: int, prompts: Sequence[Scene], images_per_prompt: int, seed: int, mismatch_rate: float
) -> PlantedImage:
    """Decide the generator, the mismatches and the degradation severities of image ``index``."""
    rng = np.random.default_rng([seed, 3, index])
    prompt_index, slot = divmod(index, images_per_prompt)
    # Rotate generators across prompts so every generator sees every kind of prompt.
    profile = GENERATORS[(prompt_index + slot) % len(GENERATORS)]
    asked = prompts[prompt_index]
    rendered, mismatches = _mismatch(asked, rng, mismatch_rate)
    return PlantedImage(
        index=index,
        name=f"{profile.name}_{VARIANT}_{index:04d}.jpg",
        generator=profile.name,
        prompt_index=prompt_index,
        asked=asked,
        rendered=rendered,
        mismatches=mismatches,
        severities=_draw_severities(profile, rng),
    )


def _mismatch(asked: Scene, rng: np.random.Generator, rate: float) -> tuple[Scene, int]:
    if rng.random() >= rate:
        return asked, 0
    wrong = 1 if rng.random() < 0.6 else 2
    picked = {ATTRIBUTES[int(i)] for i in rng.choice(len(ATTRIBUTES), size=wrong, replace=False)}
    count, colour, shape = asked.count, asked.colour, asked.shape
    if "count" in picked:
        count = _other(list(range(1, len(COUNT_WORDS) + 1)), count, rng)
    if "colour" in picked:
        colour = _other(list(COLOURS), colour, rng)
    if "shape" in picked:
        shape = _other(list(SHAPES), shape, rng)
    return Scene(count, colour, shape, asked.background), wrong


def _other(options: list[_T], current: _T, rng: np.random.Generator) -> _T:
    rest = [o for o in options if o != current]
    return rest[int(rng.integers(len(rest)))]


def _draw_severities(profile: GeneratorProfile, rng: np.random.Generator) -> dict[str, float]:
    # Draw every number even for clean images so the stream never depends on earlier outcomes.
    clean = rng.random() < profile.clean_prob
    severities = {}
    for name in DEGRADATIONS:
        prob, mean = profile.faults.get(name, (0.0, 0.5))
        applied = rng.random() < prob
        # Beta with concentration 4 around the profile's mean; floor keeps it visible at 64 px.
        value = 0.1 + 0.9 * rng.beta(4.0 * mean, 4.0 * (1.0 - mean))
        severities[name] = round(float(value), 4) if applied and not clean else 0.0
    return severities


# --- rendering -------------------------------------------------------------------------------


def render(item: PlantedImage, size: int, rng: np.random.Generator) -> Image.Image:
    """Draw the rendered scene and apply the planted degradations."""
    image = draw_scene(item.rendered, size, rng)
    return degrade(image, item.severities, rng)


def draw_scene(scene: Scene, size: int, rng: np.random.Generator) -> Image.Image:
    big = size * _SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(canvas)
    for cx, cy, radius in _place_shapes(scene.count, big, rng):
        _draw_shape(draw, scene.shape, cx, cy, radius, COLOURS[scene.colour])
    return canvas.resize((size, size), Image.Resampling.LANCZOS)


def _place_shapes(count: int, size: int, rng: np.random.Generator) -> list[tuple[float, ...]]:
    """Random centres and radii that mostly do not overlap (rejection sampling, few tries)."""
    largest = size * (0.28 if count == 1 else 0.19)
    placed: list[tuple[float, ...]] = []
    for _ in range(count):
        best = None
        for _attempt in range(30):
            radius = float(rng.uniform(0.6, 1.0) * largest)
            cx, cy = rng.uniform(radius, size - radius, size=2)
            candidate = (float(cx), float(cy), radius)
            best = candidate
            if all(_apart(candidate, other) for other in placed):
                break
        assert best is not None
        placed.append(best)
    return placed


def _apart(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return float(np.hypot(a[0] - b[0], a[1] - b[1])) > 1.05 * (a[2] + b[2])


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    cx: float,
    cy: float,
    r: float,
    fill: tuple[int, int, int],
) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        s = r * 0.8
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    elif shape == "cross":
        w = r * 0.35
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    else:
        draw.polygon(_polygon(shape, cx, cy, r), fill=fill)


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        radii, corners = [r], 3
    elif shape == "diamond":
        radii, corners = [r], 4
    elif shape == "star":
        radii, corners = [r, r * 0.42], 10
    else:
        raise ValueError(f"unknown shape '{shape}'")
    points = []
    for k in range(corners):
        angle = -np.pi / 2 + 2 * np.pi * k / corners
        radius = radii[k % len(radii)]
        points.append((cx + radius * float(np.cos(angle)), cy + radius * float(np.sin(angle))))
    return points


def degrade(
    image: Image.Image, severities: dict[str, float], rng: np.random.Generator
) -> Image.Image:
    """Apply the planted degradations in a fixed order; JPEG goes last as a real re-encode would."""
    size = image.width
    if severities["pixelate"] > 0:
        factor = 1.5 + 6.5 * severities["pixelate"]
        small = max(2, round(size / factor))
        image = image.resize((small, small), Image.Resampling.BILINEAR)
        image = image.resize((size, size), Image.Resampling.NEAREST)
    if severities["blur"] > 0:
        image = image.filter(ImageFilter.GaussianBlur(radius=0.4 + 2.6 * severities["blur"]))
    pixels = np.asarray(image, dtype=np.float32)
    if severities["contrast"] > 0:
        keep = 1.0 - 0.8 * severities["contrast"]
        pixels = pixels.mean() + keep * (pixels - pixels.mean())
    if severities["colour_cast"] > 0:
        tint = rng.normal(0.0, 1.0, size=3)
        tint = tint / (np.linalg.norm(tint) + 1e-9)
        pixels = pixels + tint * 110.0 * severities["colour_cast"]
    if severities["noise"] > 0:
        pixels = pixels + rng.normal(0.0, 8.0 + 50.0 * severities["noise"], size=pixels.shape)
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    if severities["jpeg"] > 0:
        image = _jpeg_roundtrip(image, quality=max(2, round(40 - 38 * severities["jpeg"])))
    return image


def _jpeg_roundtrip(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def _save_jpeg(image: Image.Image, path: Path, quality: int) -> None:
    # Fixed encoder settings so the file bytes depend on the pixels only.
    image.save(path, format="JPEG", quality=quality, optimize=False, subsampling=0)


# --- ratings ---------------------------------------------------------------------------------


def latent_quality(severities: dict[str, float]) -> float:
    """Noise-free quality on [0, 5]: about 4.5 when clean, decaying with total severity."""
    total = sum(severities.values())
    return 0.4 + 4.1 * float(np.exp(-0.9 * total))


def latent_alignment(mismatches: int, severities: dict[str, float]) -> float:
    """Noise-free alignment on [0, 5]: drops per mismatch and when shapes become unrecognisable."""
    legibility = max(severities["blur"], severities["pixelate"], severities["contrast"])
    return 4.4 - 1.5 * mismatches - 1.5 * max(0.0, legibility - 0.6)


@dataclass(frozen=True)
class Ratings:
    """MOS and sample std (ddof=1) per image for both dimensions."""

    mos_quality: np.ndarray
    std_quality: np.ndarray
    mos_align: np.ndarray
    std_align: np.ndarray


def simulate_ratings(
    planted: Sequence[PlantedImage], raters: int, rng: np.random.Generator
) -> Ratings:
    """Simulate a panel of raters per dimension: latent score + rater bias + per-rating noise."""
    quality = np.array([latent_quality(p.severities) for p in planted])
    align = np.array([latent_alignment(p.mismatches, p.severities) for p in planted])
    mos_q, std_q = _rate(quality, raters, rng)
    mos_a, std_a = _rate(align, raters, rng)
    return Ratings(mos_q, std_q, mos_a, std_a)


def _rate(
    latent: np.ndarray, raters: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    bias = rng.normal(0.0, 0.25, size=(1, raters))
    noise = rng.normal(0.0, 0.55, size=(len(latent), raters))
    scores = np.clip(latent[:, None] + bias + noise, SCALE_LOW, SCALE_HIGH)
    return scores.mean(axis=1), scores.std(axis=1, ddof=1)


# --- writing ---------------------------------------------------------------------------------


def _write_data_csv(path: Path, planted: Sequence[PlantedImage], ratings: Ratings) -> None:
    rows = (
        [
            p.name,
            p.asked.prompt(),
            "",
            "",
            "",
            *_fmt(ratings.mos_quality[i], ratings.std_quality[i]),
            *_fmt(ratings.mos_align[i], ratings.std_align[i]),
        ]
        for i, p in enumerate(planted)
    )
    _write_csv(path, DATA_HEADER, rows)


def _write_planted_csv(path: Path, planted: Sequence[PlantedImage], ratings: Ratings) -> None:
    header = (
        "name",
        "generator",
        "prompt_index",
        "prompt",
        "count_asked",
        "count_rendered",
        "colour_asked",
        "colour_rendered",
        "shape_asked",
        "shape_rendered",
        "background",
        "mismatches",
        *(f"sev_{d}" for d in DEGRADATIONS),
        "total_severity",
        "latent_quality",
        "latent_align",
    )
    rows = (
        [
            p.name,
            p.generator,
            str(p.prompt_index),
            p.asked.prompt(),
            str(p.asked.count),
            str(p.rendered.count),
            p.asked.colour,
            p.rendered.colour,
            p.asked.shape,
            p.rendered.shape,
            p.asked.background,
            str(p.mismatches),
            *_fmt(*(p.severities[d] for d in DEGRADATIONS)),
            *_fmt(
                p.total_severity,
                latent_quality(p.severities),
                latent_alignment(p.mismatches, p.severities),
            ),
        ]
        for p in planted
    )
    _write_csv(path, header, rows)


def _fmt(*values: float) -> Iterator[str]:
    return (_CSV_FLOAT.format(float(v)) for v in values)


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
