"""Point-in-time replay: rows before impressions, labels, consent gating, erasure, no leakage."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.catalog import parse_offer
from models.errors import InvalidEvent
from models.features import FEATURE_NAMES
from models.profile import DAY_MS, HOUR_MS
from training.replay import POPULARITY_PRIOR_N, POPULARITY_PRIOR_RATE, popularity, replay

T0 = 1_700_000_000_000
F = {name: i for i, name in enumerate(FEATURE_NAMES)}
OFFERS = {
    "o1": parse_offer({"offer_id": "o1", "category": "shoes", "kind": "discount",
                       "discount_pct": 10}),
    "o2": parse_offer({"offer_id": "o2", "category": "food", "kind": "bundle",
                       "valid_from": T0, "valid_to": T0 + 3 * DAY_MS}),
}
ALL_BUT_SHARING = {"profile": True, "personalize": True, "marketing": True, "measurement": True,
                   "training": True}


class Log:
    """Builds a small event log with unique ids."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def add(self, type_: str, cid: str, ts: int, **fields: Any) -> Log:
        self.events.append({"event_id": f"e{len(self.events)}", "type": type_, "customer_id": cid,
                            "ts": ts, **fields})
        return self

    def impression(self, cid: str, ts: int, offer: str = "o1") -> Log:
        return self.add("offer_impression", cid, ts, offer_id=offer, decision_id=f"d-{ts}",
                        position=0)

    def click(self, cid: str, ts: int, offer: str = "o1") -> Log:
        return self.add("offer_click", cid, ts, offer_id=offer, decision_id="d")

    def consent(self, cid: str, ts: int, **flags: bool) -> Log:
        return self.add("consent", cid, ts, consent={"flags": flags})

    def view(self, cid: str, ts: int, category: str = "shoes") -> Log:
        return self.add("page_view", cid, ts, url="/x", category=category)


def test_row_is_taken_before_the_impression_is_applied() -> None:
    log = Log().view("c1", T0).impression("c1", T0 + 1000).impression("c1", T0 + 2000)
    result = replay(log.events, OFFERS, assume_consent=True)
    assert result.X.shape == (2, len(FEATURE_NAMES)) and result.X.dtype == np.float32
    assert result.X[0, F["offer_impressions"]] == 0.0
    assert result.X[1, F["offer_impressions"]] == pytest.approx(math.log1p(1))
    assert result.X[0, F["impressions_30d"]] == 0.0
    assert result.X[0, F["personalized"]] == 1.0
    assert result.profiles["c1"].offers["o1"][0] == 2  # both impressions reached the profile


def test_label_is_one_only_for_a_response_inside_the_window() -> None:
    log = (Log().impression("in", T0).impression("out", T0).impression("other", T0)
           .click("in", T0 + HOUR_MS).click("other", T0 + HOUR_MS, offer="o2")
           .click("out", T0 + 2 * DAY_MS))
    result = replay(log.events, OFFERS, assume_consent=True, attribution_ms=DAY_MS)
    labels = {m.customer_id: int(label) for m, label in zip(result.meta, result.y, strict=True)}
    assert labels == {"in": 1, "out": 0, "other": 0}
    assert result.y.dtype == np.int8


def test_a_response_naming_its_decision_labels_only_that_impression() -> None:
    log = (Log().impression("c1", T0).impression("c1", T0 + 10).impression("c2", T0 + 20)
           .impression("c2", T0 + 30))
    log.add("offer_click", "c1", T0 + 40, offer_id="o1", decision_id=f"d-{T0 + 10}")
    log.add("offer_click", "c2", T0 + 50, offer_id="o1", decision_id="unknown")
    result = replay(log.events, OFFERS, assume_consent=True)
    assert result.y.tolist() == [0, 1, 1, 1]


def test_default_window_is_valid_to_else_seven_days() -> None:
    log = (Log().impression("a", T0, "o2").impression("b", T0, "o1")
           .click("a", T0 + 4 * DAY_MS, "o2").click("b", T0 + 6 * DAY_MS, "o1"))
    result = replay(log.events, OFFERS, assume_consent=True)
    assert result.y.tolist() == [0, 1]  # o2 expired after 3 days; o1 has the 7-day default


def test_customers_without_training_consent_give_no_rows() -> None:
    no_training = {**ALL_BUT_SHARING, "training": False}
    log = (Log().consent("yes", T0, **ALL_BUT_SHARING).consent("no", T0, **no_training)
           .impression("yes", T0 + 1).impression("no", T0 + 1).impression("unknown", T0 + 1))
    result = replay(log.events, OFFERS)
    assert [m.customer_id for m in result.meta] == ["yes"]
    assert result.counts["excluded_no_training_consent"] == 2
    assert result.settings["assume_consent"] is False


def test_without_personalize_the_row_has_no_profile_features() -> None:
    flags = {**ALL_BUT_SHARING, "personalize": False}
    log = Log().consent("c1", T0, **flags).view("c1", T0 + 1).impression("c1", T0 + 2)
    result = replay(log.events, OFFERS)
    assert result.X[0, : F["cat_affinity_1d"] + 8].tolist() == [0.0] * (F["cat_affinity_1d"] + 8)
    assert result.profiles["c1"].n_events == 2  # the profile is still built (profile granted)


def test_revoking_profile_erases_the_profile_and_stops_updates() -> None:
    log = (Log().consent("c1", T0, **ALL_BUT_SHARING).view("c1", T0 + 1).view("c1", T0 + 2)
           .consent("c1", T0 + 3, profile=False).view("c1", T0 + 4))
    result = replay(log.events, OFFERS)
    assert "c1" not in result.profiles
    assert result.consents["c1"].flags["profile"] is False
    regrant = replay(log.consent("c1", T0 + 5, profile=True).view("c1", T0 + 6).events, OFFERS)
    assert regrant.profiles["c1"].n_events == 1  # only what came after the new grant


def test_erased_customers_leave_no_trace() -> None:
    log = (Log().view("gone", T0).impression("gone", T0 + 1).click("gone", T0 + 2)
           .impression("kept", T0 + 3))
    result = replay(log.events, OFFERS, assume_consent=True, erased={"gone"})
    assert [m.customer_id for m in result.meta] == ["kept"]
    assert "gone" not in result.profiles and "gone" not in result.consents
    assert result.counts["skipped_erased"] == 3


def test_popularity_uses_only_closed_windows_never_the_rows_own_label() -> None:
    log = (Log().impression("c1", T0).click("c1", T0 + 60_000)
           .impression("c2", T0 + 120_000)          # c1's window is still open: no stats yet
           .impression("c3", T0 + 2 * DAY_MS))      # c1 (clicked) and c2 (not) are closed now
    result = replay(log.events, OFFERS, assume_consent=True, attribution_ms=DAY_MS)
    pop = result.X[:, [F["popularity_rate"], F["popularity_log_n"]]]
    assert pop[0].tolist() == [0.0, 0.0] and pop[1].tolist() == [0.0, 0.0]
    # the prior is the base rate of the closed windows (1 of 2), itself smoothed from 5 %
    base = (1 + POPULARITY_PRIOR_RATE * POPULARITY_PRIOR_N) / (2 + POPULARITY_PRIOR_N)
    assert result.settings["popularity_base_rate"] == pytest.approx(base)
    assert pop[2] == pytest.approx(popularity(1, 2, base))
    expected = (1 + POPULARITY_PRIOR_N * base) / (2 + POPULARITY_PRIOR_N)
    assert popularity(1, 2, base)[0] == pytest.approx(expected)
    # the row's own click does not reach its own features
    no_click = replay([e for e in log.events if e["type"] != "offer_click"], OFFERS,
                      assume_consent=True, attribution_ms=DAY_MS)
    assert np.array_equal(no_click.X[:2], result.X[:2])
    assert result.offer_stats["o1"] == pytest.approx(popularity(1, 2, base))  # c3's window is open


def test_popularity_prior_follows_the_data_base_rate() -> None:
    log = Log()
    for i in range(400):  # 400 closed impressions of o1, 2 clicks: a 0.5 % rate, far below 5 %
        log.impression(f"c{i}", T0 + i * 1000)
        if i in (10, 200):
            log.click(f"c{i}", T0 + i * 1000 + 1)
    log.impression("late", T0 + 10 * DAY_MS)
    result = replay(log.events, OFFERS, assume_consent=True, attribution_ms=60_000)
    base = (2 + POPULARITY_PRIOR_RATE * POPULARITY_PRIOR_N) / (400 + POPULARITY_PRIOR_N)
    expected = (2 + POPULARITY_PRIOR_N * base) / 420
    assert result.X[-1, F["popularity_rate"]] == pytest.approx(expected, rel=1e-6)
    assert result.X[-1, F["popularity_rate"]] < 0.006  # a fixed 5 % prior gives 3 / 420 = 0.0071


def test_the_impression_position_is_the_row_context_slot() -> None:
    log = Log().impression("c1", T0).add("offer_impression", "c2", T0 + 1, offer_id="o1",
                                         decision_id="dx", position=2)
    result = replay(log.events, OFFERS, assume_consent=True)
    assert result.X[:, F["ctx_position"]].tolist() == [0.0, 2.0]


def test_the_offers_of_one_decision_are_vectorized_from_the_state_before_any_of_them() -> None:
    page = [("o1", 0), ("o2", 1), ("o1", 2)]  # o1 twice: rows keyed by offer must not collide
    log = Log().view("c1", T0).impression("c1", T0 + 1000, "o2")
    for offer, slot in page:
        log.add("offer_impression", "c1", T0 + 2000, offer_id=offer, decision_id="page", position=slot)
    log.view("c1", T0 + 3000)
    result = replay(log.events, OFFERS, assume_consent=True)
    batch = result.X[1:]
    assert batch[:, F["impressions_30d"]].tolist() == [batch[0, F["impressions_30d"]]] * 3
    assert batch[:, F["ctx_position"]].tolist() == [0.0, 1.0, 2.0]
    assert batch[[0, 2], F["offer_impressions"]].tolist() == [0.0, 0.0]  # o1 not seen before
    assert batch[1, F["offer_impressions"]] == pytest.approx(math.log1p(1))  # o2 once, earlier
    single = [replay(log.events[:2] + [e], OFFERS, assume_consent=True).X[-1] for e in log.events[2:5]]
    np.testing.assert_array_equal(batch, np.vstack(single))  # each as if it were alone on the page
    assert result.profiles["c1"].offers["o1"][0] == 2  # and then all three are applied


def test_invalid_events_are_counted_duplicates_skipped_and_order_enforced() -> None:
    log = (Log().view("c1", T0).add("page_view", "c1", "yesterday")
           .add("consent", "c1", T0, consent={"x": 1}))
    events = [*log.events, log.events[0]]
    result = replay(events, OFFERS, assume_consent=True)
    assert result.counts["invalid"] == 2 and result.counts["duplicates"] == 1
    assert [i for i, _reason in result.invalid] == [1, 2]
    assert result.data_range == (T0, T0)
    backwards = Log().view("c1", T0 + 10).view("c1", T0).events
    with pytest.raises(InvalidEvent, match=r"events\[1\]\.ts"):
        replay(backwards, OFFERS)


_steps = st.lists(
    st.tuples(st.sampled_from(["imp", "click", "redeem", "view"]), st.sampled_from(["a", "b", "c"]),
              st.sampled_from(["o1", "o2"]), st.integers(0, 2 * DAY_MS)),
    min_size=1, max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(_steps, st.integers(0, 40))
def test_rows_depend_only_on_the_past(steps: list[tuple[str, str, str, int]], cut: int) -> None:
    log, ts = Log(), T0
    for kind, cid, offer, gap in steps:
        ts += gap
        if kind == "imp":
            log.impression(cid, ts, offer)
        elif kind == "view":
            log.view(cid, ts)
        else:
            log.add(f"offer_{kind}", cid, ts, offer_id=offer)
    full = replay(log.events, OFFERS, assume_consent=True, attribution_ms=DAY_MS // 2)
    prefix = replay(log.events[:cut], OFFERS, assume_consent=True, attribution_ms=DAY_MS // 2)
    assert np.array_equal(prefix.X, full.X[: len(prefix.meta)])
