"""Helpers shared by the data-source adapters: CSV reading and time conversion.

The adapters turn the real data sets in ``shared/data`` beside the repository
(:data:`DATA_ROOT`) into events of the DESIGN.md event contract. Every ``ts`` they emit is an
``int`` of epoch milliseconds (UTC); this module holds the conversions so all adapters agree on
them.

Examples
--------
>>> date_to_epoch_ms("2017-03-03")
1488499200000
>>> date_to_epoch_ms("2017-03-03", hour=12) - date_to_epoch_ms("2017-03-03")
43200000
>>> datetime_to_epoch_ms("2017-01-28 19:06:53")
1485630413000
>>> datetime_to_epoch_ms("2019-11-24 00:00:34.762830+00:00")
1574553634762
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

__all__ = [
    "DATA_ROOT",
    "DAY_MS",
    "read_csv",
    "date_to_epoch_ms",
    "datetime_to_epoch_ms",
]

#: Default location of the shared real data (``<workspace>/shared/data``).
DATA_ROOT: Path = Path(__file__).resolve().parents[2].parent / "shared" / "data"

#: Milliseconds in one day.
DAY_MS: int = 86_400_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def read_csv(path: Path) -> Iterator[dict[str, str]]:
    """Yield the rows of a CSV file (gzipped if its name ends in ``.gz``) as dicts of strings.

    Parameters
    ----------
    path : Path
        The file. Values are returned untouched as strings, so ids such as ``basket_id`` keep
        their exact text.

    Yields
    ------
    dict[str, str]
        One row, keyed by the header line.
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", newline="", encoding="utf-8") as handle:
        yield from csv.DictReader(handle)


def date_to_epoch_ms(text: str, hour: int = 0) -> int:
    """Convert a calendar date ``YYYY-MM-DD`` (read as UTC) at ``hour``:00 to epoch milliseconds.

    Parameters
    ----------
    text : str
        The date.
    hour : int, default 0
        Hour of the day, UTC.

    Returns
    -------
    int
        Epoch milliseconds.
    """
    day = date.fromisoformat(text)
    moment = datetime(day.year, day.month, day.day, hour, tzinfo=UTC)
    return (moment - _EPOCH) // _ONE_MS


def datetime_to_epoch_ms(text: str) -> int:
    """Convert an ISO-8601 date-time to epoch milliseconds, truncating sub-millisecond digits.

    Parameters
    ----------
    text : str
        ``YYYY-MM-DD HH:MM:SS[.ffffff][+HH:MM]``. A time without a zone is read as UTC.

    Returns
    -------
    int
        Epoch milliseconds (exact integer arithmetic, no float rounding).
    """
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _ONE_MS
