"""Host memory of a training or prediction job: the ``mem_mb`` resource of the rules.

With ``snakemake --resources mem_mb=N`` Snakemake starts jobs only while their ``mem_mb`` sum
fits in N (a job asking for more than N runs alone), so real-size models no longer start side by
side until the machine swaps or kills them. A job holds:

- the model: Python, torch and the libraries, the weights and the training state. For the
  paper's real-size backbones the figure is the peak RSS the paper rehearsal measured for one
  fold job on the CPU (``make rehearse``; Snakemake's benchmark ``max_rss``, rounded up): the
  weights in fp32, the optimiser state of what trains, activations of its few images. A GPU job
  holds less on the host (its activations and optimiser state live on the device). The
  multimodal LLMs are estimated: their parameters in the entry's ``dtype`` (transformers loads
  them on the host before they move to the GPU) plus ``BASE_MB``; anything else (tiny models,
  stand-ins) is ``BASE_MB``;
- the decoded images (``train.decode_cache``): every labelled image of the job's dataset as RGB
  uint8, shrunk to ``train.decode_cache_short_side`` or at native size when that is null (their
  size read from up to ``SAMPLED_IMAGES`` image headers). This part grows with the dataset: on
  AIGIQA-20K's 14,000 labelled images at native size it exceeds most machines' memory.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from agiqa.pipeline import dataset_root, model_entry

#: A fold job of a small model: Python, torch, transformers and the job's data structures
#: (the rehearsal's tiny MLLM jobs peaked at 0.8-1.3 GB).
BASE_MB = 1500
#: Peak RSS (MB) of one CPU job (fold or cross-dataset training) of the paper's real-size
#: backbones, the largest the paper rehearsal measured on a few images per dataset (README
#: "Before your first GPU run"), rounded up; the rehearsal fails when a job exceeds its mem_mb.
MEASURED_MB = {
    ("clip", "ViT-L-14"): 4300,
    ("clip", "ViT-B-32"): 2400,
    ("scva", "imagereward"): 10400,
    ("torchvision", "resnet50"): 1200,
}
#: Parameters of the multimodal LLMs the paper names (`agiqa models list --no-weights`).
MLLM_PARAMETERS = {
    "Qwen/Qwen2.5-VL-7B-Instruct": 8_292_166_656,
    "Qwen/Qwen2.5-VL-3B-Instruct": 3_754_622_976,
}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
#: Image headers read to learn a dataset's native image size.
SAMPLED_IMAGES = 16
#: The decode cache's short side when an entry does not set one (TrainSettings' default).
DEFAULT_SHORT_SIDE = 256


def model_mb(entry: dict[str, Any]) -> int:
    """The model part of a job's memory (see the module docstring)."""
    backbone = entry.get("backbone") if isinstance(entry.get("backbone"), dict) else {}
    if entry.get("type") == "scva":
        blip = entry.get("blip") or {}
        return MEASURED_MB.get(("scva", str(blip.get("source"))), BASE_MB)
    if backbone.get("source") == "torchvision" and backbone.get("weights"):
        return MEASURED_MB.get(("torchvision", str(backbone.get("name"))), BASE_MB)
    if backbone.get("arch") and backbone.get("pretrained"):
        return MEASURED_MB.get(("clip", str(backbone["arch"])), BASE_MB)
    parameters = MLLM_PARAMETERS.get(str(backbone.get("name")))
    if parameters is not None:
        bytes_each = DTYPE_BYTES.get(str(backbone.get("dtype", "float32")), 4)
        return BASE_MB + math.ceil(parameters * bytes_each / 2**20)
    return BASE_MB


def decoded_mb(entry: dict[str, Any], manifest: str | Path, root: str | Path) -> int:
    """Memory of the job's decoded images: labelled rows x RGB bytes at the cached size."""
    train = entry.get("train") or {}
    if train.get("decode_cache") is False:
        return 0
    short_side = train.get("decode_cache_short_side", DEFAULT_SHORT_SIDE)
    rows, pixels = _image_statistics(str(manifest), str(root), short_side)
    return math.ceil(rows * 3 * pixels / 2**20)


@lru_cache(maxsize=64)
def _image_statistics(manifest: str, root: str, short_side: int | None) -> tuple[int, float]:
    """(labelled rows, mean pixels per decoded image) of a manifest."""
    import pandas as pd
    from PIL import Image

    frame = pd.read_csv(manifest, usecols=["image", "labelled"], dtype={"image": str})
    labelled = frame[frame["labelled"].astype(str).str.lower() == "true"]
    step = max(1, len(labelled) // SAMPLED_IMAGES)
    areas = []
    for image in labelled["image"].iloc[::step].iloc[:SAMPLED_IMAGES]:
        try:
            with Image.open(Path(root) / image) as opened:
                width, height = opened.size
        except OSError:  # verification has passed; a file that moved since is not our concern
            continue
        scale = 1.0 if short_side is None else min(1.0, short_side / min(width, height))
        areas.append(width * height * scale * scale)
    fallback = float((short_side or 512) ** 2)
    return len(labelled), (sum(areas) / len(areas)) if areas else fallback


def job_mem_mb(config: dict, model: str, dataset: str, manifest: str | Path, images_of: str) -> int:
    """``mem_mb`` of a job of ``model`` (its entry for ``dataset``) reading ``images_of``'s images.

    ``manifest`` is ``images_of``'s manifest (a fold job: its own dataset; a cross-dataset
    prediction: the dataset it scores).
    """
    entry = model_entry(config, model, dataset)
    root = dataset_root(config, images_of)
    return model_mb(entry) + decoded_mb(entry, manifest, root)
