"""daris-replay's topic plan: besides the results, stats and /diagnostics it records the perception topics
(detections, masks, labels) of every task, at the names the node resolves them to, with the types the graph
gives them (no ROS needed to plan)."""

from __future__ import annotations

from daris_ros.settings import settings_from_mapping
from daris_ros.tools.replay import DIAGNOSTICS_TOPIC, plan_topics

PARAMS = {
    "task_names": ["front", "side"],
    "tasks": {
        "front": {"topic": "/cam/front", "rate": 5.0, "model": "resnet18"},
        "side": {"topic": "/cam/side", "rate": 5.0, "model": "unet", "mask_topic": "/seg/side",
                 "labels_topic": "names"},
    },
}


def test_plan_records_the_perception_topics() -> None:
    settings = settings_from_mapping(PARAMS)
    plan = plan_topics(settings, {"/bag/a": "sensor_msgs/msg/Image"}, {"/bag/a": "/cam/front"}, "ns")
    assert plan.payload_topics == {"front": ["/ns/daris/front/detections", "/ns/daris/front/mask"],
                                   "side": ["/ns/daris/side/detections", "/seg/side"]}
    assert plan.labels_topics == {"front": "/ns/daris/front/labels", "side": "/ns/names"}
    recorded = plan.record_topics(inputs=True)
    for topic in plan.perception_topics():
        assert topic in recorded and recorded[topic] is None  # the type comes from the graph
    assert recorded["/ns/daris/front/result"] == "daris_ros/msg/InferenceResult"
    assert recorded["/cam/front"] == "sensor_msgs/msg/Image"
    assert set(plan.output_topics()) == {*plan.result_topics.values(), *plan.perception_topics(), plan.stats_topic,
                                         DIAGNOSTICS_TOPIC}
    assert "/cam/front" not in plan.record_topics(inputs=False)


def test_loss_hint_names_the_qos_that_can_lose_frames() -> None:
    from daris_ros.settings import TaskSettings
    from daris_ros.tools.replay import ADVISED_QOS_DEPTH, loss_hint

    def task(reliability: str, depth: int) -> TaskSettings:
        return TaskSettings("cam", "/cam", "HP", 0.1, 0.1, "resnet18", qos_reliability=reliability, qos_depth=depth)

    assert "best effort" in loss_hint(task("best_effort", 1))
    shallow = loss_hint(task("reliable", 10))
    assert "keeps 10 frame(s)" in shallow and f"qos_depth: {ADVISED_QOS_DEPTH}" in shallow
    assert loss_hint(task("reliable", ADVISED_QOS_DEPTH)) == ""  # nothing to say: a loss has another cause
