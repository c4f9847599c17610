"""ament_types: message types the type store lacks, learnt from the ``.msg`` files of installed packages
(``<prefix>/share/<package>/msg/<Name>.msg``), with every type they refer to; a missing one is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from daris_ros.bags.ament_types import UnknownTypeError, ament_prefixes, definition_file, learn_type
from daris_ros.bags.typestore import make_typestore

# A made-up interface package: a sequence, a fixed array and a nested type of its own, plus a standard header.
DEFS = {
    "Corner.msg": "float32 x\nfloat32 y\n",
    "Quad.msg": "Corner[4] corners\nstring label\n",
    "QuadArray.msg": "std_msgs/Header header\nQuad[] quads\nCorner anchor\nuint8 LIMIT=16\n",
}


def _package(prefix: Path, name: str = "quad_msgs", defs: dict[str, str] = DEFS) -> Path:
    msg_dir = prefix / "share" / name / "msg"
    msg_dir.mkdir(parents=True)
    for file, text in defs.items():
        (msg_dir / file).write_text(text, encoding="utf-8")
    return prefix


def test_a_type_and_its_dependencies_are_learnt_and_serialise(tmp_path: Path) -> None:
    prefix = _package(tmp_path / "install")
    store = make_typestore(include_package=False)
    learnt = learn_type(store, "quad_msgs/msg/QuadArray", [tmp_path / "empty", prefix])
    assert learnt == ["quad_msgs/msg/Corner", "quad_msgs/msg/Quad", "quad_msgs/msg/QuadArray"]
    assert learn_type(store, "quad_msgs/msg/QuadArray", [prefix]) == []  # (known now)
    types = store.types
    corner = types["quad_msgs/msg/Corner"]
    msg = types["quad_msgs/msg/QuadArray"](
        header=types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=7, nanosec=8),
                                            frame_id="cam"),
        quads=[types["quad_msgs/msg/Quad"](corners=[corner(x=float(i), y=-1.0) for i in range(4)], label="a")],
        anchor=corner(x=0.5, y=0.25))
    back = store.deserialize_cdr(store.serialize_cdr(msg, "quad_msgs/msg/QuadArray"), "quad_msgs/msg/QuadArray")
    assert back.header.frame_id == "cam" and back.anchor.y == 0.25
    assert [c.x for c in back.quads[0].corners] == [0.0, 1.0, 2.0, 3.0] and back.quads[0].label == "a"
    assert "MSG: quad_msgs/Corner" in store.generate_msgdef("quad_msgs/msg/QuadArray", ros_version=2)[0]


def test_the_first_prefix_that_has_the_file_wins(tmp_path: Path) -> None:
    first = _package(tmp_path / "overlay", defs={"Corner.msg": "float64 x\n"})
    second = _package(tmp_path / "underlay")
    assert definition_file("quad_msgs/msg/Corner", [first, second]) == first / "share/quad_msgs/msg/Corner.msg"
    assert definition_file("quad_msgs/msg/Quad", [first, second]) == second / "share/quad_msgs/msg/Quad.msg"
    assert definition_file("quad_msgs/msg/Nothing", [first, second]) is None


def test_a_missing_dependency_is_named_with_the_type_that_needs_it(tmp_path: Path) -> None:
    prefix = _package(tmp_path / "install", defs={"QuadArray.msg": DEFS["QuadArray.msg"]})
    store = make_typestore(include_package=False)
    with pytest.raises(UnknownTypeError, match=r"quad_msgs/msg/(Quad|Corner) \(a field type of quad_msgs/msg/"
                                               r"QuadArray\).*" + str(prefix / "share")):
        learn_type(store, "quad_msgs/msg/QuadArray", [prefix])
    assert "quad_msgs/msg/QuadArray" not in store.fielddefs  # (nothing half-registered)
    with pytest.raises(UnknownTypeError, match="AMENT_PREFIX_PATH is empty"):
        learn_type(store, "vision_msgs/msg/Detection2DArray", [])
    with pytest.raises(ValueError, match="package/msg/Name"):
        learn_type(store, "vision_msgs/Detection2DArray", [prefix])


def test_prefixes_come_from_ament_prefix_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{tmp_path / 'a'}::{tmp_path / 'b'}")
    assert ament_prefixes() == [tmp_path / "a", tmp_path / "b"]
    assert ament_prefixes("") == []
