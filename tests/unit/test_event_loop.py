"""The worker's event loop choice (``OFFERSTREAM_EVENT_LOOP``)."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from offerstream.cli import _use_event_loop


@pytest.fixture(autouse=True)
def _restore_policy():  # type: ignore[no-untyped-def]
    policy = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(policy)
    asyncio.set_event_loop(None)


def test_default_is_uvloop_where_installed() -> None:
    assert _use_event_loop("") == "uvloop"
    assert isinstance(asyncio.get_event_loop_policy().get_event_loop(), uvloop.Loop)


def test_asyncio_can_be_chosen() -> None:
    assert _use_event_loop("asyncio") == "asyncio"
    assert not isinstance(asyncio.get_event_loop_policy().get_event_loop(), uvloop.Loop)


def test_an_unknown_loop_is_a_clear_error() -> None:
    with pytest.raises(SystemExit, match="must be 'uvloop' or 'asyncio', not 'tokio'"):
        _use_event_loop("tokio")
