"""The multimodal-LLM models on a tiny Qwen2.5-VL built from a config (random weights, offline).

Covers the level-token ids, LoRA parameter counts and which parameters train, pair sampling and
anchors staying inside the training part, batch-independent scores, checkpoint round trips, the
real ``from_pretrained`` loading path (from a local folder) and its offline failure.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

import agiqa
from agiqa.data.manifest import Dimension
from agiqa.data.splits import Protocol
from agiqa.errors import ConfigError
from agiqa.models import MODELS, build_model, trainable_parameter_count
from agiqa.models.mllm.backbone import (
    BackboneUnavailableError,
    Prompter,
    TinySpec,
    build_tiny,
    language_model,
    tiny_tokenizer,
)
from agiqa.models.mllm.depictqa import thurstone_outcomes
from agiqa.models.mllm.deqa import PairSample
from agiqa.models.mllm.levels import LEVEL_WORDS
from agiqa.train.fold import FoldTrainer, run_fold
from test_train import job, prepare

DIMS = (
    Dimension("quality", "quality", 0.0, 5.0, has_std=True),
    Dimension("align", "alignment", 0.0, 5.0, has_std=True),
)
TINY = {"image_size": 64}
ONE_EPOCH = {"epochs": 1, "batch_size": 8, "eval_batch_size": 16, "lr": 1e-3, "patience": 1}


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return prepare(tmp_path_factory.mktemp("mllm"), n_prompts=8)


def deqa_config(**extra: object) -> dict:
    return {
        "type": "deqa",
        "backbone": TINY,
        "lora": {"r": 4, "alpha": 8},
        "train": ONE_EPOCH,
        **extra,
    }


def depictqa_config(**extra: object) -> dict:
    return {
        "type": "depictqa_compare",
        "backbone": TINY,
        "lora": {"r": 4, "alpha": 8},
        "anchors": 3,
        "train": ONE_EPOCH,
        **extra,
    }


def test_the_three_models_are_registered() -> None:
    assert {"mllm_zeroshot", "deqa", "depictqa_compare"} <= set(MODELS.names())


def test_tiny_tokenizer_is_deterministic_with_single_token_levels() -> None:
    first, second = tiny_tokenizer(), tiny_tokenizer()
    assert first.get_vocab() == second.get_vocab()
    for word in (*LEVEL_WORDS, "A", "B"):
        assert len(first(f" {word}", add_special_tokens=False)["input_ids"]) == 1, word


def test_level_token_ids_follow_the_stem() -> None:
    model = build_model({"type": "mllm_zeroshot", "backbone": TINY}, DIMS)
    tokenizer = model.processor.tokenizer
    for ids in model.level_ids:
        assert [tokenizer.decode([i]) for i in ids] == [f" {w}" for w in LEVEL_WORDS]
    assert model.prompter.end_of_turn == "<|im_end|>"


def test_a_level_word_split_into_pieces_fails_clearly() -> None:
    levels = ["splendiferous", "good", "fair", "poor", "bad"]
    with pytest.raises(ConfigError, match=r"splendiferous.*single"):
        build_model({"type": "mllm_zeroshot", "backbone": TINY, "levels": levels}, DIMS)


def lora_parameters(model: nn.Module, r: int) -> int:
    """r (in + out) for every linear layer of the language model (the LoRA targets)."""
    linears = [m for m in language_model(model).modules() if isinstance(m, nn.Linear)]
    return sum(r * (m.in_features + m.out_features) for m in linears)


def test_lora_counts_and_only_adapters_train() -> None:
    reference, _ = build_tiny(TinySpec())
    model = build_model(deqa_config(), DIMS)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert all(".language_model." in n for n in trainable)
    assert trainable_parameter_count(model) == lora_parameters(reference, 4)
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    # DeQA-Score's defaults: r 128, alpha 256, dropout 0.05.
    default = build_model({"type": "deqa", "backbone": TINY}, DIMS)
    assert trainable_parameter_count(default) == lora_parameters(reference, 128)
    lora_layer = next(m for m in default.modules() if hasattr(m, "lora_alpha"))
    assert lora_layer.scaling["default"] == 2.0 and lora_layer.lora_dropout["default"].p == 0.05


def test_vision_tower_trains_when_asked() -> None:
    reference, _ = build_tiny(TinySpec())
    vision = sum(p.numel() for p in reference.model.visual.parameters())
    model = build_model(deqa_config(train_vision=True), DIMS)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert any(".visual." in name for name in trainable)
    assert trainable_parameter_count(model) == lora_parameters(reference, 4) + vision


def test_zero_shot_trains_nothing() -> None:
    model = build_model({"type": "mllm_zeroshot", "backbone": TINY}, DIMS)
    assert trainable_parameter_count(model) == 0 and not MODELS.get("mllm_zeroshot").trainable
    model.train()
    assert not model.training  # always at inference


def test_training_labels_mark_the_answer_and_the_level_position(paths) -> None:
    trainer = FoldTrainer(job(Path(paths[0]).parent / "labels", paths, deqa_config()))
    inputs, targets, _ = next(iter(trainer.loader("train", train=True)))
    model, labels = trainer.model, inputs["labels"]
    ids = inputs["model"]["input_ids"]
    positions = inputs["choice_positions"]
    for row in range(len(ids)):
        level_id = int(ids[row, positions[row]])
        assert level_id in model.level_ids[int(inputs["columns"][row])]
        assert labels[row, positions[row]] == -100  # the level token gets the KL, not the CE
        supervised = model.processor.tokenizer.decode(ids[row][labels[row] != -100])
        assert supervised.endswith(".<|im_end|>") and supervised.startswith("The ")
    # Pairs: all A images, then their partners, with the same dimension.
    half = len(ids) // 2
    assert torch.equal(inputs["columns"][:half], inputs["columns"][half:])
    assert targets["soft"].shape == (len(ids), 5)


def test_pairs_never_leave_the_training_part(paths, tmp_path: Path) -> None:
    for config in (deqa_config(), depictqa_config()):
        trainer = FoldTrainer(job(tmp_path / config["type"], paths, config))
        train = trainer.datasets["train", True]
        n_train = len(trainer.parts["train"])
        pixels = {np.asarray(im).tobytes() for im in trainer.model.images_of(trainer.training_data)}
        for index in range(len(train)):
            item = train[index]
            if isinstance(item, PairSample):
                assert 0 <= item.partner < n_train and item.partner != item.a.row
                images = item.a.turn.images + item.b.turn.images
            else:
                assert 0 <= item.target["partner"] < n_train
                images = item.turn.images
            assert all(np.asarray(im).tobytes() in pixels for im in images)
        # Evaluated parts only score their own rows (and, for depictqa, stored anchors).
        for part in ("val", "test"):
            rows = {trainer.datasets[part, False][i].row for i in range(3)}
            assert rows <= set(range(len(trainer.parts[part])))


def test_anchors_come_from_the_training_part_only(paths, tmp_path: Path) -> None:
    trainer = FoldTrainer(job(tmp_path, paths, depictqa_config()))
    model = trainer.model
    train, test = trainer.parts["train"], trainer.parts["test"]
    training_images = model.images_of(trainer.training_data)
    for column in range(len(model.dimensions)):
        rows = model.anchor_rows[column].tolist()
        assert len(set(rows)) == 3 and all(0 <= r < len(train) for r in rows)
        for k, row in enumerate(rows):
            image, prompt, _ = model.anchor(column, k)
            assert np.array_equal(np.asarray(image), np.asarray(training_images[row]))
            assert prompt == train["prompt"][row] and prompt not in set(test["prompt"])
        # Stratified: anchors span the training MOS range (lowest and highest thirds).
        mos = train[model.dimensions[column].mos_column].to_numpy()
        ranks = np.argsort(np.argsort(mos))[rows] / len(mos)
        assert ranks.min() < 1 / 3 and ranks.max() >= 2 / 3
    # The same anchors whatever the seed of the job's other randomness.
    again = FoldTrainer(job(tmp_path / "again", paths, depictqa_config()))
    assert torch.equal(again.model.anchor_rows, model.anchor_rows)


def scores(model: nn.Module, trainer: FoldTrainer, rows: list[int], batch_size: int) -> np.ndarray:
    dataset = trainer.datasets["test", False]
    items = [dataset[i] for i in range(len(dataset)) if dataset[i].row in rows]
    outputs = []
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            inputs, _, _ = model.collate(items[start : start + batch_size])
            outputs.append(model.forward_batch(inputs).numpy())
    return np.concatenate(outputs)


@pytest.mark.parametrize("name", ["mllm_zeroshot", "depictqa_compare"])
def test_a_score_does_not_depend_on_its_batch(paths, tmp_path: Path, name: str) -> None:
    config = (
        {"type": "mllm_zeroshot", "backbone": TINY}
        if name == "mllm_zeroshot"
        else depictqa_config()
    )
    trainer = FoldTrainer(job(tmp_path, paths, config))
    model = trainer.model.eval()
    rows = list(range(len(trainer.parts["test"])))
    # Alignment questions quote prompts of different lengths: batches are padded.
    alone = scores(model, trainer, rows, batch_size=1)
    batched = scores(model, trainer, rows, batch_size=7)
    np.testing.assert_allclose(alone, batched, atol=1e-5)
    assert np.isfinite(alone).sum() > 0


@pytest.mark.parametrize("config", [deqa_config(), depictqa_config()], ids=["deqa", "depictqa"])
def test_checkpoint_reproduces_the_predictions(paths, tmp_path: Path, config: dict) -> None:
    run = job(tmp_path, paths, config)
    metrics = run_fold(run)
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    state = checkpoint["trained_state"]
    assert any(".lora_B." in name for name in state)
    fresh = FoldTrainer(run)
    untrained = fresh.predict("test")
    missing = [k for k in state if k not in fresh.model.state_dict()]
    assert not missing
    fresh.model.load_state_dict(state, strict=False)
    reloaded = fresh.predict("test")
    written = pd.read_csv(tmp_path / "run" / "predictions.csv")
    for column, dim in enumerate(fresh.dimensions):
        native = dim.denormalise(reloaded[:, column].astype(np.float64))
        np.testing.assert_allclose(native, written[f"pred_{dim.name}"], atol=1e-5)
    assert not np.allclose(untrained, reloaded)  # the adapters (and calibration) matter
    assert metrics["trainable_parameters"] > 0
    # `agiqa.load` scores from the checkpoint alone (depictqa: anchors and fit in buffers).
    scorer = agiqa.load(tmp_path / "run")
    test = fresh.parts["test"]
    images = [str(Path(paths[0]) / name) for name in test["image"]]
    scored = scorer.score(images, prompts=test["prompt"].tolist())
    for dim in fresh.dimensions:
        np.testing.assert_allclose(scored[dim.name], written[f"pred_{dim.name}"], atol=1e-4)


def test_deqa_fold_reports_distributions(paths, tmp_path: Path) -> None:
    metrics = run_fold(job(tmp_path, paths, deqa_config()))
    written = pd.read_csv(tmp_path / "run" / "predictions.csv")
    columns = [f"dist_quality_{w}" for w in LEVEL_WORDS]
    np.testing.assert_allclose(written[columns].sum(axis=1), 1.0, atol=1e-5)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["details"] == metrics["details"]
    for part in ("test", "val"):
        for dim in ("quality", "align"):
            assert set(saved["details"][part][dim]) == {"kl", "js", "wasserstein"}
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert len(history) == 1 and np.isfinite(history["train_loss"]).all()


def test_deqa_loss_has_the_published_weights(paths, tmp_path: Path) -> None:
    trainer = FoldTrainer(job(tmp_path, paths, deqa_config()))
    model = trainer.model
    inputs, targets, _ = next(iter(trainer.loader("train", train=True)))
    with torch.no_grad():
        outputs = model.forward_batch(inputs)
    total = model.loss(outputs, targets)
    rank_only = type(model).loss  # recompute with the token term off, then the rank term off
    model.weights = type(model.weights)(rank=1.0, next_token=0.0)
    fidelity = rank_only(model, outputs, targets)
    model.weights = type(model.weights)(rank=0.0, next_token=1.0)
    token = rank_only(model, outputs, targets)
    assert total.item() == pytest.approx(fidelity.item() + 0.05 * token.item(), rel=1e-5)


def test_real_loading_path_from_a_local_folder(paths, tmp_path: Path) -> None:
    """save_pretrained + AutoModelForImageTextToText/AutoProcessor give the same scores."""
    model, processor = build_tiny(TinySpec())
    model.save_pretrained(tmp_path / "tiny")
    processor.save_pretrained(tmp_path / "tiny")
    local = {"name": str(tmp_path / "tiny"), "local_files_only": True, "image_size": 64}
    by_name = FoldTrainer(job(tmp_path, paths, {"type": "mllm_zeroshot", "backbone": local}))
    built = FoldTrainer(job(tmp_path, paths, {"type": "mllm_zeroshot", "backbone": TINY}))
    np.testing.assert_allclose(by_name.predict("test"), built.predict("test"), atol=1e-5)
    assert by_name.model.backbone_name == str(tmp_path / "tiny")


def test_an_uncached_checkpoint_fails_clearly_offline(tmp_path: Path) -> None:
    backbone = {"name": "Qwen/Qwen2.5-VL-7B-Instruct", "cache_dir": str(tmp_path)}
    with pytest.raises(BackboneUnavailableError, match=r"Qwen2\.5-VL-7B.*local_files_only=True"):
        build_model({"type": "mllm_zeroshot", "backbone": backbone}, DIMS)
    with pytest.raises(ConfigError, match="stand-in weights of the tiny model"):
        build_model({"type": "mllm_zeroshot", "backbone": {**backbone, "pretrained": "x.pt"}}, DIMS)
    with pytest.raises(ConfigError, match="unknown keys"):
        build_model({"type": "deqa", "backbone": {"nmae": "typo"}}, DIMS)


def test_chat_turns_use_the_processor_template() -> None:
    _, processor = build_tiny(TinySpec())
    prompter = Prompter(processor)
    model = build_model({"type": "mllm_zeroshot", "backbone": TINY}, DIMS)
    turn = model.question(1, "two red circles")
    text = prompter.prefix(turn)
    assert text.endswith("<|im_start|>assistant\nThe alignment of the image with the prompt is")
    assert '"two red circles"' in text


def record_calibration_parts(model: nn.Module) -> list[str]:
    """Names of the parts ``calibrate`` compares with the anchors (patched onto ``model``)."""
    seen: list[str] = []
    original = model.anchor_dataset

    def recording(data, rows):
        seen.append(data.name)
        return original(data, rows)

    model.anchor_dataset = recording
    return seen


def test_depictqa_calibration_never_reads_training_labels(paths, tmp_path: Path) -> None:
    trainer = FoldTrainer(job(tmp_path, paths, depictqa_config()))
    model = trainer.model
    # Were the training labels read, this constant would make the fitted map flat.
    trainer.training_data.targets[:] = 0.5
    seen = record_calibration_parts(model)
    trainer.calibrate()
    assert seen == ["val"] and bool(model.calibrated)
    validation = trainer.part_data["val"].targets
    for column in range(len(model.dimensions)):
        y = model.calibration_y[column].numpy()
        assert y.min() >= validation[:, column].min() - 1e-9
        assert y.max() <= validation[:, column].max() + 1e-9
        assert y.max() > y.min()


def test_depictqa_without_a_validation_part_uses_the_training_quantiles(tmp_path: Path) -> None:
    protocol = Protocol(type="grouped_test_selection", folds=4)
    paths = prepare(tmp_path, n_prompts=8, protocol=protocol.type)
    trainer = FoldTrainer(job(tmp_path, paths, depictqa_config(), protocol=protocol))
    assert not len(trainer.parts["val"])  # the empty part builds (it used to fail as "< 2 images")
    assert not len(FoldTrainer(job(tmp_path, paths, deqa_config(), protocol=protocol)).parts["val"])
    seen = record_calibration_parts(trainer.model)
    trainer.calibrate()
    assert seen == []  # no comparison of any image: nothing is fitted on the comparator
    targets = trainer.training_data.targets
    for column in range(len(trainer.model.dimensions)):
        np.testing.assert_allclose(
            trainer.model.calibration_y[column].numpy(),
            np.quantile(targets[:, column], np.linspace(0, 1, 32)),
        )


def test_depictqa_thurstone_score_and_ranks_of_the_raw_score(paths, tmp_path: Path) -> None:
    trainer = FoldTrainer(job(tmp_path, paths, depictqa_config(score="thurstone")))
    model = trainer.model
    outputs, rows = trainer.run_outputs(trainer.datasets["test", False])
    n_rows = len(trainer.parts["test"])
    raw = model.scores(outputs, rows, n_rows)
    np.testing.assert_allclose(raw, model.scores(outputs, rows, n_rows))
    mean_probit = [
        np.mean(thurstone_outcomes(outputs[rows == r, c][np.isfinite(outputs[rows == r, c])]))
        for r in range(n_rows)
        for c in range(len(model.dimensions))
    ]
    np.testing.assert_allclose(raw.ravel(), mean_probit, rtol=1e-6)
    trainer.calibrate()
    predicted = model.reduce_predictions(outputs, rows, n_rows)
    for column in range(len(model.dimensions)):
        assert spearmanr(predicted[:, column], raw[:, column])[0] == pytest.approx(1.0)


def test_deqa_cross_entropy_is_averaged_over_all_answer_tokens(paths, tmp_path: Path) -> None:
    model = FoldTrainer(job(tmp_path, paths, deqa_config())).model
    model.weights = type(model.weights)(rank=0.0, next_token=1.0, softkl=0.0)
    log_levels = torch.log(torch.full((4, 5), 0.2))
    # A: answers of 2 and 6 tokens (CE sums 2 and 18); B: 1 and 1 token (CE 1 and 3).
    summed = torch.tensor([[2.0], [18.0], [1.0], [3.0]])
    counts = torch.tensor([[2.0], [6.0], [1.0], [1.0]])
    targets = {
        "mos": torch.tensor([1.0, 2.0, 3.0, 4.0]),
        "std": torch.ones(4),
        "soft": torch.full((4, 5), 0.2),
    }
    loss = model.loss(torch.cat([log_levels, summed, counts], dim=1), targets)
    assert loss.item() == pytest.approx(20 / 8 + 4 / 2)  # per sample first: (1 + 3) / 2 + 2
