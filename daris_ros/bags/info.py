"""Read a bag's ``metadata.yaml`` (what ``ros2 bag info`` shows) and the daris_ros ``custom_data``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .writer import CUSTOM_PREFIX


def read_metadata(bag: Path | str) -> dict[str, Any]:
    """The ``rosbag2_bagfile_information`` mapping of ``<bag>/metadata.yaml``."""
    path = Path(bag) / "metadata.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "rosbag2_bagfile_information" not in data:
        raise ValueError(f"{path} is not rosbag2 metadata")
    info = data["rosbag2_bagfile_information"]
    if not isinstance(info, dict):
        raise ValueError(f"{path} is not rosbag2 metadata")
    return info


def custom_data(bag: Path | str) -> dict[str, str]:
    """The ``custom_data`` strings of the bag (empty if none)."""
    return dict(read_metadata(bag).get("custom_data") or {})


def daris_info(bag: Path | str, key: str) -> Any:
    """A JSON value stored by a daris_ros tool under ``custom_data['daris_ros.<key>']`` (e.g. ``synth``,
    ``recorder``), or None."""
    raw = custom_data(bag).get(f"{CUSTOM_PREFIX}{key}")
    return None if raw is None else json.loads(raw)


def topic_counts(bag: Path | str) -> dict[str, int]:
    """Messages per topic according to the metadata."""
    return {
        entry["topic_metadata"]["name"]: int(entry["message_count"])
        for entry in read_metadata(bag).get("topics_with_message_count") or []
    }
