"""The scheduler as a managed (lifecycle) node over real DDS: a harness node drives it through the
lifecycle_msgs/srv/ChangeState and GetState services, started with ``autostart: false``.

configure -> inactive (models loaded, no camera subscription, nothing released); activate -> results flow;
deactivate -> the subscription goes, nothing more is released and every admitted job's result is published;
cleanup -> unconfigured (the engine's threads gone, /diagnostics says unconfigured); configure + activate again
work; shutdown from active ends the process with exit code 0. A parameter set to a bad value while unconfigured
makes configure fail, naming it (log and /diagnostics), and the node stays unconfigured.

Real processes, no mocks; cpu backend, a 32x32 ResNet18 at 2 Hz. Asserts states, counts and accounting, never a
latency (CI: 2 loaded cores); waits are generous.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import SetParameters
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from daris_ros.ros.transition_heartbeat import TRANSITION_STATES

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CAMERA = "/lifecycle/cam/image_raw"
PARAMS = f"""
daris_scheduler:
  ros__parameters:
    autostart: false
    backend: cpu
    profile_runs: 1
    stats_period: 0.25
    feasibility: warn  # a one-run profile on CI's loaded CPU can be far too slow (test_feasibility.py covers refusal)
    skip_late: 0.0  # every admitted job runs to its result, however late (the counts below rely on it)
    task_names: [cam]
    tasks:
      cam: {{topic: {CAMERA}, priority: HP, rate: 2.0, model: resnet18, input_size: [32, 32]}}
"""
SLOW = 120.0  # s: configure (loading, profiling) on a loaded machine


def wait_until(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    t_end = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < t_end, f"not within {timeout:g} s: {what}"
        time.sleep(0.05)


class _Manager(Node):
    """A lifecycle manager and a camera: ChangeState / GetState / SetParameters clients, a 10 Hz mono8 camera,
    and what the scheduler publishes (results, stats, /diagnostics), each with the time it was received."""

    def __init__(self) -> None:
        super().__init__("lifecycle_harness")
        from daris_ros.msg import InferenceResult, SchedulerStats

        self.lock = threading.Lock()
        self.results: list[Any] = []
        self.stats: list[tuple[float, Any]] = []
        self.scheduler_status: list[tuple[float, Any]] = []
        self.transition_status: list[tuple[float, dict[str, str]]] = []  # key/values of the statuses in transitions
        self.create_subscription(InferenceResult, "/daris/cam/result", self._on_result, 100)
        self.create_subscription(SchedulerStats, "/daris/stats",
                                 lambda m: self._keep(self.stats, m), 100)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 100)
        self.camera = self.create_publisher(Image, CAMERA, qos_profile_sensor_data)
        self.create_timer(0.1, self._tick)
        self.change = self.create_client(ChangeState, "/daris_scheduler/change_state")
        self.get = self.create_client(GetState, "/daris_scheduler/get_state")
        self.params = self.create_client(SetParameters, "/daris_scheduler/set_parameters")

    def _on_result(self, m: Any) -> None:
        with self.lock:
            self.results.append(m)

    def _keep(self, into: list[tuple[float, Any]], m: Any) -> None:
        with self.lock:
            into.append((time.monotonic(), m))

    def _on_diagnostics(self, m: DiagnosticArray) -> None:
        for st in m.status:
            if st.name.endswith("daris_scheduler: scheduler"):
                values = {kv.key: kv.value for kv in st.values}
                if values.get("lifecycle_state") in TRANSITION_STATES.values():  # while a transition runs
                    self._keep(self.transition_status, values)
                else:
                    self._keep(self.scheduler_status, st)

    def transition_phases(self, after: float, state: str) -> list[str]:
        """The phases ``state`` (e.g. configuring) went through after ``after``, as /diagnostics said them while
        the transition ran (repeats of the periodic status folded)."""
        with self.lock:
            phases: list[str] = []
            for at, values in self.transition_status:
                if at > after and values["lifecycle_state"] == state and (not phases or phases[-1] != values["phase"]):
                    phases.append(values["phase"])
            return phases

    def _tick(self) -> None:
        m = Image(height=32, width=32, encoding="mono8", step=32)
        m.header.stamp = self.get_clock().now().to_msg()
        m.data = np.zeros(32 * 32, np.uint8).tobytes()
        self.camera.publish(m)

    @staticmethod
    def _call(client: Any, request: Any, timeout: float, retry_every: float = 0.0) -> Any:
        """``retry_every`` > 0 (queries only: a repeated request must change nothing): the request is sent again
        when unanswered for that long. A service can be discovered before its reply can reach this client, and a
        reply sent then is lost (seen once in a clean-clone run: get_state unanswered for 30 s)."""
        assert client.wait_for_service(timeout_sec=30), f"{client.srv_name} not available"
        t_end = time.monotonic() + timeout
        while True:
            future = client.call_async(request)
            step = min(retry_every, t_end - time.monotonic()) if retry_every > 0 else timeout
            try:
                wait_until(future.done, step, f"{client.srv_name} answered")
                return future.result()
            except AssertionError:
                client.remove_pending_request(future)
                if retry_every <= 0 or time.monotonic() >= t_end:
                    raise AssertionError(f"not within {timeout:g} s: {client.srv_name} answered") from None

    def transition(self, transition_id: int, timeout: float = 60.0) -> bool:
        return self._call(self.change, ChangeState.Request(transition=Transition(id=transition_id)), timeout).success

    def state(self) -> str:
        return self._call(self.get, GetState.Request(), 30.0, retry_every=5.0).current_state.label

    def set(self, name: str, value: Any) -> Any:
        req = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        (result,) = self._call(self.params, req, 30.0).results
        return result

    def n_results(self) -> int:
        with self.lock:
            return len(self.results)

    def task_stats_after(self, t: float, timeout: float = 30.0) -> Any:
        """The task's figures in the first stats message received after ``t`` (time.monotonic)."""
        def find() -> Any:
            with self.lock:
                return next((m.tasks[0] for at, m in self.stats if at > t and m.tasks), None)
        return wait_until(find, timeout, "a stats message")

    def status_after(self, t: float, timeout: float = 30.0) -> Any:
        """The scheduler's /diagnostics status first received after ``t``."""
        def find() -> Any:
            with self.lock:
                return next((st for at, st in self.scheduler_status if at > t), None)
        return wait_until(find, timeout, "a /diagnostics status of the scheduler")


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("Threads:"))


@pytest.fixture(scope="module")
def managed(install_prefix: Path, tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("lifecycle")
    params = workdir / "params.yaml"
    params.write_text(PARAMS)
    log_path = workdir / "scheduler.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(install_prefix / "lib" / "daris_ros" / "scheduler_node"), "--ros-args",
                             "--params-file", str(params)], start_new_session=True, stdout=log,
                            stderr=subprocess.STDOUT, text=True)
    rclpy.init()
    node = _Manager()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        assert node.get.wait_for_service(timeout_sec=60), f"no lifecycle services:\n{log_path.read_text()}"
        yield node, proc, log_path
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown()


def test_configure_fails_naming_a_bad_parameter_and_stays_unconfigured(managed):
    node, proc, log_path = managed
    assert node.state() == "unconfigured"
    assert node.status_after(time.monotonic()).message.startswith("unconfigured: waiting for configure")
    # unconfigured: no live-tuning checks, any value of the parameter's type is taken; configure validates
    assert node.set("tasks.cam.priority", "URGENT").successful
    assert not node.transition(Transition.TRANSITION_CONFIGURE)
    t_failed = time.monotonic()
    assert node.state() == "unconfigured"
    assert "configure failed (parameters): invalid configuration: parameter 'tasks.cam.priority'" in \
        log_path.read_text()
    status = node.status_after(t_failed)
    assert status.level == status.ERROR and "tasks.cam.priority" in status.message, status.message
    assert node.set("tasks.cam.priority", "HP").successful
    assert proc.poll() is None


def test_configure_activate_deactivate_cleanup_and_again_then_shutdown(managed):
    node, proc, log_path = managed
    assert node.state() == "unconfigured"
    threads_unconfigured = _threads(proc.pid)

    # configure: loaded and profiled, inactive: no subscription to the camera, nothing released
    t_configure = time.monotonic()
    assert node.transition(Transition.TRANSITION_CONFIGURE, SLOW), log_path.read_text()[-3000:]
    t_configured = time.monotonic()
    # while it ran (the executor held by it), /diagnostics said which phase, each as it began
    wait_until(lambda: "inactive" in node.transition_phases(t_configure, "configuring"), 30, "the last phase")
    assert node.transition_phases(t_configure, "configuring") == [
        "started", "parameters", "loading", "profiling", "starting", "feasibility", "inactive"]
    assert node.state() == "inactive"
    threads_inactive = _threads(proc.pid)
    assert threads_inactive > threads_unconfigured  # the engine's loop, its workers, the results thread
    assert node.count_subscribers(CAMERA) == 0
    time.sleep(1.5)
    cam = node.task_stats_after(time.monotonic())
    assert (cam.frames, cam.released, cam.stale) == (0, 0, 0)
    assert node.n_results() == 0
    assert "inactive" in node.status_after(t_configured).message

    # activate: subscribed, results flow
    t_activate = time.monotonic()
    assert node.transition(Transition.TRANSITION_ACTIVATE)
    wait_until(lambda: "running" in node.transition_phases(t_activate, "activating"), 30, "activating: running")
    assert node.transition_phases(t_activate, "activating") == ["started", "activating", "running"]
    assert node.state() == "active"
    wait_until(lambda: node.count_subscribers(CAMERA) == 1, 30, "the scheduler subscribed to the camera")
    wait_until(lambda: node.n_results() >= 3, SLOW, "3 results")

    # deactivate: no new releases; jobs in flight finish and their results are published
    assert node.transition(Transition.TRANSITION_DEACTIVATE)
    t_deactivated = time.monotonic()
    assert node.state() == "inactive"
    cam = node.task_stats_after(t_deactivated)
    assert cam.admitted == cam.completed and cam.released == cam.admitted + cam.rejected  # nothing in flight
    wait_until(lambda: node.n_results() == cam.completed, 30, f"{cam.completed} results")
    wait_until(lambda: node.count_subscribers(CAMERA) == 0, 30, "the camera subscription gone")
    time.sleep(2.0)  # the camera keeps publishing
    later = node.task_stats_after(time.monotonic())
    assert later.released == cam.released and later.completed == cam.completed
    assert node.n_results() == cam.completed
    # every frame accounted: the one left waiting at deactivate is dropped as 'inactive'
    assert later.frames == later.released + later.superseded + later.dropped + later.pending
    assert later.pending == 0

    # cleanup: the engine closed (its threads gone), unconfigured, /diagnostics says so
    assert node.transition(Transition.TRANSITION_CLEANUP)
    t_cleaned = time.monotonic()
    assert node.state() == "unconfigured"
    wait_until(lambda: _threads(proc.pid) <= threads_inactive - 2, 30, "the engine's threads ended")
    wait_until(lambda: node.status_after(t_cleaned).message.startswith("unconfigured"), 30,
               "/diagnostics: unconfigured")
    assert "cleaned up (unconfigured): engine, workers and backend closed" in log_path.read_text()

    # configure and activate again: results flow again
    before = node.n_results()
    assert node.transition(Transition.TRANSITION_CONFIGURE, SLOW), log_path.read_text()[-3000:]
    assert node.transition(Transition.TRANSITION_ACTIVATE)
    assert node.state() == "active"
    wait_until(lambda: node.n_results() >= before + 2, SLOW, "results after the second activation")

    # shutdown from active: finalized, and the process ends cleanly
    assert node.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert proc.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    out = log_path.read_text()
    assert "shut down (from active)" in out and "Traceback" not in out, out[-3000:]


def test_plain_executable_starts_active_by_default(install_prefix: Path, tmp_path: Path):
    """Without autostart in the file the node configures and activates itself: GetState says active."""
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS.replace("    autostart: false\n", ""))
    proc = subprocess.Popen([str(install_prefix / "lib" / "daris_ros" / "scheduler_node"), "--ros-args",
                             "--params-file", str(params)], start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    context = Context()  # its own (the module's harness may hold the default one)
    rclpy.init(context=context)
    node = Node("lifecycle_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    client = node.create_client(GetState, "/daris_scheduler/get_state")
    try:
        assert client.wait_for_service(timeout_sec=60)

        def active() -> bool:
            future = client.call_async(GetState.Request())
            executor.spin_until_future_complete(future, timeout_sec=10)
            return future.done() and future.result().current_state.label == "active"
        wait_until(active, SLOW, "the node active")
        proc.send_signal(2)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out[-3000:]
        assert "running: cam(HP 2 Hz resnet18" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
