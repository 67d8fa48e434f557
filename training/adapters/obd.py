"""Adapter for the Open Bandit Dataset sample (ZOZOTOWN) -> offers, contract events, log arrays.

Source files (``shared/data/obd/{policy}``, policy ``"random"`` or ``"bts"``): ``all.csv.gz``
(10,000 logged impressions: timestamp, item_id, position, click, propensity_score,
user_feature_0..3 hashed, user-item_affinity_0..79) and ``item_context.csv`` (80 items).

Mapping
-------
* **Offers**: one per item, ``offer_id = "obd-item-{item_id}"``, ``kind = "discount"``,
  ``requires = []``, ``category = "obd-" + item_feature_1[:8]``; ``attributes`` hold
  ``item_feature_0`` (float) and the hashed ``item_feature_1..3``. ``discount_pct`` is ``0.0``
  and the validity window ``None`` (not in the data).
* **offer_impression** per log row ``i``: ``event_id = decision_id = "obd-{policy}-{i}"``,
  ``ts`` = the row's timestamp in epoch ms (microseconds truncated), ``propensity =
  propensity_score``, ``position`` = the logged slot **made 0-based** (source 1..3 -> 0..2, as
  ``obp`` does, and as the Complete Journey adapter's single slot 0). Extra field ``context``:
  ``{"user_features": [4 hashed strings], "affinity": user-item affinity of the shown item}``.
* **offer_click** when ``click == 1``: ``ts`` = impression ``ts`` + 1 ms, ``event_id =
  "obd-{policy}-{i}-click"``, same ``offer_id``/``decision_id``.
* **customer_id**: the sample has no user id. It is ``"obd-"`` + the first 12 hex digits of the
  SHA-1 of the four hashed user features: a user *segment* (240 in the random log, 253 in the
  bts log), not a person. Profiles built from it are segment profiles.

Caveats measured on the shipped sample
--------------------------------------
* The hashed **item** features 1..3 use a different hash per policy sample (``item_feature_0``
  is identical; the category partitions map one-to-one): ``category`` strings of the same item
  differ between ``load_offers(policy="random")`` and ``load_offers(policy="bts")``. The hashed
  **user** features are shared (the random log's values are a subset of the bts log's), so
  ``customer_id`` segments are comparable across policies.
* random: 10,000 rows, 38 clicks, propensity 0.0125 on every row, 2019-11-24 00:00:34 ..
  2019-11-30 23:59:47 UTC. bts: 10,000 rows, 42 clicks, propensity 4.5e-05 .. ~0.95,
  2019-11-24 00:00:17 .. 2019-11-30 23:58:22 UTC. Both logs are already in time order.

Examples
--------
>>> pseudo_customer_id(["a", "b", "c", "d"])
'obd-0bbd674b569c'
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.adapters.common import DATA_ROOT, datetime_to_epoch_ms, read_csv

__all__ = [
    "DEFAULT_DATA_DIR",
    "POLICIES",
    "N_ITEMS",
    "pseudo_customer_id",
    "load_offers",
    "iter_events",
    "load_log",
]

#: Default directory holding ``random/`` and ``bts/``.
DEFAULT_DATA_DIR: Path = DATA_ROOT / "obd"

#: The logging policies shipped in the sample.
POLICIES: tuple[str, ...] = ("random", "bts")

#: Number of items (= offers) in campaign "all".
N_ITEMS: int = 80

_USER_FEATURES = tuple(f"user_feature_{k}" for k in range(4))
_AFFINITY = tuple(f"user-item_affinity_{j}" for j in range(N_ITEMS))


def _policy_dir(data_dir: Path, policy: str) -> Path:
    """Return ``data_dir / policy`` after checking the policy name."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    return Path(data_dir) / policy


def pseudo_customer_id(user_features: Sequence[str]) -> str:
    """Derive the pseudo customer id (a user *segment*) from the four hashed user features.

    Parameters
    ----------
    user_features : sequence of str
        ``user_feature_0..3`` of a log row.

    Returns
    -------
    str
        ``"obd-"`` + the first 12 hex digits of SHA-1 over the features joined by ``"|"``.
    """
    digest = hashlib.sha1("|".join(user_features).encode(), usedforsecurity=False)
    return "obd-" + digest.hexdigest()[:12]


def load_offers(data_dir: Path = DEFAULT_DATA_DIR, policy: str = "random") -> list[dict[str, Any]]:
    """Build one offer (DESIGN.md offer shape) per item of ``{policy}/item_context.csv``.

    Parameters
    ----------
    data_dir : Path
        Directory holding ``random/`` and ``bts/``.
    policy : {"random", "bts"}
        Which sample's item context to read (their hashed features differ, see module notes).

    Returns
    -------
    list[dict]
        80 offers ordered by item id.
    """
    rows = read_csv(_policy_dir(data_dir, policy) / "item_context.csv")
    offers = []
    for row in sorted(rows, key=lambda r: int(r["item_id"])):
        item_id = int(row["item_id"])
        offers.append({
            "offer_id": f"obd-item-{item_id}",
            "title": f"OBD item {item_id}",
            "category": "obd-" + row["item_feature_1"][:8],
            "kind": "discount",
            "discount_pct": 0.0,
            "valid_from": None,
            "valid_to": None,
            "requires": [],
            "max_impressions_per_day": None,
            "attributes": {"item_id": item_id,
                           "item_feature_0": float(row["item_feature_0"]),
                           **{f"item_feature_{k}": row[f"item_feature_{k}"] for k in (1, 2, 3)}},
        })
    return offers


def _log_rows(data_dir: Path, policy: str) -> list[dict[str, str]]:
    """Read ``{policy}/all.csv.gz`` and check that its affinity columns are all present."""
    rows = list(read_csv(_policy_dir(data_dir, policy) / "all.csv.gz"))
    if rows and not all(name in rows[0] for name in _AFFINITY + _USER_FEATURES):
        raise ValueError(f"{policy}/all.csv.gz lacks user feature or affinity columns")
    return rows


def _row_events(policy: str, index: int, row: dict[str, str]) -> list[dict[str, Any]]:
    """The impression of one log row, followed by its click if there was one."""
    item_id = int(row["item_id"])
    user_features = [row[name] for name in _USER_FEATURES]
    base: dict[str, Any] = {"customer_id": pseudo_customer_id(user_features),
            "ts": datetime_to_epoch_ms(row["timestamp"]),
            "offer_id": f"obd-item-{item_id}", "decision_id": f"obd-{policy}-{index}"}
    impression = {"event_id": f"obd-{policy}-{index}", "type": "offer_impression", **base,
                  "position": int(row["position"]) - 1,
                  "propensity": float(row["propensity_score"]),
                  "context": {"user_features": user_features,
                              "affinity": float(row[_AFFINITY[item_id]])}}
    if int(row["click"]) != 1:
        return [impression]
    click = {"event_id": f"obd-{policy}-{index}-click", "type": "offer_click",
             **base, "ts": base["ts"] + 1}
    return [impression, click]


def iter_events(data_dir: Path = DEFAULT_DATA_DIR,
                policy: str = "random") -> Iterator[dict[str, Any]]:
    """Yield the logged impressions and clicks of one policy as contract events, in ``ts`` order.

    Parameters
    ----------
    data_dir : Path
        Directory holding ``random/`` and ``bts/``.
    policy : {"random", "bts"}
        The logging policy whose log to read.

    Yields
    ------
    dict
        JSON-serializable ``offer_impression`` / ``offer_click`` events (ts in epoch ms),
        ordered by ``ts``, then row index, impression before its click.
    """
    keyed = []
    for index, row in enumerate(_log_rows(data_dir, policy)):
        for rank, event in enumerate(_row_events(policy, index, row)):
            keyed.append(((event["ts"], index, rank), event))
    keyed.sort(key=lambda pair: pair[0])
    for _, event in keyed:
        yield event


def _codes(values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes (index into the sorted distinct values) and the distinct values."""
    vocab, codes = np.unique(np.asarray(values, dtype=str), return_inverse=True)
    return codes.astype(np.int64), vocab


def load_log(data_dir: Path = DEFAULT_DATA_DIR, policy: str = "random") -> dict[str, np.ndarray]:
    """Load one policy's log as numpy arrays for off-policy evaluation.

    Parameters
    ----------
    data_dir : Path
        Directory holding ``random/`` and ``bts/``.
    policy : {"random", "bts"}
        The logging policy whose log to read.

    Returns
    -------
    dict[str, numpy.ndarray]
        Row-aligned arrays of length n (10,000): ``row_index``, ``item_id``, ``position``
        (0-based), ``click`` (int64 0/1), ``propensity`` (float64), ``timestamp_ms`` (int64),
        ``customer_id`` (str, the segment id of :func:`pseudo_customer_id`),
        ``affinity`` (float32, shape (n, 80), column j = item j), and for k in 0..3
        ``user_feature_{k}`` (int64 codes) with ``user_feature_{k}_values`` (the sorted
        distinct hashes the codes index). Codes are per file: align policies via the values.
    """
    rows = _log_rows(data_dir, policy)
    out: dict[str, np.ndarray] = {
        "row_index": np.arange(len(rows), dtype=np.int64),
        "item_id": np.array([int(r["item_id"]) for r in rows], dtype=np.int64),
        "position": np.array([int(r["position"]) - 1 for r in rows], dtype=np.int64),
        "click": np.array([int(r["click"]) for r in rows], dtype=np.int64),
        "propensity": np.array([float(r["propensity_score"]) for r in rows], dtype=np.float64),
        "timestamp_ms": np.array([datetime_to_epoch_ms(r["timestamp"]) for r in rows],
                                 dtype=np.int64),
        "customer_id": np.array([pseudo_customer_id([r[f] for f in _USER_FEATURES])
                                 for r in rows], dtype=str),
        "affinity": np.array([[r[name] for name in _AFFINITY] for r in rows],
                             dtype=np.float64).reshape(len(rows), N_ITEMS).astype(np.float32),
    }
    for name in _USER_FEATURES:
        out[name], out[f"{name}_values"] = _codes([r[name] for r in rows])
    return out
