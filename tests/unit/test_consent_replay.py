"""A consent event read twice from ``events`` is applied once (at-least-once delivery).

The CI run of 8e04607 on Kafka found it: a worker stopped before its last flush's offsets were
committed read a customer's GPC consent event again after the restart and raised the consent
epoch a second time. Read again after a newer grant, an old revocation would also have undone the
grant. The consent state now keeps the keys of its last consent events (``ConsentState.seen``), in
the same stored record as the change, so the rule (:func:`apply_event`) recognises one read again.
"""

from __future__ import annotations

import orjson

from models.consent import MAX_SEEN_CONSENT, ConsentState, apply_update, parse_update
from models.customer_state import DictState, apply_event
from models.events import parse_event

TS = 1_700_000_000_000
GRANT = parse_event({"event_id": "c1", "type": "consent", "customer_id": "c", "ts": TS,
                     "consent": {"flags": {"profile": True, "personalize": True, "sharing": True}}})
GPC = parse_event({"event_id": "c2", "type": "consent", "customer_id": "c", "ts": TS + 10, "consent": {"gpc": True}})


def _stored_and_read_back(state: DictState) -> DictState:
    """The state as a restarted worker reads it from its consent table."""
    again = DictState()
    again.consents = {c: ConsentState.from_dict(orjson.loads(orjson.dumps(s.to_dict())))
                      for c, s in state.consents.items()}
    return again


def test_a_consent_event_read_again_after_a_restart_changes_nothing() -> None:
    state = DictState()
    assert [apply_event(state, e).value for e in (GRANT, GPC)] == ["consent", "consent"]
    before = state.read_consent("c").to_dict()
    state = _stored_and_read_back(state)
    assert [apply_event(state, e).value for e in (GPC, GRANT)] == ["duplicate", "duplicate"]
    assert state.read_consent("c").to_dict() == before and before["epoch"] == 2


def test_an_old_revocation_read_again_does_not_undo_a_newer_grant() -> None:
    state = DictState()
    apply_event(state, GRANT)
    apply_event(state, GPC)
    # the consent API grants sharing again later (it writes the stored state, window included)
    later = apply_update(state.read_consent("c"), parse_update({"flags": {"sharing": True}}), TS + 20)
    state.write_consent("c", later.state)
    assert apply_event(_stored_and_read_back(state), GPC).value == "duplicate"
    assert state.read_consent("c").flags["sharing"] is True


def test_the_window_keeps_the_last_consent_events() -> None:
    state = DictState()
    events = [parse_event({"event_id": f"k{i}", "type": "consent", "customer_id": "c", "ts": TS + i,
                           "consent": {"flags": {"marketing": i % 2 == 0}}}) for i in range(MAX_SEEN_CONSENT + 4)]
    for event in events:
        assert apply_event(state, event).value == "consent"
    state = _stored_and_read_back(state)
    assert len(state.read_consent("c").seen) == MAX_SEEN_CONSENT
    assert all(apply_event(state, e).value == "duplicate" for e in events[-MAX_SEEN_CONSENT:])


def test_consent_without_events_is_stored_as_before() -> None:
    assert "seen" not in ConsentState.unknown().to_dict()
