"""The model a worker serves, reloaded when a new version is promoted in the registry."""

from __future__ import annotations

import logging

from models.errors import ModelError
from models.registry import ModelRegistry
from models.scorer import FallbackScorer, Scorer

__all__ = ["ModelHolder"]

log = logging.getLogger("offerstream.model")


class ModelHolder:
    """Holds the current scorer; a bundle that fails validation never replaces a working one."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self.scorer: Scorer = FallbackScorer()
        self.last_error: str | None = None
        self._tried: str | None = None

    @property
    def loaded(self) -> bool:
        """True once a registered model (not the fallback) is serving."""
        return not isinstance(self.scorer, FallbackScorer)

    def refresh(self) -> bool:
        """Load the promoted version if it changed; return True if the scorer was replaced."""
        version = self.registry.current_version()
        if version is None or version == self._tried:
            return False
        self._tried = version
        try:
            scorer = self.registry.load_current()
        except ModelError as exc:
            self.last_error = str(exc)
            log.error("model %s refused, still serving %s: %s", version, self.scorer.version, exc)
            return False
        if scorer is None:
            return False
        self.scorer, self.last_error = scorer, None
        log.warning("now serving model %s", scorer.version)
        return True
