"""A local data.binance.vision: the archive layout built from the bundled real files, served on 127.0.0.1.

Paths are written out here by hand (not taken from ticklens.ingest.archive), so the tests check
the downloader's idea of the layout against this independent one. Faults are per path: a queue
of one-shot behaviours ("503", "truncate", "stall") and a persistent trickle (a slow response).
Range requests are answered with 206 like a real static host.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from tests.http_support import LoopbackServer, QuietHandler

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
SHARED = ROOT.parent / "shared" / "data" / "binance"
TRADES_2020 = SHARED / "um_trades" / "BTCUSDT-trades-2020-12-09T00.csv.gz"
KLINES = sorted((SHARED / "um_klines").glob("BTCUSDT-1m-*.csv"))
AGG_HEADER = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"


def day_of(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()


def recorded_trades(symbol: str) -> list[dict]:
    """The `@trade` messages of the bundled USD-M recordings for one symbol, by id."""
    rows = []
    for p in sorted(SAMPLE.glob(f"um_{symbol.lower()}_*_trades.gz")):
        with gzip.open(p, "rt") as fh:
            for line in fh:
                rows.append(json.loads(line.partition(" ")[2])["data"])
    rows.sort(key=lambda d: d["t"])
    return rows


def agg_csv_by_day(symbol: str) -> dict[str, list[str]]:
    """Recorded trades as archive aggTrades lines (a = f = l = trade id), per UTC day."""
    out: dict[str, list[str]] = {}
    for d in recorded_trades(symbol):
        line = f"{d['t']},{d['p']},{d['q']},{d['t']},{d['t']},{d['T']},{'true' if d['m'] else 'false'}"
        out.setdefault(day_of(d["T"]), []).append(line)
    return out


def book_ticker_lines(path: Path) -> tuple[str, list[str]]:
    """A raw USD-M recording's `@bookTicker` messages in the archive's bookTicker CSV layout."""
    header = "update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time"
    lines = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            msg = json.loads(line.partition(" ")[2])
            if msg.get("stream", "").endswith("@bookTicker"):
                d = msg["data"]
                lines.append(f"{d['u']},{d['b']},{d['B']},{d['a']},{d['A']},{d['T']},{d['E']}")
    return header, lines


def trades_2020_lines() -> tuple[str, list[str]]:
    with gzip.open(TRADES_2020, "rt") as fh:
        header, *lines = fh.read().splitlines()
    return header, lines


def klines_by_day() -> dict[str, tuple[str, list[str]]]:
    out: dict[str, tuple[str, list[str]]] = {}
    for p in KLINES:
        header, *lines = p.read_text().splitlines()
        for line in lines:
            day = day_of(int(line.split(",", 1)[0]))
            out.setdefault(day, (header, []))[1].append(line)
    return out


def zip_bytes(inner_name: str, header: str | None, lines: list[str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        text = ((header + "\n") if header else "") + "\n".join(lines) + "\n"
        zf.writestr(inner_name, text)
    return buf.getvalue()


def daily_path(data: str, symbol: str, label: str, monthly: bool = False) -> str:
    period = "monthly" if monthly else "daily"
    if data == "klines-1m":
        return f"/data/futures/um/{period}/klines/{symbol}/1m/{symbol}-1m-{label}.zip"
    return f"/data/futures/um/{period}/{data}/{symbol}/{symbol}-{data}-{label}.zip"


class Archive:
    """Files by URL path, each zip with its `.CHECKSUM`."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def add(self, path: str, body: bytes, served: bytes | None = None) -> None:
        """`served`: bytes sent instead of `body` (a corrupted copy); the checksum is always `body`'s."""
        name = path.rsplit("/", 1)[1]
        self.files[path] = body if served is None else served
        self.files[path + ".CHECKSUM"] = f"{hashlib.sha256(body).hexdigest()}  {name}\n".encode()

    def write_to(self, root: Path) -> Path:
        """Every file where the downloader leaves it below `--dir` (the URL path without `/data/`)."""
        for path, body in self.files.items():
            p = root / path.removeprefix("/data/")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(body)
        return root

    def add_zip(self, data: str, symbol: str, label: str, header: str | None, lines: list[str], **kw: object) -> str:
        path = daily_path(data, symbol, label, monthly=len(label) == 7)
        inner = path.rsplit("/", 1)[1].removesuffix(".zip") + ".csv"
        self.add(path, zip_bytes(inner, header, lines), **kw)  # type: ignore[arg-type]
        return path


def real_archive() -> Archive:
    """aggTrades of BTCUSDT and ETHUSDT (2024-07-18, -19, 2024-08-08), trades of BTCUSDT 2020-12-09,
    its klines, and BTCUSDT bookTicker of 2024-07-18."""
    a = Archive()
    for sym in ("BTCUSDT", "ETHUSDT"):
        for day, lines in agg_csv_by_day(sym).items():
            a.add_zip("aggTrades", sym, day, AGG_HEADER, lines)
    header, lines = trades_2020_lines()
    a.add_zip("trades", "BTCUSDT", "2020-12-09", header, lines)
    for day, (kh, kl) in klines_by_day().items():
        a.add_zip("klines-1m", "BTCUSDT", day, kh, kl)
    bh, bl = book_ticker_lines(SHARED / "um_ws" / "btcusdt_20240718.gz")
    a.add_zip("bookTicker", "BTCUSDT", "2024-07-18", bh, bl)
    return a


class ArchiveServer(LoopbackServer):
    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.faults: dict[str, list[str]] = {}  # one-shot behaviours, popped per request
        self.trickle: dict[str, tuple[int, float]] = {}  # path -> (bytes per write, seconds between)
        self.stall_s = 3.0
        self.log: list[tuple[str, str | None]] = []  # (path, Range header) of every GET
        server = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                server.log.append((path, self.headers.get("Range")))
                queue = server.faults.get(path)
                fault = queue.pop(0) if queue else None
                if fault == "stall":
                    time.sleep(server.stall_s)
                if fault == "503":
                    self.send_body(503, b"busy")
                    return
                body = server.archive.files.get(path)
                if body is None:
                    self.send_body(404, b"<Error><Code>NoSuchKey</Code></Error>")
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes=") and rng.endswith("-"):
                    start = int(rng[6:-1])
                    if start >= len(body):
                        self.send_body(416, b"")
                        return
                self.send_response(206 if start else 200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                rest = body[start:]
                if fault == "truncate":
                    self.wfile.write(rest[: len(rest) // 2])  # then close: a body short of its length
                    self.wfile.flush()
                    self.close_connection = True
                    return
                step, pause = server.trickle.get(path, (len(rest) or 1, 0.0))
                try:
                    for i in range(0, len(rest), step):
                        if pause and path in server.trickle:
                            time.sleep(pause)
                        self.wfile.write(rest[i : i + step])
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        super().__init__(Handler)

    def gets(self, path: str) -> list[str | None]:
        """The Range header of each GET of `path` (None: a whole-file request)."""
        return [r for p, r in self.log if p == path]


def archive_server(archive: Archive) -> ArchiveServer:
    """The server for `archive`, serving inside a `with` block."""
    return ArchiveServer(archive)


def shifted_trade_days(days: int) -> Archive:
    """`days` daily BTCUSDT `trades` zips from 2020-12-09 on, day d the bundled real hour shifted by d days
    (times) and by d whole spans (ids): 100,311 trades a day, each day's ids above the day before's."""
    header, lines = trades_2020_lines()
    rows = [line.split(",") for line in lines]
    span = max(int(r[0]) for r in rows) - min(int(r[0]) for r in rows) + 1
    a = Archive()
    for d in range(days):
        out = [",".join([str(int(r[0]) + d * span), *r[1:4], str(int(r[4]) + d * 86_400_000), r[5]]) for r in rows]
        label = datetime.fromtimestamp(1607472000 + d * 86_400, UTC).date().isoformat()
        a.add_zip("trades", "BTCUSDT", label, header, out)
    return a
