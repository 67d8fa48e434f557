"""Fixtures shared by every test folder.

``broker`` is a real broker, one per test module, and every test that takes it runs twice: on the
bundled Tansu binary on a free loopback port (``[tansu]``), and on a 3-broker Apache Kafka cluster
in KRaft mode (``[kafka]``, :class:`tests.kafka_cluster.KafkaCluster`, jars from Maven Central via
``scripts/kafka.sh fetch``). Both have ``url`` (for ``--broker``) and ``bootstrap`` (for Kafka
clients). It never skips: if a broker cannot start, the test errors with why.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.workers import BROKER_KINDS, running_broker

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


@pytest.fixture(scope="module", params=BROKER_KINDS)
def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Start a broker for one test module (no topic leaks between modules): each kind in turn.

    Yields
    ------
    EmbeddedBroker or KafkaCluster
        A running broker; use ``broker.bootstrap`` for Kafka clients and ``broker.url`` for faust.
    """
    with running_broker(request.param, tmp_path_factory.mktemp(f"broker-{request.param}")) as started:
        yield started
