"""Fixtures shared by every test folder."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real data sets beside the repository."""
    if not (DATA_DIR / "completejourney").is_dir():
        pytest.fail(f"the shared data is missing at {DATA_DIR}", pytrace=False)
    return DATA_DIR


@pytest.fixture(scope="session")
def trained_registry(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A model registry holding the first model trained on the Complete Journey sample."""
    from training.first_model import train_first_model

    root = tmp_path_factory.mktemp("registry")
    train_first_model(root / "bundle", data_dir=shared_data / "completejourney",
                      registry_root=root / "models", progress=lambda *a, **k: None)
    return root / "models"
