"""Export a fitted classifier as an ONNX model bundle, proving parity before anything is written.

The bundle is what :func:`models.scorer.load_bundle` reads: ``model.onnx`` (converted with a pinned
opset and ``zipmap=False``, so the probabilities are a plain ``(n, 2)`` tensor) and
``manifest.json``. Conversion runs in memory; onnxruntime must reproduce
``predict_proba(X_sample)[:, 1]`` within :data:`PARITY_TOLERANCE` or nothing is written. A boosted
binary classifier is written as its margin's tree ensemble + ``Sigmoid`` (see
:func:`_as_margin_graph`), and the manifest records what one call for 200 rows costs
(``latency``), so scoring cost is part of every model's record.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from models.errors import ModelError
from models.features import FEATURE_NAMES, FEATURE_SCHEMA_VERSION
from models.scorer import MANIFEST, MODEL_FILE, load_bundle

__all__ = ["TARGET_OPSET", "PARITY_TOLERANCE", "INPUT_NAME", "LATENCY_ROWS", "to_onnx",
           "onnx_probabilities", "onnx_cpu_ms", "export_bundle"]

#: Pinned opsets: the default domain and the ONNX-ML domain (tree ensembles).
TARGET_OPSET: dict[str, int] = {"": 15, "ai.onnx.ml": 3}
#: Largest allowed |sklearn - onnxruntime| probability difference on the sample.
PARITY_TOLERANCE = 1e-5
INPUT_NAME = "input"
#: The scoring cost recorded in every manifest is for this many rows (a 200-candidate request).
LATENCY_ROWS = 200
_RESERVED = frozenset({
    "model_version", "feature_schema_version", "feature_names", "kind", "created_at", "data_range",
    "metrics", "offer_stats", "sha256", "parity_max_abs_diff", "latency",
})


def to_onnx(model: Any) -> bytes:
    """Convert a fitted binary classifier (or a Pipeline ending in one, or a
    :class:`training.rank.LambdaMART`) to ONNX bytes.

    Raises
    ------
    ModelError
        If skl2onnx cannot convert it.
    """
    from training import rank

    if isinstance(model, rank.LambdaMART):  # no skl2onnx converter: it writes its own trees
        return rank.to_onnx(model, INPUT_NAME, len(FEATURE_NAMES), TARGET_OPSET)
    from skl2onnx import convert_sklearn  # heavy import: only when exporting
    from skl2onnx.common.data_types import FloatTensorType

    final = model.steps[-1][1] if hasattr(model, "steps") else model
    try:
        with warnings.catch_warnings():
            # skl2onnx 1.20 writes bools into int attributes of tree nodes; protobuf 6 only warns
            # (protobuf 7 refuses: the project pins protobuf<7 until skl2onnx is fixed).
            warnings.filterwarnings("ignore", "Field onnx.AttributeProto.ints", DeprecationWarning)
            onx = convert_sklearn(
                model, initial_types=[(INPUT_NAME, FloatTensorType([None, len(FEATURE_NAMES)]))],
                target_opset=TARGET_OPSET, options={id(final): {"zipmap": False}},
                name="offerstream",  # fixed graph name (default: random uuid): stable bytes
            )
    except Exception as exc:  # skl2onnx raises many unrelated types
        raise ModelError(f"cannot convert {type(model).__name__} to ONNX: {exc}") from exc
    return bytes(_as_margin_graph(onx).SerializeToString())


def _as_margin_graph(onx: Any) -> Any:
    """A binary tree-ensemble classifier as ``TreeEnsembleRegressor`` (raw margin) + ``Sigmoid``.

    skl2onnx writes a boosted binary classifier as one ``TreeEnsembleClassifier`` (LOGISTIC post
    transform) with a ``label`` and a ``(n, 2)`` probability output. onnxruntime's classifier
    kernel spends ~15 us per 200 rows on that post-processing (0.044 -> 0.029 ms for 20 trees;
    0.64 -> 0.57 ms for 150): the same trees as a regressor of the margin, then ``Sigmoid`` and
    ``[1 - p, p]``, give the same ``(n, 2)`` output (named ``probabilities``) without it. The
    label output is dropped (nothing reads it). Any other graph is returned as it is; the parity
    gate checks the result either way.
    """
    from onnx import TensorProto, helper

    graph = onx.graph
    if len(graph.node) != 1 or graph.node[0].op_type != "TreeEnsembleClassifier":
        return onx
    attrs = {a.name: helper.get_attribute_value(a) for a in graph.node[0].attribute}
    if (attrs.get("post_transform") != b"LOGISTIC"
            or list(attrs.get("classlabels_int64s", ())) != [0, 1]
            or set(attrs.get("class_ids", ())) != {0} or len(attrs.get("base_values", ())) != 1):
        return onx
    trees = {k: v for k, v in attrs.items() if k.startswith("nodes_")}
    trees.update(n_targets=1, post_transform="NONE", base_values=attrs["base_values"],
                 target_ids=attrs["class_ids"], target_nodeids=attrs["class_nodeids"],
                 target_treeids=attrs["class_treeids"], target_weights=attrs["class_weights"])
    nodes = [
        helper.make_node("TreeEnsembleRegressor", [INPUT_NAME], ["margin"], domain="ai.onnx.ml",
                         **trees),
        helper.make_node("Sigmoid", ["margin"], ["p1"]),
        helper.make_node("Sub", ["one", "p1"], ["p0"]),
        helper.make_node("Concat", ["p0", "p1"], ["probabilities"], axis=1),
    ]
    out = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    rebuilt = helper.make_graph(nodes, graph.name, [graph.input[0]], [out], initializer=[one])
    opsets = [helper.make_opsetid(domain, version) for domain, version in TARGET_OPSET.items()]
    return helper.make_model(rebuilt, producer_name=onx.producer_name, opset_imports=opsets)


def onnx_probabilities(model_bytes: bytes, X: np.ndarray) -> np.ndarray:
    """Positive-class probabilities of ``X`` from an ONNX model run by onnxruntime."""
    import onnxruntime as ort

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    outputs = session.get_outputs()
    index = next(i for i, o in enumerate(outputs) if len(o.shape) == 2 and o.shape[1] == 2)
    out = session.run(None, {session.get_inputs()[0].name: np.asarray(X, dtype=np.float32)})[index]
    return np.asarray(out, dtype=np.float64)[:, 1]


def onnx_cpu_ms(model_bytes: bytes, X: np.ndarray, rounds: int = 300) -> float:
    """Median thread CPU (ms) of one onnxruntime call on ``X``, in a session set up as serving's.

    One intra-op thread, as :func:`models.scorer.load_bundle`; 20 warm-up calls first. Thread CPU,
    not wall time, so another process on the machine moves it less (it still moves it some).
    """
    import time

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(X, dtype=np.float32)}
    for _ in range(20):
        session.run(None, feed)
    times = []
    for _ in range(rounds):
        start = time.thread_time()
        session.run(None, feed)
        times.append(time.thread_time() - start)
    return 1000.0 * float(np.median(times))


def _latency(model_bytes: bytes, X_sample: np.ndarray) -> dict[str, Any]:
    """The scoring cost recorded in the manifest: :func:`onnx_cpu_ms` for :data:`LATENCY_ROWS` rows
    of the sample (repeated in order if it is shorter)."""
    X = np.asarray(X_sample, dtype=np.float32)
    rows = X[np.arange(LATENCY_ROWS) % X.shape[0]]
    return {"onnx_cpu_ms": round(onnx_cpu_ms(model_bytes, rows), 4), "rows": LATENCY_ROWS,
            "method": "median thread CPU of 300 onnxruntime calls, 1 thread, on the parity "
                      "sample's rows",
            "nodes": _node_count(model_bytes)}


def _node_count(model_bytes: bytes) -> int:
    import onnx

    graph = onnx.load_from_string(model_bytes).graph
    return sum(len(a.ints) for n in graph.node for a in n.attribute if a.name == "nodes_nodeids")


def _parity(model: Any, model_bytes: bytes, X_sample: np.ndarray) -> float:
    X = np.asarray(X_sample, dtype=np.float32)
    if X.ndim != 2 or X.shape[1] != len(FEATURE_NAMES) or X.shape[0] == 0:
        raise ModelError(
            f"X_sample must be a non-empty (n, {len(FEATURE_NAMES)}) matrix, got {X.shape}")
    expected = model.predict_proba(X)[:, 1]
    diff = float(np.max(np.abs(onnx_probabilities(model_bytes, X) - expected)))
    if not diff <= PARITY_TOLERANCE:  # also catches NaN
        raise ModelError(f"ONNX and sklearn disagree: max |diff| {diff:.3g} > {PARITY_TOLERANCE:g}")
    return diff


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def _manifest(model_bytes: bytes, *, kind: str, data_range: Sequence[int],
              metrics: Mapping[str, Any], offer_stats: Mapping[str, Sequence[float]],
              parity: float, latency: Mapping[str, Any],
              extra: Mapping[str, Any] | None) -> dict[str, Any]:
    clash = _RESERVED & set(extra or {})
    if clash:
        raise ValueError(f"extra may not override manifest keys: {sorted(clash)}")
    now = datetime.now(UTC)
    sha = hashlib.sha256(model_bytes).hexdigest()
    return {
        "model_version": f"{kind}-{now:%Y%m%dT%H%M%S}-{sha[:8]}",
        "feature_schema_version": FEATURE_SCHEMA_VERSION,
        "feature_names": list(FEATURE_NAMES),
        "kind": kind,
        "created_at": now.isoformat(),
        "data_range": [_iso(data_range[0]), _iso(data_range[1])],
        "metrics": dict(metrics),
        "offer_stats": {k: [float(v[0]), float(v[1])] for k, v in sorted(offer_stats.items())},
        "sha256": sha,
        "parity_max_abs_diff": parity,
        "latency": dict(latency),
        **dict(extra or {}),
    }


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def export_bundle(
    model: Any,
    X_sample: np.ndarray,
    out_dir: str | Path,
    *,
    kind: str,
    data_range: Sequence[int],
    metrics: Mapping[str, Any],
    offer_stats: Mapping[str, Sequence[float]],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Convert, check parity, write ``model.onnx`` + ``manifest.json``, and load them back.

    Parameters
    ----------
    model : fitted sklearn classifier or Pipeline
    X_sample : array (n, len(FEATURE_NAMES))
        Rows for the parity check (use held-out rows).
    out_dir : path
        Bundle directory (created if missing; an older bundle there is replaced).
    kind : str
        Model family, e.g. ``"gbm"``; the version starts with it.
    data_range : (int, int)
        First and last event time of the training data, epoch ms.
    metrics : mapping
        Evaluation results to record.
    offer_stats : mapping
        ``offer_id -> (popularity_rate, log_n)`` that serving must use with this model.
    extra : mapping, optional
        More manifest keys (may not override the standard ones).

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    ModelError
        If conversion fails, parity is worse than :data:`PARITY_TOLERANCE` (nothing is written
        then), or the written bundle does not load.
    """
    model_bytes = to_onnx(model)
    parity = _parity(model, model_bytes, X_sample)
    manifest = _manifest(model_bytes, kind=kind, data_range=data_range, metrics=metrics,
                         offer_stats=offer_stats, parity=parity,
                         latency=_latency(model_bytes, X_sample), extra=extra)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / MODEL_FILE, model_bytes)
    options = orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
    _write_atomic(out / MANIFEST, orjson.dumps(manifest, option=options))
    scorer = load_bundle(out)
    if scorer.version != manifest["model_version"]:
        raise ModelError(f"{out}: bundle loads as {scorer.version!r}, "
                         f"expected {manifest['model_version']!r}")
    return out
