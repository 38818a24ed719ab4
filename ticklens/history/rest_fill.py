"""The recent hours the archive does not have yet, from REST `GET /fapi/v1/aggTrades`.

A day's archive file appears the day after. Until then `ticklens history rest-fill` fetches the
aggTrades of [from, to] within the same request budget and retry pacing as the live backfill
(exchange/binance_rest.py), and writes them per UTC day in the archive's aggTrades CSV layout
(header, prices and quantities as Binance sent them), under `<dir>/rest/` (ticklens.ingest.archive.rest_path), so
ingest reads them like archive files. A day's file is rewritten merged with what it held, unique
by aggTrade id and sorted: running a fill again, or over an overlapping range, never duplicates.

Paging: Binance accepts startTime/endTime only less than an hour apart, so the first id is found
with hour windows, then pages follow by `fromId` (1000 a page) until a trade after `to` or the
newest trade (a short page).
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import polars as pl

from ticklens.exchange.binance_rest import PAGE, RequestBudget, get_within_budget
from ticklens.ingest.archive import KINDS, rest_path

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
COLUMNS = KINDS["aggTrades"].columns
_FIELDS = ("a", "p", "q", "f", "l", "T", "m")


@dataclass(slots=True)
class FillReport:
    symbol: str
    rows: int = 0
    requests: int = 0
    first_id: int | None = None
    last_id: int | None = None
    files: list[Path] = field(default_factory=list)


def _line(row: object) -> tuple[int, int, str]:
    """(id, time, CSV line) of one aggTrade; ValueError naming the problem for anything else."""
    if not isinstance(row, dict) or any(k not in row for k in _FIELDS):
        raise ValueError(f"not an aggTrade: {str(row)[:200]}")
    a, f, last, t, m = row["a"], row["f"], row["l"], row["T"], row["m"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (a, f, last, t)) or not isinstance(m, bool):
        raise ValueError(f"bad aggTrade field types: {str(row)[:200]}")
    p, q = str(row["p"]), str(row["q"])
    float(p), float(q)  # raises ValueError on a non-number
    return a, t, f"{a},{p},{q},{f},{last},{t},{'true' if m else 'false'}\n"


class _DayWriter:
    """Lines of one UTC day into `<file>.part`, merged into the day's file on close."""

    def __init__(self, root: Path, symbol: str, day: date) -> None:
        self.final = rest_path(root, symbol, day)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.part = self.final.with_name(self.final.name + ".part")
        self.fh = open(self.part, "w")  # noqa: SIM115 (closed in close())
        self.fh.write(",".join(COLUMNS) + "\n")

    def close(self) -> Path:
        self.fh.close()
        if self.final.exists():
            schema = {c: pl.Utf8 for c in COLUMNS} | {c: pl.Int64 for c in COLUMNS if c.endswith(("_id", "_time"))}
            merged = (
                pl.concat([pl.read_csv(p, schema=schema) for p in (self.final, self.part)])
                .unique("agg_trade_id", keep="last")
                .sort("agg_trade_id")
            )
            merged.write_csv(self.part)
        os.replace(self.part, self.final)
        return self.final


async def fill(
    rest_url: str,
    root: Path,
    symbol: str,
    start_ms: int,
    end_ms: int,
    per_minute: int = 100,
    budget: RequestBudget | None = None,
    client: httpx.AsyncClient | None = None,
) -> FillReport:
    """Fetch `symbol`'s aggTrades with start_ms <= T <= end_ms into the day files; a report of what came."""
    sym = symbol.upper()
    report = FillReport(sym)
    budget = budget or RequestBudget(per_minute)
    rng = random.Random()
    url = f"{rest_url.rstrip('/')}/fapi/v1/aggTrades"
    own = client is None
    client = client or httpx.AsyncClient(timeout=httpx.Timeout(30, connect=10))
    writer: _DayWriter | None = None
    writer_day = -1

    def sent() -> None:
        report.requests += 1

    async def page(params: dict[str, object]) -> list:
        r = await get_within_budget(client, url, {"symbol": sym, "limit": PAGE, **params}, budget, rng, sent)
        rows = r.json()
        if not isinstance(rows, list):
            raise ValueError(f"REST aggTrades answered {str(rows)[:200]}")
        return rows

    try:
        next_id: int | None = None
        window = start_ms
        while True:
            if next_id is None:
                if window > end_ms:
                    break
                rows = await page({"startTime": window, "endTime": min(end_ms, window + HOUR_MS - 1)})
                if not rows:
                    window += HOUR_MS
                    continue
            else:
                rows = await page({"fromId": next_id})
            done = next_id is not None and len(rows) < PAGE  # a short fromId page: the newest trade
            for row in rows:
                a, t, text = _line(row)
                if t > end_ms:
                    done = True
                    break
                if t < start_ms or (report.last_id is not None and a <= report.last_id):
                    continue
                if t // DAY_MS != writer_day:
                    if writer is not None:
                        report.files.append(writer.close())
                    writer_day = t // DAY_MS
                    writer = _DayWriter(root, sym, datetime.fromtimestamp(t / 1000, UTC).date())
                assert writer is not None
                writer.fh.write(text)
                report.rows += 1
                report.first_id = a if report.first_id is None else report.first_id
                report.last_id = a
            if done or not rows:
                break
            next_id = int(rows[-1]["a"]) + 1
        if writer is not None:
            report.files.append(writer.close())
            writer = None
    finally:
        if writer is not None:  # interrupted: the part never replaces the day's file
            writer.fh.close()
        if own:
            await client.aclose()
    return report


def fill_symbols(
    rest_url: str, root: Path, symbols: list[str], start_ms: int, end_ms: int, per_minute: int = 100
) -> list[FillReport]:
    """All symbols one after the other, sharing one request budget (blocking)."""

    async def run() -> list[FillReport]:
        budget = RequestBudget(per_minute)
        async with httpx.AsyncClient(timeout=httpx.Timeout(30, connect=10)) as client:
            return [await fill(rest_url, root, s, start_ms, end_ms, budget=budget, client=client) for s in symbols]

    return asyncio.run(run())
