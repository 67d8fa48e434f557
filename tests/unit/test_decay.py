"""Decayed sums against the batch numpy answer, after every update, in any arrival order."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.decay import DecayedSum, add, new_cell, value_at

HALF_LIVES = (3_600_000.0, 86_400_000.0, 30 * 86_400_000.0)
T0 = 1_700_000_000_000


def batch(ts: list[float], ws: list[float], t_now: float, h: float) -> float:
    t, w = np.asarray(ts, dtype=np.float64), np.asarray(ws, dtype=np.float64)
    mask = t <= t_now
    return float(np.sum(w[mask] * np.exp2(-(t_now - t[mask]) / h)))


events = st.lists(
    st.tuples(st.integers(0, 90 * 86_400_000), st.floats(0.0, 100.0, allow_nan=False)),
    min_size=1, max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(events)
def test_cell_matches_batch_after_each_step_in_any_order(seq: list[tuple[int, float]]) -> None:
    cell = new_cell(len(HALF_LIVES))
    ts: list[float] = []
    ws: list[float] = []
    for t, w in seq:
        add(cell, T0 + t, w, HALF_LIVES)
        ts.append(T0 + t)
        ws.append(w)
        t_now = max(ts)
        assert cell[0] == t_now
        for i, h in enumerate(HALF_LIVES):
            expected = batch(ts, ws, t_now, h)
            assert value_at(cell, t_now, i, h) == pytest.approx(expected, rel=1e-9, abs=1e-9)
            # and read later, too
            later = t_now + 5_000_000
            assert value_at(cell, later, i, h) == pytest.approx(batch(ts, ws, later, h), rel=1e-9, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(events, st.sampled_from(HALF_LIVES))
def test_decayed_sum_matches_batch_after_each_step(seq: list[tuple[int, float]], h: float) -> None:
    s = DecayedSum(half_life_ms=h)
    ts: list[float] = []
    ws: list[float] = []
    for t, w in seq:
        s.update(T0 + t, w)
        ts.append(T0 + t)
        ws.append(w)
        assert s.get(max(ts)) == pytest.approx(batch(ts, ws, max(ts), h), rel=1e-9, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(events, st.randoms(use_true_random=False))
def test_arrival_order_does_not_change_the_value(seq: list[tuple[int, float]], rnd) -> None:
    a, b = new_cell(3), new_cell(3)
    shuffled = list(seq)
    rnd.shuffle(shuffled)
    for t, w in seq:
        add(a, T0 + t, w, HALF_LIVES)
    for t, w in shuffled:
        add(b, T0 + t, w, HALF_LIVES)
    assert a[0] == b[0]
    assert np.allclose(a[1:], b[1:], rtol=1e-9, atol=1e-9)


def test_empty_cell_reads_zero() -> None:
    cell = new_cell(2)
    assert cell[0] == float("-inf") and cell[1:] == [0.0, 0.0]
    assert value_at(cell, T0, 0, 1000.0) == 0.0
    assert DecayedSum(1000.0).get(T0) == 0.0


def test_reading_before_t_ref_returns_the_value_at_t_ref() -> None:
    cell = new_cell(1)
    add(cell, 10_000, 1.0, (1000.0,))
    add(cell, 12_000, 2.0, (1000.0,))
    at_ref = value_at(cell, 12_000, 0, 1000.0)
    assert at_ref == pytest.approx(2.0 + 0.25)
    assert value_at(cell, 11_000, 0, 1000.0) == at_ref
    assert value_at(cell, 0, 0, 1000.0) == at_ref  # never inflated by a clock that lags
    assert value_at(cell, 13_000, 0, 1000.0) == pytest.approx(at_ref / 2)


def test_one_half_life_halves_the_weight() -> None:
    s = DecayedSum(half_life_ms=1000.0)
    s.update(0, 8.0)
    assert s.get(1000) == pytest.approx(4.0)
    assert s.get(3000) == pytest.approx(1.0)


def test_late_event_is_added_decayed_to_t_ref() -> None:
    cell = new_cell(1)
    add(cell, 2000, 1.0, (1000.0,))
    add(cell, 1000, 1.0, (1000.0,))  # late by one half-life
    assert cell[0] == 2000
    assert value_at(cell, 2000, 0, 1000.0) == pytest.approx(1.5)


def test_decayed_sum_pickles() -> None:
    s = DecayedSum(half_life_ms=1000.0)
    s.update(0, 1.0)
    s.update(500, 2.0)
    copy = pickle.loads(pickle.dumps(s))
    assert copy.get(2000) == s.get(2000)
