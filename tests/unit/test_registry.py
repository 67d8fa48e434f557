"""Scorer bundles and the model registry, with a tiny real sklearn -> ONNX bundle."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from models.errors import ModelError, NotFound
from models.features import FEATURE_NAMES, FEATURE_SCHEMA_VERSION
from models.registry import ModelRegistry
from models.scorer import MANIFEST, MODEL_FILE, FallbackScorer, OnnxScorer, load_bundle

N = len(FEATURE_NAMES)


@pytest.fixture(scope="module")
def fitted() -> dict[str, Any]:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    X = rng.normal(size=(400, N)).astype(np.float32)
    y = (X[:, 1] - 0.5 * X[:, 3] + rng.normal(scale=0.5, size=400) > 0).astype(int)
    model = LogisticRegression(max_iter=500).fit(X, y)
    onx = convert_sklearn(model, initial_types=[("input", FloatTensorType([None, N]))],
                          options={id(model): {"zipmap": False}}, target_opset={"": 15, "ai.onnx.ml": 3})
    return {"model": model, "onnx": onx.SerializeToString(), "X": rng.normal(size=(64, N)).astype(np.float32)}


def write_bundle(directory: Path, onnx_bytes: bytes, version: str = "v1", **manifest: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MODEL_FILE).write_bytes(onnx_bytes)
    data = {
        "model_version": version, "feature_schema_version": FEATURE_SCHEMA_VERSION,
        "feature_names": list(FEATURE_NAMES), "kind": "logistic", "created_at": "2024-05-01T00:00:00Z",
        "data_range": [1_700_000_000_000, 1_700_100_000_000], "metrics": {"auc": 0.7},
        "offer_stats": {"o1": [0.25, 3.0]}, "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
    }
    data.update(manifest)
    (directory / MANIFEST).write_bytes(orjson.dumps(data))
    return directory


@pytest.fixture()
def bundle(tmp_path: Path, fitted: dict[str, Any]) -> Path:
    return write_bundle(tmp_path / "bundle", fitted["onnx"])


# ---- FallbackScorer ------------------------------------------------------------------------------


def test_fallback_scorer_ranks_by_popularity_then_discount() -> None:
    s = FallbackScorer()
    assert s.version == "fallback-popularity" and not s.offer_stats
    X = np.zeros((3, N), dtype=np.float32)
    X[:, FEATURE_NAMES.index("popularity_rate")] = [0.1, 0.0, 0.1]
    X[:, FEATURE_NAMES.index("discount")] = [0.0, 0.5, 0.3]
    X[:, FEATURE_NAMES.index("cat_affinity_30d")] = [9.0, 9.0, 9.0]  # ignored
    scores = s.score(X)
    assert scores.dtype == np.float32 and scores.shape == (3,)
    assert scores.tolist() == pytest.approx([0.05, 0.05, 0.08])


# ---- load_bundle -----------------------------------------------------------------------------------


def test_load_bundle_scores_match_sklearn(bundle: Path, fitted: dict[str, Any]) -> None:
    scorer = load_bundle(bundle)
    assert isinstance(scorer, OnnxScorer)
    assert scorer.version == "v1" and scorer.offer_stats == {"o1": (0.25, 3.0)}
    got = scorer.score(fitted["X"])
    want = fitted["model"].predict_proba(fitted["X"])[:, 1]
    assert got.shape == (64,) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert scorer.score(np.zeros((0, N), dtype=np.float32)).shape == (0,)


def test_tampered_model_is_refused(bundle: Path) -> None:
    data = bytearray((bundle / MODEL_FILE).read_bytes())
    data[-5] ^= 0xFF
    (bundle / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        load_bundle(bundle)


@pytest.mark.parametrize(
    "patch",
    [{"feature_names": list(reversed(FEATURE_NAMES))}, {"feature_names": list(FEATURE_NAMES)[:-1]},
     {"feature_schema_version": FEATURE_SCHEMA_VERSION + 1}, {"model_version": None}, {"sha256": "0" * 64}],
)
def test_mismatched_manifest_is_refused(tmp_path: Path, fitted: dict[str, Any], patch: dict[str, Any]) -> None:
    with pytest.raises(ModelError):
        load_bundle(write_bundle(tmp_path / "b", fitted["onnx"], **patch))


def test_missing_or_corrupt_files_are_refused(tmp_path: Path, fitted: dict[str, Any]) -> None:
    with pytest.raises(ModelError):
        load_bundle(tmp_path / "nothing-here")
    b = write_bundle(tmp_path / "b", fitted["onnx"])
    (b / MANIFEST).write_bytes(b"{not json")
    with pytest.raises(ModelError):
        load_bundle(b)
    (b / MANIFEST).write_bytes(b"[1, 2]")
    with pytest.raises(ModelError):
        load_bundle(b)
    b = write_bundle(tmp_path / "c", fitted["onnx"])
    (b / MODEL_FILE).unlink()
    with pytest.raises(ModelError):
        load_bundle(b)
    junk = b"this is not an onnx model"
    with pytest.raises(ModelError):  # checksum right, content wrong
        load_bundle(write_bundle(tmp_path / "d", junk))


# ---- ModelRegistry -------------------------------------------------------------------------------


def test_empty_registry(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    assert reg.versions() == [] and reg.current_version() is None and reg.load_current() is None


def test_register_promote_and_load_current(tmp_path: Path, fitted: dict[str, Any]) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    v1 = write_bundle(tmp_path / "b1", fitted["onnx"], version="v1")
    v2 = write_bundle(tmp_path / "b2", fitted["onnx"], version="v2")
    assert reg.register(v1) == "v1"
    assert reg.versions() == ["v1"] and reg.current_version() is None
    assert reg.register(v2, promote=True) == "v2"
    assert reg.versions() == ["v1", "v2"] and reg.current_version() == "v2"
    assert reg.load_current().version == "v2"  # type: ignore[union-attr]
    reg.promote("v1")
    assert reg.current_version() == "v1"
    scorer = reg.load_current()
    assert scorer is not None and scorer.version == "v1"
    np.testing.assert_allclose(scorer.score(fitted["X"]), fitted["model"].predict_proba(fitted["X"])[:, 1], atol=1e-5)
    # the registry holds its own copy: the source directory may go away
    shutil.rmtree(v1)
    assert reg.load_current().version == "v1"  # type: ignore[union-attr]
    assert not list((tmp_path / "reg" / "versions").glob(".staging-*"))
    # a second registry object on the same root sees the same state (what workers poll)
    assert ModelRegistry(tmp_path / "reg").current_version() == "v1"


def test_promoting_an_unknown_version_raises_not_found(tmp_path: Path, bundle: Path) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    reg.register(bundle, promote=True)
    with pytest.raises(NotFound):
        reg.promote("v999")
    with pytest.raises(KeyError):  # NotFound is also a KeyError
        reg.promote("../v1")
    assert reg.current_version() == "v1"


def test_tampered_bundle_is_not_registered(tmp_path: Path, fitted: dict[str, Any]) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    good = write_bundle(tmp_path / "good", fitted["onnx"], version="v1")
    reg.register(good, promote=True)
    bad = write_bundle(tmp_path / "bad", fitted["onnx"], version="v2")
    (bad / MODEL_FILE).write_bytes(fitted["onnx"] + b"\x00")
    with pytest.raises(ModelError):
        reg.register(bad, promote=True)
    assert reg.versions() == ["v1"] and reg.current_version() == "v1"


def test_wrong_feature_names_are_not_registered(tmp_path: Path, fitted: dict[str, Any]) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    bad = write_bundle(tmp_path / "bad", fitted["onnx"], version="v3",
                       feature_names=[*FEATURE_NAMES[1:], FEATURE_NAMES[0]])
    with pytest.raises(ModelError):
        reg.register(bad)
    assert reg.versions() == [] and reg.current_version() is None
    assert not (tmp_path / "reg" / "versions" / "v3").exists()


def test_promoted_bundle_corrupted_later_is_refused_on_load(tmp_path: Path, bundle: Path) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    reg.register(bundle, promote=True)
    (tmp_path / "reg" / "versions" / "v1" / MODEL_FILE).write_bytes(b"garbage")
    with pytest.raises(ModelError):
        reg.load_current()
    with pytest.raises(ModelError):
        reg.promote("v1")
    (tmp_path / "reg" / "CURRENT").write_text("gone\n")
    with pytest.raises(ModelError):
        reg.load_current()


@pytest.mark.parametrize("version", ["../escape", "a/b", "", ".hidden"])
def test_unsafe_version_names_are_refused(tmp_path: Path, fitted: dict[str, Any], version: str) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    with pytest.raises(ModelError):
        reg.register(write_bundle(tmp_path / "b", fitted["onnx"], version=version))
    assert reg.versions() == []
    assert not (tmp_path / "reg" / "escape").exists()


def test_reregistering_a_version_with_a_different_model_is_refused(tmp_path: Path, fitted: dict[str, Any]) -> None:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    reg = ModelRegistry(tmp_path / "reg")
    reg.register(write_bundle(tmp_path / "a", fitted["onnx"], version="v1"), promote=True)
    # the same bundle again is fine (idempotent)
    assert reg.register(write_bundle(tmp_path / "a2", fitted["onnx"], version="v1")) == "v1"
    rng = np.random.default_rng(1)
    X = rng.normal(size=(100, N)).astype(np.float32)
    other = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    onx = convert_sklearn(other, initial_types=[("input", FloatTensorType([None, N]))],
                          options={id(other): {"zipmap": False}}, target_opset={"": 15, "ai.onnx.ml": 3})
    with pytest.raises(ModelError):
        reg.register(write_bundle(tmp_path / "b", onx.SerializeToString(), version="v1"))
    scorer = reg.load_current()
    assert scorer is not None
    np.testing.assert_allclose(scorer.score(fitted["X"]), fitted["model"].predict_proba(fitted["X"])[:, 1], atol=1e-5)
