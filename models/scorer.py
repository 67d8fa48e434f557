"""Scoring: an ONNX model bundle (``manifest.json`` + ``model.onnx``) run by onnxruntime.

A bundle directory holds::

    manifest.json   {"model_version", "feature_schema_version", "feature_names", "kind",
                     "created_at", "data_range", "metrics", "offer_stats", "sha256",
                     "latency"?}  (latency: the ONNX call's CPU for 200 rows at export)
    model.onnx      a binary classifier whose input is the :func:`models.features.vectorize`
                    matrix and whose output includes a (n, 2) probability tensor

:func:`load_bundle` refuses a bundle whose feature names or schema version differ from this code's,
or whose model file does not match the manifest's checksum. All candidates are scored in one call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson

from models.errors import ModelError
from models.features import FEATURE_NAMES, FEATURE_SCHEMA_VERSION

__all__ = ["Scorer", "OnnxScorer", "FallbackScorer", "load_bundle", "MANIFEST", "MODEL_FILE"]

MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"


class Scorer(Protocol):
    """What the decision code needs from a model."""

    version: str
    offer_stats: Mapping[str, Sequence[float]]

    def score(self, X: np.ndarray) -> np.ndarray:
        """Probability of a positive response for each row of ``X``."""
        ...


@dataclass
class OnnxScorer:
    """An onnxruntime session over a validated bundle (one thread: requests run concurrently)."""

    version: str
    offer_stats: Mapping[str, Sequence[float]]
    manifest: Mapping[str, Any]
    session: Any
    input_name: str
    output_index: int

    def score(self, X: np.ndarray) -> np.ndarray:
        """Score all rows in one onnxruntime call; returns float32 probabilities."""
        if X.shape[0] == 0:
            return np.empty(0, dtype=np.float32)
        out = self.session.run(None, {self.input_name: X})[self.output_index]
        return np.asarray(out, dtype=np.float32)[:, 1]


@dataclass
class FallbackScorer:
    """Used only when no model is registered: ranks by offer popularity and discount.

    Its ``version`` says so (``"fallback-popularity"``), so no decision claims a model it did
    not use.
    """

    version: str = "fallback-popularity"
    offer_stats: Mapping[str, Sequence[float]] = ()  # type: ignore[assignment]

    def score(self, X: np.ndarray) -> np.ndarray:
        """A monotone mix of the popularity rate and discount features."""
        names = FEATURE_NAMES
        pop = X[:, names.index("popularity_rate")]
        discount = X[:, names.index("discount")]
        return (0.5 * pop + 0.1 * discount).astype(np.float32)


def _read_manifest(directory: Path) -> dict[str, Any]:
    try:
        manifest = orjson.loads((directory / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise ModelError(f"{directory}: no {MANIFEST}") from None
    except orjson.JSONDecodeError as exc:
        raise ModelError(f"{directory}/{MANIFEST} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise ModelError(f"{directory}/{MANIFEST} must be a JSON object")
    return manifest


def _check_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    if manifest.get("feature_schema_version") != FEATURE_SCHEMA_VERSION:
        raise ModelError(
            f"{directory}: feature schema {manifest.get('feature_schema_version')!r} "
            f"does not match this code's {FEATURE_SCHEMA_VERSION}"
        )
    if list(manifest.get("feature_names", [])) != list(FEATURE_NAMES):
        raise ModelError(f"{directory}: feature names differ from models.features.FEATURE_NAMES")
    if not isinstance(manifest.get("model_version"), str):
        raise ModelError(f"{directory}: manifest has no model_version")


def load_bundle(directory: str | Path) -> OnnxScorer:
    """Load and validate a model bundle.

    Raises
    ------
    ModelError
        If the bundle is missing, corrupt, or built for another feature schema.
    """
    import onnxruntime as ort  # heavy import: only where a model is really loaded

    directory = Path(directory)
    manifest = _read_manifest(directory)
    _check_manifest(directory, manifest)
    try:
        model_bytes = (directory / MODEL_FILE).read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{directory}: no {MODEL_FILE}") from None
    if hashlib.sha256(model_bytes).hexdigest() != manifest.get("sha256"):
        raise ModelError(f"{directory}: {MODEL_FILE} does not match the manifest's sha256")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad model
        raise ModelError(f"{directory}: onnxruntime cannot load the model: {exc}") from None
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].shape[-1] not in (len(FEATURE_NAMES), None, "None"):
        raise ModelError(f"{directory}: model input does not take {len(FEATURE_NAMES)} features")
    index = _probability_output(session, directory)
    stats = {k: tuple(v) for k, v in manifest.get("offer_stats", {}).items()}
    scorer = OnnxScorer(manifest["model_version"], stats, manifest, session, inputs[0].name, index)
    probe = scorer.score(np.zeros((2, len(FEATURE_NAMES)), dtype=np.float32))
    if probe.shape != (2,) or not np.all(np.isfinite(probe)):
        raise ModelError(f"{directory}: the model does not return finite probabilities")
    return scorer


def _probability_output(session: Any, directory: Path) -> int:
    for i, out in enumerate(session.get_outputs()):
        if len(out.shape) == 2 and out.shape[1] == 2 and "tensor" in out.type:
            return i
    raise ModelError(f"{directory}: no (n, 2) probability output (convert with zipmap=False)")
