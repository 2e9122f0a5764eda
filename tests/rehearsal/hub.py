"""A local model hub on 127.0.0.1 serving the paper's backbones in each library's real format.

Test tooling, never library code: the rehearsal points ``HF_ENDPOINT`` at it and runs the real
``agiqa weights fetch``, whose downloaders (open_clip, timm, huggingface_hub, transformers) then
write the caches the fold jobs read with ``offline: true``.

What it serves, under the real repository ids and file names (the ids come from the libraries'
own pretrained configs where they have one):

- open_clip ``ViT-L-14`` and ``ViT-B-32`` tag ``openai``: ``open_clip_model.safetensors`` (the
  open_clip state dict) and ``open_clip_config.json`` in ``timm/vit_large_patch14_clip_224.openai``
  and ``timm/vit_base_patch32_clip_224.openai``: real size, random weights (open_clip's init);
- timm ``vit_base_patch16_224.augreg_in21k_ft_in1k``: ``model.safetensors`` and ``config.json``:
  real size, timm's random init;
- ``THUDM/ImageReward``: ``ImageReward.pt``, a state dict in ImageReward-v1.0's layout (BLIP
  ViT-L/16 at 224, BERT-base with cross-attention, ``vision_proj``/``text_proj`` and the MLP score
  head): real size, random weights (std 0.02, norms at 1);
- ``bert-base-uncased``: ``vocab.txt`` in the real WordPiece format with the real size (30,522
  entries; specials at their real ids, word pieces learned from the datasets' prompts, the rest
  ``[unusedN]``), ``tokenizer_config.json`` and ``config.json``;
- ``Qwen/Qwen2.5-VL-7B-Instruct`` and ``-3B-Instruct``: what ``save_pretrained`` writes for a
  ``Qwen2_5_VLForConditionalGeneration`` of a tiny config (config.json travels with the weights,
  so the architecture is not fixed by the name) and its ``Qwen2_5_VLProcessor``: the Qwen2
  byte-level BPE tokenizer files and the real image processor settings (patch 14, merge 2).

torchvision's ResNet-50 is not on the Hugging Face hub: torchvision downloads
``resnet50-11ad3fa6.pth`` from download.pytorch.org into ``$TORCH_HOME/hub/checkpoints`` unless
the file is there. ``seed_torchvision`` puts real-size random weights there under that name (the
way files reach torch's hub cache), and ``agiqa weights fetch`` finds them.

The HTTP side answers what huggingface_hub asks: ``HEAD``/``GET
/<repo>/resolve/<revision>/<file>`` (``X-Repo-Commit``, ``ETag`` = the file's sha256,
``Content-Length``; ranges), ``/api/models/<repo>/revision/<revision>`` and
``/api/models/<repo>/tree/<revision>``; anything else is a 404 with the hub's ``X-Error-Code``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import torch

#: Bump when what ``build_hub`` writes changes: a workspace rebuilds its hub then.
HUB_VERSION = 1
OPEN_CLIP_ARCHS = ("ViT-L-14", "ViT-B-32")
OPEN_CLIP_TAG = "openai"
TIMM_VIT = "vit_base_patch16_224.augreg_in21k_ft_in1k"
IMAGEREWARD_REPO, IMAGEREWARD_FILE = "THUDM/ImageReward", "ImageReward.pt"
BERT_REPO = "bert-base-uncased"
BERT_VOCAB_SIZE = 30522
QWEN_REPOS = ("Qwen/Qwen2.5-VL-7B-Instruct", "Qwen/Qwen2.5-VL-3B-Instruct")
#: Files at least this large are announced as LFS files (as the hub does for weights).
LFS_BYTES = 10 << 20

#: ImageReward-v1.0's BLIP sizes: ViT-L/16 at 224, BERT-base with 1024-d cross-attention, the
#: 30,524-token vocabulary (bert-base-uncased + [DEC] + [ENC]), the MLP(768) score head.
IMAGEREWARD_SIZES = {
    "vision_width": 1024,
    "vision_depth": 24,
    "vision_mlp": 4096,
    "patch": 16,
    "image": 224,
    "text_width": 768,
    "text_depth": 12,
    "text_mlp": 3072,
    "positions": 512,
    "vocab": 30524,
    "embed": 256,
    "head_widths": (1024, 128, 64, 16),
}


# --- building the repositories -----------------------------------------------------------------


def build_hub(folder: Path, corpus: Sequence[str]) -> Path:
    """Write every repository under ``folder/<repo id>/`` and ``folder/index.json``.

    ``corpus``: text the BERT word pieces are learned from (the datasets' prompts). Reused when
    ``index.json`` records this ``HUB_VERSION``.
    """
    index_path = folder / "index.json"
    if index_path.is_file() and json.loads(index_path.read_text()).get("version") == HUB_VERSION:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for arch in OPEN_CLIP_ARCHS:
        write_open_clip(folder, arch)
    write_timm_vit(folder / timm_repo(TIMM_VIT))
    write_imagereward(folder / IMAGEREWARD_REPO / IMAGEREWARD_FILE, IMAGEREWARD_SIZES)
    write_bert_tokenizer(folder / BERT_REPO, corpus)
    for repo in QWEN_REPOS:
        write_qwen(folder / repo, tie_embeddings=repo.endswith("3B-Instruct"))
    return write_index(folder)


def write_index(folder: Path) -> Path:
    """``index.json``: every file of every repository under ``folder``, its sha256 and size."""
    index: dict[str, Any] = {"version": HUB_VERSION, "repos": {}}
    for repo in repo_ids(folder):
        files = sorted(p for p in (folder / repo).rglob("*") if p.is_file())
        index["repos"][repo] = {
            p.relative_to(folder / repo).as_posix(): {
                "sha256": _sha256(p),
                "size": p.stat().st_size,
            }
            for p in files
        }
    (folder / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return folder


def repo_ids(folder: Path) -> list[str]:
    """Every repository under ``folder``: ``org/name`` folders and ``bert-base-uncased``."""
    ids = [BERT_REPO] if (folder / BERT_REPO).is_dir() else []
    for org in sorted(p for p in folder.iterdir() if p.is_dir() and p.name != BERT_REPO):
        ids += [f"{org.name}/{repo.name}" for repo in sorted(org.iterdir()) if repo.is_dir()]
    return ids


def open_clip_repo(arch: str) -> str:
    """The hub repository open_clip downloads ``arch``/openai from (its own pretrained config)."""
    import open_clip

    return open_clip.get_pretrained_cfg(arch, OPEN_CLIP_TAG)["hf_hub"].strip("/")


def timm_repo(name: str) -> str:
    import timm

    return timm.models.get_pretrained_cfg(name).hf_hub_id


def write_open_clip(folder: Path, arch: str) -> None:
    import open_clip
    from safetensors.torch import save_file

    target = folder / open_clip_repo(arch)
    target.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=True)
    save_file(_contiguous(model.state_dict()), target / "open_clip_model.safetensors")
    config = {"model_cfg": open_clip.get_model_config(arch), "preprocess_cfg": {}}
    (target / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")


def write_timm_vit(target: Path) -> None:
    import timm
    from safetensors.torch import save_file

    target.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = timm.create_model(TIMM_VIT, pretrained=False)
    save_file(_contiguous(model.state_dict()), target / "model.safetensors")
    config = {
        "architecture": TIMM_VIT.split(".")[0],
        "num_classes": model.num_classes,
        "pretrained_cfg": model.pretrained_cfg,
    }
    (target / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")


def imagereward_shapes(sizes: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ImageReward's ``state_dict()`` for the given sizes (BLIP's own names)."""
    v, t, e = sizes["vision_width"], sizes["text_width"], sizes["embed"]
    tokens = (sizes["image"] // sizes["patch"]) ** 2 + 1
    shapes: dict[str, tuple[int, ...]] = {
        "blip.visual_encoder.cls_token": (1, 1, v),
        "blip.visual_encoder.pos_embed": (1, tokens, v),
        "blip.visual_encoder.patch_embed.proj.weight": (v, 3, sizes["patch"], sizes["patch"]),
        "blip.visual_encoder.patch_embed.proj.bias": (v,),
    }
    for i in range(sizes["vision_depth"]):
        block = f"blip.visual_encoder.blocks.{i}"
        shapes |= _linear(f"{block}.norm1", v) | _linear(f"{block}.attn.qkv", v, 3 * v)
        shapes |= _linear(f"{block}.attn.proj", v, v) | _linear(f"{block}.norm2", v)
        shapes |= _linear(f"{block}.mlp.fc1", v, sizes["vision_mlp"])
        shapes |= _linear(f"{block}.mlp.fc2", sizes["vision_mlp"], v)
    shapes |= _linear("blip.visual_encoder.norm", v)
    text = "blip.text_encoder"
    shapes[f"{text}.embeddings.position_ids"] = (1, sizes["positions"])
    shapes[f"{text}.embeddings.word_embeddings.weight"] = (sizes["vocab"], t)
    shapes[f"{text}.embeddings.position_embeddings.weight"] = (sizes["positions"], t)
    shapes |= _linear(f"{text}.embeddings.LayerNorm", t)
    for i in range(sizes["text_depth"]):
        layer = f"{text}.encoder.layer.{i}"
        for part, source in (("attention", t), ("crossattention", v)):
            shapes |= _linear(f"{layer}.{part}.self.query", t, t)
            shapes |= _linear(f"{layer}.{part}.self.key", source, t)
            shapes |= _linear(f"{layer}.{part}.self.value", source, t)
            shapes |= _linear(f"{layer}.{part}.output.dense", t, t)
            shapes |= _linear(f"{layer}.{part}.output.LayerNorm", t)
        shapes |= _linear(f"{layer}.intermediate.dense", t, sizes["text_mlp"])
        shapes |= _linear(f"{layer}.output.dense", sizes["text_mlp"], t)
        shapes |= _linear(f"{layer}.output.LayerNorm", t)
    shapes |= _linear("blip.vision_proj", v, e) | _linear("blip.text_proj", t, e)
    # ImageReward's MLP: Linear layers at 0, 2, 4, 6 (dropouts between) and 7 (to one score).
    widths = [t, *sizes["head_widths"], 1]
    for index, (n_in, n_out) in zip((0, 2, 4, 6, 7), itertools.pairwise(widths), strict=True):
        shapes |= _linear(f"mlp.layers.{index}", n_in, n_out)
    return shapes


def _linear(prefix: str, n_in: int, n_out: int | None = None) -> dict[str, tuple[int, ...]]:
    """A Linear layer (``n_out`` given) or a LayerNorm of width ``n_in``."""
    if n_out is None:
        return {f"{prefix}.weight": (n_in,), f"{prefix}.bias": (n_in,)}
    return {f"{prefix}.weight": (n_out, n_in), f"{prefix}.bias": (n_out,)}


def imagereward_state(sizes: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in ImageReward's layout: weights N(0, 0.02), norms 1, biases 0."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in imagereward_shapes(sizes).items():
        if key.endswith("position_ids"):
            state[key] = torch.arange(shape[1]).expand(1, -1).clone()
        elif len(shape) == 1:
            ones = "norm" in key.lower() and key.endswith(".weight")
            state[key] = torch.ones(shape) if ones else torch.zeros(shape)
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.02
    return state


def write_imagereward(target: Path, sizes: dict[str, Any]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(imagereward_state(sizes), target)


def bert_vocabulary(corpus: Sequence[str], size: int = BERT_VOCAB_SIZE) -> list[str]:
    """A ``vocab.txt`` of ``size`` entries with bert-base-uncased's special-token ids.

    [PAD] 0, [unused0-98] 1-99, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103, as in the real
    file; then WordPiece pieces learned from ``corpus`` (lower-cased), then ``[unusedN]``.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    specials = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=size - len(specials), show_progress=False)
    wordpiece.train_from_iterator(list(corpus), trainer)
    learned = sorted(wordpiece.get_vocab().items(), key=lambda item: item[1])
    pieces = [token for token, _ in learned if token not in specials]
    filler = (f"[unused{i}]" for i in range(99, size))
    vocabulary = specials + pieces[: size - len(specials)]
    return vocabulary + [next(filler) for _ in range(size - len(vocabulary))]


def write_bert_tokenizer(target: Path, corpus: Sequence[str]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    (target / "vocab.txt").write_text("\n".join(bert_vocabulary(corpus)) + "\n", encoding="utf-8")
    config = {"do_lower_case": True, "model_max_length": 512, "tokenizer_class": "BertTokenizer"}
    (target / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    model = {
        "architectures": ["BertForMaskedLM"],
        "model_type": "bert",
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "max_position_embeddings": 512,
        "vocab_size": BERT_VOCAB_SIZE,
        "type_vocab_size": 2,
    }
    (target / "config.json").write_text(json.dumps(model, indent=2) + "\n")


def write_qwen(target: Path, tie_embeddings: bool) -> None:
    """A tiny Qwen2.5-VL as ``save_pretrained`` writes it, with the real image processor."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    from agiqa.models.mllm.backbone import TinySpec, build_tiny

    spec = TinySpec(patch_size=14, merge_size=2, window=4, tie_word_embeddings=tie_embeddings)
    model, processor = build_tiny(spec)
    # The published checkpoints' processor settings (preprocessor_config.json).
    processor.image_processor = Qwen2VLImageProcessor(
        min_pixels=3136, max_pixels=12845056, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    model.save_pretrained(target, safe_serialization=True)
    # The published repositories' file set: preprocessor_config.json, chat_template.json, the
    # tokenizer as tokenizer.json and as vocab.json + merges.txt (no processor_config.json).
    processor.image_processor.save_pretrained(target)
    processor.tokenizer.save_pretrained(target)
    processor.tokenizer.backend_tokenizer.model.save(str(target))
    template = {"chat_template": processor.chat_template}
    (target / "chat_template.json").write_text(json.dumps(template, indent=2) + "\n")


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach().contiguous().clone() for key, value in state.items()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def seed_torchvision(torch_home: Path) -> Path:
    """Real-size random ResNet-50 weights where torchvision looks for ``IMAGENET1K_V2``."""
    import torchvision

    url = torchvision.models.ResNet50_Weights.IMAGENET1K_V2.url
    target = torch_home / "hub" / "checkpoints" / Path(urlsplit(url).path).name
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        torch.save(torchvision.models.resnet50().state_dict(), target)
    return target


# --- serving -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hub:
    """A built hub folder and its index (repo -> path -> sha256, size)."""

    folder: Path
    repos: dict[str, dict[str, dict[str, Any]]]

    @classmethod
    def load(cls, folder: Path) -> Hub:
        return cls(folder, json.loads((folder / "index.json").read_text())["repos"])

    def commit(self, repo: str) -> str:
        listing = json.dumps(self.repos[repo], sort_keys=True).encode()
        return hashlib.sha1(repo.encode() + listing).hexdigest()

    def split(self, path: str) -> tuple[str, str] | None:
        """``<repo>/<rest>`` -> (repo, rest) for a known repository."""
        for repo in sorted(self.repos, key=len, reverse=True):
            if path.startswith(repo + "/"):
                return repo, path[len(repo) + 1 :]
        return None


class _Handler(BaseHTTPRequestHandler):
    hub: Hub
    requests: list[str]

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path).lstrip("/")
        self.requests.append(f"{self.command} {path}")
        if path.startswith("api/models/"):
            self._api(path.removeprefix("api/models/"), body)
            return
        found = self.hub.split(path)
        if found is None or "/" not in found[1]:
            self._error(404, "RepoNotFound", body)
            return
        repo, rest = found
        kind, _, remainder = rest.partition("/")
        revision, _, filename = remainder.partition("/")
        if kind != "resolve" or revision not in ("main", self.hub.commit(repo)):
            self._error(404, "RevisionNotFound" if kind == "resolve" else "EntryNotFound", body)
            return
        if filename not in self.hub.repos[repo]:
            self._error(404, "EntryNotFound", body)
            return
        self._file(repo, filename, body)

    def _file(self, repo: str, filename: str, body: bool) -> None:
        info = self.hub.repos[repo][filename]
        size = int(info["size"])
        start, end = self._range(size)
        self.send_response(206 if (start, end) != (0, size - 1) else 200)
        self.send_header("X-Repo-Commit", self.hub.commit(repo))
        self.send_header("ETag", f'"{info["sha256"]}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if (start, end) != (0, size - 1):
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not body:
            return
        with (self.hub.folder / repo / filename).open("rb") as handle:
            handle.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                block = handle.read(min(1 << 20, remaining))
                self.wfile.write(block)
                remaining -= len(block)

    def _range(self, size: int) -> tuple[int, int]:
        wanted = self.headers.get("Range", "")
        if not wanted.startswith("bytes="):
            return 0, size - 1
        first, _, last = wanted.removeprefix("bytes=").partition("-")
        start = int(first) if first else 0
        return start, min(int(last), size - 1) if last else size - 1

    def _api(self, path: str, body: bool) -> None:
        found = self.hub.split(path)
        if found is None:
            self._error(404, "RepoNotFound", body)
            return
        repo, rest = found
        kind, _, remainder = rest.partition("/")
        revision, _, folder = remainder.partition("/")
        commit = self.hub.commit(repo)
        files = self.hub.repos[repo]
        if revision not in ("main", commit):
            self._error(404, "RevisionNotFound", body)
            return
        if kind == "revision":
            siblings = [{"rfilename": name} for name in files]
            payload: Any = {"id": repo, "modelId": repo, "sha": commit, "siblings": siblings}
        elif kind == "tree":
            inside = {n: i for n, i in files.items() if not folder or n.startswith(folder + "/")}
            if not inside:  # the hub's answer for a folder the repository does not have
                self._error(404, "EntryNotFound", body)
                return
            payload = [_tree_entry(name, info) for name, info in inside.items()]
        else:
            self._error(404, "EntryNotFound", body)
            return
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _error(self, status: int, code: str, body: bool) -> None:
        data = json.dumps({"error": code}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)


def _tree_entry(name: str, info: dict[str, Any]) -> dict[str, Any]:
    entry = {"type": "file", "oid": info["sha256"][:40], "size": info["size"], "path": name}
    if info["size"] >= LFS_BYTES:
        entry["lfs"] = {"oid": info["sha256"], "size": info["size"], "pointerSize": 134}
    return entry


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve a built hub on 127.0.0.1 (a free port); yields (endpoint URL, request log)."""
    requests: list[str] = []
    handler: Callable[..., _Handler] = type(
        "HubHandler", (_Handler,), {"hub": Hub.load(folder), "requests": requests}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
