"""The detections and labels of a task as vision_msgs 4.x messages, where ``vision_msgs`` is installed.

The node publishes these instead of the package's own daris_ros/Detection2DArray and LabelInfo when
``perception_msgs`` is ``vision_msgs``, or ``auto`` and :func:`vision_msgs_available`. The fields are the same
(README.md, "Perception outputs", the field-by-field mapping); vision_msgs has no class name in a hypothesis:
the names are on the labels topic (vision_msgs/LabelInfo, by class id).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from std_msgs.msg import Header

from daris_ros.runtime.results import Detections


def vision_msgs_available() -> bool:
    """Whether the vision_msgs Python messages can be imported here."""
    try:
        return importlib.util.find_spec("vision_msgs.msg") is not None
    except ModuleNotFoundError:
        return False


def vision_detection_array(header: Header, detections: Detections) -> Any:
    """vision_msgs/Detection2DArray: per detection a Detection2D (the source header, the box centre and size in
    the source image's pixels, theta 0, one hypothesis: class id as a decimal string and the score)."""
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

    m = Detection2DArray(header=header)
    for (x1, y1, x2, y2), score, class_id in zip(detections.boxes.tolist(), detections.scores.tolist(),
                                                 detections.class_ids.tolist(), strict=True):
        d = Detection2D(header=header)
        d.bbox.center.position.x = (x1 + x2) / 2
        d.bbox.center.position.y = (y1 + y2) / 2
        d.bbox.size_x = x2 - x1
        d.bbox.size_y = y2 - y1
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = str(class_id)
        hypothesis.hypothesis.score = float(score)
        d.results.append(hypothesis)
        m.detections.append(d)
    return m


def vision_label_info(header: Header, class_names: Sequence[str], threshold: float) -> Any:
    """vision_msgs/LabelInfo: one VisionClass per class id with a name entry, and the score threshold."""
    from vision_msgs.msg import LabelInfo, VisionClass

    return LabelInfo(header=header, threshold=float(threshold),
                     class_map=[VisionClass(class_id=i, class_name=n) for i, n in enumerate(class_names)])
