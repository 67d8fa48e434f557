"""A versioned model registry on a directory; promoting a version is one atomic file rename.

Layout::

    ROOT/versions/<version>/manifest.json, model.onnx
    ROOT/CURRENT            the promoted version's name

Workers poll :meth:`ModelRegistry.current_version` and load a new bundle when it changes; a bundle
that fails validation is refused and the previous one keeps serving.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import orjson

from models.errors import ModelError, NotFound
from models.scorer import MANIFEST, MODEL_FILE, OnnxScorer, load_bundle

__all__ = ["ModelRegistry"]


class ModelRegistry:
    """A model registry rooted at ``root``.

    Parameters
    ----------
    root : str or Path
        Directory of the registry (created if missing).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def versions_dir(self) -> Path:
        """Where each version's bundle lives."""
        return self.root / "versions"

    def versions(self) -> list[str]:
        """Registered versions, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir()
                      if not p.name.startswith(".") and (p / MANIFEST).is_file())  # skip staging

    def register(self, bundle_dir: str | Path, *, promote: bool = False) -> str:
        """Validate a bundle and copy it into the registry; return its version.

        Raises
        ------
        ModelError
            If the bundle does not load (nothing is registered then).
        """
        scorer = load_bundle(bundle_dir)
        version = scorer.version
        # The version names a directory: a path ("../x", "a/b"), "" or a dot name would escape
        # the registry or clash with its staging directories.
        if not version or version.startswith(".") or Path(version).name != version or "\\" in version:
            raise ModelError(f"model_version {version!r} is not a plain directory name")
        target = self.versions_dir / version
        if target.exists():
            # Same version, different model: refuse rather than keep serving the old one silently.
            existing = _manifest_sha256(target)
            if existing != scorer.manifest.get("sha256"):
                raise ModelError(f"model version {version!r} is already registered with another model")
        else:
            self.versions_dir.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=self.versions_dir, prefix=".staging-"))
            for name in (MANIFEST, MODEL_FILE):
                shutil.copy2(Path(bundle_dir) / name, staging / name)
            os.replace(staging, target)
        if promote:
            self.promote(scorer.version)
        return scorer.version

    def promote(self, version: str) -> None:
        """Make ``version`` the one every worker serves (validated first)."""
        if version not in self.versions():
            raise NotFound(f"model version {version!r} is not registered")
        load_bundle(self.versions_dir / version)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / ".CURRENT.tmp"
        tmp.write_text(version + "\n")
        os.replace(tmp, self.root / "CURRENT")

    def current_version(self) -> str | None:
        """The promoted version, or ``None`` if nothing was promoted."""
        try:
            return (self.root / "CURRENT").read_text().strip() or None
        except FileNotFoundError:
            return None

    def load_current(self) -> OnnxScorer | None:
        """Load the promoted bundle, or ``None`` if there is none.

        Raises
        ------
        ModelError
            If the promoted bundle is corrupt or mismatched.
        """
        version = self.current_version()
        if version is None:
            return None
        path = self.versions_dir / version
        if not path.is_dir():
            raise ModelError(f"promoted version {version!r} is missing from {self.versions_dir}")
        return load_bundle(path)


def _manifest_sha256(directory: Path) -> object:
    try:
        return orjson.loads((directory / MANIFEST).read_bytes()).get("sha256")
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return None
