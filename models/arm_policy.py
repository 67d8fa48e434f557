"""What an experiment arm serves: the inputs of :func:`models.decision.decide` for its policy.

============  =======================================================================
policy        decision
============  =======================================================================
``model``     the named registry version (none named: the promoted one), with profile
``popularity``  offers ranked by the model bundle's popularity rate; no profile read
``random``    offers in a random order; no profile read
``none``      no offers (the holdout's policy)
============  =======================================================================

An arm's ``exploration`` replaces the worker's for its decisions. ``not_eligible`` customers get
the worker's default decision, which without ``personalize`` reads no profile anyway.

Examples
--------
>>> import numpy as np
>>> from models.features import FEATURE_NAMES
>>> X = np.zeros((2, len(FEATURE_NAMES)), dtype=np.float32)
>>> X[1, FEATURE_NAMES.index("popularity_rate")] = 0.5
>>> PopularityScorer({}).score(X).tolist()
[0.0, 0.5]
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.decision import ScoreRequest
from models.experiments import Arm
from models.exploration import Exploration
from models.features import FEATURE_INDEX
from models.profile import Profile
from models.scorer import Scorer

__all__ = ["PopularityScorer", "RandomScorer", "ArmInputs", "arm_inputs"]

_POPULARITY = FEATURE_INDEX["popularity_rate"]


@dataclass
class PopularityScorer:
    """Scores each offer by its popularity rate (the model bundle's ``offer_stats``)."""

    offer_stats: Mapping[str, Sequence[float]]
    version: str = "popularity"

    def score(self, X: np.ndarray) -> np.ndarray:
        """The ``popularity_rate`` column."""
        return np.asarray(X[:, _POPULARITY], dtype=np.float32)


@dataclass
class RandomScorer:
    """Scores each offer uniformly at random."""

    offer_stats: Mapping[str, Sequence[float]]
    version: str = "random"
    rng: random.Random = field(default_factory=random.Random)

    def score(self, X: np.ndarray) -> np.ndarray:
        """One uniform draw per row."""
        return np.asarray([self.rng.random() for _ in range(X.shape[0])], dtype=np.float32)


@dataclass(frozen=True)
class ArmInputs:
    """The arguments of ``decide`` that the arm's policy sets."""

    request: ScoreRequest
    profile: Profile | None
    scorer: Scorer
    exploration: Exploration


def arm_inputs(arm: Arm | None, request: ScoreRequest, profile: Profile | None, current: Scorer,
               exploration: Exploration, versions: Callable[[str], Scorer | None]) -> ArmInputs:
    """The decision inputs for ``arm`` (``None``: holdout, i.e. policy ``none``).

    ``current`` is the promoted model; ``versions`` loads a registry version (``None`` if it cannot,
    then the promoted model serves and the answer's ``model_version`` says so).
    """
    explore = arm.exploration if arm is not None and arm.exploration is not None else exploration
    kind = "none" if arm is None else arm.policy.kind
    if kind == "model":
        version = arm.policy.version if arm is not None else None
        scorer = (versions(version) if version else None) or current
        return ArmInputs(request, profile, scorer, explore)
    if kind == "popularity":
        return ArmInputs(request, None, PopularityScorer(current.offer_stats), explore)
    if kind == "random":
        return ArmInputs(request, None, RandomScorer(current.offer_stats), explore)
    empty: Any = dataclasses.replace(request, candidates=())
    return ArmInputs(empty, None, PopularityScorer(current.offer_stats, version="none"), explore)
