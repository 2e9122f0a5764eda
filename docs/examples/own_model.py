"""A model trained outside agiqa, on agiqa's split files: the worked example of the README's
"Compare your own model".

It reads only public formats (the split file, its description ``<dataset>.json`` and the
manifest CSV it names) and the images, imports nothing from agiqa, and for every split:

1. computes hand-made image features (sharpness, noise, blockiness, saturation, colour, and how
   well the colours the prompt names are present);
2. fits a ridge regression per dimension on the split's **train** images, choosing the ridge
   strength on its **val** images (a fixed strength when the protocol has no validation part:
   never on test);
3. predicts the split's **test** images, clipped to the native scale.

It writes one CSV, ``image, split, pred_<dimension>``: what ``agiqa evaluate`` reads.

    python docs/examples/own_model.py \\
        --splits results/exported/splits/kfold_grouped/synthetic.csv \\
        --images results/demo/datasets/synthetic --out results/exported/pixel_ridge.csv
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ALPHAS = (0.1, 1.0, 10.0, 100.0)
DEFAULT_ALPHA = 10.0
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 215, 50),
    "purple": (140, 60, 170),
    "orange": (240, 140, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "pink": (240, 150, 190),
    "brown": (130, 80, 40),
    "grey": (128, 128, 128),
    "gray": (128, 128, 128),
    "beige": (225, 210, 175),
}


def features(path: Path, prompt: str) -> np.ndarray:
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    gray = rgb.mean(axis=2)
    laplacian = (
        -4 * gray[1:-1, 1:-1] + gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:]
    )
    dx = np.abs(np.diff(gray, axis=1))
    boundary = dx[:, 7::8].mean() if dx.shape[1] > 8 else 0.0
    saturation = rgb.max(axis=2) - rgb.min(axis=2)
    repeated = (dx == 0).mean()
    pixels = rgb.reshape(-1, 3)
    named = [COLOURS[word] for word in prompt.lower().split() if word in COLOURS]
    agreement = (
        np.mean([(np.linalg.norm(pixels - c, axis=1) < 60).mean() for c in named]) if named else 0.0
    )
    return np.array(
        [
            np.log1p(laplacian.var()),
            np.log1p(np.abs(laplacian).mean()),
            boundary / (dx.mean() + 1e-6),
            saturation.mean() / 255,
            saturation.std() / 255,
            repeated,
            *(rgb.mean(axis=(0, 1)) / 255),
            gray.std() / 255,
            agreement,
        ]
    )


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    design = np.hstack([x, np.ones((len(x), 1))])
    penalty = alpha * np.eye(design.shape[1])
    penalty[-1, -1] = 0.0  # the intercept is not shrunk
    return np.linalg.solve(design.T @ design + penalty, design.T @ y)


def predict(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((len(x), 1))]) @ weights


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks = [pd.Series(v).rank().to_numpy() for v in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def choose_alpha(z: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray) -> float:
    """The ridge strength with the best validation SRCC; fixed without a validation part."""
    if not val.any():  # never select on test
        return DEFAULT_ALPHA
    scores = {
        a: spearman(predict(fit_ridge(z[train], y[train], a), z[val]), y[val]) for a in ALPHAS
    }
    return max(scores, key=scores.__getitem__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=Path, required=True, help="agiqa split file (CSV)")
    parser.add_argument("--images", type=Path, required=True, help="the dataset's image folder")
    parser.add_argument("--out", type=Path, required=True, help="predictions CSV to write")
    args = parser.parse_args()

    info = json.loads(args.splits.with_suffix(".json").read_text())
    manifest = pd.read_csv(args.splits.parent / info["manifest"], dtype={"image": str})
    roles = pd.read_csv(args.splits, dtype=str)
    table = roles.merge(manifest, on=["image", "prompt_group"], validate="one_to_one")
    images = table["image"].tolist()
    x = np.stack(
        [features(args.images / i, p) for i, p in zip(images, table["prompt"], strict=True)]
    )
    scales = {d["name"]: (d["low"], d["high"]) for d in info["dimensions"]}
    rows = []
    for split in range(len(info["splits"])):
        train, val, test = (
            (table[f"split{split}"] == r).to_numpy() for r in ("train", "val", "test")
        )
        mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-9  # train statistics only
        z = (x - mean) / std
        out = pd.DataFrame({"image": table["image"][test].to_numpy(), "split": split})
        for dim, (low, high) in scales.items():
            y = table[f"mos_{dim}"].to_numpy(float)
            alpha = choose_alpha(z, y, train, val)
            weights = fit_ridge(z[train], y[train], alpha)
            out[f"pred_{dim}"] = np.clip(predict(weights, z[test]), low, high)  # native scale
        rows.append(out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(rows, ignore_index=True).to_csv(args.out, index=False)
    print(f"wrote {args.out}: {sum(len(r) for r in rows)} test predictions over {len(rows)} splits")


if __name__ == "__main__":
    main()
