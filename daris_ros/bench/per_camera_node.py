"""One camera, one process, one model: the way per-camera perception nodes run today (the baseline of
``daris-node-e2e --system per-camera``).

An rclpy node subscribes to its camera (sensor-data QoS), and for EVERY frame it gets, in the subscription callback:
decodes the JPEG (on the GPU with ``torchvision.io.decode_jpeg`` when the device is CUDA, else Pillow), preprocesses
it, runs its model (the package's built-in or torchvision model as one module, random weights, the given precision)
and publishes an :class:`~daris_ros.msg.InferenceResult` with the image's header and its times (receive = release =
callback entry, start = model start, finish = after the output was read back; deadline = receive + D, ``met`` =
finish <= deadline). No scheduling, no admission: frames the callback cannot keep up with wait in the DDS history
(``depth``) and the oldest are overwritten.

Run by ``daris_ros.bench.node_e2e`` as ``python -P -m daris_ros.bench.per_camera_node --spec FILE``; prints
``@@READY`` once the model is loaded, warmed up and subscribed, and on a ``STOP`` line on stdin writes its counters
(received, processed, failed) to the spec's ``result`` file, prints ``@@DONE`` and exits.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any


def load_model(name: str, input_size: Sequence[int] | None, precision: str, channels_last: bool,
               device: str) -> Any:
    """The whole network as one module (the staged model merged), random weights, on ``device``."""
    from daris_ros.runtime.models import build_staged_model
    from daris_ros.runtime.models.precision import apply_precision

    model = build_staged_model(name, input_size=tuple(input_size) if input_size else None).merged()
    apply_precision(model, precision, channels_last)
    return model.to(device).eval()


class Inference:
    """Decode -> preprocess -> model -> top-k classes or segmentation summary, for one camera."""

    def __init__(self, model: Any, device: str, channels_last: bool, top_k: int = 5) -> None:
        self.model = model
        self.device = device
        self.channels_last = channels_last
        self.top_k = top_k
        self.gpu_decode = device.startswith("cuda")

    def decode(self, msg: Any) -> Any:
        from daris_ros.ros.conversion import compressed_to_rgb, image_to_rgb

        if hasattr(msg, "format"):  # CompressedImage: JPEG on the GPU (nvJPEG) or Pillow on the host
            return compressed_to_rgb(msg, device=self.device if self.gpu_decode else "cpu")
        return image_to_rgb(msg)

    def run(self, image: Any) -> tuple[float, dict[str, Any]]:
        """(model start time on the monotonic clock, result fields)."""
        import torch

        from daris_ros.runtime.models import postprocess_classification, postprocess_segmentation, stage_tensors
        from daris_ros.runtime.models.precision import model_input
        from daris_ros.runtime.preprocess import preprocess

        with torch.inference_mode():
            x = preprocess(image, self.model.input_size, device=self.device, channels_last=self.channels_last)
            start = time.monotonic()
            out = stage_tensors(self.model(model_input(self.model, x)))[0]
            if self.model.kind == "segmentation":
                h, w, ids, fractions = postprocess_segmentation(out)  # (reading the counts back synchronises)
                return start, {"seg_height": h, "seg_width": w, "seg_class_ids": ids, "seg_class_fractions": fractions}
            ids, scores = postprocess_classification(out, self.top_k)
            return start, {"class_ids": ids, "scores": scores}


def stop_when_told() -> threading.Event:
    """An event set when the harness writes ``STOP`` on this child process's stdin (or closes it)."""
    stop = threading.Event()

    def read_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "STOP":
                break
        stop.set()

    threading.Thread(target=read_stdin, name="daris-stop", daemon=True).start()
    return stop


def _ros_time(ns: int) -> Any:
    from builtin_interfaces.msg import Time

    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def run(spec: dict[str, Any]) -> int:
    import rclpy
    import torch
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image

    from daris_ros.msg import InferenceResult

    device = spec.get("device", "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        device = "cpu"
    model = load_model(spec["model"], spec.get("input_size"), spec.get("precision", "fp32"),
                       bool(spec.get("channels_last", False)), device)
    infer = Inference(model, device, bool(spec.get("channels_last", False)), int(spec.get("top_k", 5)))
    # warm up (decoder, cuDNN choices, allocator) on a JPEG of the camera's size
    import numpy as np

    from daris_ros.bags.synth import encode_compressed

    picture = np.zeros((int(spec.get("height", 64)), int(spec.get("width", 64)), 3), np.uint8)
    warm = SimpleNamespace(format="jpeg", data=encode_compressed(picture, "jpeg"))
    for _ in range(int(spec.get("warmup_runs", 3))):
        infer.run(infer.decode(warm))
    if device.startswith("cuda"):
        torch.cuda.synchronize()

    rclpy.init(args=[])
    node = Node(f"per_camera_{spec['task']}")
    counts = {"received": 0, "processed": 0, "failed": 0}
    deadline_ns = round(float(spec.get("deadline") or spec["period"]) * 1e9)
    prio = InferenceResult.PRIORITY_HIGH if spec["priority"] == "HP" else InferenceResult.PRIORITY_LOW
    pub = node.create_publisher(InferenceResult, spec["result_topic"], 10)
    clock = node.get_clock()
    job = [0]

    def on_frame(msg: Any) -> None:
        receive = clock.now().nanoseconds
        counts["received"] += 1
        try:
            image = infer.decode(msg)
            start_mono, fields = infer.run(image)
        except Exception as exc:  # noqa: BLE001 - a bad frame is counted, the node keeps running
            counts["failed"] += 1
            node.get_logger().warning(f"frame failed: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0)
            return
        finish = clock.now().nanoseconds
        start = finish - round((time.monotonic() - start_mono) * 1e9)
        r = InferenceResult(header=msg.header, task=spec["task"], job_id=job[0], priority=prio, model=spec["model"],
                            **fields)
        r.receive_time = r.release_time = _ros_time(receive)
        r.start_time = _ros_time(max(start, receive))
        r.finish_time = _ros_time(finish)
        r.deadline = _ros_time(receive + deadline_ns)
        r.response_time = (finish - receive) * 1e-9
        r.exec_time = (finish - max(start, receive)) * 1e-9
        r.met = finish <= receive + deadline_ns
        job[0] += 1
        pub.publish(r)
        counts["processed"] += 1

    qos = QoSProfile(depth=int(spec.get("depth", 5)), history=HistoryPolicy.KEEP_LAST,
                     reliability=ReliabilityPolicy.BEST_EFFORT)
    msg_type = CompressedImage if spec.get("input_type", "compressed") == "compressed" else Image
    node.create_subscription(msg_type, spec["topic"], on_frame, qos)
    stop = stop_when_told()
    print("@@READY", flush=True)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
        # the counters are final here: the harness may go on while DDS tears down (slow on a loaded host)
        Path(spec["result"]).write_text(json.dumps({"task": spec["task"], "device": device, **counts}))
        print("@@DONE", flush=True)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="per_camera_node", description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", type=Path, required=True, help="JSON file: task, topic, result_topic, model, ...")
    ns = p.parse_args(argv)
    return run(json.loads(ns.spec.read_text()))


if __name__ == "__main__":
    sys.exit(main())
