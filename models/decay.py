"""Exponentially decayed sums that stay exact when events arrive late or out of order.

A decayed sum at time ``t`` is ``sum_i w_i * 2 ** (-(t - t_i) / h)`` over events ``i`` with
``t_i <= t``. We store it as ``(t_ref, values...)``: the sum at the newest event time seen, one
value per half-life. A late event (``t_i < t_ref``) is added already decayed to ``t_ref``, which
gives exactly the same number as if it had arrived in order.

Examples
--------
>>> cell = new_cell(3)
>>> add(cell, 0, 1.0, (1000.0, 2000.0, 4000.0))
>>> add(cell, 1000, 1.0, (1000.0, 2000.0, 4000.0))
>>> value_at(cell, 1000, 0, 1000.0)
1.5
>>> class_ = DecayedSum(half_life_ms=1000.0)
>>> class_.update(0); class_.update(1000); class_.get(2000)
0.75
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["new_cell", "add", "value_at", "DecayedSum"]

_NEG_INF = float("-inf")
_ZEROS = (0.0, 0.0, 0.0, 0.0)


def new_cell(n_half_lives: int) -> list[float]:
    """An empty cell: ``[t_ref, v_0, ..., v_{n-1}]`` with no events seen (``t_ref`` = -inf)."""
    if n_half_lives <= len(_ZEROS):
        return [_NEG_INF, *_ZEROS[:n_half_lives]]
    return [_NEG_INF] + [0.0] * n_half_lives


def add(cell: list[float], t_ms: float, weight: float, half_lives_ms: Sequence[float]) -> None:
    """Add ``weight`` at time ``t_ms`` to every half-life of ``cell``, in place."""
    t_ref = cell[0]
    if t_ms >= t_ref:
        # decay to t_ms, then add: the same two operations per value, in one pass
        if t_ref == _NEG_INF or t_ms == t_ref:
            for i in range(1, len(half_lives_ms) + 1):
                cell[i] += weight
        else:
            dt = t_ms - t_ref
            i = 1
            for h in half_lives_ms:
                cell[i] = cell[i] * 2.0 ** (-dt / h) + weight
                i += 1
        cell[0] = float(t_ms)
    else:
        dt = t_ref - t_ms
        i = 1
        for h in half_lives_ms:
            cell[i] += weight * 2.0 ** (-dt / h)
            i += 1


def value_at(cell: Sequence[float], t_ms: float, index: int, half_life_ms: float) -> float:
    """The decayed sum of half-life ``index`` read at ``t_ms``.

    Reading before the newest event (``t_ms < t_ref``) returns the value at ``t_ref``: a score
    computed with a clock slightly behind the event stream must not inflate the sum.
    """
    t_ref = cell[0]
    if t_ref == _NEG_INF:
        return 0.0
    value = cell[index + 1]
    return value * 2.0 ** (-(t_ms - t_ref) / half_life_ms) if t_ms > t_ref else value


class DecayedSum:
    """One decayed sum with a river-style ``update``/``get`` interface.

    Parameters
    ----------
    half_life_ms : float
        Time after which a weight counts half.
    """

    def __init__(self, half_life_ms: float) -> None:
        self.half_life_ms = half_life_ms
        self._cell = new_cell(1)

    def update(self, t_ms: float, weight: float = 1.0) -> None:
        """Add ``weight`` at ``t_ms`` (any order)."""
        add(self._cell, t_ms, weight, (self.half_life_ms,))

    def get(self, t_ms: float) -> float:
        """The decayed sum at ``t_ms``."""
        return value_at(self._cell, t_ms, 0, self.half_life_ms)
