"""Camera frames taken off their subscriptions by one thread with one wait set, not by the node's executor.

Why: rclpy's executor, at every wake, rebuilds its wait set from every entity of the node in Python: each
subscription, timer and service, and each publisher's and subscription's event handler (the incompatible-QoS
warnings), so a node with 48 cameras and their result, detection/mask and label publishers walks a few hundred
entities per received frame, holding the interpreter (the GIL) the engine's loop needs after each of its CUDA
calls. At 48 JPEG cameras on an H100 (docs/benchmarks/node_e2e/README.md, session 13) the engine's stall probe found
the executor thread busy in most samples (``event_handler`` ``add_to_wait_set``/``is_ready``/``__exit__``), the
whole node at 1.24 CPU cores and its loop waiting after each CUDA call; 0.3% of HP frames were served.
``python -m daris_ros.bench.intake_cost`` measures both ways of taking frames.

How: the node creates each camera subscription as usual (its name in the graph, QoS, the incompatible-QoS event
handler, which stays with the executor), then :class:`FrameIntake` takes it out of the list the executor waits on
(``Node._subscriptions``, the one private attribute used here) and waits on it in its own thread: one rcl wait set
over the camera subscriptions and a guard condition, each ready subscription drained with ``take_message``, the
raw bytes handed to the subscription's callback (the node's ``_on_frame``). Unsubscribing hands the subscription
back to the node, which destroys it; it returns once the thread has finished the turn that may still hold it, so no
frame of it is handed out afterwards. rclpy without that attribute (another version) gets the executor's path.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from rclpy.node import Node
from rclpy.qos import QoSProfile

log = logging.getLogger(__name__)

#: The longest wait of one turn (ns): the thread notices a closed context within this.
WAIT_NS = 100_000_000
#: Frames taken from one subscription per turn (then the others get theirs).
TAKE_PER_TURN = 64


def intake_supported(node: Node) -> bool:
    """Whether this rclpy lets a subscription leave the executor's wait set (``Node._subscriptions`` a list)."""
    try:
        from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
    except ImportError:
        return False
    return isinstance(getattr(node, "_subscriptions", None), list) and hasattr(_rclpy, "WaitSet")


class FrameIntake:
    """One thread that takes the raw messages of the subscriptions made by :meth:`subscribe` and calls their
    callbacks; :meth:`close` (idempotent) unsubscribes all and stops it."""

    def __init__(self, node: Node, name: str = "daris-intake") -> None:
        if not intake_supported(node):
            raise RuntimeError("this rclpy has no Node._subscriptions list or WaitSet: use the executor")
        self._node = node
        self._subscriptions: list[Any] = []
        self._callbacks: dict[int, Callable[[Any], None]] = {}
        self._lock = threading.Lock()
        self._turns = 0  # turns finished (unsubscribe waits for the next one)
        self._turn_done = threading.Condition(self._lock)
        self._closing = False
        from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy

        handle = node.context.handle
        if handle is None:
            raise RuntimeError("the node's context is not initialised")
        with handle:  # (not the node's guard condition: the executor would wake on it too)
            self._guard = _rclpy.GuardCondition(handle)
        self._hidden: list[Any] = node._subscriptions  # (checked by intake_supported)
        self.callback_errors = 0
        self._version = 0  # bumped by every subscribe / unsubscribe
        self._held = contextlib.ExitStack()  # (the thread's: the handles of its current set)
        self._subs: list[Any] = []
        self._by_pointer: dict[int, tuple[Any, Callable[[Any], None] | None]] = {}
        self._wait_set: Any = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- the node's side --------------------------------------------------------------------------
    def subscribe(self, msg_type: Any, topic: str, callback: Callable[[Any], None], qos: QoSProfile) -> Any:
        """A raw subscription of the node whose messages this thread takes and hands to ``callback`` (bytes)."""
        sub = self._node.create_subscription(msg_type, topic, callback, qos, raw=True)
        with self._lock:
            self._hidden.remove(sub)  # the executor no longer waits on it; this thread does
            self._subscriptions.append(sub)
            self._callbacks[id(sub)] = callback
            self._version += 1
        self._wake()
        return sub

    def unsubscribe(self, sub: Any) -> None:
        """Stop taking ``sub`` and have the node destroy it (after the thread's current turn)."""
        with self._lock:
            if sub not in self._subscriptions:
                return
            self._subscriptions.remove(sub)
            self._callbacks.pop(id(sub), None)
            self._hidden.append(sub)  # back to the node, which destroys it with its event handler
            self._version += 1
            turn = self._turns
        self._wake()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            with self._turn_done:
                self._turn_done.wait_for(lambda: self._turns > turn or self._closing, timeout=2.0)
        self._node.destroy_subscription(sub)

    @property
    def turns(self) -> int:
        """Waits the thread has finished (each ends with the frames it found taken)."""
        return self._turns

    def close(self) -> None:
        for sub in list(self._subscriptions):
            self.unsubscribe(sub)
        with self._lock:
            self._closing = True
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(2.0)
        if not self._thread.is_alive():
            self._guard.destroy_when_not_in_use()

    def _wake(self) -> None:
        with contextlib.suppress(Exception), self._guard:  # (a context already shut down: nothing waits)
            self._guard.trigger_guard_condition()

    # -- the thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy

        context = self._node.context
        context_handle = context.handle
        if context_handle is None:
            return
        version = -1
        try:
            with contextlib.ExitStack() as always:
                always.enter_context(context_handle)
                always.enter_context(self._guard)
                while True:
                    with self._lock:
                        if self._closing:
                            return
                        if self._version != version:  # subscribed or unsubscribed: a new set
                            version = self._version
                            subs = list(self._subscriptions)
                            callbacks = dict(self._callbacks)
                            changed = True
                        else:
                            changed = False
                    if changed:
                        self._hold(subs, callbacks, _rclpy.WaitSet(len(subs), 1, 0, 0, 0, 0, context_handle))
                    self._turn()
                    with self._turn_done:
                        self._turns += 1
                        self._turn_done.notify_all()
        except Exception:  # noqa: BLE001 - a context shut down under the wait ends the thread; say anything else
            if context.ok():
                log.exception("camera intake stopped")
        finally:
            self._held.close()
            with self._turn_done:
                self._closing = True
                self._turn_done.notify_all()

    def _hold(self, subs: list[Any], callbacks: dict[int, Callable[[Any], None]], wait_set: Any) -> None:
        """The thread's set of subscriptions: their handles held (as rclpy's executor holds what its wait set points
        at, so a subscription destroyed meanwhile is freed only once released here) and a table from each one's
        rcl pointer to it and its callback."""
        self._held.close()
        held = contextlib.ExitStack()
        for sub in subs:
            held.enter_context(sub.handle)
        self._held = held
        self._subs = subs
        self._by_pointer = {sub.handle.pointer: (sub, callbacks.get(id(sub))) for sub in subs}
        self._wait_set = wait_set

    def _turn(self) -> None:
        """One wait and the frames it found."""
        wait_set = self._wait_set
        wait_set.clear_entities()
        for sub in self._subs:
            wait_set.add_subscription(sub.handle)
        wait_set.add_guard_condition(self._guard)
        wait_set.wait(WAIT_NS)
        by_pointer = self._by_pointer
        for pointer in wait_set.get_ready_entities("subscription"):
            sub, callback = by_pointer[pointer]
            handle, msg_type = sub.handle, sub.msg_type
            for _ in range(TAKE_PER_TURN):
                taken = handle.take_message(msg_type, True)
                if taken is None:
                    break
                if callback is None:
                    continue
                try:
                    callback(taken[0])
                except Exception:  # noqa: BLE001 - the node counts bad frames itself; this is a bug, say it
                    self.callback_errors += 1
                    if self.callback_errors <= 3:
                        log.exception("camera intake: the callback of %s failed", sub.topic_name)
