"""The local backend: a tiny random BLIP captioner built from config, run in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_describe_support import cache_files, invoke, make_dataset, table

WORDS = "a red blue green cat dog car sky tree house photo painting sharp blurry bright dark"
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SEP = 3


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved BLIP captioner with random weights whose decoder ends after its minimum length."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("tiny-blip")
    vocab = [*SPECIAL, *WORDS.split()]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = transformers.BertTokenizer(str(folder / "vocab.txt"))
    text = {
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 64,
        "bos_token_id": 2,
        "sep_token_id": SEP,
        "eos_token_id": SEP,
        "pad_token_id": 0,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    torch.manual_seed(0)
    config = transformers.BlipConfig(text_config=text, vision_config=vision, projection_dim=32)
    model = transformers.BlipForConditionalGeneration(config)
    with torch.no_grad():
        # special tokens never win; [SEP] wins as soon as min_new_tokens allows it
        bias = model.text_decoder.cls.predictions.bias
        bias.zero_()
        bias[[0, 1, 2, 4]] = -20.0
        bias[SEP] = 20.0
    processor = transformers.BlipProcessor(
        image_processor=transformers.BlipImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def local_args(root: Path, tmp: Path, model: Path, *extra: str) -> list[str]:
    return [
        "describe",
        "--dataset",
        "tiny",
        "--reader",
        "agiqa-3k",
        "--root",
        str(root),
        "--backend",
        "local",
        "--model",
        str(model),
        "--cache-dir",
        str(tmp / "cache"),
        "--out",
        str(tmp / "out.csv"),
        "-o",
        "device=cpu",
        "-o",
        "local_files_only=true",
        *extra,
    ]


def test_local_model_describes_and_a_rerun_is_served_from_the_cache(
    tiny_blip: Path, tmp_path: Path
) -> None:
    make_dataset(tmp_path / "ds", 3)
    args = local_args(tmp_path / "ds", tmp_path, tiny_blip, "--max-tokens", "8")
    args += ["-o", "min_new_tokens=3"]
    first = invoke(args, key=None)
    assert first.exit_code == 0, first.output
    out = table(tmp_path / "out.csv")
    assert set(out["status"]) == {"described"}
    for text in out["description"]:
        assert len(text.split()) == 3 and set(text.split()) <= set(WORDS.split())
    assert set(out["backend"]) == {"local"} and set(out["model"]) == {str(tiny_blip)}
    assert len(cache_files(tmp_path / "cache")) == 3

    second = invoke(args, key=None)
    assert second.exit_code == 0, second.output
    again = table(tmp_path / "out.csv")
    assert set(again["status"]) == {"cached"}
    assert list(again["description"]) == list(out["description"])


def test_local_reply_cut_at_max_tokens_is_a_failure_never_cached(
    tiny_blip: Path, tmp_path: Path
) -> None:
    make_dataset(tmp_path / "ds", 2)
    args = local_args(tmp_path / "ds", tmp_path, tiny_blip, "--max-tokens", "3")
    args += ["-o", "min_new_tokens=3", "--allow-failed-fraction", "1.0"]
    result = invoke(args, key=None)
    assert result.exit_code == 0, result.output
    out = table(tmp_path / "out.csv")
    assert set(out["status"]) == {"failed"}
    assert out["error"].str.contains("truncated").all()
    assert cache_files(tmp_path / "cache") == []


def test_local_failure_message_fails_at_once_and_is_never_cached(
    tiny_blip: Path, tmp_path: Path
) -> None:
    """Greedy decoding would write the same text again: no retry, no cache entry."""
    make_dataset(tmp_path / "ds", 2)
    args = local_args(tmp_path / "ds", tmp_path, tiny_blip, "--max-tokens", "8")
    # the tiny captioner only writes vocabulary words: flag every reply as a failure
    args += ["-o", "min_new_tokens=3", "-o", r"failure_patterns=['^\w']"]
    args += ["--allow-failed-fraction", "1.0", "--summary-json", str(tmp_path / "s.json")]
    result = invoke(args, key=None)
    assert result.exit_code == 0, result.output
    out = table(tmp_path / "out.csv")
    assert set(out["status"]) == {"failed"} and (out["description"] == "").all()
    assert out["error"].str.contains("failure message").all()
    summary = json.loads((tmp_path / "s.json").read_text())
    assert (summary["failed"], summary["requests"], summary["retries"]) == (2, 2, 0)
    assert cache_files(tmp_path / "cache") == []
