"""Where Binance's USD-M archive keeps a file, and where we keep our copy.

Remote: `<base>/data/futures/um/{daily,monthly}/<folder>/<SYMBOL>/[1m/]<SYMBOL>-<tag>-<date>.zip`,
each with `<file>.zip.CHECKSUM` beside it. Locally the same path below `--dir` without the
leading `data/`, so a mirror of the archive is also a valid `--dir` and `sha256sum -c` works in
place. A file has its final name only once verified (ticklens/history/download.py renames it there), so
`local_files` can trust what exists.

A month is planned as one monthly file when the whole month lies in the range and is over
(Binance publishes monthly files in the first days of the next month); a monthly 404 falls
back to the month's daily files. Days from today on cannot be archived yet: the plan lists
them apart (rest_fill.py covers them for aggTrades).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

DEFAULT_BASE_URL = "https://data.binance.vision"
MARKET = "futures/um"
Period = Literal["daily", "monthly"]


@dataclass(frozen=True, slots=True)
class DataKind:
    """One `--data` choice: its archive folder, file-name tag and CSV columns (header as Binance writes it)."""

    name: str
    folder: str
    tag: str
    interval_dir: str  # klines keep an extra `<interval>/` level
    columns: tuple[str, ...]
    id_column: str | None  # the column whose ids must run without holes (continuity.py)
    time_column: str


KINDS: dict[str, DataKind] = {
    k.name: k
    for k in (
        DataKind(
            "aggTrades",
            "aggTrades",
            "aggTrades",
            "",
            ("agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id", "transact_time", "is_buyer_maker"),
            "agg_trade_id",
            "transact_time",
        ),
        DataKind(
            "trades",
            "trades",
            "trades",
            "",
            ("id", "price", "qty", "quote_qty", "time", "is_buyer_maker"),
            "id",
            "time",
        ),
        DataKind(
            "klines-1m",
            "klines",
            "1m",
            "1m/",
            (
                "open_time",
                "open",
                "high",
                "low",
                "close",
                "volume",
                "close_time",
                "quote_volume",
                "count",
                "taker_buy_volume",
                "taker_buy_quote_volume",
                "ignore",
            ),
            None,
            "open_time",
        ),
        DataKind(
            "bookTicker",
            "bookTicker",
            "bookTicker",
            "",
            (
                "update_id",
                "best_bid_price",
                "best_bid_qty",
                "best_ask_price",
                "best_ask_qty",
                "transaction_time",
                "event_time",
            ),
            None,  # update ids are not consecutive: nothing to check for holes
            "transaction_time",
        ),
    )
}


def kind(name: str) -> DataKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown data kind {name!r}: choose one of {', '.join(KINDS)}") from None


@dataclass(frozen=True, slots=True, order=True)
class ArchiveFile:
    """One zip of the archive: a symbol's day or month of one data kind."""

    first_day: date
    symbol: str
    data: str  # a KINDS key
    period: Period

    @property
    def label(self) -> str:
        return self.first_day.isoformat() if self.period == "daily" else self.first_day.strftime("%Y-%m")

    @property
    def last_day(self) -> date:
        if self.period == "daily":
            return self.first_day
        y, m = self.first_day.year, self.first_day.month
        return date(y, m, calendar.monthrange(y, m)[1])

    @property
    def name(self) -> str:
        k = KINDS[self.data]
        return f"{self.symbol}-{k.tag}-{self.label}.zip"

    @property
    def rel(self) -> str:
        """Path below the archive's `data/` (and below our `--dir`)."""
        k = KINDS[self.data]
        return f"{MARKET}/{self.period}/{k.folder}/{self.symbol}/{k.interval_dir}{self.name}"

    def url(self, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/data/{self.rel}"

    def path(self, root: Path) -> Path:
        return root / self.rel

    def days(self) -> list[ArchiveFile]:
        """The daily files covering the same days (a monthly file's fallback)."""
        out, d = [], self.first_day
        while d <= self.last_day:
            out.append(ArchiveFile(d, self.symbol, self.data, "daily"))
            d += timedelta(days=1)
        return out


@dataclass(slots=True)
class Plan:
    files: list[ArchiveFile]
    not_yet: list[tuple[str, date]]  # (symbol, day) from today on: not archived yet


def _months(start: date, end: date) -> list[date]:
    out, d = [], start.replace(day=1)
    while d <= end:
        out.append(d)
        d = (d.replace(day=28) + timedelta(days=4)).replace(day=1)
    return out


def plan(symbols: list[str], data: str, start: date, end: date, today: date, monthly: bool = True) -> Plan:
    """Files for `start`..`end` (both included), monthly where a whole, finished month lies inside."""
    kind(data)
    if end < start:
        raise ValueError(f"--to {end} is before --from {start}")
    files: list[ArchiveFile] = []
    not_yet: list[tuple[str, date]] = []
    for sym in (s.upper() for s in symbols):
        for m in _months(start, end):
            month = ArchiveFile(m, sym, data, "monthly")
            if monthly and start <= month.first_day and month.last_day <= end and month.last_day < today:
                files.append(month)
                continue
            for day in month.days():
                if not start <= day.first_day <= end:
                    continue
                if day.first_day >= today:
                    not_yet.append((sym, day.first_day))
                else:
                    files.append(day)
    return Plan(sorted(files), not_yet)


def local_files(
    root: Path, symbol: str, data: str, start: date, end: date, rest: bool = False
) -> list[tuple[ArchiveFile, Path]]:
    """The verified local files covering `start`..`end`, oldest first, each day from exactly one file.

    A month's monthly file wins when present (it may hold days outside the range: readers
    filter by time); otherwise its daily files; with `rest`, a day that has no archive file
    yet comes from its REST-filled CSV (aggTrades only, rest_fill.py). This is what
    `history ingest` and `history verify` read.
    """
    out: list[tuple[ArchiveFile, Path]] = []
    for m in _months(start, end):
        month = ArchiveFile(m, symbol.upper(), data, "monthly")
        if month.path(root).is_file():
            out.append((month, month.path(root)))
            continue
        for day in month.days():
            if not start <= day.first_day <= end:
                continue
            if day.path(root).is_file():
                out.append((day, day.path(root)))
            elif rest and data == "aggTrades" and rest_path(root, symbol, day.first_day).is_file():
                out.append((day, rest_path(root, symbol, day.first_day)))
    return out


def rest_path(root: Path, symbol: str, day: date) -> Path:
    """Where rest_fill.py keeps a day's aggTrades fetched from REST (same CSV layout as the archive).

    Kept apart from the archive's tree: it is not verified by Binance's checksum and is
    superseded once the day's archive file is downloaded.
    """
    sym = symbol.upper()
    return root / "rest" / MARKET / "aggTrades" / sym / f"{sym}-aggTrades-{day.isoformat()}.csv"
