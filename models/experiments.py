"""Experiments as configuration: parsing, validation, and the assignment of customers to arms.

An experiment is the body of ``PUT /v1/experiments/{id}`` (DESIGN.md, "Experiments")::

    {holdout?, arms: [{name, share, policy, exploration?}], control, attribution_window_s?,
     start?, end?, placement?}

``policy`` is ``{kind: "model", version?}`` (a registry version; none: the promoted one),
``{kind: "popularity"}``, ``{kind: "random"}`` or ``{kind: "none"}`` (no offers). ``exploration``
is ``greedy``, ``epsilon:E`` or ``softmax:T`` (:mod:`models.exploration`). ``placement`` (an
extension) is a name the score request's ``context.placement`` is matched against; an experiment
without one covers every placement. Two experiments that cover the same placement at the same time
overlap and are refused (:func:`check_overlap`), so at most one experiment applies to any request.

Assignment (:func:`assign`) is a keyed hash, the same on every worker and after restarts: two
independent numbers in [0, 1) from BLAKE2b of the experiment id and the customer id,
``u_holdout`` (salt ``holdout``) and ``u_arm`` (salt ``arm``). A customer is in the holdout if
``u_holdout < holdout``; otherwise in the first arm (in the body's order) whose cumulative share
exceeds ``u_arm``. So when the configuration changes, exactly these customers move:

* the holdout goes from ``h`` to ``h'``: only those with ``u_holdout`` between ``h`` and ``h'``
  (they enter or leave the holdout; everyone else keeps their arm);
* arm shares change: only those whose ``u_arm`` lies between an old and the new cumulative
  boundary of the same position. Appending an arm that takes its share from the last arm moves only
  customers of the last arm into it; reordering arms moves many, so keep the order.

Customers without the ``personalize`` flag are never assigned: their arm is ``not_eligible``.

Examples
--------
>>> body = {"holdout": 0.1, "arms": [{"name": "a", "share": 0.5, "policy": {"kind": "popularity"}},
...         {"name": "b", "share": 0.5, "policy": {"kind": "random"}}], "control": "a"}
>>> exp = parse_experiment(body, "e1")
>>> assign(exp, "c1", personalize=True) == assign(exp, "c1", personalize=True)
True
>>> assign(exp, "c1", personalize=False)
'not_eligible'
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from models.errors import InvalidEvent, InvalidRequest, ValidationError
from models.events import parse_ts
from models.exploration import Exploration, parse_exploration

__all__ = ["Policy", "Arm", "Experiment", "parse_experiment", "check_overlap", "bucket", "assign",
           "find_experiment", "HOLDOUT", "NOT_ELIGIBLE", "POLICY_KINDS", "DEFAULT_WINDOW_S", "MAX_ARMS"]

HOLDOUT = "holdout"
NOT_ELIGIBLE = "not_eligible"
POLICY_KINDS = ("model", "popularity", "random", "none")
DEFAULT_WINDOW_S = 86_400
SHARE_TOLERANCE = 1e-6
MAX_ARMS = 20
_ID_MAX = 128


@dataclass(frozen=True, slots=True)
class Policy:
    """What an arm serves: ``kind`` one of :data:`POLICY_KINDS`; ``version`` for ``model``."""

    kind: str
    version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"kind": self.kind, "version": self.version} if self.version else {"kind": self.kind}


@dataclass(frozen=True, slots=True)
class Arm:
    """One arm: its name, traffic share, policy and exploration (``None``: the worker's)."""

    name: str
    share: float
    policy: Policy
    exploration: Exploration | None = None
    exploration_text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        out: dict[str, Any] = {"name": self.name, "share": self.share, "policy": self.policy.to_dict()}
        if self.exploration_text is not None:
            out["exploration"] = self.exploration_text
        return out


@dataclass(frozen=True, slots=True)
class Experiment:
    """A validated experiment. Times are epoch milliseconds; ``end_ms`` is exclusive."""

    id: str
    arms: tuple[Arm, ...]
    control: str
    holdout: float = 0.0
    attribution_window_s: int = DEFAULT_WINDOW_S
    start_ms: int | None = None
    end_ms: int | None = None
    placement: str | None = None

    def arm(self, name: str) -> Arm | None:
        """The arm called ``name``, or ``None`` (``holdout``, ``not_eligible``)."""
        return next((a for a in self.arms if a.name == name), None)

    def running(self, now_ms: int) -> bool:
        """True if ``now_ms`` is within ``[start, end)``."""
        return (self.start_ms is None or self.start_ms <= now_ms) and (self.end_ms is None or now_ms < self.end_ms)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what ``GET /v1/experiments`` lists and the topic carries)."""
        out: dict[str, Any] = {"id": self.id, "holdout": self.holdout, "arms": [a.to_dict() for a in self.arms],
                               "control": self.control, "attribution_window_s": self.attribution_window_s}
        for name, value in (("start", self.start_ms), ("end", self.end_ms), ("placement", self.placement)):
            if value is not None:
                out[name] = value
        return out


def parse_experiment(body: Any, experiment_id: str, known_versions: Collection[str] | None = None) -> Experiment:
    """Validate a ``PUT /v1/experiments/{id}`` body.

    Parameters
    ----------
    body : Any
        The decoded JSON body.
    experiment_id : str
        The id from the path.
    known_versions : collection of str, optional
        The registry's model versions; a ``model`` policy naming another is refused. ``None``
        skips that check (a worker applying the topic: the writer checked it).

    Raises
    ------
    InvalidRequest
        Naming the field: ``arms[1].share``, ``control``, ``arms[0].policy.version``, ...
    """
    if not isinstance(experiment_id, str) or not experiment_id or len(experiment_id) > _ID_MAX:
        raise InvalidRequest("id", f"must be a non-empty string of at most {_ID_MAX} characters")
    if not isinstance(body, dict):
        raise InvalidRequest("", "body must be a JSON object {holdout?, arms, control, attribution_window_s?, "
                                 "start?, end?, placement?}")
    holdout = _fraction(body.get("holdout", 0.0), "holdout", upper_open=True)
    arms = _arms(body.get("arms"), known_versions)
    control = body.get("control")
    if not isinstance(control, str) or all(a.name != control for a in arms):
        raise InvalidRequest("control", f"must name one of the arms ({', '.join(a.name for a in arms)}), "
                                        f"got {control!r}")
    window = body.get("attribution_window_s", DEFAULT_WINDOW_S)
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= 90 * 86_400:
        raise InvalidRequest("attribution_window_s", "must be an integer number of seconds from 1 to 7776000 (90 d)")
    start, end = _time(body.get("start"), "start"), _time(body.get("end"), "end")
    if start is not None and end is not None and end <= start:
        raise InvalidRequest("end", "must be after start")
    placement = body.get("placement")
    if placement is not None and (not isinstance(placement, str) or not placement or len(placement) > _ID_MAX):
        raise InvalidRequest("placement", f"must be a non-empty string of at most {_ID_MAX} characters")
    return Experiment(experiment_id, arms, control, holdout, window, start, end, placement)


def _fraction(value: Any, field: str, *, upper_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest(field, "must be a number")
    if value < 0 or value > 1 or (upper_open and value >= 1):
        raise InvalidRequest(field, f"must be from 0 to {'below ' if upper_open else ''}1, got {value}")
    return float(value)


def _arms(raw: Any, known_versions: Collection[str] | None) -> tuple[Arm, ...]:
    if not isinstance(raw, list) or not raw or len(raw) > MAX_ARMS:
        raise InvalidRequest("arms", f"must be a list of 1 to {MAX_ARMS} arms")
    arms: list[Arm] = []
    for i, item in enumerate(raw):
        where = f"arms[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(where, "must be an object {name, share, policy, exploration?}")
        name = item.get("name")
        if not isinstance(name, str) or not name or len(name) > _ID_MAX or name in (HOLDOUT, NOT_ELIGIBLE):
            raise InvalidRequest(f"{where}.name", f"must be a non-empty string, not {HOLDOUT!r} or {NOT_ELIGIBLE!r}")
        if any(a.name == name for a in arms):
            raise InvalidRequest(f"{where}.name", f"{name!r} names two arms")
        share = _fraction(item.get("share"), f"{where}.share")
        policy = _policy(item.get("policy"), f"{where}.policy", known_versions)
        text = item.get("exploration")
        try:
            exploration = None if text is None else parse_exploration(text if isinstance(text, str) else "?")
        except ValidationError as exc:
            raise InvalidRequest(f"{where}.exploration", exc.reason) from None
        arms.append(Arm(name, share, policy, exploration, text))
    total = sum(a.share for a in arms)
    if abs(total - 1.0) > SHARE_TOLERANCE:
        raise InvalidRequest("arms[].share", f"the shares must add up to 1, they add up to {total:g}")
    return tuple(arms)


def _policy(raw: Any, where: str, known_versions: Collection[str] | None) -> Policy:
    if not isinstance(raw, dict) or raw.get("kind") not in POLICY_KINDS:
        raise InvalidRequest(f"{where}.kind", f"must be one of {', '.join(POLICY_KINDS)}")
    version = raw.get("version")
    if version is None:
        return Policy(raw["kind"])
    if raw["kind"] != "model":
        raise InvalidRequest(f"{where}.version", "only a model policy names a version")
    if not isinstance(version, str) or not version:
        raise InvalidRequest(f"{where}.version", "must be a registry model version")
    if known_versions is not None and version not in known_versions:
        raise InvalidRequest(f"{where}.version", f"unknown model version {version!r}; registered: "
                                                 f"{', '.join(sorted(known_versions)) or 'none'}")
    return Policy("model", version)


def _time(value: Any, field: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_ts(value, field)
    except InvalidEvent as exc:
        raise InvalidRequest(field, exc.reason) from None


def _overlap_in_time(a: Experiment, b: Experiment) -> bool:
    a_start, b_start = a.start_ms or -1, b.start_ms or -1
    a_end, b_end = a.end_ms or 2**63, b.end_ms or 2**63
    return a_start < b_end and b_start < a_end


def check_overlap(new: Experiment, existing: Mapping[str, Experiment], now_ms: int) -> None:
    """Refuse ``new`` if another experiment covers the same placement at an overlapping time.

    No placement covers every placement; no start is "since ever", no end "for ever". Replacing an
    experiment (same id) is not an overlap, nor is one that has ended by ``now_ms``.

    Raises
    ------
    InvalidRequest
        ``placement``, naming the experiment it overlaps.
    """
    for other in existing.values():
        ended = other.end_ms is not None and other.end_ms <= now_ms
        if other.id == new.id or ended or not _overlap_in_time(new, other):
            continue
        if new.placement is None or other.placement is None or new.placement == other.placement:
            where = f"placement {new.placement!r}" if new.placement else "every placement"
            raise InvalidRequest("placement", f"overlaps experiment {other.id!r} on {where} in time; "
                                              "give each its own placement or non-overlapping start/end")


def bucket(experiment_id: str, customer_id: str, salt: str) -> float:
    """A number in [0, 1) from BLAKE2b of the salt, experiment id and customer id.

    >>> 0.0 <= bucket("e", "c", "arm") < 1.0, bucket("e", "c", "arm") == bucket("e", "c", "arm")
    (True, True)
    """
    digest = hashlib.blake2b(f"{experiment_id}\x00{customer_id}".encode(), digest_size=8,
                             person=salt.encode()[:16]).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def assign(experiment: Experiment, customer_id: str, *, personalize: bool) -> str:
    """The arm of ``customer_id``: ``not_eligible``, ``holdout`` or an arm's name (module rule)."""
    if not personalize:
        return NOT_ELIGIBLE
    if experiment.holdout > 0.0 and bucket(experiment.id, customer_id, HOLDOUT) < experiment.holdout:
        return HOLDOUT
    u = bucket(experiment.id, customer_id, "arm")
    cumulative = 0.0
    for arm in experiment.arms:
        cumulative += arm.share
        if u < cumulative:
            return arm.name
    return experiment.arms[-1].name  # shares add up to 1 within rounding


def find_experiment(experiments: Mapping[str, Experiment], placement: str | None, now_ms: int) -> Experiment | None:
    """The running experiment covering ``placement`` (at most one: overlaps are refused)."""
    for experiment in experiments.values():
        if experiment.running(now_ms) and (experiment.placement is None or experiment.placement == placement):
            return experiment
    return None
