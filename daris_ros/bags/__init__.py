"""rosbag2 tools for daris_ros: synthesise camera bags, replay them into the graph, record outputs.

Modules (one job each):

- ``typestore``  rosbags type store: ROS 2 kilted + daris_ros's ``msg/*.msg``.
- ``synth``      moving test pictures, image encodings, camera timing (no ROS needed).
- ``qos``        QoS profiles in rosbags / rclpy / YAML form.
- ``writer``     write rosbag2 bags (mcap or sqlite3) with metadata rosbag2 accepts (no ROS needed).
- ``info``       read ``metadata.yaml``: topic counts, daris_ros ``custom_data``.
- ``rostypes``   message classes from type names, header stamps inside CDR bytes.
- ``player``     ``BagPlayer``: publish a bag's raw messages with recorded timing (rclpy).
- ``recorder``   ``BagRecorder``: record topics into a bag (rclpy).

``player`` and ``recorder`` import rclpy, the others (but ``synth``) rosbags; every name is loaded on first use, so
that synthesis works on a machine without either (the GPU test machine) and writing on one without ROS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .info import custom_data, daris_info, read_metadata, topic_counts
    from .player import BagPlayer, PlayOptions, PlayStats
    from .qos import RELIABLE_QOS, SENSOR_DATA_QOS, make_qos, write_qos_overrides
    from .recorder import BagRecorder, RecordStats
    from .synth import (
        COMPRESSED_FORMATS,
        ENCODINGS,
        RAW_ENCODINGS,
        FrameRenderer,
        SynthConfig,
        SynthMessage,
        camera_schedule,
        decode_counter,
        decode_raw,
        encode_compressed,
        encode_raw,
        generate,
    )
    from .typestore import DARIS_TYPES, find_msg_dir, get_typestore, make_typestore, type_hash
    from .writer import STORAGES, BagSummary, BagWriter, write_bag, write_synthetic_bag

# Every name is loaded from its module on first use: ``synth`` (pictures, encodings) works without rosbags,
# ``player`` and ``recorder`` need rclpy, the others rosbags.
_LAZY = {
    **dict.fromkeys(("custom_data", "daris_info", "read_metadata", "topic_counts"), "info"),
    **dict.fromkeys(("BagPlayer", "PlayOptions", "PlayStats"), "player"),
    **dict.fromkeys(("RELIABLE_QOS", "SENSOR_DATA_QOS", "make_qos", "write_qos_overrides"), "qos"),
    **dict.fromkeys(("BagRecorder", "RecordStats"), "recorder"),
    **dict.fromkeys(("COMPRESSED_FORMATS", "ENCODINGS", "RAW_ENCODINGS", "FrameRenderer", "SynthConfig",
                     "SynthMessage", "camera_schedule", "decode_counter", "decode_raw", "encode_compressed",
                     "encode_raw", "generate"), "synth"),
    **dict.fromkeys(("DARIS_TYPES", "find_msg_dir", "get_typestore", "make_typestore", "type_hash"), "typestore"),
    **dict.fromkeys(("STORAGES", "BagSummary", "BagWriter", "write_bag", "write_synthetic_bag"), "writer"),
}

__all__ = [
    "COMPRESSED_FORMATS",
    "DARIS_TYPES",
    "ENCODINGS",
    "RAW_ENCODINGS",
    "RELIABLE_QOS",
    "SENSOR_DATA_QOS",
    "STORAGES",
    "BagPlayer",
    "BagRecorder",
    "BagSummary",
    "BagWriter",
    "FrameRenderer",
    "PlayOptions",
    "PlayStats",
    "RecordStats",
    "SynthConfig",
    "SynthMessage",
    "camera_schedule",
    "custom_data",
    "daris_info",
    "decode_counter",
    "decode_raw",
    "encode_compressed",
    "encode_raw",
    "find_msg_dir",
    "generate",
    "get_typestore",
    "make_qos",
    "make_typestore",
    "read_metadata",
    "topic_counts",
    "type_hash",
    "write_bag",
    "write_qos_overrides",
    "write_synthetic_bag",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
