"""The daris_ros scheduler node: camera topics in, InferenceResult / stats / diagnostics out, and per task the
perception outputs of its model's kind: detections (Detection2DArray, boxes in the source image's pixels), the
class mask (sensor_msgs/Image mono8) and the class names (LabelInfo, latched); README.md, "Perception outputs".

A managed (lifecycle) node. configure: read and validate parameters -> load models (resident in every context)
-> profile the initial AFET -> offline phase (Algorithm 1) -> start the engine's loop, releases paused ->
feasibility check. activate: subscribe to the cameras, release. deactivate: unsubscribe, stop releasing, wait
for the jobs in flight and their results. cleanup: close the engine (loop, workers, backend). shutdown: the
same, from any state. With ``autostart`` (the default) :func:`main` configures and activates at once, so the
executable is one command as before; ``autostart: false`` waits unconfigured for a lifecycle manager
(README.md, "Lifecycle").

The feasibility check (daris_ros.core.feasibility) logs one line per context: its HP utilization (eq. 4)
against N_s, its LP utilization (eq. 5) and the LP share left (eq. 11). HP over N_s in a context (or an HP task
whose AFET exceeds its deadline) fails configure with ``feasibility: refuse`` (the default) and is a WARN with
``feasibility: warn``; LP over-subscription is a WARN with the expected rejection rate. /diagnostics carries the
figures, re-evaluated from the live MRETs at every stats period.

The node is a thin adapter around :class:`~daris_ros.runtime.engine.Engine`, which owns the policy core, the
backend and the release clock in one thread. A camera subscription (``raw=True``) only reads the frame's header
fields (:func:`~daris_ros.ros.cdr_frames.parse_frame`: stamp, frame_id, sizes, encoding or format; no pixel is
decoded or copied on the executor thread), checks them, and puts the frame in the engine's inbox, which keeps the
newest frame per camera. A malformed frame is counted per task and reason and dropped. The engine releases every
task at its period from its own clock, decodes the frames of a release burst together (nvJPEG on str/green) and
preprocesses them as a batch; a decoding error found then is counted as a drop too. A period with no new frame is
counted as stale. Per task, always: ``frames == released + superseded + dropped + pending``. Results are handed out
by the engine and published by a publisher thread of the node; statistics come from snapshots the engine takes in
its loop.

SIGINT/SIGTERM at any phase (loading, profiling, running) stop the node cleanly with exit code 0, and so does the
shutdown transition. A failed autostart exits 2 for an invalid parameter or an infeasible HP task set with
``feasibility: refuse``, 3 when the backend cannot run (BackendError) or the GPU ran out of memory while starting;
in every case the engine and its workers are closed first (no half-started node).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions, install_signal_handlers
from rclpy.task import Future
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from daris_ros.core import FeasibilityReport, InfeasibleTaskSet
from daris_ros.msg import Detection2DArray, InferenceResult, LabelInfo, SchedulerStats
from daris_ros.parameter_table import parameter_of, parse_value
from daris_ros.ros.cdr_frames import RawFrame, RosFrameDecoder, StampHeader, parse_frame
from daris_ros.ros.conversion import FrameError
from daris_ros.ros.frame_checks import FrameChecks, check_frame
from daris_ros.ros.intake import FrameIntake, intake_supported
from daris_ros.ros.intake_process import CameraSubscription, ProcessIntake
from daris_ros.ros.messages import (
    DiagnosticThresholds,
    detection_array_msg,
    diagnostic_array,
    label_info_msg,
    lifecycle_diagnostic,
    mask_msg,
    transition_diagnostic,
)
from daris_ros.ros.node_stats import StatsReport
from daris_ros.ros.param_file import check_node_arguments
from daris_ros.ros.parameters import (
    RUNTIME_TASK_FIELDS,
    TASK_PARAMS,
    declare_and_read,
    declare_task_parameter,
    declared_value,
)
from daris_ros.ros.result_cdr import serialize_result
from daris_ros.ros.shutdown_race import stopped_by_signal
from daris_ros.ros.transition_heartbeat import TransitionHeartbeat
from daris_ros.ros.vision import vision_detection_array, vision_label_info, vision_msgs_available
from daris_ros.runtime.backends import BackendError
from daris_ros.runtime.driver import drain
from daris_ros.runtime.engine import Engine, JobResult, summarize_afet
from daris_ros.runtime.memory import is_cuda_oom, release_device_memory
from daris_ros.runtime.throttled_log import ThrottledLog
from daris_ros.settings import TASK_FIELDS, ConfigError, TaskSettings, validate_task

#: deactivate waits this long (at least 3 deadlines of the longest task) for the jobs in flight to finish.
DRAIN_TIMEOUT = 10.0
MASK_SUBSCRIBERS_PERIOD = 0.5  # s between checks of who reads the mask topics (_check_mask_subscribers)
INFEASIBLE_HINT = "lower the HP rates, add contexts or streams, or set feasibility: warn to run anyway"


class StartupInterrupted(BaseException):
    """SIGINT/SIGTERM while the node was still starting (loading models, profiling)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.phase = "init"


#: The labels topic's QoS: latched (a subscriber that comes later gets the last message), one message.
LABELS_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                        reliability=ReliabilityPolicy.RELIABLE)


@dataclass(slots=True)
class _TaskState:
    settings: TaskSettings
    publisher: Any  # InferenceResult
    msg_type: Any = Image
    kind: str = "classification"  # the model's
    class_names: tuple[str, ...] = ()
    payload_publisher: Any = None  # detection: detections topic; segmentation: mask topic
    labels_publisher: Any = None
    payload_topic: str = ""  # the resolved name of the topic a job's payload goes to
    subscription: Any = None


class SchedulerNode(LifecycleNode):
    """One scheduler node owns one device (``device`` parameter) and all its camera tasks; a managed node.

    ``unconfigured``: parameters declared (and settable), nothing loaded. ``configure``: parameters validated,
    models loaded, AFET profiled, offline phase, the engine's loop started with its releases paused, feasibility
    checked, result publishers created. ``activate``: camera subscriptions, releases start. ``deactivate``:
    subscriptions gone, releases stopped, jobs in flight finish and their results are published. ``cleanup``:
    the engine, its workers and the backend (the MPS daemon if this node started it) closed, device memory
    released. ``shutdown`` (from any of them): the same as cleanup, then :attr:`finished` is done.
    A transition that fails logs why (naming the parameter of a ConfigError), keeps it in
    :attr:`transition_error` and leaves the node where it was (configure: unconfigured, nothing held).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("daris_scheduler", **kwargs)
        self._heartbeat: TransitionHeartbeat | None = None  # (created with the publishers, below)
        self._phase = "unconfigured"
        self._engine: Engine | None = None
        self._vision_msgs = False  # detections and labels as vision_msgs types (perception_msgs; set by configure)
        self._lifecycle_state = "unconfigured"
        self.transition_error: BaseException | None = None  # why the last transition failed (None: it succeeded)
        self.finished: Future = Future()  # done once the node is shut down (finalized)
        self._tasks: dict[str, _TaskState] = {}
        self._pending: set[str] = set()  # added to task_names, waiting for valid tasks.<name>.* values
        self._active = False
        self._drop_log = ThrottledLog()  # frame-drop warnings: per task and reason
        self._results: collections.deque[JobResult] = collections.deque()
        self._results_ready = threading.Event()
        self._results_queued = 0  # results handed out by the engine ...
        self._results_handled = 0  # ... and taken by the publisher thread (published, or dropped: task gone)
        self._publishing = False
        self._publisher_thread: threading.Thread | None = None
        self._intake: FrameIntake | None = None  # the camera frames' thread (intake_thread)
        self._intake_unsupported_said = False
        self._intake_processes: ProcessIntake | None = None  # the camera frames' processes (intake_processes)
        self._frame_checks = FrameChecks(0, 0.0, 0.0)  # (set by configure)
        self._parameter_callbacks = False  # live-tuning callbacks registered (configured states)
        self._feasibility_at_start: FeasibilityReport | None = None
        self._started = time.monotonic()
        self._report: StatsReport | None = None  # one per configure
        self._destroyed = False
        try:  # declared now, so that they can be set before configure; validated by configure
            declare_and_read(self, known_models=None)
        except ConfigError:
            pass  # configure declares the rest and fails naming the parameter
        self.autostart: bool = bool(self.get_parameter("autostart").value) if self.has_parameter("autostart") \
            else True
        self._stats_pub = self.create_publisher(SchedulerStats, "daris/stats", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        period = self.get_parameter("stats_period").value if self.has_parameter("stats_period") else 1.0
        self._stats_timer = self.create_timer(float(period), self._publish_stats)
        self._heartbeat = TransitionHeartbeat(self._publish_transition_status, float(period))

    @property
    def engine(self) -> Engine:
        """The engine (configured states only)."""
        if self._engine is None:
            raise RuntimeError("the scheduler node is not configured")
        return self._engine

    @property
    def _phase(self) -> str:
        """What the node is doing (a transition's step, or the state it rests in): logged with a failure, and on
        /diagnostics while a transition runs."""
        return self._phase_name

    @_phase.setter
    def _phase(self, name: str) -> None:
        self._phase_name = name
        if self._heartbeat is not None:
            self._heartbeat.phase(name)

    @property
    def lifecycle_state(self) -> str:
        """unconfigured, inactive, active or finalized (the primary state the last transition left)."""
        return self._lifecycle_state

    # -- lifecycle transitions ------------------------------------------------------------------------
    def bring_up(self) -> None:
        """configure, then activate (``autostart``, the plain executable's start-up); raises what made a
        transition fail (ConfigError, InfeasibleTaskSet, BackendError, StartupInterrupted...)."""
        for trigger in (self.trigger_configure, self.trigger_activate):
            if trigger() != TransitionCallbackReturn.SUCCESS:
                raise self.transition_error or RuntimeError(f"{trigger.__name__} failed")

    def _transition(self, name: str, work: Callable[[], str], undo: Callable[[], object] | None = None
                    ) -> TransitionCallbackReturn:
        """Run ``work`` (it returns the state reached); on any exception log it, keep it, ``undo`` and fail."""
        self.transition_error = None
        assert self._heartbeat is not None
        self._heartbeat.begin(name, "started")
        try:
            return self._run_transition(name, work, undo)
        finally:
            self._heartbeat.end()
            self._publish_status_now()

    def _run_transition(self, name: str, work: Callable[[], str], undo: Callable[[], object] | None
                        ) -> TransitionCallbackReturn:
        try:
            self._lifecycle_state = work()
        except BaseException as exc:  # noqa: BLE001 - SIGINT/SIGTERM in start-up (StartupInterrupted) included
            try:
                exc.daris_phase = self._phase  # type: ignore[attr-defined]
            except AttributeError:
                pass
            if isinstance(exc, StartupInterrupted):
                exc.phase = self._phase
            self.transition_error = exc
            self.get_logger().error(f"{name} failed ({self._phase}): {_describe(exc)}")
            if undo is not None:
                try:
                    undo()
                except Exception as undo_exc:  # noqa: BLE001 - the first error is the one to report
                    self.get_logger().error(f"{name}: undoing it failed too: {_describe(undo_exc)}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("configure", self._configure, undo=self._release)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("activate", self._activate, undo=self._stop_releases)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("deactivate", self._deactivate)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("cleanup", self._cleanup)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        def shutdown() -> str:
            self._release()
            self.get_logger().info(f"shut down (from {state.label})")
            return "finalized"
        result = self._transition("shutdown", shutdown)
        if not self.finished.done():
            self.finished.set_result(True)
        return result

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised (it was not caught): release everything and go back to unconfigured."""
        self.get_logger().error(f"error in a transition from {state.label}: releasing everything")

        def release_all() -> str:
            self._release()
            return "unconfigured"
        return self._transition("error processing", release_all)

    def _configure(self) -> str:
        self._phase = "parameters"
        self.settings = declare_and_read(self, known_models=None)
        _check_models(self.settings)
        self._vision_msgs = _use_vision_msgs(self.settings.perception_msgs)
        if not self.settings.tasks:
            self.get_logger().warning(
                "no camera tasks configured (task_names is empty). If a parameter file was given, does its top "
                f"key match this node ({self.get_fully_qualified_name()})? Use '/**/daris_scheduler:' to match "
                "any namespace.")
        s = self.settings
        self._report = StatsReport(s, started=self._started)
        self._frame_checks = FrameChecks(s.max_pixels, s.stamp_future_tolerance, s.stamp_past_tolerance)
        self._load_and_profile(s)

        self._phase = "starting"
        self.engine.pause_releases()  # the loop runs from now on; releases start at activate
        for t in s.tasks:
            self._start_task(t)
        self._start_publisher_thread()
        self.engine.start()
        self._phase = "feasibility"
        self._feasibility_at_start = self._check_feasibility()
        self._restart_stats_timer(s.stats_period)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._parameter_callbacks = True
        self._phase = "inactive"
        self.get_logger().info(f"configured (inactive): {len(s.tasks)} task(s), releases start at activate")
        return "inactive"

    def _activate(self) -> str:
        self._phase = "activating"
        # Subscribe now: models are loaded and profiled, so the first release can run at once.
        for st in self._tasks.values():
            self._subscribe(st.settings)
        self.engine.resume_releases()
        self._active = True
        self._phase = "running"
        self.get_logger().info(
            "running: " + ", ".join(f"{st.settings.name}({st.settings.priority} {st.settings.rate:g} Hz "
                                    f"{st.settings.model} <- {st.settings.topic})" for st in self._tasks.values()))
        return "active"

    def _deactivate(self) -> str:
        self._phase = "deactivating"
        dropped = self._stop_releases()
        timeout = max(DRAIN_TIMEOUT, 3 * max((st.settings.deadline for st in self._tasks.values()), default=0.0))
        try:
            drain(self.engine, timeout)
        except TimeoutError as exc:
            self.get_logger().warning(f"deactivate: {exc} within {timeout:g} s; their results follow when they do")
        self._wait_results_published(timeout)
        self._phase = "inactive"
        self.get_logger().info(f"deactivated (inactive): releases stopped, jobs in flight finished and published"
                               f"{f', {dropped} frame(s) waiting for a release dropped (inactive)' if dropped else ''}")
        return "inactive"

    def _stop_releases(self) -> int:
        """Camera subscriptions gone and the engine's releases paused (jobs in flight run on); returns the frames
        that were waiting for a release (dropped, counted as ``inactive``)."""
        self._active = False
        for st in self._tasks.values():
            self._unsubscribe(st)
        return self._engine.pause_releases() if self._engine is not None else 0

    def _cleanup(self) -> str:
        self._phase = "cleaning up"
        self._release()
        self.get_logger().info("cleaned up (unconfigured): engine, workers and backend closed")
        return "unconfigured"

    def _release(self) -> None:
        """Back to nothing held: subscriptions, parameter callbacks, result publishers and their thread, the
        engine (its loop, workers, backend, the MPS daemon if started here) and the device memory. Idempotent."""
        self._stop_releases()
        if self._parameter_callbacks:  # (unconfigured: values are checked by the next configure)
            self.remove_on_set_parameters_callback(self._validate_parameters)
            self.remove_post_set_parameters_callback(self._apply_parameters)
            self._parameter_callbacks = False
        self._stop_publisher_thread()
        for name in list(self._tasks):
            self._stop_task(name)
        intake, self._intake = self._intake, None
        if intake is not None:
            intake.close()
        processes, self._intake_processes = self._intake_processes, None
        if processes is not None:
            processes.close()
        self._pending.clear()
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()
            del engine
            release_device_memory()
        self._feasibility_at_start = None
        self._phase = "unconfigured"

    def _start_publisher_thread(self) -> None:
        self._results.clear()
        self._results_queued = self._results_handled = 0
        self._publishing = True
        self._publisher_thread = threading.Thread(target=self._publish_results, name="daris-results", daemon=True)
        self._publisher_thread.start()

    def _stop_publisher_thread(self) -> None:
        self._publishing = False
        self._results_ready.set()
        thread, self._publisher_thread = self._publisher_thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)

    def _wait_results_published(self, timeout: float) -> None:
        t_end = time.monotonic() + timeout
        while self._results_handled < self._results_queued and time.monotonic() < t_end:
            time.sleep(0.01)

    def _restart_stats_timer(self, period: float) -> None:
        self.destroy_timer(self._stats_timer)
        self._stats_timer = self.create_timer(period, self._publish_stats)

    def _load_and_profile(self, s: Any) -> None:
        self._phase = "loading"  # (creating the backend included: devices, MPS daemon, worker processes)
        # JPEG on the GPU where the backend runs in this process on one (str, green); else Pillow on the host
        device = "cpu"
        if s.gpu_decode and s.backend in ("str", "green"):
            device = "cuda" if s.device in ("", "cpu") else s.device
        # the engine's clock: monotonic, or under use_sim_time the node's clock (/clock), so releases follow it
        self._engine_clock: Callable[[], float] = time.monotonic
        if self.get_parameter("use_sim_time").value:
            ros_clock = self.get_clock()
            self._engine_clock = lambda: ros_clock.now().nanoseconds * 1e-9
        decoder = RosFrameDecoder(s.max_pixels, device, threads=s.decode_threads)
        self._engine = Engine(s, on_result=self._on_result, decoder=decoder, clock=self._engine_clock)
        self.get_logger().info(
            f"loading {len({t.model for t in s.tasks})} model(s) for {len(s.tasks)} task(s) on "
            f"{s.backend}/{s.device}, policy {s.policy} {s.n_contexts}x{s.n_streams} OS={s.oversubscription}")
        started = time.monotonic()
        self.engine.load_models()
        loaded = time.monotonic()
        self._phase = "profiling"
        self.get_logger().info(
            f"loaded in {loaded - started:.1f} s (models, backend, CUDA graphs); profiling the initial AFET "
            f"({s.profile_runs} run(s) per stage, {self.engine.afet_mode()})")
        afet = self.engine.profile()
        self.get_logger().info(f"profiled AFET per stage in {time.monotonic() - loaded:.1f} s: {summarize_afet(afet)}")
        self._phase = "starting"

    def _check_feasibility(self) -> FeasibilityReport:
        """After the offline phase: log each context's figures; HP over N_s (or an HP task whose AFET exceeds its
        deadline) raises :class:`InfeasibleTaskSet` with ``feasibility: refuse``, else a WARN; LP over-subscription
        is a WARN with the expected rejection rate."""
        report = self.engine.feasibility()
        log = self.get_logger()
        for line in report.lines():
            log.info(f"feasibility: {line}")
        if report.lp_oversubscribed:
            log.warning(f"LP over-subscribed: {report.lp_problems()}")
        if not report.feasible:
            if self.settings.feasibility == "refuse":
                raise InfeasibleTaskSet(report)
            fate = "HP jobs will be rejected (hp_admission)" if self.settings.hp_admission else \
                "HP deadlines will be missed"
            log.warning(f"infeasible HP task set, running anyway (feasibility: warn): {report.hp_problems()}; {fate}")
        return report

    def _start_task(self, t: TaskSettings) -> None:
        """The publishers of one task (its camera subscription follows once the engine runs): InferenceResult;
        by the model's kind, the detections (Detection2DArray) or the mask (sensor_msgs/Image mono8); and the
        latched labels (LabelInfo), published now."""
        msg_type = CompressedImage if t.input_type == "compressed" else Image
        st = _TaskState(settings=t, publisher=self.create_publisher(InferenceResult, t.output_topic, 10),
                        msg_type=msg_type, kind=self.engine.kind_of(t.name),
                        class_names=self.engine.class_names(t.name))
        self._tasks[t.name] = st
        st.payload_topic = st.publisher.topic_name
        if st.kind == "detection":
            st.payload_publisher = self.create_publisher(self._detections_type(), t.detections_topic, 10)
        elif st.kind == "segmentation":
            st.payload_publisher = self.create_publisher(Image, t.mask_topic, 10)
        if st.payload_publisher is not None:
            st.payload_topic = st.payload_publisher.topic_name
        st.labels_publisher = self.create_publisher(self._labels_type(), t.labels_topic, LABELS_QOS)
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id="")
        threshold = t.score_threshold if st.kind == "detection" else 0.0
        st.labels_publisher.publish(vision_label_info(header, st.class_names, threshold) if self._vision_msgs
                                    else label_info_msg(header, st.class_names, threshold))

    def _detections_type(self) -> Any:
        if self._vision_msgs:
            from vision_msgs.msg import Detection2DArray as VisionDetection2DArray

            return VisionDetection2DArray
        return Detection2DArray

    def _labels_type(self) -> Any:
        if self._vision_msgs:
            from vision_msgs.msg import LabelInfo as VisionLabelInfo

            return VisionLabelInfo
        return LabelInfo

    def _subscribe(self, t: TaskSettings) -> None:
        qos = QoSProfile(
            depth=t.qos_depth, history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.VOLATILE,
            reliability=ReliabilityPolicy.RELIABLE if t.qos_reliability == "reliable"
            else ReliabilityPolicy.BEST_EFFORT)
        st = self._tasks[t.name]
        compressed = t.input_type == "compressed"

        def on_frame(raw: bytes, name: str = t.name, jpeg_or_png: bool = compressed) -> None:
            self._on_frame(name, jpeg_or_png, raw)

        # raw: only the header fields are read here (parse_frame); the engine decodes the pixels at release
        processes = self._camera_processes()
        if processes is not None:
            processes.subscribe(t.name, CameraSubscription(self.resolve_topic_name(t.topic), compressed, t.qos_depth,
                                                           t.qos_reliability == "reliable"))
            st.subscription = processes
            return
        intake = self._camera_intake()
        st.subscription = (intake.subscribe(st.msg_type, t.topic, on_frame, qos) if intake is not None
                           else self.create_subscription(st.msg_type, t.topic, on_frame, qos, raw=True))

    def _camera_processes(self) -> ProcessIntake | None:
        """The processes that take the camera frames (``intake_processes`` > 0; started at the first subscription),
        or None: this process takes them."""
        n = self.settings.intake_processes
        if self._intake_processes is None and n > 0:
            self._intake_processes = ProcessIntake(
                processes=n, node_name=self.get_name(), namespace=self.get_namespace(),
                sim_time=bool(self.get_parameter("use_sim_time").value), checks=self._frame_checks,
                on_frame=self._on_process_frame, on_drop=self._on_process_drop, on_error=self.get_logger().error)
            self.get_logger().info(f"intake_processes: camera frames are taken by {n} process(es) "
                                   f"{self.get_name()}_intake_<k>")
        return self._intake_processes

    def _camera_intake(self) -> FrameIntake | None:
        """The thread that takes the camera frames (``intake_thread``; made at the first subscription), or None:
        the executor takes them."""
        if self._intake is None and self.settings.intake_thread:
            if intake_supported(self):
                self._intake = FrameIntake(self)
                self.get_logger().info("intake_thread: camera frames are taken by the thread daris-intake")
            elif not self._intake_unsupported_said:
                self._intake_unsupported_said = True
                self.get_logger().warning("intake_thread: this rclpy cannot take subscriptions off the executor; "
                                          "the executor takes the camera frames")
        return self._intake

    def _unsubscribe(self, st: _TaskState) -> None:
        if st.subscription is None:
            return
        if isinstance(st.subscription, ProcessIntake):
            st.subscription.unsubscribe(st.settings.name)
        elif self._intake is not None:
            self._intake.unsubscribe(st.subscription)
        else:
            self.destroy_subscription(st.subscription)
        st.subscription = None

    def _stop_task(self, name: str) -> None:
        st = self._tasks.pop(name)
        self._unsubscribe(st)
        for publisher in (st.publisher, st.payload_publisher, st.labels_publisher):
            if publisher is not None:
                self.destroy_publisher(publisher)

    # -- inputs -----------------------------------------------------------------------------------------
    def _on_frame(self, task: str, compressed: bool, raw: bytes) -> None:
        """Every received frame: its header read and checked (no pixel decoded), then into the engine's inbox."""
        st = self._tasks.get(task)
        if st is None:
            return
        receive = self._engine_clock()
        now_ns = self.get_clock().now().nanoseconds
        try:
            frame = check_frame(raw, compressed, self._frame_checks, now_ns)
        except FrameError as exc:
            self._drop(st, exc.reason, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - whatever a frame holds, the node keeps running
            self._drop(st, "invalid", f"{type(exc).__name__}: {exc}")
            return
        self._offer_frame(task, frame, receive, now_ns)

    def _on_process_frame(self, task: str, raw: memoryview, arrival: float, now_ns: int) -> None:
        """A frame an intake process took and checked (``arrival``: CLOCK_MONOTONIC, the engine's clock unless
        use_sim_time; ``now_ns``: that process's ROS clock at arrival)."""
        st = self._tasks.get(task)
        if st is None:
            return
        try:
            frame = parse_frame(raw, st.settings.input_type == "compressed")
        except FrameError as exc:  # (checked there: only a process of another version gets here)
            self._drop(st, exc.reason, str(exc))
            return
        self._offer_frame(task, frame, arrival if self._engine_clock is time.monotonic else now_ns * 1e-9, now_ns)

    def _on_process_drop(self, task: str, reason: str, why: str) -> None:
        st = self._tasks.get(task)
        if st is not None:
            self._drop(st, reason, why)

    def _offer_frame(self, task: str, frame: RawFrame, receive: float, now_ns: int) -> None:
        """Into the engine's inbox: ``receive`` on the engine's clock and ``now_ns`` on the node's, read together at
        arrival. Result times are anchored here (under use_sim_time both are the /clock time), and the image stamp
        is mapped onto the engine's clock."""
        h = frame.header
        offset_ns = now_ns - round(receive * 1e9)
        stamp = (h.sec * 1_000_000_000 + h.nanosec - offset_ns) * 1e-9
        self.engine.offer(task, frame, receive_time=receive, stamp=stamp, meta=(h, offset_ns), frame_id=h.frame_id)

    def _drop(self, st: _TaskState, reason: str, why: str) -> None:
        self.engine.inbox.drop(st.settings.name, reason)
        held_back = self._drop_log.admit((st.settings.name, reason))  # one line per task and reason per 5 s
        if held_back is not None:
            self.get_logger().warning(f"task {st.settings.name}: dropped a frame from {st.settings.topic} ({reason}): "
                                      f"{why}{self._drop_log.suffix(held_back)}")

    # -- outputs ----------------------------------------------------------------------------------------
    def _on_result(self, r: JobResult) -> None:
        """Called by the engine's loop: hand the result to the publisher thread."""
        self._results.append(r)
        self._results_queued += 1
        self._results_ready.set()

    def _publish_results(self) -> None:
        results = self._results
        subscribers_checked = -math.inf
        while self._publishing:
            self._results_ready.wait(0.1)
            self._results_ready.clear()
            if time.monotonic() - subscribers_checked >= MASK_SUBSCRIBERS_PERIOD:
                subscribers_checked = time.monotonic()
                self._check_mask_subscribers()
            while results:
                r = results.popleft()
                try:
                    self._publish_result(r)
                finally:
                    self._results_handled += 1

    def _check_mask_subscribers(self) -> None:
        """Masks are made only while someone reads them (the "lazy" publishing of image_transport): a
        segmentation task whose mask topic has no subscriber gets the summary only, and its InferenceResult says
        no payload was published (``payload_topic`` empty). A subscriber that arrives gets masks within
        MASK_SUBSCRIBERS_PERIOD."""
        engine = self._engine
        if engine is None:
            return
        for name, st in list(self._tasks.items()):
            if st.kind == "segmentation" and st.payload_publisher is not None:
                try:
                    engine.set_mask_wanted(name, st.payload_publisher.get_subscription_count() > 0)
                except Exception:  # noqa: BLE001 - a publisher destroyed under us (task removed): no mask to make
                    engine.set_mask_wanted(name, False)

    def _publish_result(self, r: JobResult) -> None:
        st = self._tasks.get(r.task)
        if st is None or not self.context.ok():  # (a signal shut the context down: the node is stopping)
            return
        try:
            header, offset_ns = r.meta  # (the frame's StampHeader: a message is built only for a payload)
            payload_topic = self._publish_payload(st, r, header)
            # (its CDR bytes written directly: a third of the interpreter time of building the message and
            # rclpy's conversion of it; ros/result_cdr.py)
            st.publisher.publish(serialize_result(r, header, offset_ns, payload_topic=payload_topic,
                                                  class_names=st.class_names))
        except Exception:  # noqa: BLE001 - a result that cannot be published must not stop the others
            if self.context.ok():
                self.get_logger().error(f"task {r.task}: publishing result {r.job_id} failed",
                                        throttle_duration_sec=5.0)

    def _publish_payload(self, st: _TaskState, r: JobResult, source: StampHeader) -> str:
        """Publish a detection's boxes or a segmentation's mask, with the source image's header, before its
        InferenceResult; returns the topic the payload went to ("" when the job failed: nothing published)."""
        if r.detections is not None:
            header = Header(stamp=Time(sec=source.sec, nanosec=source.nanosec), frame_id=source.frame_id)
            st.payload_publisher.publish(vision_detection_array(header, r.detections) if self._vision_msgs
                                         else detection_array_msg(header, r.detections, st.class_names))
        elif r.mask is not None:
            header = Header(stamp=Time(sec=source.sec, nanosec=source.nanosec), frame_id=source.frame_id)
            st.payload_publisher.publish(mask_msg(header, r.mask))
        elif st.kind != "classification" or r.error:
            return ""
        return st.payload_topic

    def _publish_transition_status(self, state: str, phase: str, elapsed: float) -> None:
        """/diagnostics while a transition runs (:class:`TransitionHeartbeat`'s thread, or the transition's)."""
        device = self.get_parameter("device").value if self.has_parameter("device") else ""
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id="")
        self._diag_pub.publish(diagnostic_array(header, [transition_diagnostic(
            self.get_fully_qualified_name(), str(device), state, phase, elapsed)]))

    def _publish_status_now(self) -> None:
        """The state a transition reached, on /daris/stats and /diagnostics at once (not at the next timer tick,
        so the last status a supervisor saw is never the transition's)."""
        try:
            self._publish_stats()
        except Exception as exc:  # noqa: BLE001 - the context going down (shutdown): nothing to tell
            if rclpy.ok():
                self.get_logger().warning(f"status after the transition not published: {_describe(exc)}")

    def _publish_stats(self) -> None:
        if self._engine is None or self._report is None:  # unconfigured: /diagnostics says so (and why the last
            # configure failed)
            device = self.get_parameter("device").value if self.has_parameter("device") else ""
            header = Header(stamp=self.get_clock().now().to_msg(), frame_id="")
            self._diag_pub.publish(diagnostic_array(header, [lifecycle_diagnostic(
                self.get_fully_qualified_name(), str(device), self._lifecycle_state,
                _describe(self.transition_error) if self.transition_error is not None else "")]))
            return
        if not self.engine.running:
            self.get_logger().error("the engine's loop stopped: no more results", throttle_duration_sec=5.0)
            return
        self.engine.refresh_unmeasured_afet()
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id="")
        stats, diagnostics = self._report.messages(
            self.engine.snapshot(), self.engine, {name: st.settings for name, st in self._tasks.items()},
            node=self.get_fully_qualified_name(), header=header, lifecycle_state=self._lifecycle_state,
            feasibility_at_start=self._feasibility_at_start)
        self._stats_pub.publish(stats)
        self._diag_pub.publish(diagnostics)

    # -- live tuning (ros2 param set) ----------------------------------------------------------------------
    def _task_values(self, name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        values = {}
        for f in TASK_FIELDS:
            full = f"tasks.{name}.{f}"
            if self.has_parameter(full):
                values[f] = declared_value(self, full)
        values.update(overrides or {})
        return values

    def _validate_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Check a set request before it is applied. rclpy itself refuses read-only parameters and values
        outside a descriptor's range; here: values, and task fields that need a restart."""
        def fail(reason: str) -> SetParametersResult:
            return SetParametersResult(successful=False, reason=reason)

        per_task: dict[str, dict[str, Any]] = {}
        for p in params:
            v = p.value
            entry = parameter_of(p.name)
            if entry is not None and not p.name.startswith("tasks."):
                try:  # the one parameter table's type, range and choices (rclpy checked the descriptor already)
                    parse_value(entry, v, p.name)
                except ConfigError as exc:
                    return fail(str(exc))
            if p.name == "task_names":
                names = list(v or [])
                if len(set(names)) != len(names):
                    return fail("task_names must be unique")
                bad = [n for n in names if not n or not n.replace("_", "").isalnum()]
                if bad:
                    return fail(f"task names must contain only letters, digits and '_': {bad}")
            if p.name.startswith("tasks."):
                _, name, fld = p.name.split(".", 2)
                if name in self._tasks and fld not in RUNTIME_TASK_FIELDS:
                    return fail(f"{p.name} cannot change while task {name} runs (it needs a restart of the task): "
                                f"remove {name} from task_names, set it, then add it again; settable at run "
                                f"time: {', '.join(RUNTIME_TASK_FIELDS)}")
                per_task.setdefault(name, {})[fld] = v
        for name, changes in per_task.items():
            if name not in self._tasks:
                continue  # pending task: validated when it starts
            values = self._task_values(name, changes)
            if "rate" in changes and changes["rate"]:
                values["period"] = 0.0  # a new rate replaces the period
            if "period" in changes and changes["period"]:
                values["rate"] = 0.0
            try:
                validate_task(name, values)
            except ConfigError as exc:
                return fail(str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params: list[Parameter]) -> None:
        changed_tasks: set[str] = set()
        for p in params:
            if p.name == "mret_window":
                self.engine.set_mret_window(int(p.value))
            elif p.name == "stats_period":
                self._restart_stats_timer(float(p.value))
            elif p.name in ("stamp_future_tolerance", "stamp_past_tolerance"):
                checks = self._frame_checks
                self._frame_checks = FrameChecks(
                    checks.max_pixels, float(p.value) if p.name == "stamp_future_tolerance"
                    else checks.stamp_future_tolerance, float(p.value) if p.name == "stamp_past_tolerance"
                    else checks.stamp_past_tolerance)
                if self._intake_processes is not None:
                    self._intake_processes.set_checks(self._frame_checks)
            elif p.name in ("miss_rate_warn", "miss_rate_error", "rejection_rate_warn", "stale_warn_periods"):
                if self._report is not None:
                    self._report.thresholds = _with_threshold(self._report.thresholds, p.name, p.value)
            elif p.name == "task_names":
                self._apply_task_names(list(p.value or []))
            elif p.name.startswith("tasks."):
                changed_tasks.add(p.name.split(".")[1])
            else:
                continue
            self.get_logger().info(f"parameter {p.name} set to {p.value!r}")
        for name in changed_tasks:
            if name in self._tasks:
                self._apply_task_change(name, {p.name.split(".", 2)[2] for p in params
                                               if p.name.startswith(f"tasks.{name}.")})
            elif name in self._pending:
                self._try_start_pending(name)

    def _apply_task_change(self, name: str, fields: set[str]) -> None:
        values = self._task_values(name)
        # rate and period are alternatives: the one just set wins, the other is cleared
        if "rate" in fields and values.get("rate"):
            values["period"] = 0.0
            self._set_quietly(f"tasks.{name}.period", 0.0)
        elif "period" in fields and values.get("period"):
            values["rate"] = 0.0
            self._set_quietly(f"tasks.{name}.rate", 0.0)
        t = validate_task(name, values)
        st = self._tasks[name]
        self.engine.update_task(t)  # (a new period: the engine's release clock follows)
        st.settings = t
        self.get_logger().info(f"task {name}: {t.priority}, period {t.period:g} s ({t.rate:g} Hz), "
                               f"deadline {t.deadline:g} s")

    def _set_quietly(self, name: str, value: Any) -> None:
        """Keep the parameter server consistent with an applied change (e.g. clear period when rate is set)."""
        self.set_parameters([Parameter(name, value=value)])

    def _apply_task_names(self, names: list[str]) -> None:
        for name in [n for n in self._tasks if n not in names]:
            self._stop_task(name)
            self.engine.remove_task(name)
            self.get_logger().info(f"task {name} removed")
        for name in [n for n in self._pending if n not in names]:
            self._pending.discard(name)
        for name in [n for n in names if n not in self._tasks and n not in self._pending]:
            for spec in TASK_PARAMS:
                full = f"tasks.{name}.{spec.name}"
                if not self.has_parameter(full):
                    declare_task_parameter(self, name, spec)
            self._pending.add(name)
            self._try_start_pending(name)

    def _try_start_pending(self, name: str) -> None:
        try:
            t = validate_task(name, self._task_values(name))
            for other in self._tasks.values():
                if other.settings.topic == t.topic:
                    raise ConfigError(f"tasks.{name}.topic", f"topic {t.topic!r} is already used by task "
                                      f"{other.settings.name!r}")
            _check_models_of([t])
        except ConfigError as exc:
            self.get_logger().info(f"task {name} added, waiting for valid parameters: {exc}")
            return
        self.engine.add_task(t)
        self._pending.discard(name)
        self._start_task(t)
        if self._active:  # (inactive: subscribed at activate)
            self._subscribe(t)
        self.get_logger().info(f"task {name} started: {t.priority} {t.rate:g} Hz {t.model} <- {t.topic}")

    def destroy_node(self) -> None:
        """Release everything (whatever the state: the engine, its workers and backend), then the node."""
        self._release()
        if self._destroyed:
            return
        self._destroyed = True
        super().destroy_node()


def _with_threshold(thresholds: DiagnosticThresholds, name: str, value: Any) -> DiagnosticThresholds:
    """``thresholds`` with the diagnostic threshold parameter ``name`` set to ``value`` (an int for
    ``stale_warn_periods``, a float for the rates)."""
    if name == "stale_warn_periods":
        return dataclasses.replace(thresholds, stale_warn_periods=int(value))
    if name == "miss_rate_warn":
        return dataclasses.replace(thresholds, miss_rate_warn=float(value))
    if name == "miss_rate_error":
        return dataclasses.replace(thresholds, miss_rate_error=float(value))
    if name == "rejection_rate_warn":
        return dataclasses.replace(thresholds, rejection_rate_warn=float(value))
    raise ValueError(f"{name!r} is not a diagnostic threshold parameter")


def _describe(exc: BaseException) -> str:
    """One line for a failed transition (the ConfigError's text names the parameter)."""
    if isinstance(exc, ConfigError):
        return f"invalid configuration: {exc}"
    if isinstance(exc, InfeasibleTaskSet):
        return f"infeasible: {exc} ({INFEASIBLE_HINT})"
    if isinstance(exc, BackendError):
        return f"the execution backend cannot run{' (out of GPU memory)' if is_cuda_oom(exc) else ''}: {exc}"
    if isinstance(exc, StartupInterrupted):
        return f"{exc} received"
    return f"{type(exc).__name__}: {exc}"


def _check_models(settings: Any) -> None:
    """Unknown model names stop the node with the parameter named (torchvision names are accepted)."""
    _check_models_of(settings.tasks)


def _check_models_of(tasks: Any) -> None:
    from daris_ros.runtime.models import BUILTIN_MODELS, is_known_model

    for t in tasks:
        if not is_known_model(t.model):
            raise ConfigError(f"tasks.{t.name}.model",
                              f"unknown model {t.model!r}; built-in: {', '.join(BUILTIN_MODELS)}, "
                              "any torchvision classification model name, a .pt2/.onnx model file, or the path of a "
                              "TorchScript file (.pt, .ts, .torchscript)")


def _use_vision_msgs(choice: str) -> bool:
    """Whether the detections and labels topics carry vision_msgs types (``perception_msgs``)."""
    if choice == "vision_msgs" and not vision_msgs_available():
        raise ConfigError("perception_msgs", "vision_msgs is not installed here; use auto or daris_ros (the "
                          "package's own messages, the same fields)")
    return choice == "vision_msgs" or (choice == "auto" and vision_msgs_available())


class _Signals:
    """SIGINT/SIGTERM handling. While the node starts (loading models and profiling can take minutes on a
    GPU) a Python handler raises :class:`StartupInterrupted` in the main thread, so start-up stops at once
    and cleans up. Once it runs, rclpy's handlers take over (they wake the executor and shut the context
    down); they chain to a Python handler that only notes the signal, so no exception can cut the
    clean-up short."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._starting = True

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handler)

    def _handler(self, signum: int, _frame: Any) -> None:
        first = self.received is None
        self.received = signum if first else self.received
        if first and self._starting:
            raise StartupInterrupted(signum)

    def running(self) -> None:
        """Start-up done: rclpy's handlers from now on."""
        self._starting = False
        install_signal_handlers(SignalHandlerOptions.ALL)

    def stop_raising(self) -> None:
        self._starting = False


def main(args: list[str] | None = None) -> int:
    if (rc := check_node_arguments(args)) is not None:  # parameter files and values, before rclpy.init: exit 2
        return rc
    signals = _Signals()
    signals.install()
    node = None
    started = False
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        node = SchedulerNode()
        if node.autostart:  # one command: configure and activate now (a failure: its exit code below)
            node.bring_up()
        else:
            node.get_logger().info("unconfigured, waiting for the configure and activate transitions "
                                   "(autostart: false)")
        started = True
        signals.running()
        if signals.received is None:  # (a signal between start-up and here: exit without spinning)
            rclpy.spin_until_future_complete(node, node.finished)  # until a signal, or the shutdown transition
    except ConfigError as exc:
        print(f"[daris_scheduler] invalid configuration: {exc}", file=sys.stderr)
        return 2
    except InfeasibleTaskSet as exc:  # feasibility: refuse (the default)
        print(f"[daris_scheduler] infeasible: {exc} ({INFEASIBLE_HINT})", file=sys.stderr)
        return 2
    except StartupInterrupted as exc:
        print(f"[daris_scheduler] {exc} during start-up ({exc.phase}): stopped", file=sys.stderr)
    except BackendError as exc:  # no device, MPS unavailable, a worker that does not start...
        oom = " (out of GPU memory)" if is_cuda_oom(exc) else ""
        print(f"[daris_scheduler] the execution backend cannot run{oom} ({getattr(exc, 'daris_phase', 'start-up')}): "
              f"{exc}", file=sys.stderr)
        return 3
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:
        if not started and is_cuda_oom(exc):  # torch.OutOfMemoryError, or "CUDA error: out of memory"
            print(f"[daris_scheduler] out of GPU memory while {getattr(exc, 'daris_phase', 'starting')}: {exc}",
                  file=sys.stderr)
            return 3
        if not stopped_by_signal(exc):  # (else rclpy's shutdown race: the requested stop)
            raise
    finally:
        signals.stop_raising()  # nothing may interrupt the clean-up
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
