"""Pictures of a sample of jobs: the camera frame with the job's boxes or mask and its timing (PNG, Pillow).

A replay's numbers say how often deadlines were met; the pictures show what the node saw and answered. For
a few jobs (:func:`select_jobs`: every HP miss first, up to half the pictures, then jobs spread over the run
and over the tasks) the report decodes the source frame (the camera message whose ``header.stamp`` and
``frame_id`` are the result's), and draws on it

- detection: each box of the job's Detection2DArray, in its class colour, with class name and score;
- segmentation: the job's mono8 class mask, blended in a colour per class (the background class left
  clear), with a legend of the classes present (names from the task's LabelInfo);
- classification: the top classes with their scores;

above the frame: task, job id, priority, model, time into the run, response time against the deadline and
MET or MISSED (red, with a red border: a missed job is seen at a glance).

Frames come from the output bag when the camera topics were recorded (``daris-replay --record-inputs``),
else from ``frames_bag`` (``daris-report --frames INPUT_BAG``), else from the input bag the replay
metadata names, where it still exists. Without any, no picture is drawn and :class:`PictureSet` says why.
The boxes are in the source frame's pixels already (the node scaled them); a mask at the model's resolution
(``mask_resolution: model``) is stretched to the frame (nearest), as the node's resize stretched the frame.
"""

from __future__ import annotations

import colorsys
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont
from rosbags.rosbag2 import Reader, ReaderError
from rosbags.typesys.store import Typestore

from daris_ros.bags.ament_types import with_bag_types
from daris_ros.bags.typestore import get_typestore

from .extract import DETECTIONS_TYPES, IMAGE_TYPES, ResultRecord, RunData, cdr_header

#: pictures drawn by default (``daris-report --pictures``)
DEFAULT_PICTURES = 6
IMAGE_TYPE, COMPRESSED_TYPE = IMAGE_TYPES

RGB = tuple[int, int, int]
MISSED_RGB: RGB = (214, 39, 40)  # the report's colour of a miss (plots.MISSED_COLOR)
MET_RGB: RGB = (44, 160, 44)
TEXT_RGB: RGB = (20, 20, 20)
BAND_RGB: RGB = (255, 255, 255)
#: the frame is scaled so that the picture's frame is this wide at least / at most (pixels)
MIN_WIDTH = 480
MAX_WIDTH = 960
BORDER = 4
BOX_WIDTH = 3
MASK_ALPHA = 0.45
FONT_SIZE = 14
MAX_LEGEND = 12
#: class names that stay uncoloured in a mask overlay
BACKGROUND_NAMES = frozenset({"background", "__background__", "_background_", "bg"})

#: (stamp ns, frame_id): how a result names its source frame and payload
FrameKey = tuple[int, str]


@dataclass(frozen=True, slots=True)
class Detection:
    """One detection of a job, its box in the source frame's pixels."""

    x1: float
    y1: float
    x2: float
    y2: float
    class_id: int
    class_name: str
    score: float


@dataclass(frozen=True, slots=True)
class DrawnBox:
    """A box as drawn: its rectangle in the picture's pixels (x1, y1, x2, y2, inclusive), colour and label."""

    rect: tuple[int, int, int, int]
    color: RGB
    label: str


@dataclass(frozen=True, slots=True)
class Picture:
    """One written picture and what is on it (the geometry in the picture's pixels)."""

    path: Path
    task: str
    job_id: int
    priority: str
    kind: str
    met: bool
    size: tuple[int, int]  # (width, height) of the PNG
    frame_rect: tuple[int, int, int, int]  # where the frame is: x0, y0, width, height
    scale: tuple[float, float]  # picture pixels per source pixel (x, y)
    boxes: tuple[DrawnBox, ...] = ()
    mask_classes: tuple[tuple[int, str, RGB], ...] = ()  # legend: class id, name, colour
    lines: tuple[str, ...] = ()  # the text above the frame
    notes: tuple[str, ...] = ()  # what could not be drawn

    @property
    def status(self) -> str:
        return "MET" if self.met else "MISSED"

    @property
    def caption(self) -> str:
        return " - ".join(self.lines[:2])


@dataclass(slots=True)
class PictureSet:
    """The pictures of a report and, when there are fewer than asked for, why."""

    pictures: list[Picture] = field(default_factory=list)
    source: str = ""  # where the frames came from
    note: str = ""


def class_color(class_id: int) -> RGB:
    """A distinct colour per class id (golden-ratio hues), the same in every picture; no red hue (red is a miss)."""
    hue = 0.08 + 0.84 * ((class_id * 0.618033988749895 + 0.13) % 1.0)
    r, g, b = colorsys.hsv_to_rgb(hue, 0.8, 0.95)
    return round(r * 255), round(g * 255), round(b * 255)


def _font(size: int = FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # an old Pillow or one without FreeType: the fixed bitmap font
        return ImageFont.load_default()


# -- choosing the jobs ------------------------------------------------------------------------------------
def spread(rows: Sequence[ResultRecord], count: int) -> list[ResultRecord]:
    """``count`` of ``rows`` evenly spaced (first and last included), in their order."""
    if count <= 0 or not rows:
        return []
    if count >= len(rows):
        return list(rows)
    if count == 1:
        return [rows[len(rows) // 2]]
    return [rows[round(i * (len(rows) - 1) / (count - 1))] for i in range(count)]


def select_jobs(results: Mapping[str, Sequence[ResultRecord]], count: int,
                has_frame: Callable[[ResultRecord], bool] = lambda _r: True) -> list[ResultRecord]:
    """Up to ``count`` jobs with a frame: the HP misses first (up to half of ``count``, rounded up, spread over
    the run), then the rest shared out over the tasks as evenly as they have jobs, each task's spread over its
    run. Ordered by release time."""
    eligible = {task: sorted((r for r in rows if has_frame(r)), key=lambda r: r.release_ns)
                for task, rows in results.items()}
    hp_missed = sorted((r for rows in eligible.values() for r in rows if r.priority == "HP" and not r.met),
                       key=lambda r: r.release_ns)
    chosen = spread(hp_missed, min(len(hp_missed), -(-count // 2)))
    taken = {(r.task, r.job_id) for r in chosen}
    left = {task: [r for r in rows if (r.task, r.job_id) not in taken] for task, rows in eligible.items()}
    quota = dict.fromkeys(left, 0)
    remaining = count - len(chosen)
    while remaining > 0:  # one more for each task that still has jobs, in turn
        grew = False
        for task, rows in left.items():
            if remaining > 0 and quota[task] < len(rows):
                quota[task] += 1
                remaining -= 1
                grew = True
        if not grew:
            break
    for task, rows in left.items():
        chosen.extend(spread(rows, quota[task]))
    return sorted(chosen, key=lambda r: (r.release_ns, r.task))


# -- where the frames are ---------------------------------------------------------------------------------
@dataclass(slots=True)
class FrameIndex:
    """The camera frames of one bag: (stamp, frame_id) -> the camera topics (as the node saw them) that
    carry such a frame; ``bag_topic`` maps them back to the bag's topic names (a replay's remap)."""

    bag: Path
    label: str
    frames: dict[FrameKey, list[str]] = field(default_factory=dict)
    bag_topic: dict[str, str] = field(default_factory=dict)  # camera topic -> topic in the bag

    def camera_topic(self, job: ResultRecord, task_topics: Mapping[str, str]) -> str | None:
        """The camera topic whose frame is ``job``'s: its task's, else any with that stamp and frame_id."""
        topics = self.frames.get((job.stamp_ns, job.frame_id))
        if not topics:
            return None
        wanted = task_topics.get(job.task)
        return wanted if wanted in topics else topics[0]


def _abs(topic: str) -> str:
    return topic if topic.startswith("/") else "/" + topic


def task_camera_topics(run: RunData) -> dict[str, str]:
    """Task -> its camera topic (absolute), from the last stats message, else the replay metadata."""
    topics = {str(k): _abs(str(v)) for k, v in ((run.replay or {}).get("task_topics") or {}).items()}
    for snap in run.stats[-1:]:
        topics.update({name: _abs(t.topic) for name, t in snap.tasks.items() if t.topic})
    return topics


def _index_of_inputs(run: RunData) -> FrameIndex:
    index = FrameIndex(run.path, "the output bag (recorded camera topics)")
    for topic, frames in run.inputs.items():
        index.bag_topic[topic] = topic
        for f in frames:
            index.frames.setdefault((f.stamp_ns, f.frame_id), []).append(topic)
    return index


def _index_of_bag(bag: Path, remap: Mapping[str, str], label: str) -> FrameIndex:
    index = FrameIndex(bag, label)
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.msgtype in IMAGE_TYPES]
        for conn in conns:
            index.bag_topic[_abs(remap.get(conn.topic, conn.topic))] = conn.topic
        for conn, _log_ns, raw in reader.messages(connections=conns):
            header = cdr_header(raw)
            if header is not None:
                index.frames.setdefault(header, []).append(_abs(remap.get(conn.topic, conn.topic)))
    return index


def find_frames(run: RunData, frames_bag: Path | None = None) -> tuple[FrameIndex | None, str]:
    """The camera frames for the pictures: ``frames_bag``, else the output bag's recorded cameras, else the
    replay's input bag (when it exists). ``(None, why)`` when there are none."""
    replay = run.replay or {}
    remap = {str(k): str(v) for k, v in (replay.get("remap") or {}).items()}
    if frames_bag is not None:
        return _index_of_bag(Path(frames_bag), remap, f"{frames_bag} (--frames)"), ""
    if run.inputs:
        return _index_of_inputs(run), ""
    input_bag = replay.get("input_bag")
    if input_bag and (Path(input_bag) / "metadata.yaml").is_file():
        return _index_of_bag(Path(input_bag), remap, f"the replay's input bag {input_bag}"), ""
    where = f" (the replay's input bag {input_bag} is not there)" if input_bag else ""
    return None, ("No pictures: the output bag holds no camera frames" + where + ". Record them "
                  "(daris-replay --record-inputs yes, or the camera topics in ros2 bag record) or pass the input "
                  "bag: daris-report OUT_BAG --frames INPUT_BAG.")


# -- reading the selected messages ------------------------------------------------------------------------
def read_messages(bag: Path, topics: Iterable[str], keys: set[tuple[str, int, str]],
                  store: Typestore | None = None) -> dict[tuple[str, int, str], tuple[str, Any]]:
    """The messages of ``topics`` in ``bag`` whose (topic, stamp, frame_id) is in ``keys``, deserialised:
    key -> (msgtype, message). Only those are deserialised (the others' headers are read from the CDR)."""
    store = store or get_typestore()
    wanted_topics = set(topics)
    out: dict[tuple[str, int, str], tuple[str, Any]] = {}
    with Reader(bag) as reader:
        store = with_bag_types(store, reader.connections)  # (vision_msgs: from the definitions in the bag)
        conns = [c for c in reader.connections if c.topic in wanted_topics and c.msgtype in store.fielddefs]
        for conn, _log_ns, raw in reader.messages(connections=conns):
            header = cdr_header(raw)
            if header is None:
                continue
            key = (conn.topic, *header)
            if key in keys and key not in out:
                out[key] = (conn.msgtype, store.deserialize_cdr(raw, conn.msgtype))
    return out


def decode_frame(msgtype: str, msg: Any) -> np.ndarray:
    """A camera message (rosbags object) -> HxWx3 RGB uint8, by the node's own converters
    (:mod:`daris_ros.ros.conversion`: raw encodings by numpy, JPEG / PNG by Pillow)."""
    from daris_ros.ros.conversion import compressed_to_rgb, image_to_rgb

    if msgtype == COMPRESSED_TYPE:
        return np.asarray(compressed_to_rgb(msg))
    # the pixels as a memoryview (ndarray.data): the numpy path (cv_bridge, where installed, expects rclpy messages)
    view = SimpleNamespace(encoding=msg.encoding, height=msg.height, width=msg.width, step=msg.step,
                           is_bigendian=msg.is_bigendian, data=np.ascontiguousarray(msg.data).data)
    return np.asarray(image_to_rgb(view))


def decode_mask(msg: Any) -> np.ndarray:
    """A mono8 class mask (rosbags sensor_msgs/Image) -> H x W uint8 class ids (checked as a frame is)."""
    from daris_ros.ros.conversion import image_to_rgb

    if msg.encoding != "mono8":
        raise ValueError(f"a class mask is mono8, got {msg.encoding!r}")
    view = SimpleNamespace(encoding="mono8", height=msg.height, width=msg.width, step=msg.step,
                           is_bigendian=msg.is_bigendian, data=np.ascontiguousarray(msg.data).data)
    return np.ascontiguousarray(image_to_rgb(view)[:, :, 0])


def detections_of(msg: Any, names: Mapping[int, str] | None = None) -> list[Detection]:
    """A Detection2DArray (rosbags object; daris_ros's, or vision_msgs 4.x: hypothesis in ``results[i].hypothesis``,
    box centre in ``bbox.center.position``) -> detections (the best hypothesis of each); a missing class name is
    taken from ``names`` (the task's labels)."""
    out: list[Detection] = []
    for d in msg.detections:
        if not d.results:
            continue
        h = getattr(d.results[0], "hypothesis", d.results[0])
        centre = d.bbox.center.position if hasattr(d.bbox, "center") else None
        cx = float(centre.x) if centre is not None else float(d.bbox.center_x)
        cy = float(centre.y) if centre is not None else float(d.bbox.center_y)
        w, ht = float(d.bbox.size_x), float(d.bbox.size_y)
        class_id = int(h.class_id) if str(h.class_id).lstrip("-").isdigit() else -1
        name = str(getattr(h, "class_name", "")) or (names or {}).get(class_id, "") or str(h.class_id)
        out.append(Detection(cx - w / 2, cy - ht / 2, cx + w / 2, cy + ht / 2, class_id, name, float(h.score)))
    return out


# -- drawing ----------------------------------------------------------------------------------------------
def display_scale(width: int) -> float:
    """Picture pixels per frame pixel: small frames are enlarged to MIN_WIDTH, large ones reduced to MAX_WIDTH."""
    if width < MIN_WIDTH:
        return MIN_WIDTH / width
    if width > MAX_WIDTH:
        return MAX_WIDTH / width
    return 1.0


def timing_lines(job: ResultRecord, t0_ns: int | None = None) -> tuple[str, str, str]:
    """The text above a picture: who (task, job, priority, model, time into the run), its timing (response
    time against the deadline) and its status (MET, or MISSED and by how much)."""
    when = f"  t = {(job.release_ns - t0_ns) * 1e-9:.2f} s" if t0_ns is not None else ""
    model = job.model.replace("\\", "/").rsplit("/", 1)[-1]  # a model file: its name, not its path
    who = f"{job.task}  job {job.job_id}  {job.priority}  {model}{when}"
    late_ms = (job.finish_ns - job.deadline_ns) * 1e-6
    status = "MET" if job.met else (f"MISSED (+{late_ms:.1f} ms)" if late_ms > 0 else "MISSED")
    return who, f"response {job.response_time * 1e3:.1f} ms / deadline {job.deadline_s * 1e3:.1f} ms", status


def _is_background(name: str) -> bool:
    return name.strip().lower() in BACKGROUND_NAMES


def overlay_mask(frame: PILImage.Image, mask: np.ndarray, names: Mapping[int, str]
                 ) -> tuple[PILImage.Image, list[tuple[int, str, RGB]]]:
    """``frame`` with the class mask (stretched to it, nearest) blended in, and the legend: the classes present,
    largest first (background classes uncoloured and not listed)."""
    ids = np.asarray(PILImage.fromarray(mask).resize(frame.size, PILImage.Resampling.NEAREST))
    base = np.asarray(frame.convert("RGB")).astype(np.float32)
    out = base.copy()
    present, counts = np.unique(ids, return_counts=True)
    legend: list[tuple[int, str, RGB]] = []
    for class_id, _n in sorted(zip(present.tolist(), counts.tolist(), strict=True), key=lambda p: -p[1]):
        name = names.get(class_id, "")
        if _is_background(name):
            continue
        color = class_color(class_id)
        where = ids == class_id
        out[where] = (1 - MASK_ALPHA) * base[where] + MASK_ALPHA * np.array(color, np.float32)
        legend.append((class_id, name or f"class {class_id}", color))
    return PILImage.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8)), legend


def draw_picture(frame: np.ndarray, job: ResultRecord, path: Path, *, detections: Sequence[Detection] | None = None,
                 mask: np.ndarray | None = None, names: Mapping[int, str] | None = None, t0_ns: int | None = None,
                 notes: Sequence[str] = ()) -> Picture:
    """Draw ``job`` on its source ``frame`` (HxWx3 RGB uint8) and write the PNG ``path``: a text band on top
    (who, timing, MET / MISSED), the frame scaled by :func:`display_scale` with the boxes (source pixels)
    or the mask, a legend band for a mask, a red border around a missed job."""
    names = dict(names or {})
    src_h, src_w = int(frame.shape[0]), int(frame.shape[1])
    scale = display_scale(src_w)
    disp_w, disp_h = max(1, round(src_w * scale)), max(1, round(src_h * scale))
    sx, sy = disp_w / src_w, disp_h / src_h
    shown = PILImage.fromarray(np.ascontiguousarray(frame[:, :, :3]), "RGB").resize(
        (disp_w, disp_h), PILImage.Resampling.BILINEAR)
    legend: list[tuple[int, str, RGB]] = []
    if mask is not None:
        shown, legend = overlay_mask(shown, mask, names)
    font = _font()
    line_h = FONT_SIZE + 6
    who, timing, status = timing_lines(job, t0_ns)
    lines = [who, f"{timing}  {status}"]
    if job.kind == "detection":
        lines.append(f"{len(detections or ())} detection(s)" if detections is not None else "detections: not recorded")
    elif job.kind == "classification" and job.class_ids:
        tops = [f"{(job.class_names[i] if i < len(job.class_names) and job.class_names[i] else names.get(c, str(c)))}"
                f" {s:.2f}" for i, (c, s) in enumerate(zip(job.class_ids, job.scores, strict=False))][:3]
        lines.append("top: " + ", ".join(tops))
    lines.extend(notes)
    legend = legend[:MAX_LEGEND]
    legend_rows = -(-len(legend) // 3)
    width = disp_w + 2 * BORDER
    top = BORDER + len(lines) * line_h + 4
    height = top + disp_h + legend_rows * line_h + (4 if legend_rows else 0) + BORDER
    picture = PILImage.new("RGB", (width, height), BAND_RGB)
    status_color = MET_RGB if job.met else MISSED_RGB
    draw = ImageDraw.Draw(picture)
    if not job.met:
        draw.rectangle((0, 0, width - 1, height - 1), outline=MISSED_RGB, width=BORDER)
    for i, text in enumerate(lines):
        y = BORDER + 2 + i * line_h
        if i == 1:  # the timing line: the status in its colour
            draw.text((BORDER + 4, y), timing, fill=TEXT_RGB, font=font)
            x = BORDER + 4 + draw.textlength(timing + "  ", font=font)
            draw.text((x, y), status, fill=status_color, font=font)
        else:
            draw.text((BORDER + 4, y), text, fill=TEXT_RGB, font=font)
    x0, y0 = BORDER, top
    picture.paste(shown, (x0, y0))
    drawn: list[DrawnBox] = []
    for d in detections or ():
        rect = (x0 + min(max(round(d.x1 * sx), 0), disp_w - 1), y0 + min(max(round(d.y1 * sy), 0), disp_h - 1),
                x0 + min(max(round(d.x2 * sx), 0), disp_w - 1), y0 + min(max(round(d.y2 * sy), 0), disp_h - 1))
        if rect[2] < rect[0] or rect[3] < rect[1]:
            continue
        color = class_color(d.class_id)
        draw.rectangle(rect, outline=color, width=BOX_WIDTH)
        drawn.append(DrawnBox(rect, color, f"{d.class_name} {d.score:.2f}"))
    for box in drawn:  # the labels after every box, so no box covers a label
        left, top_px, right, bottom = draw.textbbox((0, 0), box.label, font=font)
        tw, th = right - left, bottom - top_px
        ty = box.rect[1] - th - 4 if box.rect[1] - th - 4 >= y0 else box.rect[1] + BOX_WIDTH
        tx = min(box.rect[0], x0 + disp_w - tw - 4)
        draw.rectangle((tx, ty, tx + tw + 4, ty + th + 3), fill=box.color)
        draw.text((tx + 2 - left, ty + 1 - top_px), box.label, fill=TEXT_RGB, font=font)
    for i, (_cid, name, color) in enumerate(legend):
        lx = BORDER + 4 + (i % 3) * (disp_w // 3)
        ly = top + disp_h + 4 + (i // 3) * line_h
        draw.rectangle((lx, ly + 2, lx + 12, ly + 14), fill=color, outline=TEXT_RGB)
        draw.text((lx + 18, ly), name, fill=TEXT_RGB, font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, format="PNG")
    return Picture(path=path, task=job.task, job_id=job.job_id, priority=job.priority, kind=job.kind, met=job.met,
                   size=(width, height), frame_rect=(x0, y0, disp_w, disp_h), scale=(sx, sy), boxes=tuple(drawn),
                   mask_classes=tuple(legend), lines=tuple(lines), notes=tuple(notes))


# -- a report's pictures ----------------------------------------------------------------------------------
def picture_name(job: ResultRecord) -> str:
    return f"frame_{re.sub(r'[^A-Za-z0-9_.-]', '_', job.task)}_{job.job_id}.png"


def task_labels(run: RunData) -> dict[str, dict[int, str]]:
    """Task -> class names, from the recorded LabelInfo: the topic the replay metadata names for the task,
    else ``labels`` next to the task's result topic (``daris/<task>/labels``)."""
    named = {str(k): _abs(str(v)) for k, v in ((run.replay or {}).get("labels_topics") or {}).items()}
    out: dict[str, dict[int, str]] = {}
    for task, rows in run.results.items():
        topic = named.get(task) or (rows[0].topic.rsplit("/", 1)[0] + "/labels" if rows else "")
        if topic in run.labels:
            out[task] = run.labels[topic]
    return out


def make_pictures(run: RunData, out_dir: Path, count: int = DEFAULT_PICTURES, *, frames_bag: Path | None = None,
                  t0_ns: int | None = None, store: Typestore | None = None) -> PictureSet:
    """Draw up to ``count`` jobs of ``run`` into ``out_dir`` (``frame_<task>_<job>.png``). A bag that cannot be
    read gives a note, not an error: the rest of the report does not depend on the pictures."""
    try:
        return _make_pictures(run, out_dir, count, frames_bag, t0_ns, store or get_typestore())
    except (OSError, ReaderError, KeyError) as exc:
        return PictureSet(note=f"No pictures: cannot read the frames or payloads: {type(exc).__name__}: {exc}")


def _make_pictures(run: RunData, out_dir: Path, count: int, frames_bag: Path | None, t0_ns: int | None,
                   store: Typestore) -> PictureSet:
    if count <= 0:
        return PictureSet(note="")
    if not run.all_results():
        return PictureSet(note="No pictures: the bag holds no results.")
    index, why = find_frames(run, frames_bag)
    if index is None:
        return PictureSet(note=why)
    cameras = task_camera_topics(run)
    jobs = select_jobs(run.results, count, lambda r: index.camera_topic(r, cameras) is not None)
    if not jobs:
        return PictureSet(source=index.label, note=f"No pictures: no result's header.stamp and frame_id is that of a "
                                                   f"camera frame in {index.label}.")
    frame_keys: dict[tuple[str, int], tuple[str, int, str]] = {}
    for job in jobs:
        topic = index.camera_topic(job, cameras)
        frame_keys[(job.task, job.job_id)] = (index.bag_topic.get(topic or "", topic or ""), job.stamp_ns, job.frame_id)
    frames = read_messages(index.bag, {k[0] for k in frame_keys.values()}, set(frame_keys.values()), store)
    payload_keys = {(j.payload_topic, j.stamp_ns, j.frame_id) for j in jobs if j.payload_topic}
    payloads = read_messages(run.path, {k[0] for k in payload_keys}, payload_keys, store) if payload_keys else {}
    labels = task_labels(run)
    out = PictureSet(source=index.label)
    skipped: list[str] = []
    for job in jobs:
        found = frames.get(frame_keys[(job.task, job.job_id)])
        if found is None:
            skipped.append(f"{job.task} job {job.job_id}: frame not readable")
            continue
        try:
            frame = decode_frame(*found)
        except ValueError as exc:  # FrameError: a malformed frame (the node dropped it too)
            skipped.append(f"{job.task} job {job.job_id}: {exc}")
            continue
        names = labels.get(job.task, {})
        detections: list[Detection] | None = None
        mask: np.ndarray | None = None
        notes: list[str] = []
        payload = payloads.get((job.payload_topic, job.stamp_ns, job.frame_id)) if job.payload_topic else None
        if job.kind in ("detection", "segmentation") and payload is None:
            notes.append(f"{job.kind} payload not in the bag" + (f" ({job.payload_topic})" if job.payload_topic
                                                                   else " (the job failed)"))
        elif payload is not None and payload[0] in DETECTIONS_TYPES:
            detections = detections_of(payload[1], names)
        elif payload is not None and payload[0] == IMAGE_TYPE:
            try:
                mask = decode_mask(payload[1])
            except ValueError as exc:
                notes.append(f"mask not drawn: {exc}")
        out.pictures.append(draw_picture(frame, job, out_dir / picture_name(job), detections=detections, mask=mask,
                                         names=names, t0_ns=t0_ns, notes=notes))
    if skipped:
        out.note = "Not drawn: " + "; ".join(skipped) + "."
    return out


__all__ = ["DEFAULT_PICTURES", "Detection", "DrawnBox", "Picture", "PictureSet", "class_color", "decode_frame",
           "decode_mask", "detections_of", "draw_picture", "find_frames", "make_pictures", "select_jobs", "spread",
           "timing_lines"]
