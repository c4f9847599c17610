"""torchvision object detectors as staged models of kind ``"detection"`` (issue 16).

Built by name through :func:`~daris_ros.runtime.models.registry.build_staged_model`:
``ssdlite320_mobilenet_v3_large``, ``retinanet_resnet50_fpn``, ``fcos_resnet50_fpn``,
``fasterrcnn_resnet50_fpn`` and ``fasterrcnn_mobilenet_v3_large_fpn``. The layers are torchvision's
(``weights=None, weights_backbone=None``: nothing is downloaded); a ``weights`` file is a state_dict of
the unstaged torchvision model (e.g. torchvision's own COCO checkpoint, saved to a file).

The stages never call torchvision's ``GeneralizedRCNNTransform``: the engine already feeds
``input_size``-sized, ImageNet-normalised NCHW batches. The first stage turns that into what the
detector was trained on: SSDlite expects ``(x - 0.5) / 0.5`` of the [0, 1] image, so its first stage
applies the per-channel affine map from ImageNet normalisation to that one; the ResNet/MobileNet FPN
detectors use ImageNet's mean/std themselves and get no conversion. The FPN detectors' first stage also
pads the batch with zeros at the bottom/right to a multiple of 32, as torchvision's transform does.

Stages (each stage is a preemption point)::

    backbone stages   fixed shapes: CUDA graphs may capture them (StagedModel.graph_stages True)
    "head"            single-stage detectors: the dense classification/regression head (fixed shapes)
    "detect" / "rpn+roi_heads"   the LAST stage, always eager (graph_stages False): anchors, box decoding,
                      score threshold, top-k, NMS (torchvision's own code, called), then padded to K

The last stage returns, for a batch of N, the fixed-shape tuple ``(boxes N x K x 4 float32, scores N x K
float32, labels N x K int64, counts N int64)``: boxes as ``(x1, y1, x2, y2)`` in the model input's pixel
coordinates (the ``input_size`` frame), each row sorted by score (highest first) and zero beyond
``counts``; K = ``max_detections``. Decoding always runs in float32 (head outputs are cast up), so a
reduced-precision model still yields float32 boxes and scores.

The unstaged torchvision model (``StagedModel.unstaged_model``) shares every module with the stages; its
transform is set to the model's input size (no resize at that size) and its detections-per-image to K,
so calling it on a list of [0, 1] images of ``input_size`` gives the staged model's detections.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from daris_ros.runtime.models.base import StagedModel, check_input_size, submodule
from daris_ros.runtime.models.weights import apply_state_dict, load_state_dict_file, warn_random_init
from daris_ros.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD

#: torchvision's COCO label space (background + 90 ids, some unused): the default number of classes.
COCO_NUM_CLASSES = 91
DEFAULT_MAX_DETECTIONS = 100
DETECTION_MIN_INPUT = 32
FPN_SIZE_DIVISIBLE = 32


@dataclass(frozen=True)
class DetectorSpec:
    """How one torchvision detector is built and cut.

    ``backbone_stages``: per backbone stage, the names of the feature extractor's steps it runs
    (``body`` children for the FPN backbones; ``features.0``, ``features.1``, ``extra.0``, ... for SSDlite).
    """

    builder: str
    family: str  # "ssd", "retinanet", "fcos" or "rcnn"
    default_size: tuple[int, int]
    backbone_stage_names: tuple[str, ...]
    backbone_stages: tuple[tuple[str, ...], ...]
    weights_enum: str  # the torchvision weights enum whose metadata names the COCO classes


_RESNET_BODY = (("conv1", "bn1", "relu", "maxpool", "layer1"), ("layer2",), ("layer3",), ("layer4",))
_RESNET_NAMES = ("stem+layer1", "layer2", "layer3", "layer4+fpn")

DETECTORS: dict[str, DetectorSpec] = {
    "ssdlite320_mobilenet_v3_large": DetectorSpec(
        "ssdlite320_mobilenet_v3_large", "ssd", (320, 320),
        ("features_c4", "features_c5+extra"),
        (("features.0",), ("features.1", "extra.0", "extra.1", "extra.2", "extra.3")),
        "SSDLite320_MobileNet_V3_Large_Weights"),
    "retinanet_resnet50_fpn": DetectorSpec(
        "retinanet_resnet50_fpn", "retinanet", (640, 640), _RESNET_NAMES, _RESNET_BODY,
        "RetinaNet_ResNet50_FPN_Weights"),
    "fcos_resnet50_fpn": DetectorSpec(
        "fcos_resnet50_fpn", "fcos", (640, 640), _RESNET_NAMES, _RESNET_BODY, "FCOS_ResNet50_FPN_Weights"),
    "fasterrcnn_resnet50_fpn": DetectorSpec(
        "fasterrcnn_resnet50_fpn", "rcnn", (640, 640), _RESNET_NAMES, _RESNET_BODY,
        "FasterRCNN_ResNet50_FPN_Weights"),
    "fasterrcnn_mobilenet_v3_large_fpn": DetectorSpec(
        "fasterrcnn_mobilenet_v3_large_fpn", "rcnn", (640, 640),
        ("features_0-6", "features_7-12", "features_13-16+fpn"),
        (tuple(str(i) for i in range(7)), tuple(str(i) for i in range(7, 13)),
         tuple(str(i) for i in range(13, 17))),
        "FasterRCNN_MobileNet_V3_Large_FPN_Weights"),
}

#: The detector names ``build_staged_model`` accepts.
DETECTION_MODELS: tuple[str, ...] = tuple(DETECTORS)

#: The dense head's outputs, in the order the head stage passes them on.
_HEAD_KEYS: dict[str, tuple[str, ...]] = {
    "ssd": ("bbox_regression", "cls_logits"),
    "retinanet": ("cls_logits", "bbox_regression"),
    "fcos": ("cls_logits", "bbox_regression", "bbox_ctrness"),
}


# -- stages ----------------------------------------------------------------------------------------
class InputAdapter(nn.Module):
    """From the engine's ImageNet-normalised batch to the detector's own normalisation, then zero padding
    at the bottom/right to a multiple of ``size_divisible`` (torchvision's batching). Checks the input size
    (a host-side shape check: no synchronisation, capturable)."""

    scale: Tensor  # buffers, registered in __init__
    shift: Tensor

    def __init__(self, input_size: tuple[int, int], mean: Sequence[float], std: Sequence[float],
                 size_divisible: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.size_divisible = size_divisible
        # x_model = (x01 - mean) / std with x01 = x * imagenet_std + imagenet_mean: one affine op per channel.
        scale = [s_in / s for s_in, s in zip(IMAGENET_STD, std, strict=True)]
        shift = [(m_in - m) / s for m_in, m, s in zip(IMAGENET_MEAN, mean, std, strict=True)]
        self.renormalise = any(abs(a - 1.0) > 1e-9 for a in scale) or any(abs(b) > 1e-9 for b in shift)
        self.register_buffer("scale", torch.tensor(scale).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", torch.tensor(shift).view(1, 3, 1, 1), persistent=False)

    def padded_size(self) -> tuple[int, int]:
        d = self.size_divisible
        h, w = self.input_size
        return (-(-h // d) * d, -(-w // d) * d)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or tuple(x.shape[-2:]) != self.input_size or x.shape[1] != 3:
            raise ValueError(f"expected an N x 3 x {self.input_size[0]} x {self.input_size[1]} batch (the "
                             f"model's input_size), got {tuple(x.shape)}")
        if self.renormalise:
            x = x * self.scale + self.shift
        ph, pw = self.padded_size()
        if (ph, pw) != self.input_size:
            x = F.pad(x, [0, pw - self.input_size[1], 0, ph - self.input_size[0]])
        return x


class FeatureStage(nn.Module):
    """Some steps of a detector's feature extractor.

    Input: the image batch (first stage) or the previous stage's tuple; the steps run one after another on
    ``current`` and the outputs of ``returned`` steps are appended to ``collected``. A middle stage returns
    ``collected`` when its last step's output is a level (``current`` is then ``collected[-1]``; passing it twice
    would copy it twice), else ``(current, *collected)``; ``current_first`` says which of the two this stage
    receives. The last backbone stage returns the feature maps, through the FPN if there is one (``fpn_names``
    keys its input levels, as torchvision's ``IntermediateLayerGetter`` does).
    """

    def __init__(self, steps: Sequence[nn.Module], returned: Sequence[bool], *, adapter: InputAdapter | None,
                 current_first: bool, final: bool, fpn: nn.Module | None = None,
                 fpn_names: Sequence[str] = ()) -> None:
        super().__init__()
        self.adapter = adapter
        self.steps = nn.ModuleList(steps)
        self.returned = tuple(returned)
        self.current_first = current_first
        self.final = final
        self.fpn = fpn
        self.fpn_names = tuple(fpn_names)

    def forward(self, x: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        if isinstance(x, Tensor):
            current, collected = x, []
        elif self.current_first:
            current, collected = x[0], list(x[1:])
        else:
            current, collected = x[-1], list(x)
        if self.adapter is not None:
            current = self.adapter(current)
        for step, keep in zip(self.steps, self.returned, strict=True):
            current = step(current)
            if keep:
                collected.append(current)
        if not self.final:
            return tuple(collected) if self.returned[-1] else (current, *collected)
        if self.fpn is None:
            return tuple(collected)
        levels = self.fpn(OrderedDict(zip(self.fpn_names, collected, strict=True)))
        return tuple(levels.values())


class HeadStage(nn.Module):
    """The dense head of a single-stage detector (fixed shapes). Output: the head's tensors in ``keys`` order,
    then one empty ``N x 0 x h x w`` view per feature level (its grid size, which anchor generation and the
    per-level split need; empty, so copying it costs nothing)."""

    def __init__(self, head: nn.Module, keys: Sequence[str]) -> None:
        super().__init__()
        self.head = head
        self.keys = tuple(keys)

    def forward(self, features: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        outputs = self.head(list(features))
        return (*(outputs[k] for k in self.keys), *(f[:, :0] for f in features))


def _grid_placeholders(markers: Sequence[Tensor]) -> list[Tensor]:
    """Float32 ``0 x 0 x h x w`` stand-ins for the feature maps: torchvision's anchor generators read only the
    feature maps' grid sizes, dtype and device, so anchors come out in float32 whatever the model's dtype."""
    return [torch.empty((0, 0, *m.shape[-2:]), dtype=torch.float32, device=m.device) for m in markers]


def _image_list(batch: int, padded: tuple[int, int], image_size: tuple[int, int], device: torch.device) -> Any:
    """A torchvision ``ImageList`` without pixels: the anchor generators read only its padded size and the
    image sizes."""
    from torchvision.models.detection.image_list import ImageList

    placeholder = torch.empty((batch, 0, *padded), dtype=torch.float32, device=device)
    return ImageList(placeholder, [image_size] * batch)


def pad_detections(detections: Sequence[dict[str, Tensor]], max_detections: int, device: torch.device
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """torchvision's per-image detection dicts as the contract's fixed-shape ``(boxes, scores, labels, counts)``
    (rows zero beyond ``counts``; at most ``max_detections`` per image, the highest scores)."""
    n = len(detections)
    boxes = torch.zeros((n, max_detections, 4), dtype=torch.float32, device=device)
    scores = torch.zeros((n, max_detections), dtype=torch.float32, device=device)
    labels = torch.zeros((n, max_detections), dtype=torch.int64, device=device)
    counts: list[int] = []
    for i, det in enumerate(detections):
        count = min(int(det["scores"].shape[0]), max_detections)
        boxes[i, :count] = det["boxes"][:count]
        scores[i, :count] = det["scores"][:count]
        labels[i, :count] = det["labels"][:count]
        counts.append(count)
    return boxes, scores, labels, torch.tensor(counts, dtype=torch.int64, device=device)


class DenseDetectStage(nn.Module):
    """Last stage of SSD/RetinaNet/FCOS (eager): anchors, box decoding, score threshold, top-k candidates and NMS
    for the whole batch at once, padded to ``max_detections``.

    The selection is torchvision's ``postprocess_detections`` of the family (the same scores, thresholds, top-k
    candidates per class (SSD) or per feature level (RetinaNet, FCOS), NMS per class, the best ``max_detections``),
    computed without its Python loops over images and classes: one top-k per family over the batch, one decode,
    one NMS call per image over all its classes (class offsets). torchvision's loop runs about 90 classes x 5
    kernels per image for SSDlite (44 ms a frame on an H100 with random weights, measured through the node);
    this is a few dozen kernels per batch.

    ``score_floor`` (set by the engine to the lowest ``score_threshold`` of the tasks sharing the model,
    :func:`set_score_floor`) drops candidates below it before NMS. This changes no published detection: a box
    below the floor is dropped by every task's threshold anyway, and it can suppress only boxes of lower scores,
    which are below the floor too."""

    _detector: Any  # the torchvision detector (in __dict__, not a submodule)
    anchor_generator: Any

    def __init__(self, detector: nn.Module, family: str, image_size: tuple[int, int], padded: tuple[int, int],
                 max_detections: int) -> None:
        super().__init__()
        self.anchor_generator = detector.anchor_generator
        # The detector's box coder and thresholds are read from it; kept out of the module tree so its
        # parameters are not registered a second time.
        self.__dict__["_detector"] = detector
        self.family = family
        self.keys = _HEAD_KEYS[family]
        self.image_size = image_size
        self.padded = padded
        self.max_detections = max_detections
        self.score_floor = 0.0
        # anchors per (device, grid sizes): the same for every call (SSD's generator builds them on the host and
        # copies them to the device, a host sync each time)
        self._anchors: dict[tuple[Any, ...], Tensor] = {}

    def _anchors_for(self, markers: tuple[Tensor, ...], device: torch.device) -> Tensor:
        key = (str(device), *(tuple(m.shape[-2:]) for m in markers))
        anchors = self._anchors.get(key)
        if anchors is None:
            images = _image_list(1, self.padded, self.image_size, device)
            anchors = self._anchors[key] = self.anchor_generator(images, _grid_placeholders(markers))[0]
        return anchors

    def forward(self, x: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        k = len(self.keys)
        head = {key: t.float() for key, t in zip(self.keys, x[:k], strict=True)}
        markers = x[k:]
        batch, device = int(x[0].shape[0]), x[0].device
        anchors = self._anchors_for(markers, device)  # the same for every image
        if self.family == "ssd":
            scores, anchor_idx, labels = self._ssd_candidates(head["cls_logits"])
        else:
            per_level = [int(m.shape[-2]) * int(m.shape[-1]) for m in markers]
            scores, anchor_idx, labels = self._level_candidates(head, per_level)
        detector = self._detector
        keep = (scores > float(detector.score_thresh)) & (scores >= self.score_floor)
        image_idx, slot = keep.nonzero(as_tuple=True)  # (one host sync: the candidates' count)
        anchor_rows = anchor_idx[image_idx, slot]
        codes = head["bbox_regression"][image_idx, anchor_rows]
        boxes = self._decode(codes, anchors[anchor_rows])
        height, width = self.image_size
        boxes = torch.stack((boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height),
                             boxes[:, 2].clamp(0, width), boxes[:, 3].clamp(0, height)), dim=1)
        return self._nms_and_pad(boxes, scores[image_idx, slot], labels[image_idx, slot], image_idx, batch,
                                 float(detector.nms_thresh))

    def _ssd_candidates(self, logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """SSD: softmax over the classes; per image and class (background excluded) the ``topk_candidates`` best
        anchors. Returns N x M scores, anchor indices and labels."""
        probs = F.softmax(logits, dim=-1)[:, :, 1:].transpose(1, 2)  # N x (C - 1) x A
        n, classes, num_anchors = probs.shape
        top = min(int(self._detector.topk_candidates), num_anchors)
        scores, anchor_idx = probs.topk(top, dim=2)
        labels = torch.arange(1, classes + 1, device=logits.device).view(1, classes, 1).expand(n, classes, top)
        return scores.reshape(n, -1), anchor_idx.reshape(n, -1), labels.reshape(n, -1)

    def _level_candidates(self, head: dict[str, Tensor], per_level: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        """RetinaNet/FCOS: sigmoid class scores (FCOS: times the centreness, square root); per image and feature
        level the ``topk_candidates`` best (anchor, class) pairs. Returns N x M scores, anchor indices, labels."""
        logits = head["cls_logits"]
        n, total, classes = logits.shape
        per_location = total // sum(per_level)
        probs = torch.sigmoid(logits)
        if self.family == "fcos":
            probs = torch.sqrt(probs * torch.sigmoid(head["bbox_ctrness"]))
        all_scores, all_anchors, all_labels = [], [], []
        start = 0
        for hw in per_level:
            count = hw * per_location
            flat = probs[:, start:start + count].reshape(n, count * classes)
            scores, idx = flat.topk(min(int(self._detector.topk_candidates), count * classes), dim=1)
            all_scores.append(scores)
            all_anchors.append(torch.div(idx, classes, rounding_mode="floor") + start)
            all_labels.append(idx % classes)
            start += count
        return torch.cat(all_scores, 1), torch.cat(all_anchors, 1), torch.cat(all_labels, 1)

    def _decode(self, codes: Tensor, anchors: Tensor) -> Tensor:
        coder = self._detector.box_coder
        if self.family == "fcos":
            return coder.decode(codes, anchors)
        return coder.decode_single(codes, anchors)

    def _nms_and_pad(self, boxes: Tensor, scores: Tensor, labels: Tensor, image_idx: Tensor, batch: int,
                     iou: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per image: NMS per class (one call: boxes offset by class, a fixed offset larger than the image), then
        its best ``max_detections``, as the contract's fixed-shape ``(boxes, scores, labels, counts)``. Each image's
        NMS sees exactly its own candidates, in the same order, with or without the rest of the batch: a row's
        detections do not depend on what it was batched with."""
        from torchvision.ops import nms

        k = self.max_detections
        device = boxes.device
        out_boxes = torch.zeros((batch, k, 4), dtype=torch.float32, device=device)
        out_scores = torch.zeros((batch, k), dtype=torch.float32, device=device)
        out_labels = torch.zeros((batch, k), dtype=torch.int64, device=device)
        counts = [0] * batch
        offset = float(max(self.image_size) + 1)
        start = 0
        # (candidates come image by image: keep.nonzero() is row-major)
        for i, count in enumerate(torch.bincount(image_idx, minlength=batch).tolist()):
            if count:
                part = slice(start, start + count)
                kept = nms(boxes[part] + (labels[part].to(boxes.dtype) * offset).unsqueeze(1), scores[part], iou)[:k]
                n = int(kept.numel())
                out_boxes[i, :n] = boxes[part][kept]
                out_scores[i, :n] = scores[part][kept]
                out_labels[i, :n] = labels[part][kept]
                counts[i] = n
                start += count
        return out_boxes, out_scores, out_labels, torch.tensor(counts, dtype=torch.int64, device=device)


def set_score_floor(model: Any, floor: float) -> bool:
    """Let the last stage of a built-in detector drop candidates scoring under ``floor`` before NMS (the lowest
    ``score_threshold`` of the tasks running ``model``; see :class:`DenseDetectStage`, and for Faster R-CNN the ROI
    heads' score threshold). Returns whether ``model`` has such a stage (TorchScript, .pt2 and ONNX detectors
    do not)."""
    last = model.stages[-1] if getattr(model, "stages", None) else None
    if isinstance(last, DenseDetectStage | RcnnDetectStage):
        last.score_floor = float(floor)
        return True
    return False


class RcnnDetectStage(nn.Module):
    """Last stage of Faster R-CNN (eager): the RPN (proposals: data-dependent counts) and the ROI heads
    (ROI align, box head, per-class decoding, NMS), padded to ``max_detections``."""

    rpn: Any  # torchvision's RegionProposalNetwork and RoIHeads (submodules)
    roi_heads: Any

    def __init__(self, detector: nn.Module, level_names: Sequence[str], image_size: tuple[int, int],
                 padded: tuple[int, int], max_detections: int) -> None:
        super().__init__()
        self.rpn = detector.rpn
        self.roi_heads = detector.roi_heads
        self.level_names = tuple(level_names)
        self.image_size = image_size
        self.padded = padded
        self.max_detections = max_detections
        self.score_floor = 0.0  # set_score_floor

    def forward(self, features: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        levels = OrderedDict(zip(self.level_names, features, strict=True))
        batch, device = int(features[0].shape[0]), features[0].device
        images = _image_list(batch, self.padded, self.image_size, device)
        proposals, _ = self.rpn(images, levels)
        configured = self.roi_heads.score_thresh
        # (the ROI heads read their own threshold and keep scores above it; the float32 just under the floor
        # keeps a float32 score at the floor)
        under = float(np.nextafter(np.float32(self.score_floor), np.float32(-np.inf)))
        self.roi_heads.score_thresh = max(configured, under)
        try:
            detections, _ = self.roi_heads(levels, proposals, images.image_sizes)
        finally:
            self.roi_heads.score_thresh = configured
        for det in detections:  # reduced precision: the contract's float32 boxes and scores
            det["boxes"], det["scores"] = det["boxes"].float(), det["scores"].float()
        return pad_detections(detections, self.max_detections, device)


# -- building ----------------------------------------------------------------------------------------
def _steps_of(detector: nn.Module, family: str) -> dict[str, tuple[nn.Module, bool]]:
    """The feature extractor's steps by name, with whether each one's output is a feature level."""
    backbone = submodule(detector, "backbone")
    if family == "ssd":  # SSDLiteFeatureExtractorMobileNet: every block of features and extra is a level
        features = cast(nn.Sequential, backbone.features)
        extra = cast(nn.ModuleList, backbone.extra)
        steps = {f"features.{i}": (m, True) for i, m in enumerate(features)}
        steps.update({f"extra.{i}": (m, True) for i, m in enumerate(extra)})
        return steps
    body = submodule(backbone, "body")  # IntermediateLayerGetter
    return_layers = _return_layers(backbone)
    return {name: (module, name in return_layers) for name, module in body.named_children()}


def _return_layers(backbone: nn.Module) -> dict[str, str]:
    """``{child name: output name}`` of a torchvision backbone's ``body`` (an IntermediateLayerGetter, whose
    ``return_layers`` torch types as ``Tensor | Module``: torchvision is untyped)."""
    body: Any = backbone.body
    return_layers: dict[str, str] = body.return_layers
    return return_layers


def _fpn_level_names(backbone: nn.Module) -> list[str]:
    """The names of the FPN's output levels (``"0"``, ``"1"``, ..., then the extra block's ``"pool"`` or
    ``"p6"``, ``"p7"``), found by running the FPN once on tiny inputs: the ROI heads select levels by name."""
    fpn: Any = backbone.fpn  # torchvision's FeaturePyramidNetwork (torchvision is untyped)
    in_names = list(_return_layers(backbone).values())
    channels = [int(block[0].in_channels) for block in fpn.inner_blocks]
    side = 2 ** (len(in_names) + 1)
    tiny = OrderedDict((name, torch.zeros(1, c, side >> i, side >> i))
                       for i, (name, c) in enumerate(zip(in_names, channels, strict=True)))
    with torch.no_grad():
        return list(fpn(tiny).keys())


def _class_names(spec: DetectorSpec) -> tuple[str, ...]:
    import torchvision.models.detection as tv_detection

    weights_enum = getattr(tv_detection, spec.weights_enum)
    return tuple(str(c) for c in weights_enum.DEFAULT.meta["categories"])


def _build_detector(spec: DetectorSpec, num_classes: int, size: tuple[int, int], max_detections: int) -> nn.Module:
    """The unstaged torchvision detector (random init, nothing downloaded), its transform set to ``size`` and its
    detections per image to ``max_detections``."""
    import torchvision.models.detection as tv_detection

    builder: Callable[..., nn.Module] = getattr(tv_detection, spec.builder)
    kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None, "num_classes": num_classes}
    if spec.family == "rcnn":
        kwargs["box_detections_per_img"] = max_detections
    else:
        kwargs["detections_per_img"] = max_detections
    detector = builder(**kwargs)
    transform: Any = detector.transform  # torchvision's GeneralizedRCNNTransform (torchvision is untyped)
    transform.min_size = (min(size),)  # scale 1 at `size`: the transform only normalises and pads
    transform.max_size = max(size)
    transform.fixed_size = None
    return detector.eval()


def build_detection(
    name: str,
    *,
    weights: str | None = None,
    num_classes: int | None = None,
    input_size: Sequence[int] | None = None,
    stages: Sequence[Sequence[str] | str] | None = None,
    max_detections: int | None = None,
) -> StagedModel:
    """A torchvision detector as a staged model of kind ``"detection"`` (see the module docstring)."""
    key = name.strip().lower()
    spec = DETECTORS.get(key)
    if spec is None:
        raise ValueError(f"not a built-in detector: {name!r} (detectors: {list(DETECTION_MODELS)})")
    if stages is not None:
        raise ValueError(f"{key}: the stage split of a detector is fixed (its last stage decodes and runs NMS); "
                         "do not give `stages`")
    classes = COCO_NUM_CLASSES if num_classes is None else int(num_classes)
    if classes < 2:
        raise ValueError(f"{key}: num_classes must be >= 2 (class 0 is the background), got {classes}")
    k = DEFAULT_MAX_DETECTIONS if max_detections is None else int(max_detections)
    if k < 1:
        raise ValueError(f"{key}: max_detections must be >= 1, got {k}")
    size = check_input_size(key, input_size, spec.default_size, DETECTION_MIN_INPUT)

    detector = _build_detector(spec, classes, size, k)
    if weights is not None:
        apply_state_dict(detector, load_state_dict_file(weights), model_name=key, source=str(weights))
    else:
        warn_random_init(key)
    detector.eval()

    transform: Any = detector.transform  # torchvision's GeneralizedRCNNTransform (torchvision is untyped)
    adapter = InputAdapter(size, transform.image_mean, transform.image_std, int(transform.size_divisible))
    steps = _steps_of(detector, spec.family)
    listed = [n for group in spec.backbone_stages for n in group]
    if listed != list(steps):
        raise RuntimeError(f"{key}: the stage table {listed} does not cover torchvision's steps {list(steps)}")
    backbone = submodule(detector, "backbone")
    fpn = getattr(backbone, "fpn", None)
    fpn_in = list(_return_layers(backbone).values()) if fpn is not None else []
    modules: list[nn.Module] = []
    current_first = True  # what the first stage gets is the image batch (a tensor): unused there
    for i, group in enumerate(spec.backbone_stages):
        final = i == len(spec.backbone_stages) - 1
        returned = [steps[n][1] for n in group]
        modules.append(FeatureStage([steps[n][0] for n in group], returned, adapter=adapter if i == 0 else None,
                                    current_first=current_first, final=final, fpn=fpn if final else None,
                                    fpn_names=fpn_in if final else ()))
        current_first = not returned[-1]
    names = list(spec.backbone_stage_names)
    if spec.family == "rcnn":
        modules.append(RcnnDetectStage(detector, _fpn_level_names(backbone), size,
                                       adapter.padded_size(), k))
        names.append("rpn+roi_heads")
    else:
        modules.append(HeadStage(submodule(detector, "head"), _HEAD_KEYS[spec.family]))
        modules.append(DenseDetectStage(detector, spec.family, size, adapter.padded_size(), k))
        names += ["head", "detect"]
    graph_stages = [True] * (len(modules) - 1) + [False]
    staged = StagedModel(name=key, kind="detection", input_size=size, num_classes=classes, stage_names=names,
                         stages=modules, unstaged=detector, graph_stages=graph_stages)
    staged.max_detections = k
    if classes == COCO_NUM_CLASSES:
        staged.class_names = _class_names(spec)
    return staged.eval()
