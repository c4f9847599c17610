"""A synthetic camera: publishes moving test pictures as sensor_msgs/msg/Image at a fixed rate.

Used by the demo and the tests in place of a camera driver. The picture (scrolling gradient, bouncing
square, frame-counter bar) comes from :mod:`daris_ros.bags.synth`, the same renderer the bag tool uses.
"""

from __future__ import annotations

import sys
from typing import Any

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from daris_ros.bags.synth import RAW_ENCODINGS, FrameRenderer, encode_raw


class CameraPublisherNode(Node):
    def __init__(self, name: str = "camera_publisher", *, topic: str | None = None, rate: float | None = None,
                 width: int | None = None, height: int | None = None, encoding: str | None = None,
                 camera: int | None = None, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)

        def param(pname: str, default: Any, override: Any, text: str) -> Any:
            value = default if override is None else override
            return self.declare_parameter(pname, value, ParameterDescriptor(description=text,
                                                                            read_only=True)).value

        self.topic = param("topic", "camera/image_raw", topic, "Image topic to publish")
        self.rate = float(param("rate", 30.0, rate, "Frames per second"))
        w = int(param("width", 640, width, "Picture width"))
        h = int(param("height", 480, height, "Picture height"))
        self.encoding = param("encoding", "rgb8", encoding, "One of " + ", ".join(RAW_ENCODINGS))
        cam = int(param("camera", 0, camera, "Camera index (changes the picture)"))
        self.frame_id = param("frame_id", f"camera_{cam}", None, "header.frame_id")
        if self.rate <= 0:
            raise ValueError(f"parameter 'rate': {self.rate} Hz is not allowed: must be > 0")
        if self.encoding not in RAW_ENCODINGS:
            raise ValueError(f"parameter 'encoding': {self.encoding!r} is not one of {sorted(RAW_ENCODINGS)}")
        cycle = int(param("cycle", 30, None, "Distinct pictures pre-rendered and published in turn (moving "
                          "content at a fraction of the per-frame cost); 0 renders every frame"))
        self._renderer = FrameRenderer(w, h, camera=cam)
        self._cycle = [encode_raw(self._renderer.rgb(k), self.encoding) for k in range(max(0, cycle))]
        self._index = 0
        self.published = 0
        self._pub = self.create_publisher(Image, self.topic, qos_profile_sensor_data)
        self._timer = self.create_timer(1.0 / self.rate, self._tick)

    def _tick(self) -> None:
        if self._cycle:
            data, step = self._cycle[self._index % len(self._cycle)]
        else:
            data, step = encode_raw(self._renderer.rgb(self._index), self.encoding)
        msg = Image()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.frame_id
        msg.height, msg.width = self._renderer.height, self._renderer.width
        msg.encoding = self.encoding
        msg.is_bigendian = 0
        msg.step = step
        msg.data = data.tobytes()
        self._pub.publish(msg)
        self._index += 1
        self.published += 1


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = None
    try:
        node = CameraPublisherNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
