"""Scoring new images: same numbers as the fold job, self-contained checkpoints, ensembles, CLI."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import agiqa
from agiqa.cli import app
from agiqa.errors import AgiqaError
from agiqa.scoring import ScoringError, read_checkpoint
from agiqa.train.fold import run_fold
from test_train import TINY_BACKBONE, job, prepare, residual_config

TOLERANCE = 1e-5


def _fold(tmp_path: Path, model: dict, split: int = 0, out: str = "run") -> tuple[Path, Path]:
    """Train one tiny fold; return (run folder, dataset root)."""
    paths = prepare(tmp_path, n_prompts=12) if not (tmp_path / "synthetic").exists() else None
    paths = paths or (tmp_path / "synthetic", tmp_path / "manifest.csv", tmp_path / "splits.csv")
    fold = dataclasses.replace(
        job(tmp_path, paths, model, split=split), out_dir=str(tmp_path / out)
    )
    run_fold(fold)
    return tmp_path / out, paths[0]


def _test_inputs(run: Path, root: Path) -> tuple[pd.DataFrame, list[Path], list[str]]:
    predictions = pd.read_csv(run / "predictions.csv")
    manifest = pd.read_csv(run.parent / "manifest.csv").set_index("image")
    images = [root / name for name in predictions["image"]]
    prompts = manifest.loc[predictions["image"], "prompt"].tolist()
    return predictions, images, prompts


def _assert_same(scores: pd.DataFrame, predictions: pd.DataFrame, dims: list[str]) -> None:
    for dim in dims:
        np.testing.assert_allclose(
            scores[dim].to_numpy(), predictions[f"pred_{dim}"].to_numpy(), atol=TOLERANCE, rtol=0
        )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _fold(tmp_path_factory.mktemp("scoring"), residual_config(epochs=1))


def test_scores_equal_the_fold_jobs_test_predictions(trained: tuple[Path, Path]) -> None:
    run, root = trained
    predictions, images, prompts = _test_inputs(run, root)
    scorer = agiqa.load(run / "checkpoint.pt")
    scores = scorer.score(images, prompts=prompts, batch_size=5)  # batching does not matter
    assert list(scores.columns) == ["image", "quality", "align"]
    assert scores["image"].tolist() == [str(p) for p in images]
    _assert_same(scores, predictions, ["quality", "align"])
    # PIL images in, same numbers out.
    pil = [Image.open(p) for p in images]
    _assert_same(scorer.score(pil, prompts=prompts), predictions, ["quality", "align"])


def test_checkpoint_is_self_contained(
    trained: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, root = trained
    predictions, images, prompts = _test_inputs(run, root)
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    shutil.copy(run / "checkpoint.pt", alone / "model.pt")
    monkeypatch.chdir(alone)  # no manifest, config or run folder anywhere near
    payload = torch.load(alone / "model.pt", weights_only=True)
    assert {d["name"]: (d["kind"], d["low"], d["high"]) for d in payload["dimensions"]} == {
        "quality": ("quality", 0.0, 5.0),
        "align": ("alignment", 0.0, 5.0),
    }
    assert payload["model"]["entry"]["type"] == "clip_residual"
    assert payload["preprocessing"]["short_side"] == 256
    assert {"trained_state", "config", "best_epoch"} <= set(payload)
    _assert_same(agiqa.load(alone / "model.pt").score(images, prompts), predictions, ["quality"])


def test_without_prompts_alignment_is_left_empty(trained: tuple[Path, Path]) -> None:
    run, root = trained
    _, images, _ = _test_inputs(run, root)
    scores = agiqa.load(run).score(images[:3])
    assert scores["align"].isna().all() and scores["quality"].notna().all()


def test_frozen_random_backbone_and_feature_cache_path(tmp_path: Path) -> None:
    # clip_zeroshot: frozen, randomly initialised (seeded) CLIP, predicted from cached features.
    run, root = _fold(tmp_path, {"type": "clip_zeroshot", "backbone": TINY_BACKBONE})
    predictions, images, prompts = _test_inputs(run, root)
    payload = read_checkpoint(run / "checkpoint.pt")
    assert payload["frozen"]["tensors"] > 0 and payload["preprocessing"]["short_side"] is None
    _assert_same(agiqa.load(run).score(images, prompts), predictions, ["quality", "align"])
    # Other frozen weights than training's are refused, not silently scored with.
    payload["seed"] = 1
    torch.save(payload, tmp_path / "reseeded.pt")
    with pytest.raises(ScoringError, match="frozen weights loaded here differ"):
        agiqa.load(tmp_path / "reseeded.pt")


def test_stand_in_weight_file_travels_with_the_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agiqa.data.manifest import Dimension
    from agiqa.models import build_model

    monkeypatch.chdir(tmp_path)
    dims = (Dimension("quality", "quality", 0, 5),)
    donor = build_model({"type": "clip_zeroshot", "backbone": TINY_BACKBONE}, dims)
    Path("backbones").mkdir()
    torch.save({"state_dict": donor.clip.state_dict()}, "backbones/toy.pt")
    backbone = {"arch": TINY_BACKBONE["arch"], "pretrained": "backbones/toy.pt"}
    run, root = _fold(tmp_path, {"type": "clip_zeroshot", "backbone": backbone})
    predictions, images, prompts = _test_inputs(run, root)
    (ref,) = read_checkpoint(run / "checkpoint.pt")["weight_files"]
    assert ref["slot"] == "backbone.pretrained" and ref["path"] == "backbones/toy.pt"
    assert ref["bundled"] == "weights/toy.pt"
    assert (run / "weights" / "toy.pt").read_bytes() == Path("backbones/toy.pt").read_bytes()
    # The run folder, copied anywhere, scores without the project (no --weights-dir).
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(run, moved)
    shutil.rmtree(tmp_path / "backbones")
    monkeypatch.chdir(moved.parent)
    _assert_same(agiqa.load(moved).score(images, prompts), predictions, ["quality", "align"])
    # The checkpoint file alone needs the weight file from somewhere: it says so.
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(run / "checkpoint.pt", alone / "checkpoint.pt")
    with pytest.raises(ScoringError, match=r"weight file 'backbones/toy.pt'.*--weights-dir"):
        agiqa.load(alone)
    scorer = agiqa.load(alone, weights_dir=moved / "weights")
    _assert_same(scorer.score(images, prompts), predictions, ["quality", "align"])
    (moved / "weights" / "toy.pt").write_bytes(b"other weights")
    with pytest.raises(ScoringError, match="not the weight file the model was trained with"):
        agiqa.load(moved)


def test_model_folder_averages_its_folds(tmp_path: Path) -> None:
    model = residual_config(epochs=1)
    folder = tmp_path / "runs" / "kfold_grouped" / "synthetic" / "clip_residual"
    for split in (0, 1):
        _fold(tmp_path, model, split=split, out=str(folder.relative_to(tmp_path) / f"split{split}"))
    images = sorted((tmp_path / "synthetic").glob("*.jpg"))[:4]
    ensemble = agiqa.load(folder)
    assert ensemble.ensemble and "average of 2 fold checkpoints" in ensemble.describe()
    each = [agiqa.load(folder / f"split{k}").score(images, "a photo") for k in (0, 1)]
    mean = (each[0]["quality"] + each[1]["quality"]) / 2
    np.testing.assert_allclose(ensemble.score(images, "a photo")["quality"], mean, atol=1e-9)


def test_old_checkpoint_is_refused_clearly(tmp_path: Path) -> None:
    torch.save({"trained_state": {}, "config": {}, "best_epoch": 1}, tmp_path / "old.pt")
    with pytest.raises(ScoringError, match="older agiqa"):
        agiqa.load(tmp_path / "old.pt")


def test_cli_prints_one_row_per_image(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run, root = trained
    predictions, images, prompts = _test_inputs(run, root)
    table = pd.DataFrame({"image": [p.name for p in images], "prompt": prompts})
    table.to_csv(tmp_path / "prompts.csv", index=False)
    args = ["score", "--checkpoint", str(run), "--images", str(images[0]), *map(str, images[1:])]
    result = CliRunner().invoke(
        app, [*args, "--prompts", str(tmp_path / "prompts.csv")], env={"COLUMNS": "40"}
    )
    assert result.exit_code == 0, result.output
    # The progress line keeps the path whole on a narrow terminal (no newline inserted in it).
    assert f"with clip_residual ({run / 'checkpoint.pt'})" in result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "image,quality,align" and len(lines) == 1 + len(images)
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(
        app, [*args, "--prompts", str(tmp_path / "prompts.csv"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    _assert_same(pd.read_csv(out), predictions, ["quality", "align"])
    bad = ["score", "--checkpoint", str(tmp_path), "--images", str(images[0])]
    missing = CliRunner().invoke(app, bad)
    assert missing.exit_code == 2 and "no checkpoint.pt here" in missing.output


def test_large_jpegs_score_as_the_job_decoded_them(tmp_path: Path) -> None:
    # Images above the decode cache's short side are shrunk (JPEG draft decoding): the scorer
    # must shrink paths the same way to reproduce the job's numbers.
    from agiqa.data.readers import read_dataset
    from agiqa.data.splits import Protocol, make_splits, write_splits
    from agiqa.data.synthetic import generate

    root = tmp_path / "synthetic"
    generate(root, n_prompts=8, images_per_prompt=4, image_size=300, seed=0)
    manifest = read_dataset("agiqa-3k", root, dataset="synthetic")
    manifest.save(tmp_path / "manifest.csv")
    splits = make_splits(manifest.labelled(), Protocol(type="kfold_grouped", folds=4))
    write_splits(splits, tmp_path / "splits.csv")
    model = residual_config(epochs=1)
    model["train"]["decode_cache_short_side"] = 128
    run, _ = _fold(tmp_path, model)
    payload = read_checkpoint(run / "checkpoint.pt")
    assert payload["preprocessing"]["short_side"] == 128
    predictions, images, prompts = _test_inputs(run, root)
    _assert_same(agiqa.load(run).score(images, prompts), predictions, ["quality", "align"])


# --- Hardening II: prompts files, prompts given in Python, crafted checkpoints, huge images ------


def write_prompts(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def pictures(folder: Path, names: list[str]) -> list[Path]:
    paths = []
    for index, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (10 * index, 80, 160)).save(path)
        paths.append(path)
    return paths


def test_prompts_match_paths_as_the_readers_normalise_them(tmp_path: Path) -> None:
    from agiqa.scoring import prompts_from_csv

    images = pictures(tmp_path, ["a/x.png", "b/x.png", "c/y.png"])
    table = (
        "image,prompt,description\n"
        f"{tmp_path}/a/./x.png,a red cube,\n"
        f"{tmp_path}\\b\\x.png,a blue sphere,shiny\n"
        "y.png,a green cone,\n"
    )
    prompts, notes = prompts_from_csv(write_prompts(tmp_path / "p.csv", table), images)
    assert prompts == ["a red cube", "a blue sphere", "a green cone"]
    assert notes == ["", "shiny", ""]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("image,prompt\nx.png,\ny.png,a cone\n", r"p.csv, row 2: empty 'prompt'"),
        ("image,prompt\nx.png,a cube\nx.png,a cone\n", r"image 'x.png' has 2 rows \(2, 3\)"),
        ("image,prompt\n./x.png,a cube\nx.png,a cone\n", r"image 'x.png' has 2 rows \(2, 3\)"),
        ("image,prompt\nx.png,a cube\n", r"no row for image '.*y.png'"),
        ("image,text\nx.png,a cube\n", r"p.csv, row 1: missing required column\(s\) \['prompt'\]"),
    ],
    ids=["blank-prompt", "duplicate-rows", "duplicate-spellings", "no-row", "no-prompt-column"],
)
def test_a_bad_prompts_table_is_refused_naming_file_and_row(
    tmp_path: Path, table: str, message: str
) -> None:
    from agiqa.scoring import prompts_from_csv

    images = pictures(tmp_path, ["x.png", "y.png"])
    with pytest.raises(AgiqaError, match=message):
        prompts_from_csv(write_prompts(tmp_path / "p.csv", table), images)


def test_one_file_name_in_two_folders_is_not_one_prompt(tmp_path: Path) -> None:
    from agiqa.scoring import prompts_from_csv

    images = pictures(tmp_path, ["a/x.png", "b/x.png"])
    path = write_prompts(tmp_path / "p.csv", "image,prompt\nx.png,a red cube\n")
    with pytest.raises(ScoringError, match=r"'x.png' \(by file name\) matches 2 images"):
        prompts_from_csv(path, images)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("image,prompt\nx.png,caf\xe9 au lait\n".encode("latin-1"), "row 2: not a UTF-8 text"),
        (b"", "has no data rows"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a UTF-8 text file"),
        ('image,prompt\nx.png,"a cube\n', "row 2: malformed CSV"),
        (None, "no such prompts file"),
    ],
    ids=["latin-1", "empty", "binary", "bad-quoting", "missing"],
)
def test_an_unreadable_prompts_file_is_one_clear_line(
    trained: tuple[Path, Path], tmp_path: Path, content: bytes | str | None, message: str
) -> None:
    """Item 12: each of these ended in a traceback."""
    run, _ = trained
    image = pictures(tmp_path, ["x.png"])[0]
    path = tmp_path / "p.csv"
    if content is not None:
        write_prompts(path, content)
    args = ["score", "--checkpoint", str(run), "--images", str(image), "--prompts", str(path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and str(path) in " ".join(result.output.split())
    assert "Traceback" not in result.output


@pytest.mark.parametrize("bad", [None, float("nan"), "", "   ", 3])
def test_the_api_refuses_a_missing_prompt_instead_of_scoring_its_text(
    trained: tuple[Path, Path], bad: object
) -> None:
    """Item 5: None and NaN were scored as the prompts "None" and "nan"."""
    run, root = trained
    _, images, prompts = _test_inputs(run, root)
    scorer = agiqa.load(run)
    with pytest.raises(ScoringError, match=r"prompts\[1\] is .*: give a non-empty string"):
        scorer.score(images[:3], prompts=[prompts[0], bad, prompts[2]])
    with pytest.raises(ScoringError, match=r"descriptions\[0\] is None"):
        scorer.score(images[:1], prompts=prompts[:1], descriptions=[None])


def crafted(run: Path, tmp_path: Path, edit) -> Path:
    payload = read_checkpoint(run / "checkpoint.pt")
    edit(payload)
    path = tmp_path / "crafted.pt"
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p.pop("preprocessing"), "'preprocessing' must be"),
        (lambda p: p.update(version="2"), "'version' must be the integer 1; found '2'"),
        (lambda p: p["dimensions"][0].update(low="a"), "'dimensions' must be"),
        (lambda p: p["dimensions"][0].update(kind="qualty"), "'dimensions' must be"),
        (lambda p: p["model"]["entry"].pop("type"), "'model' must be"),
        (lambda p: p["frozen"].update(sha256=None), "'frozen' must be"),
        (lambda p: p.update(trained_state=[1, 2]), "'trained_state' must be a mapping"),
        (
            lambda p: p["trained_state"].update(
                {k: torch.full_like(v, float("nan"))
                 for k, v in p["trained_state"].items() if v.is_floating_point()}
            ),
            "finite tensors",
        ),
    ],
    ids=["no-preprocessing", "version-text", "scale-text", "kind", "no-type", "frozen", "state",
         "nan-weights"],
)  # fmt: skip
def test_a_crafted_checkpoint_is_refused_with_what_is_wrong(
    trained: tuple[Path, Path], tmp_path: Path, edit, message: str
) -> None:
    """Item 10: each of these was a KeyError/TypeError/ValueError traceback."""
    run, root = trained
    path = crafted(run, tmp_path, edit)
    with pytest.raises(ScoringError, match=message) as caught:
        agiqa.load(path)
    assert str(path) in str(caught.value) and "not a valid agiqa checkpoint" in str(caught.value)
    _, images, _ = _test_inputs(run, root)
    result = CliRunner().invoke(
        app, ["score", "--checkpoint", str(path), "--images", str(images[0])]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_a_tensor_of_the_wrong_shape_is_named(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run, _ = trained

    def widen(payload: dict) -> None:
        name = next(k for k, v in payload["trained_state"].items() if v.ndim == 2)
        payload["trained_state"][name] = torch.zeros(3, 3)
        payload["bad"] = name

    path = crafted(run, tmp_path, widen)
    with pytest.raises(ScoringError, match=r"wrong shape .*\(3, 3\) \(the model's is"):
        agiqa.load(path)
    payload = read_checkpoint(run / "checkpoint.pt")
    payload["model"]["entry"]["frezee"] = {}  # an entry its model cannot take
    torch.save(payload, tmp_path / "entry.pt")
    with pytest.raises(ScoringError, match=r"cannot be built: .*unknown setting\(s\) \['frezee'\]"):
        agiqa.load(tmp_path / "entry.pt")


def test_an_image_beyond_the_size_limits_is_refused_at_scoring(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """Item 11: a 1 x 1,000,000 image ran out of memory in the resize."""
    run, _ = trained
    strip = tmp_path / "strip.png"
    Image.new("RGB", (1_000_000, 1)).save(strip)
    scorer = agiqa.load(run)
    with pytest.raises(ScoringError, match=r"strip.png' is refused: 1000000 x 1 pixels"):
        scorer.score([strip])
    with pytest.raises(ScoringError, match="differ by more than 10x"):
        scorer.score([Image.new("RGB", (2_000, 10))])


# --- the pyiqa-style API: callable, tensors and arrays, scales, clear errors -------------------


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image.convert("RGB"))


def test_scorer_is_called_like_a_pyiqa_metric(trained: tuple[Path, Path]) -> None:
    run, root = trained
    _, images, prompts = _test_inputs(run, root)
    images, prompts = images[:4], prompts[:4]
    scorer = agiqa.load(run)
    assert scorer.device.type == ("cuda" if torch.cuda.is_available() else "cpu")  # auto
    assert scorer.dimension_names == ["quality", "align"]
    assert scorer.score_range == {"quality": (0.0, 5.0), "align": (0.0, 5.0)}
    assert scorer.lower_better is False
    assert not any(scale.lower_better for scale in scorer.scales.values())
    table = scorer.score(images, prompts)
    expected = torch.tensor(table[["quality", "align"]].to_numpy())
    from_paths = scorer(images, prompts)
    assert from_paths.shape == (4, 2) and torch.equal(from_paths, expected)
    assert torch.equal(scorer(images, prompts, dimension="quality"), expected[:, 0])
    # The same pixels as tensors (floats in [0, 1], C x H x W, single and batched), uint8
    # tensors and numpy arrays (H x W x C, single and batched) give the same numbers as PIL.
    pixels = [_pixels(p) for p in images]
    pil = scorer([Image.fromarray(p) for p in pixels], prompts)
    floats = [torch.from_numpy(p).permute(2, 0, 1).float() / 255 for p in pixels]
    assert torch.equal(scorer(floats, prompts), pil)
    assert torch.equal(scorer(torch.stack(floats), prompts), pil)
    # One image is a batch of one: the forward pass may round differently in the last bit.
    torch.testing.assert_close(scorer(floats[0], prompts[0]), pil[:1], atol=1e-6, rtol=0)
    assert torch.equal(scorer([f.mul(255).round().to(torch.uint8) for f in floats], prompts), pil)
    assert torch.equal(scorer(np.stack(pixels), prompts), pil)
    assert torch.equal(scorer(list(pixels), prompts), pil)
    one = scorer(pixels[0].astype(np.float32) / 255, prompts[0])
    torch.testing.assert_close(one, pil[:1], atol=1e-6, rtol=0)
    names = scorer.score([floats[0], images[1]], prompts[:2])["image"].tolist()
    assert names == ["image0", str(images[1])]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (b"\x89PNG\r\n", r"got bytes, not an image.*BytesIO"),
        (np.zeros((3, 16, 16), dtype=np.uint8), r"H x W x C"),
        (np.zeros((2, 3, 16, 16), dtype=np.float32), r"channels first\? transpose it"),
        (torch.zeros(16, 16, 3), r"C x H x W or N x C x H x W"),
        (torch.full((3, 8, 8), 2.0), r"values run from 2 to 2; floats must lie in \[0, 1\]"),
        (torch.full((3, 8, 8), float("nan")), "NaN"),
        (np.zeros((8, 8, 3), dtype=np.int64), "pass uint8"),
        (42, "cannot score a int"),
        ([], "no images to score"),
    ],
)
def test_bad_images_are_refused_clearly(
    trained: tuple[Path, Path], bad: object, message: str
) -> None:
    scorer = agiqa.load(trained[0])
    with pytest.raises(ScoringError, match=message):
        scorer(bad)


def test_closed_pil_image_bad_batch_size_and_device_are_refused(
    trained: tuple[Path, Path],
) -> None:
    run, root = trained
    _, images, _ = _test_inputs(run, root)
    image = Image.open(images[0])
    image.close()
    scorer = agiqa.load(run)
    with pytest.raises(ScoringError, match=r"cannot be read.*closed"):
        scorer(image)
    memory = Image.fromarray(_pixels(images[0]))
    memory.close()
    with pytest.raises(ScoringError, match="image0: the PIL image cannot be read"):
        scorer.score([memory])
    for size in (-1, 0, 1.5, "8", True):
        with pytest.raises(ScoringError, match="batch_size must be a positive integer"):
            scorer(images[:2], batch_size=size)
        with pytest.raises(ScoringError, match="batch_size must be a positive integer"):
            agiqa.load(run, batch_size=size)
    with pytest.raises(ScoringError, match="'banana' is not a torch device"):
        agiqa.load(run, device="banana")
    if not torch.cuda.is_available():
        with pytest.raises(ScoringError, match="torch sees 0 CUDA device"):
            agiqa.load(run, device="cuda:1")
    with pytest.raises(ScoringError, match="checkpoint must be a path"):
        agiqa.load(b"run")  # type: ignore[arg-type]
    with pytest.raises(ScoringError, match="dimension 'sharpness'"):
        scorer(images[0], dimension="sharpness")


def test_scoring_prints_no_library_warnings(
    trained: tuple[Path, Path], caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    # clip_residual builds its (tiny) CLIP with no weights, then loads the trained ones:
    # open_clip's "initialized randomly" warning is not news for the user.
    run, root = trained
    _, images, _ = _test_inputs(run, root)
    with caplog.at_level("INFO"):
        agiqa.load(run).score(images[:2])
    assert not [r for r in caplog.records if r.levelno >= 30], caplog.text
    assert "No pretrained weights" not in capfd.readouterr().err
