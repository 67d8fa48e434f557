"""Online vs offline over the one event rule: replay builds exactly the state the agent stores.

Both sides call :func:`models.customer_state.apply_event`, the rule the ingest agent calls; there
is no copy of it here. The "online" side applies the parsed events one at a time with state stored
as orjson bytes between events, as the tables store it, and redelivery included; the offline side
is :func:`training.replay.replay`. ``tests/integration/test_live_replay_parity.py`` runs the same
log through a real worker.
"""

from __future__ import annotations

from typing import Any

import orjson

from models.catalog import parse_offer
from models.consent import ConsentState
from models.customer_state import apply_event
from models.events import parse_event
from models.profile import HOUR_MS, Profile
from training.replay import replay

T0 = 1_700_000_000_000
OFFERS = {"o1": parse_offer({"offer_id": "o1", "category": "shoes", "kind": "discount"})}
GRANT = {"profile": True, "personalize": True, "marketing": True, "measurement": True,
         "training": True}
SHOE = {"item_id": "s1", "category": "shoes", "price": 45.0, "quantity": 1}


def _event_log() -> list[dict[str, Any]]:
    raw: list[tuple[str, str, dict[str, Any]]] = [
        ("consent", "c1", {"consent": {"flags": GRANT}}),
        ("page_view", "c1", {"url": "/shoes", "category": "shoes"}),
        ("page_view", "c2", {"url": "/food", "category": "food"}),  # c2 never consents
        ("product_view", "c1", {"item_id": "s1", "category": "shoes", "price": 50.0}),
        ("consent", "c3", {"consent": {"flags": {"profile": True}}}),
        ("add_to_cart", "c1", {"item_id": "s1", "category": "shoes", "price": 50.0, "quantity": 1}),
        ("search", "c3", {"query": "tea", "category": "food"}),
        ("offer_impression", "c1", {"offer_id": "o1", "decision_id": "d1", "position": 0}),
        ("offer_click", "c1", {"offer_id": "o1", "decision_id": "d1"}),
        ("purchase", "c1", {"order_id": "b1", "channel": "store", "total": 45.0, "items": [SHOE]}),
        ("preference", "c3", {"exclude_categories": ["toys"]}),
        ("offer_dismiss", "c3", {"offer_id": "o1", "decision_id": "d2"}),
        ("consent", "c3", {"consent": {"flags": {"profile": False}}}),  # erases c3's profile
        ("page_view", "c3", {"url": "/tea", "category": "food"}),       # not profiled any more
        ("add_to_cart", "c1", {"item_id": "s2", "category": "bags", "price": 20.0, "quantity": 2}),
        ("remove_from_cart", "c1", {"item_id": "s2", "quantity": 1}),
        ("consent", "c1", {"consent": {"gpc": True, "flags": {"marketing": False}}}),
        ("return", "c1", {"order_id": "b1", "channel": "web", "total": 45.0, "items": [SHOE]}),
    ]
    return [{"event_id": f"e{i}", "type": t, "customer_id": c, "ts": T0 + i * HOUR_MS // 3, **f}
            for i, (t, c, f) in enumerate(raw)]


class FakeTopology:
    """The five state calls of the rule, over dicts of orjson bytes (as the tables store state)."""

    def __init__(self) -> None:
        self.consent: dict[str, bytes] = {}
        self.profiles: dict[str, bytes] = {}

    def read_consent(self, cid: str) -> ConsentState:
        raw = self.consent.get(cid)
        return ConsentState.from_dict(orjson.loads(raw)) if raw else ConsentState.unknown()

    def write_consent(self, cid: str, state: ConsentState) -> None:
        self.consent[cid] = orjson.dumps(state.to_dict())

    def read_profile(self, cid: str) -> Profile | None:
        raw = self.profiles.get(cid)
        return Profile.from_dict(orjson.loads(raw)) if raw else None

    def write_profile(self, cid: str, profile: Profile) -> None:
        self.profiles[cid] = orjson.dumps(profile.to_dict())

    def erase_profile(self, cid: str) -> bool:
        return self.profiles.pop(cid, None) is not None


def _online(events: list[dict[str, Any]]) -> FakeTopology:
    topo = FakeTopology()
    for raw in events:
        apply_event(topo, parse_event(raw))
    return topo


def _stored(profile: Profile) -> dict[str, Any]:
    """A profile as the tables hold it (plain data through JSON)."""
    return orjson.loads(orjson.dumps(profile.to_dict()))


def _assert_same_state(offline: Any, online: FakeTopology) -> None:
    assert set(offline.profiles) == set(online.profiles) == {"c1"}  # c2 never, c3 erased
    for cid, profile in offline.profiles.items():
        assert _stored(profile) == orjson.loads(online.profiles[cid])
    for cid in ("c1", "c3"):
        assert offline.consents[cid].to_dict() == online.read_consent(cid).to_dict()


def test_replay_profile_equals_event_by_event_profile() -> None:
    events = _event_log()
    offline = replay(events, OFFERS)
    _assert_same_state(offline, _online(events))
    assert offline.profiles["c1"].n_events == 9
    assert offline.consents["c3"].dismissed == ["o1"]


def test_redelivered_events_give_the_same_profile() -> None:
    events = _event_log()
    once = replay(events, OFFERS)
    each_twice = [e for e in events for _ in range(2)]
    assert _stored(replay(events + events, OFFERS).profiles["c1"]) == _stored(once.profiles["c1"])
    assert _stored(replay(each_twice, OFFERS).profiles["c1"]) == _stored(once.profiles["c1"])
    online_twice = _online(each_twice)
    for cid in online_twice.profiles:
        assert orjson.loads(online_twice.profiles[cid]) == _stored(once.profiles[cid])
    assert set(online_twice.profiles) == set(once.profiles)
