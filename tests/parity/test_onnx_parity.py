"""sklearn vs ONNX: exported bundles reproduce the fitted model; tampered bundles are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from models.errors import ModelError
from models.features import FEATURE_NAMES
from models.scorer import MANIFEST, MODEL_FILE, load_bundle
from training.export import PARITY_TOLERANCE, export_bundle, to_onnx
from training.fit import fit_gbm, fit_logistic, time_split

N_FEATURES = len(FEATURE_NAMES)
RANGE = (1_700_000_000_000, 1_700_100_000_000)


def _synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    X[:, 0] = rng.integers(0, 2, n)  # a binary column, like `personalized`
    X[:, 5] = np.round(X[:, 5], 1)  # a coarse column: many ties at tree thresholds
    logit = 1.5 * X[:, 1] - X[:, 5] + 0.8 * X[:, 0] * X[:, 2] - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    return X, y


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    X, y = _synthetic(3000, seed=1)
    train, test = time_split(np.arange(len(y)), 0.8)
    return {"X_train": X[train], "y_train": y[train], "X_test": X[test], "y_test": y[test]}


@pytest.mark.parametrize("kind, fit", [("gbm", fit_gbm), ("logistic", fit_logistic)])
def test_onnx_matches_sklearn_on_held_out_rows(tmp_path: Path, data: dict[str, np.ndarray],
                                               kind: str, fit) -> None:
    model = fit(data["X_train"], data["y_train"])
    out = export_bundle(model, data["X_train"][:200], tmp_path / kind, kind=kind, data_range=RANGE,
                        metrics={"auc": 0.5}, offer_stats={"o1": (0.1, 2.0)})
    scorer = load_bundle(out)
    X_new, _ = _synthetic(1000, seed=2)
    for X in (data["X_test"], X_new):
        diff = np.abs(scorer.score(X).astype(np.float64) - model.predict_proba(X)[:, 1])
        assert diff.max() <= PARITY_TOLERANCE
    manifest = orjson.loads((out / MANIFEST).read_bytes())
    assert manifest["model_version"].startswith(f"{kind}-") and manifest["kind"] == kind
    assert manifest["feature_names"] == list(FEATURE_NAMES)
    assert manifest["offer_stats"] == {"o1": [0.1, 2.0]}
    assert scorer.offer_stats == {"o1": (0.1, 2.0)}
    assert manifest["data_range"][0].startswith("2023-11-14")
    assert manifest["parity_max_abs_diff"] <= PARITY_TOLERANCE


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, data: dict[str, np.ndarray]) -> Path:
    model = fit_logistic(data["X_train"], data["y_train"])
    return export_bundle(model, data["X_test"], tmp_path_factory.mktemp("bundle"), kind="logistic",
                         data_range=RANGE, metrics={}, offer_stats={})


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in (MANIFEST, MODEL_FILE):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_tampered_model_bytes_are_refused(tmp_path: Path, bundle: Path) -> None:
    copy = _copy(bundle, tmp_path / "tampered")
    raw = bytearray((copy / MODEL_FILE).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (copy / MODEL_FILE).write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="sha256"):
        load_bundle(copy)


def test_other_feature_names_are_refused(tmp_path: Path, bundle: Path) -> None:
    copy = _copy(bundle, tmp_path / "renamed")
    manifest = orjson.loads((copy / MANIFEST).read_bytes())
    manifest["feature_names"] = [*FEATURE_NAMES[1:], FEATURE_NAMES[0]]
    (copy / MANIFEST).write_bytes(orjson.dumps(manifest))
    with pytest.raises(ModelError, match="feature names"):
        load_bundle(copy)


def test_failed_parity_writes_nothing(tmp_path: Path, data: dict[str, np.ndarray]) -> None:
    model = fit_logistic(data["X_train"], data["y_train"])
    honest = model.predict_proba
    model.predict_proba = lambda X: honest(X) + np.array([-1e-3, 1e-3])  # a fake that drifts
    with pytest.raises(ModelError, match="disagree"):
        export_bundle(model, data["X_test"], tmp_path / "out", kind="logistic", data_range=RANGE,
                      metrics={}, offer_stats={})
    assert not (tmp_path / "out").exists()


def test_wrong_sample_width_is_refused(tmp_path: Path, data: dict[str, np.ndarray]) -> None:
    model = fit_logistic(data["X_train"], data["y_train"])
    with pytest.raises(ModelError, match="X_sample"):
        export_bundle(model, data["X_test"][:, :-1], tmp_path / "out", kind="logistic",
                      data_range=RANGE, metrics={}, offer_stats={})


def test_conversion_is_deterministic(data: dict[str, np.ndarray]) -> None:
    first = to_onnx(fit_gbm(data["X_train"], data["y_train"]))
    assert to_onnx(fit_gbm(data["X_train"], data["y_train"])) == first


def test_a_gbm_is_exported_as_margin_trees_plus_sigmoid_with_its_cost(
        tmp_path: Path, data: dict[str, np.ndarray]) -> None:
    import onnx

    model = fit_gbm(data["X_train"], data["y_train"])
    out = export_bundle(model, data["X_test"], tmp_path / "gbm", kind="gbm", data_range=RANGE,
                        metrics={}, offer_stats={})
    graph = onnx.load_from_string((out / MODEL_FILE).read_bytes()).graph
    assert [n.op_type for n in graph.node] == ["TreeEnsembleRegressor", "Sigmoid", "Sub", "Concat"]
    assert [o.name for o in graph.output] == ["probabilities"]
    latency = orjson.loads((out / MANIFEST).read_bytes())["latency"]
    assert latency["rows"] == 200 and latency["onnx_cpu_ms"] > 0
    assert latency["nodes"] == sum(p.nodes.size for (p,) in model._predictors)
    scores = load_bundle(out).score(data["X_test"]).astype(np.float64)
    assert np.abs(scores - model.predict_proba(data["X_test"])[:, 1]).max() <= PARITY_TOLERANCE
