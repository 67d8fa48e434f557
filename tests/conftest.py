"""Fixtures shared by every test folder.

``broker`` is the real bundled Tansu binary on a free loopback port, one per test module. It
never skips: if it cannot start, the test errors with the binary, port and the tail of its log.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.embedded.process import EmbeddedBroker

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


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """Start an embedded broker for one test module (no topic leaks between modules).

    Yields
    ------
    EmbeddedBroker
        A running broker; use ``broker.bootstrap`` for Kafka clients and ``broker.url`` for faust.
        Its output goes to ``broker.log_path`` inside the session's temporary directory.
    """
    log_path: Path = tmp_path_factory.mktemp("broker") / "tansu.log"
    embedded = EmbeddedBroker(log_path=log_path)
    try:
        embedded.start(timeout=30.0)
    except RuntimeError as exc:
        pytest.fail(f"the embedded broker did not start: {exc}", pytrace=False)
    try:
        yield embedded
    finally:
        embedded.stop()
