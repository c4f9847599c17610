"""``build_staged_model``: one entry point for built-in and user models."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from daris_ros.runtime.models.base import KINDS, StagedModel
from daris_ros.runtime.models.detection import DETECTION_MODELS, build_detection
from daris_ros.runtime.models.generic import (
    build_torchscript_staged,
    build_torchvision_staged,
    torchvision_names,
)
from daris_ros.runtime.models.graph_file import build_graph_file_staged, is_graph_model_file
from daris_ros.runtime.models.inception import build_inception_v3
from daris_ros.runtime.models.resnet import RESNET_NAMES, build_resnet
from daris_ros.runtime.models.segmentation import SEGMENTATION_NAMES, build_segmentation
from daris_ros.runtime.models.unet import build_unet

#: The models with a built-in stage split (the torchvision detectors last: runtime/models/detection.py).
BUILTIN_MODELS: tuple[str, ...] = ("resnet18", "resnet50", "unet", "inception_v3", *SEGMENTATION_NAMES,
                                   *DETECTION_MODELS)

#: The built-in models of kind "segmentation" (the detectors are DETECTION_MODELS; the others are classifiers).
SEGMENTATION_MODELS: tuple[str, ...] = ("unet", *SEGMENTATION_NAMES)

TORCHVISION_NOTE = ("any torchvision classification model name (torchvision.models.list_models("
                    "module=torchvision.models)), staged by a `stages` config; the path of a TorchScript file (.pt, "
                    ".ts, .torchscript); or the path of a .pt2 (torch.export) or .onnx file, staged at "
                    "`stage_boundaries`")
#: A model name with one of these suffixes that names an existing file is a TorchScript file (``torch.jit.save``).
TORCHSCRIPT_SUFFIXES: tuple[str, ...] = (".pt", ".ts", ".torchscript")


class UnknownModelError(ValueError):
    """An unknown model name; the message lists the built-in models."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown model {name!r}: built-in staged models are {list(BUILTIN_MODELS)}; "
                         f"also accepted: {TORCHVISION_NOTE}")
        self.name = name


def available_models(include_note: bool = True) -> list[str]:
    """The built-in staged models, then (unless ``include_note=False``) a note that any torchvision
    classification model name works too."""
    return [*BUILTIN_MODELS, TORCHVISION_NOTE] if include_note else list(BUILTIN_MODELS)


def is_torchscript_file(name: str) -> bool:
    """Whether a model name is the path of a TorchScript file (a task's ``model`` may be one): an existing file
    whose name ends in one of :data:`TORCHSCRIPT_SUFFIXES`."""
    path = Path(str(name).strip()).expanduser()
    return path.suffix.lower() in TORCHSCRIPT_SUFFIXES and path.is_file()


def is_known_model(name: str) -> bool:
    """Whether ``build_staged_model(name)`` accepts ``name`` (built-in, torchvision classification, the path of a
    TorchScript file, or the path of a ``.pt2``/``.onnx`` file: the file itself is checked when the model is
    built)."""
    if is_graph_model_file(name):
        return True
    key = str(name).strip().lower()
    return key in BUILTIN_MODELS or key in torchvision_names() or is_torchscript_file(name)


def build_staged_model(
    name: str,
    *,
    weights: str | None = None,
    num_classes: int | None = None,
    stages: Sequence[Sequence[str]] | None = None,
    torchscript: str | None = None,
    input_size: Sequence[int] | None = None,
    transform_input: bool | None = None,
    kind: str | None = None,
    stage_boundaries: Sequence[str] | None = None,
    max_detections: int | None = None,
) -> StagedModel:
    """Build a staged model in eval mode, on the CPU.

    Args:
        name: ``"resnet18"``, ``"resnet50"``, ``"unet"``, ``"inception_v3"``, ``"deeplabv3_resnet50"``,
            ``"deeplabv3_mobilenet_v3_large"``, ``"lraspp_mobilenet_v3_large"``, ``"fcn_resnet50"``, a detector
            (``"ssdlite320_mobilenet_v3_large"``, ``"retinanet_resnet50_fpn"``, ``"fcos_resnet50_fpn"``,
            ``"fasterrcnn_resnet50_fpn"``, ``"fasterrcnn_mobilenet_v3_large_fpn"``), or any torchvision
            classification model name (case-insensitive). With ``torchscript`` it is only a label. A path ending
            in ``.pt2`` (``torch.export.save``) or ``.onnx`` loads that file (graph_file.py).
        weights: path to a state_dict of the UNSTAGED model (.pt/.pth). ``None``: random
            initialisation and a warning on the ``daris_ros.models`` logger. Never downloads.
        num_classes: output classes (default 1000; 21 for the segmentation models; 91, COCO as torchvision,
            for the detectors; inferred for TorchScript).
        stages: stage boundaries as lists of top-level child names (docs/models.md); overrides the
            built-in split of resnet*/inception_v3; not allowed for the segmentation models and the detectors.
            ``None`` for a non-built-in model: one stage.
        torchscript: path to a TorchScript file; ``stages`` then names its top-level children.
        input_size: ``(H, W)`` the model expects (default 224x224; 299x299 for inception_v3; 512x512 for
            the torchvision segmentation models; 320x320 SSDlite, 640x640 the other detectors).
        transform_input: inception_v3/googlenet only; default: on iff ``weights`` is given.
        kind: TorchScript only: ``"classification"``, ``"segmentation"`` or ``"detection"`` (default: the
            file's ``kind`` attribute, else classification). A ``name`` that is the path of an existing
            ``.pt``/``.ts``/``.torchscript`` file loads that TorchScript file (a task's ``model``). For a
            .pt2/.onnx file the kind is inferred from the outputs (and, when given, must match).
        stage_boundaries: .pt2/.onnx files only: the graph node (.pt2) or tensor (.onnx) names after which a
            stage ends (N names: N + 1 stages); ``None``/empty: one stage. Checked at load: staged == whole.
        max_detections: detectors only: K, the detections per image the last stage returns (default 100).

    Raises:
        UnknownModelError: unknown name. FileNotFoundError: missing weights/TorchScript file.
        ValueError: bad stage config, mismatched weights, bad arguments.
    """
    if not isinstance(name, str) or not name.strip():
        raise UnknownModelError(str(name))
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if is_graph_model_file(name):
        if torchscript is not None or weights is not None or stages is not None or transform_input is not None:
            raise ValueError(f"{name}: a .pt2/.onnx file carries its weights and is cut at stage_boundaries; "
                             "torchscript, weights, stages and transform_input do not apply")
        return build_graph_file_staged(name.strip(), name.strip(), boundaries=stage_boundaries,
                                       num_classes=num_classes, input_size=input_size, kind=kind)
    if stage_boundaries:
        raise ValueError(f"{name}: stage_boundaries apply to .pt2/.onnx model files only (use stages)")
    if torchscript is None and is_torchscript_file(name):  # a task's model given as a TorchScript file
        torchscript = str(Path(name.strip()).expanduser())
    if torchscript is not None:
        if max_detections is not None:
            raise ValueError("max_detections applies to the built-in detectors only")
        if transform_input is not None:
            raise ValueError("transform_input does not apply to TorchScript models")
        return build_torchscript_staged(name.strip(), torchscript, stages=stages, weights=weights,
                                        num_classes=num_classes, input_size=input_size, kind=kind)
    key = name.strip().lower()
    model_kind = ("segmentation" if key in SEGMENTATION_MODELS else "detection" if key in DETECTION_MODELS
                  else "classification")
    if kind is not None and kind != model_kind:
        raise ValueError(f"{key}: kind {kind!r} does not match the model")
    if max_detections is not None and model_kind != "detection":
        raise ValueError(f"{key}: max_detections only applies to the detectors {list(DETECTION_MODELS)}")
    if key in DETECTION_MODELS:
        if transform_input is not None:
            raise ValueError(f"{key}: transform_input only applies to inception_v3 and googlenet")
        return build_detection(key, weights=weights, num_classes=num_classes, input_size=input_size, stages=stages,
                               max_detections=max_detections)
    if transform_input is not None and key not in ("inception_v3", "googlenet"):
        raise ValueError(f"{key}: transform_input only applies to inception_v3 and googlenet")
    if key == "unet":
        return build_unet(weights=weights, num_classes=num_classes, input_size=input_size, stages=stages)
    if key in SEGMENTATION_NAMES:
        return build_segmentation(key, weights=weights, num_classes=num_classes, input_size=input_size,
                                  stages=stages)
    if key in RESNET_NAMES:
        return build_resnet(key, weights=weights, num_classes=num_classes, input_size=input_size,
                            stages=stages)
    if key == "inception_v3":
        return build_inception_v3(weights=weights, num_classes=num_classes, input_size=input_size,
                                  stages=stages, transform_input=transform_input)
    if key in torchvision_names():
        return build_torchvision_staged(key, stages=stages, weights=weights, num_classes=num_classes,
                                        input_size=input_size, transform_input=transform_input)
    raise UnknownModelError(name)
