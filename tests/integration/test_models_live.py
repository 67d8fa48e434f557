"""Model hot reload on running workers, refusal of corrupt models, and exploration propensities."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models.registry import ModelRegistry
from tests.integration.workers import WorkerProcess, wait_until
from training.first_model import train_first_model

pytestmark = pytest.mark.integration

OFFERS = {f"o{i}": {"title": f"offer {i}", "category": c, "kind": "discount", "discount_pct": 5 * i}
          for i, c in enumerate(["GROCERY", "PRODUCE", "MEAT", "DRUG GM", "GROCERY", "PRODUCE"], start=1)}


@pytest.fixture(scope="module")
def group(broker: Any, tmp_path_factory: pytest.TempPathFactory, trained_registry: Path) -> Iterator[tuple]:
    shared = tmp_path_factory.mktemp("shared") / "registry"
    shutil.copytree(trained_registry, shared)
    env = {"OFFERSTREAM_REGISTRY": str(shared), "OFFERSTREAM_MODEL_POLL_S": "0.5"}
    a = WorkerProcess(broker.url, tmp_path_factory.mktemp("a"), app_id="models", env=env).start(timeout=120)
    b = WorkerProcess(broker.url, tmp_path_factory.mktemp("b"), app_id="models",
                      env={**env, "OFFERSTREAM_EXPLORATION": "epsilon:0.5"}).start(timeout=120)
    try:
        for offer_id, offer in OFFERS.items():
            a.client.json("PUT", f"/v1/offers/{offer_id}", offer)
        yield a, b, shared
    finally:
        b.stop()
        a.stop()


def _versions(workers: tuple[WorkerProcess, ...]) -> set[str]:
    return {w.client.json("GET", "/health")["model_version"] for w in workers}


def test_a_promoted_model_is_served_by_every_running_worker(group: tuple, tmp_path: Path,
                                                           shared_data: Path) -> None:
    a, b, shared = group
    registry = ModelRegistry(shared)
    old = registry.current_version()
    assert _versions((a, b)) == {old}
    households = {str(h) for h in range(1, 2500, 2)}  # a different slice: a different model
    summary = train_first_model(tmp_path / "bundle", data_dir=shared_data / "completejourney",
                                households=households, progress=lambda *args, **kw: None)
    new = registry.register(tmp_path / "bundle")
    assert new != old
    promoted_at = time.monotonic()
    registry.promote(new)
    wait_until(lambda: _versions((a, b)) == {new}, timeout=15, what="both workers to serve the new model")
    switch_s = time.monotonic() - promoted_at
    print(f"new model {new} served by both workers {switch_s:.2f} s after promotion")
    answer = b.client.json("POST", "/v1/score", {"customer_id": "x", "k": 3})
    assert answer["model_version"] == new == summary["version"]

    corrupt = shared / "versions" / "gbm-corrupt"
    shutil.copytree(shared / "versions" / new, corrupt)
    (corrupt / "model.onnx").write_bytes(b"not a model")
    (shared / "CURRENT").write_text("gbm-corrupt\n")  # someone promotes a broken bundle by hand
    wait_until(lambda: all(w.client.json("GET", "/health")["model_error"] for w in (a, b)),
               timeout=15, what="both workers to refuse the corrupt model")
    assert _versions((a, b)) == {new}, "the previous model must keep serving"
    assert a.client.json("POST", "/v1/score", {"customer_id": "x", "k": 3})["model_version"] == new
    registry.promote(new)


def test_exploration_is_off_by_default_and_records_propensities(group: tuple) -> None:
    a, b, _ = group
    greedy = [a.client.json("POST", "/v1/score", {"customer_id": "e", "k": 3}) for _ in range(5)]
    assert all(o["propensity"] == 1.0 for answer in greedy for o in answer["offers"])
    assert len({tuple(o["offer_id"] for o in answer["offers"]) for answer in greedy}) == 1
    explored = [b.client.json("POST", "/v1/score", {"customer_id": f"e{i}", "k": 3}) for i in range(40)]
    propensities = [o["propensity"] for answer in explored for o in answer["offers"]]
    assert all(0 < p <= 1 for p in propensities)
    assert any(p < 1.0 for p in propensities)
    assert len({tuple(o["offer_id"] for o in answer["offers"]) for answer in explored}) > 1
