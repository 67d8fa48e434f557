"""The training pipeline: its gate, and the first model as a preset of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from training.fit import GBM_PARAMS
from training.pipeline import gate


def _evaluation(auc: float, rivals: dict[str, tuple[float, tuple[float, float]]]) -> dict[str, Any]:
    return {"model": {"auc": auc}, "baselines": {name: {"auc": a} for name, (a, _) in rivals.items()},
            "uncertainty": {"vs": {name: {"ci95": list(ci)} for name, (_, ci) in rivals.items()}}}


def test_gate_needs_the_interval_of_every_difference_above_zero() -> None:
    clear = _evaluation(0.814, {"logistic": (0.794, (0.005, 0.037)), "popularity": (0.651, (0.129, 0.195))})
    assert gate(clear, False)["passed"]
    # ahead on the point estimate, but the interval includes 0 (the Open Bandit sample)
    hair = _evaluation(0.5184, {"logistic": (0.5183, (-0.084, 0.089)), "popularity": (0.5124, (-0.10, 0.12))})
    verdict = gate(hair, True)
    assert not verdict["passed"] and verdict["allow_worse"]
    assert "not clearly above" in verdict["reason"] and "logistic 0.5183" in verdict["reason"]
    behind = _evaluation(0.60, {"logistic": (0.65, (-0.08, -0.02))})
    assert not gate(behind, False)["passed"]
    no_interval = {"model": {"auc": 0.9}, "baselines": {"logistic": {"auc": 0.5}}, "uncertainty": {}}
    assert not gate(no_interval, False)["passed"]
    assert not gate({"model": {"auc": None}, "baselines": {}}, False)["passed"]


def test_the_first_model_is_a_preset_of_the_pipeline(tmp_path: Path, shared_data: Path) -> None:
    from training.first_model import FIRST_MODEL, train_first_model

    assert (FIRST_MODEL.gbm_params, FIRST_MODEL.report, FIRST_MODEL.bundle_dir) == (GBM_PARAMS, False, None)
    lines: list[str] = []
    summary = train_first_model(tmp_path / "bundle", data_dir=shared_data / "completejourney",
                                registry_root=tmp_path / "models", progress=lines.append)
    # the bundle is the output directory itself; no report is written, the registration is not gated
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == ["manifest.json", "model.onnx"]
    assert summary["bundle"] == str(tmp_path / "bundle") and summary["promoted"]
    manifest = orjson.loads((tmp_path / "bundle" / "manifest.json").read_bytes())
    assert manifest["metrics"] == summary["metrics"]
    assert manifest["training"]["source"] == "completejourney-sample"
    assert {key: manifest["training"]["params"][key] for key in GBM_PARAMS} == GBM_PARAMS
    metrics = summary["metrics"]
    assert set(metrics) == {"gbm", "logistic", "popularity", "train_rows", "test_rows", "split_at"}
    assert metrics["train_rows"] + metrics["test_rows"] == summary["rows"] == 6_589
    assert metrics["gbm"]["auc"] == pytest.approx(0.8197, abs=1e-4)
    assert set(summary["timings"]) == {"load_and_replay_s", "fit_gbm_s", "fit_logistic_s",
                                       "export_s", "total_s"}
    assert any(line.startswith("GBM parameters: fixed") for line in lines)
