"""The str and green backends on the GPU: staged CUDA-graph outputs equal eager outputs, CUDA-event stage
times, the launch/poll protocol across streams, and the engine end to end."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from gpu_helpers import run_sync

from daris_ros.runtime.backends import create_backend
from daris_ros.runtime.models import build_staged_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


@pytest.mark.parametrize(("backend", "graphs", "model_name", "side"), [
    ("str", True, "resnet18", 224), ("str", False, "resnet18", 224), ("green", True, "resnet18", 224),
    ("str", True, "unet", 224), ("green", True, "inception_v3", 299),
])
def test_staged_launches_equal_eager(backend: str, graphs: bool, model_name: str, side: int) -> None:
    torch.manual_seed(0)
    model = build_staged_model(model_name, input_size=(side, side))
    b = create_backend(backend, n_contexts=2, n_streams=2, device="cuda", oversubscription=1.0, cuda_graphs=graphs)
    b.start({"m": model})
    try:
        ref_model = b.models["m"]
        errs, exact = [], 0
        for c in range(2):
            for s in range(2):
                x0 = torch.randn(1, 3, side, side, device="cuda")
                with torch.inference_mode():
                    ref = ref_model(x0)
                torch.cuda.synchronize()
                x, times = x0, []
                for j in range(ref_model.num_stages):
                    f = run_sync(b, c, s, "m", j, 1, [(x, 0)])
                    times.append(f.exec_time)
                    x = f.output
                errs.append(_rel(x, ref))
                exact += int(torch.equal(x, ref))
                assert all(0 < t < 1.0 for t in times), times
        print(f"\n{backend} graphs={graphs} {model_name}: rel err max {max(errs):.2e}, bit-exact {exact}/4, "
              f"graphs {len(b.graphs)}")
        assert max(errs) < 1e-3  # TF32 convolutions in both; different algorithms may be picked
        if graphs:
            assert len(b.graphs) == 4 * ref_model.num_stages
    finally:
        b.close()


@pytest.mark.parametrize("backend", ["str", "green"])
def test_launch_poll_on_every_stream_with_dispatches_queued_behind(backend: str) -> None:
    """Every (context, stream) runs a whole job (4 stages launched back to back on its stream, each stage's input
    the previous launch's output, no host wait in between): poll reports each stage with a CUDA-event time, in
    launch order per stream, and the outputs equal the eager model's."""
    torch.manual_seed(0)
    model = build_staged_model("resnet18")
    b = create_backend(backend, n_contexts=2, n_streams=2, device="cuda", oversubscription=2.0)
    b.start({"r": model})
    try:
        x0 = torch.randn(1, 3, 224, 224, device="cuda")
        with torch.inference_mode():
            ref = b.models["r"](x0)
        order: dict[int, tuple[int, int, int]] = {}
        for c in range(2):
            for s in range(2):
                x = x0
                for j in range(4):  # queued behind each other on the stream: launch-ahead, 3 deep
                    ticket = b.launch(c, s, "r", j, 1, [(x, 0)])
                    order[ticket] = (c, s, j)
                    x = b._in_flight[-1].output  # (the output is allocated at launch, filled when the stage ends)
        got: list[tuple[int, int, int, float]] = []
        outputs: dict[tuple[int, int], torch.Tensor] = {}
        t_end = __import__("time").monotonic() + 10.0
        while len(got) < 16:
            for f in b.poll():
                assert f.error is None and f.exec_time > 0
                c, s, j = order[f.ticket]
                got.append((c, s, j, f.exec_time))
                if j == 3:
                    outputs[(c, s)] = f.output
            assert __import__("time").monotonic() < t_end
        for c in range(2):
            for s in range(2):
                assert [j for cc, ss, j, _ in got if (cc, ss) == (c, s)] == [0, 1, 2, 3]
                assert _rel(outputs[(c, s)], ref) < 1e-3
    finally:
        b.close()


@pytest.mark.parametrize(("backend", "policy", "nc", "ns", "os_"), [
    ("str", "STR", 1, 4, 1.0), ("green", "MPS+STR", 2, 2, 1.0), ("green", "MPS", 3, 1, 2.0),
])
def test_engine_end_to_end_on_gpu(backend: str, policy: str, nc: int, ns: int, os_: float) -> None:
    from daris_ros.runtime.engine import Engine
    from daris_ros.settings import SchedulerSettings, TaskSettings

    tasks = tuple(TaskSettings(name=f"t{i}", topic=f"/c{i}", priority="HP" if i == 0 else "LP", period=0.05,
                               deadline=0.05, model="resnet18", input_size=(224, 224)) for i in range(3))
    settings = SchedulerSettings(policy=policy, backend=backend, device="cuda", n_contexts=nc, n_streams=ns,
                                 oversubscription=os_, tasks=tasks, profile_runs=3)
    results = []
    lock = threading.Lock()

    def on_result(r: object) -> None:
        with lock:
            results.append(r)

    eng = Engine(settings, on_result=on_result)
    try:
        eng.load_models()
        afet = eng.profile()
        eng.start()
        frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
        import time

        for t in tasks:
            eng.set_frame(t.name, frame)
        time.sleep(0.5)  # 10 releases of each task at 20 Hz
        for t in tasks:
            eng.inbox.clear(t.name)
        deadline = time.monotonic() + 10
        while eng.in_flight() and time.monotonic() < deadline:
            time.sleep(0.01)
        print(f"\n{backend} {policy} {nc}x{ns} OS={os_}: AFET {afet}, results {len(results)}")
        assert eng.in_flight() == 0
        assert len(results) >= 20
        assert all(not r.error and len(r.class_ids) == 5 for r in results)
        assert all(r.exec_time > 0 for r in results)
    finally:
        eng.close()
