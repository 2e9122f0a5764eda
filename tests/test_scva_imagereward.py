"""ImageReward BLIP -> transformers BLIP conversion (``blip.source: imagereward``), CPU, no network.

``fixtures/imagereward_tiny_keys.json`` is ``{key: shape}`` of ``ImageReward.state_dict()`` built by
the real ``image-reward`` 1.5 code (in a throwaway venv with transformers 4.30 and timm 0.6.13)
with tiny sizes: ``BLIP_Pretrain.create_vit`` patched to BLIP's ``VisionTransformer(img_size=32,
patch_size=8, embed_dim=48, depth=2, num_heads=2)``, a ``med_config.json`` with hidden 32, 2
layers, 2 heads, intermediate 64, 40 positions, vocabulary 59 (the 57-token vocabulary below plus
``[DEC]`` and ``[ENC]``), ``encoder_width`` 48, and ``model.mlp = MLP(32)`` (v1.0 has ``MLP(768)``
on its 768-d text width). Everything else (key names, ``vision_proj`` / ``text_proj``, the
``position_ids`` buffer) is what the real classes produce. In that venv, with all weights
randomised, ImageReward's ``visual_encoder`` / image-grounded ``text_encoder`` and the converted
transformers modules gave identical outputs (max abs difference 0.0, tiny and full ViT-L/BERT-base
sizes); that check needs ``image-reward`` and so is not a test here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import agiqa.models.scva as scva
from agiqa.data.manifest import Dimension
from agiqa.errors import ConfigError
from agiqa.models.scva_imagereward import build_modules, convert_state_dict, read_checkpoint
from agiqa.weights_record import record_weights

FIXTURE = Path(__file__).parent / "fixtures" / "imagereward_tiny_keys.json"
DIMS = (Dimension("quality", "quality", 0.0, 5.0),)
HEADS = {"vision_heads": 2, "text_heads": 2}
LETTERS = "abcdefghijklmnopqrstuvwxyz"
DROPPED = {
    "blip.text_encoder.embeddings.position_ids",
    "blip.vision_proj.weight",
    "blip.vision_proj.bias",
    "blip.text_proj.weight",
    "blip.text_proj.bias",
    *(f"mlp.layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")),
}


def imagereward_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in the fixture's layout (``position_ids`` as ``med.py`` stores it)."""
    generator = torch.Generator().manual_seed(seed)
    shapes = json.loads(FIXTURE.read_text(encoding="utf-8"))
    state = {key: torch.randn(shape, generator=generator) for key, shape in shapes.items()}
    ids = "blip.text_encoder.embeddings.position_ids"
    state[ids] = torch.arange(shapes[ids][1]).expand(1, -1).clone()
    return state


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *LETTERS, *(f"##{c}" for c in LETTERS)]
    (path / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    return path


def save(tmp_path: Path, payload: object, name: str = "ImageReward.pt") -> Path:
    """The file as `agiqa weights fetch` leaves it: saved, and its sha256 recorded."""
    path = tmp_path / name
    torch.save(payload, path)
    record_weights(tmp_path, [path])
    return path


def test_every_key_is_mapped_or_deliberately_dropped() -> None:
    state = imagereward_state()
    converted = convert_state_dict(state)
    assert converted.unexpected == []
    assert set(converted.dropped) == DROPPED
    assert len(converted.vision) + len(converted.text) + len(DROPPED) == len(state)
    vision, text = build_modules(converted, "tiny", **HEADS)
    assert set(converted.vision) == set(vision.state_dict())
    assert set(converted.text) == set(text.state_dict())


def test_sizes_are_read_from_the_checkpoint() -> None:
    vision, text = build_modules(convert_state_dict(imagereward_state()), "tiny", **HEADS)
    v, t = vision.config, text.config
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads) == (48, 2, 2)
    assert (v.image_size, v.patch_size, v.intermediate_size, v.layer_norm_eps) == (32, 8, 192, 1e-6)
    assert (t.hidden_size, t.num_hidden_layers, t.intermediate_size) == (32, 2, 64)
    assert (t.vocab_size, t.max_position_embeddings, t.encoder_hidden_size) == (59, 40, 48)
    # Without explicit heads: width // 64, at least one (ViT-L 1024 -> 16, BERT-base 768 -> 12).
    vision, text = build_modules(convert_state_dict(imagereward_state()), "tiny")
    assert vision.config.num_attention_heads == text.config.num_attention_heads == 1


V, T = "blip.visual_encoder.", "blip.text_encoder."
PLACEMENTS = [
    (V + "cls_token", "embeddings.class_embedding"),
    (V + "pos_embed", "embeddings.position_embedding"),
    (V + "patch_embed.proj.weight", "embeddings.patch_embedding.weight"),
    (V + "blocks.1.attn.qkv.weight", "encoder.layers.1.self_attn.qkv.weight"),
    (V + "blocks.1.attn.qkv.bias", "encoder.layers.1.self_attn.qkv.bias"),
    (V + "blocks.0.attn.proj.weight", "encoder.layers.0.self_attn.projection.weight"),
    (V + "blocks.1.norm2.weight", "encoder.layers.1.layer_norm2.weight"),
    (V + "blocks.0.mlp.fc2.bias", "encoder.layers.0.mlp.fc2.bias"),
    (V + "norm.bias", "post_layernorm.bias"),
    (T + "embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight"),
    (
        T + "encoder.layer.1.crossattention.self.query.weight",
        "encoder.layer.1.crossattention.self.query.weight",
    ),
    (
        T + "encoder.layer.0.crossattention.self.value.weight",
        "encoder.layer.0.crossattention.self.value.weight",
    ),
    (T + "encoder.layer.1.output.LayerNorm.bias", "encoder.layer.1.output.LayerNorm.bias"),
]


@pytest.mark.parametrize(("source", "target"), PLACEMENTS)
def test_a_tensor_lands_in_the_right_parameter(source: str, target: str) -> None:
    state = imagereward_state()
    marker = torch.arange(state[source].numel(), dtype=torch.float32).view_as(state[source])
    state[source] = marker
    vision, text = build_modules(convert_state_dict(state), "tiny", **HEADS)
    module = vision if source.startswith(V) else text
    torch.testing.assert_close(module.state_dict()[target], marker, rtol=0, atol=0)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "no_blip_prefix"])
def test_checkpoint_formats_load(tmp_path: Path, tokenizer_dir: Path, wrap: str) -> None:
    state = imagereward_state()
    payload: object = state
    if wrap in ("state_dict", "model"):
        payload = {wrap: state, "epoch": torch.tensor(3)}
    elif wrap == "no_blip_prefix":
        payload = {k.removeprefix("blip."): v for k, v in state.items()}
    config = {"checkpoint": str(save(tmp_path, payload)), "tokenizer": str(tokenizer_dir), **HEADS}
    vision, text, tokenizer = scva.build_blip({"source": "imagereward", **config})
    torch.testing.assert_close(
        vision.embeddings.class_embedding, state["blip.visual_encoder.cls_token"], rtol=0, atol=0
    )
    assert text.config.vocab_size == len(tokenizer) == 59
    assert tokenizer.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [57, 58]


def test_unexpected_and_missing_keys_name_the_file(tmp_path: Path, tokenizer_dir: Path) -> None:
    state = imagereward_state()
    state["blip.visual_encoder.head.weight"] = torch.zeros(2, 48)
    path = save(tmp_path, state, "extra.pt")
    with pytest.raises(ConfigError, match=r"extra\.pt.*unexpected keys: .*visual_encoder\.head"):
        scva.build_blip({"source": "imagereward", "checkpoint": str(path), **HEADS})

    state = imagereward_state()
    del state["blip.text_encoder.encoder.layer.1.crossattention.self.key.bias"]
    state["blip.text_encoder.pooler.dense.weight"] = torch.zeros(32, 32)
    path = save(tmp_path, state, "short.pt")
    pattern = (
        r"short\.pt.*text encoder.*missing keys: encoder\.layer\.1\.crossattention\.self\.key\.bias"
        r".*unexpected keys: pooler\.dense\.weight"
    )
    with pytest.raises(ConfigError, match=pattern):
        scva.build_blip({"source": "imagereward", "checkpoint": str(path), **HEADS})

    state = imagereward_state()
    state["blip.visual_encoder.blocks.0.mlp.fc1.bias"] = torch.zeros(7)
    path = save(tmp_path, state, "shape.pt")
    with pytest.raises(ConfigError, match=r"(?s)shape\.pt.*vision tower.*fc1\.bias"):
        scva.build_blip({"source": "imagereward", "checkpoint": str(path), **HEADS})


def test_pickled_model_is_refused_with_the_resave_command(tmp_path: Path) -> None:
    path = save(tmp_path, nn.Linear(2, 2), "full_model.pth")
    with pytest.raises(ConfigError, match=r"full_model\.pth holds pickled.*m\.state_dict\(\)"):
        read_checkpoint(path)
    with pytest.raises(ConfigError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match="expected a state dict"):
        read_checkpoint(save(tmp_path, [torch.zeros(1)], "list.pt"))


def test_bad_config_and_wrong_tokenizer(tmp_path: Path, tokenizer_dir: Path) -> None:
    path = str(save(tmp_path, imagereward_state()))
    with pytest.raises(ConfigError, match=r"needs blip\.checkpoint"):
        scva.build_blip({"source": "imagereward"})
    with pytest.raises(ConfigError, match="unknown keys"):
        scva.build_blip({"source": "imagereward", "checkpoint": path, "name_or_path": "x"})
    with pytest.raises(ConfigError, match="does not split into 5 heads"):
        scva.build_blip({"source": "imagereward", "checkpoint": path, "vision_heads": 5})
    wrong = tmp_path / "wrong-bert"
    wrong.mkdir()
    (wrong / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\n", encoding="utf-8")
    for name in (str(wrong), str(tmp_path / "no-such-tokenizer")):
        with pytest.raises(ConfigError, match="tokenizer"):
            scva.build_blip(
                {"source": "imagereward", "checkpoint": path, "tokenizer": name, **HEADS}
            )


def test_scva_runs_on_converted_weights_with_cls_first(tmp_path: Path, tokenizer_dir: Path) -> None:
    blip = {
        "source": "imagereward",
        "checkpoint": str(save(tmp_path, imagereward_state())),
        "tokenizer": str(tokenizer_dir),
        **HEADS,
    }
    torch.manual_seed(0)
    model = scva.Scva(DIMS, blip=blip, vit=scva.TINY_VIT, dim=16, neck_channels=16, max_length=12)
    model.eval()
    tokens = model.tokenize(["a cat", "a dog"], ["a small cat", ""])
    # ImageReward and the published SCVA encode with [CLS] first (no [ENC] swap).
    cls_id = model.tokenizer.convert_tokens_to_ids("[CLS]")
    assert (tokens[:, :, 0, 0] == cls_id).all()
    images = torch.randn(2, model.test_crops + 1, 3, 32, 32)  # crops, then the whole image
    with torch.no_grad():
        predictions = model(images, tokens)
    assert predictions.shape == (2, 1) and torch.isfinite(predictions).all()


def test_a_bundled_imagereward_file_carries_its_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rehearsal's scva cross_predict: the checkpoint's run folder bundles ImageReward.pt
    beside it (weights/), and the loader refuses a weights file without a record there."""
    from agiqa.provenance import file_sha256
    from agiqa.train import checkpoint
    from agiqa.weights_record import verify_weights

    (tmp_path / "cache").mkdir()
    fetched = save(tmp_path / "cache", imagereward_state())
    ref = {"slot": "blip.checkpoint", "path": str(fetched), "sha256": file_sha256(fetched)}
    monkeypatch.setattr(checkpoint, "checkpoint_payload", lambda *a: {"weight_files": [dict(ref)]})
    run = tmp_path / "run"
    checkpoint.save_checkpoint(None, {}, None, run)  # type: ignore[arg-type]
    bundled = run / "weights" / "ImageReward.pt"
    verify_weights(run / "weights", [bundled], "ImageReward checkpoint")
