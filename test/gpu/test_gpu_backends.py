"""The str and green backends on the GPU: staged CUDA-graph outputs equal eager outputs, CUDA-event stage
times, the submit/done path, and the engine end to end."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

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
                    launch = b.launch(c, s, "m", j, x)
                    launch.end.synchronize()
                    times.append(b.finish(launch))
                    x = launch.output
                torch.cuda.set_stream(torch.cuda.default_stream())
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
def test_submit_done_path(backend: str) -> None:
    model = build_staged_model("resnet18")
    b = create_backend(backend, n_contexts=2, n_streams=2, device="cuda", oversubscription=2.0)
    b.start({"r": model})
    done = threading.Event()
    got: list[tuple[int, float]] = []

    def step(j: int, x: object, c: int, s: int) -> None:
        def cb(y: object, dt: float, err: BaseException | None) -> None:
            assert err is None
            got.append((j, dt))
            if j + 1 < 4:
                step(j + 1, y, c, s)
            else:
                done.set()
        b.submit(c, s, "r", j, x, cb)

    try:
        step(0, torch.randn(1, 3, 224, 224, device="cuda"), 1, 1)
        assert done.wait(10.0)
        assert [j for j, _ in got] == [0, 1, 2, 3]
        assert all(dt > 0 for _, dt in got)
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

        for k in range(20):
            for t in tasks:
                eng.release(t.name, frame, receive_time=time.monotonic())
            time.sleep(0.01 if k % 2 else 0.0)
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
