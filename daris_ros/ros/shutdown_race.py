"""rclpy's shutdown race, told apart from a failure.

SIGINT/SIGTERM make rclpy's signal handler shut the default context down at once; an executor that is building its
wait set at that moment raises ``RCLError: failed to initialize wait set: the given context is not valid`` instead
of returning. Seen on a busy executor: the scheduler node, and ``daris-record`` beside a CPU hog in CI (session 13,
``test_bags_cli.py::test_play_cli_into_record_cli_then_ctrl_c``: exit 1 on Ctrl-C). That exception is the stop the
user asked for; the tools exit as they do on ``KeyboardInterrupt``.
"""

from __future__ import annotations


def stopped_by_signal(exc: BaseException) -> bool:
    """Whether ``exc`` is part of a requested stop: the default context is already shut down (any error then is
    the race above; an error while the context is still valid is a failure)."""
    import rclpy

    return not rclpy.ok()
