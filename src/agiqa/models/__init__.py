"""Models: the shared interface plus the registered implementations.

Each model type's module is imported when the type is first used (``MODELS.get``): open_clip,
transformers, timm and peft take seconds to import, and a fold job needs only its own model's.
A new model is one module plus one line below.
"""

from agiqa.models.base import MODELS, AgiqaModel, build_model, trainable_parameter_count

#: model type -> the module that registers it
MODEL_MODULES = {
    "clip_residual": "agiqa.models.clip_residual",
    "clip_zeroshot": "agiqa.models.clip_zeroshot",
    "dcmpln": "agiqa.models.dcmpln",
    "scva": "agiqa.models.scva",
    "imagenet_probe": "agiqa.models.imagenet_probe",
    "mllm_zeroshot": "agiqa.models.mllm.zeroshot",
    "deqa": "agiqa.models.mllm.deqa",
    "depictqa_compare": "agiqa.models.mllm.depictqa",
}
for _type, _module in MODEL_MODULES.items():
    MODELS.register_lazy(_type, _module)

__all__ = ["MODELS", "MODEL_MODULES", "AgiqaModel", "build_model", "trainable_parameter_count"]
