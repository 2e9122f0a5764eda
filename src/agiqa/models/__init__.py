"""Models: the shared interface plus the registered implementations.

Importing this package registers every model module below in ``MODELS``.
"""

from agiqa.models import clip_residual, clip_zeroshot, dcmpln, imagenet_probe, scva
from agiqa.models.base import MODELS, AgiqaModel, build_model, trainable_parameter_count

__all__ = [
    "MODELS",
    "AgiqaModel",
    "build_model",
    "clip_residual",
    "clip_zeroshot",
    "dcmpln",
    "imagenet_probe",
    "scva",
    "trainable_parameter_count",
]
