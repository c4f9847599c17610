"""Staged DNNs for DARIS: each model is cut into sequential stages, preemptible between stages.

Built-in: ``resnet18``, ``resnet50``, ``inception_v3`` (torchvision layers), ``unet`` (ours) and the
torchvision segmentation models ``deeplabv3_resnet50``, ``deeplabv3_mobilenet_v3_large``,
``lraspp_mobilenet_v3_large``, ``fcn_resnet50``, four stages each; torchvision's detectors (SSDlite, RetinaNet,
FCOS, Faster R-CNN; runtime/models/detection.py); any torchvision classification model by name or a TorchScript
file, staged by a config; a .pt2 or .onnx file staged at named boundaries (graph_file.py).
See docs/models.md.
"""

from __future__ import annotations

from daris_ros.runtime.models.base import StagedModel, StageIO, stage_tensors
from daris_ros.runtime.models.postprocess import postprocess_classification, postprocess_segmentation
from daris_ros.runtime.models.registry import (
    BUILTIN_MODELS,
    UnknownModelError,
    available_models,
    build_staged_model,
    is_known_model,
)

__all__ = [
    "BUILTIN_MODELS",
    "StageIO",
    "StagedModel",
    "UnknownModelError",
    "available_models",
    "build_staged_model",
    "is_known_model",
    "postprocess_classification",
    "postprocess_segmentation",
    "stage_tensors",
]
