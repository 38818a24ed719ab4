"""A hostile Binance-like WebSocket server on 127.0.0.1, for the edge tests and the flood soak.

`python -m tests.hostile_feed [--port 0] [--max-seconds 300]` prints
`listening on ws://127.0.0.1:PORT/market/stream` and serves until stopped (or max-seconds).
What a connection gets is chosen by query parameters of its URL (the client keeps the
ones of `source.url`), so one server plays every part:

- `mode=valid`: valid trades, `rate` per second, for `seconds`.
- `mode=hostile`: `n` valid trades with every hostile value of `HOSTILE` among them, in one
  write (so the client reads them in one batch), then valid trades as in `valid`.
- `mode=one_frame`: one frame (`frame=garbage|valid`), then close.
- `mode=garbage`: `size`-byte garbage frames as fast as the socket takes them, for `seconds`
  (or `n` frames, if given, within them).
- `mode=flood`: `garbage_per_trade` garbage frames of `size` bytes before each valid trade,
  valid trades at `rate` per second, for `seconds`.

`sessions=N`: connections after the N-th are closed at once, without data (so a test
knows exactly what was sent).

Valid trades are @trade events of the streams' first symbol with `T` = `E` = now and ids
consecutive per symbol across connections (from `start`, default 1). `GET /stats` answers
JSON counters: connections (and their wall times), valid trades sent (first/last id),
hostile and garbage frames sent. Every loop is bounded by `seconds` and by `--max-seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

# Each value the edge must refuse, as an override of a valid trade's fields.
HOSTILE: dict[str, dict[str, object]] = {
    "id_2_63": {"t": 2**63},
    "id_huge": {"t": 2**64 - 1},
    "float_id": {"t": 1.9},
    "bool_id": {"t": True},
    "time_9e18": {"T": 9 * 10**18},
    "time_true": {"T": True},
    "event_time_9e18": {"E": 9 * 10**18},
    "price_true": {"p": True},
    "price_nan": {"p": "nan"},
    "qty_huge": {"q": "1e300"},
}


def _garbage(size: int, kind: int) -> bytes:
    """60 KB of something: random bytes, a JSON array, an object with a huge string, a fake trade."""
    if kind == 0:
        return os.urandom(size)
    if kind == 1:
        return b"[" + b"1," * (size // 2 - 1) + b"1]"
    if kind == 2:
        return b'{"e":"trade","junk":"' + b"x" * (size - 30) + b'"}'
    return b'{"e":"trade","s":"BTCUSDT","t":' + b"9" * (size - 40) + b"}"


class Server:
    def __init__(self) -> None:
        self.connections = 0
        self.connect_walls: list[float] = []
        self.valid_sent = 0
        self.first_id: dict[str, int] = {}
        self.next_id: dict[str, int] = {}
        self.hostile_sent = 0
        self.garbage_sent = 0
        self.garbage_bytes = 0
        self._pool = [_garbage(60_000, k) for k in range(4)]

    def stats(self) -> dict:
        return {
            "connections": self.connections,
            "connect_walls": self.connect_walls[-1000:],
            "valid_sent": self.valid_sent,
            "first_id": self.first_id,
            "last_id": {s: i - 1 for s, i in self.next_id.items()},
            "hostile_sent": self.hostile_sent,
            "garbage_sent": self.garbage_sent,
            "garbage_bytes": self.garbage_bytes,
        }

    def trade(self, symbol: str, **over: object) -> bytes:
        now = time.time_ns() // 1_000_000
        tid = self.next_id.setdefault(symbol, 1)
        ev = {"e": "trade", "E": now, "T": now, "s": symbol.upper(), "t": tid, "p": "64000.5", "q": "0.01", "m": True}
        ev.update(over)
        return orjson.dumps({"stream": f"{symbol}@trade", "data": ev})

    def valid(self, symbol: str) -> bytes:
        raw = self.trade(symbol)
        self.first_id.setdefault(symbol, self.next_id[symbol])
        self.next_id[symbol] += 1
        self.valid_sent += 1
        return raw

    def garbage(self, size: int) -> bytes:
        self.garbage_sent += 1
        self.garbage_bytes += size
        g = self._pool[self.garbage_sent % len(self._pool)]
        return g if size == len(g) else _garbage(size, self.garbage_sent % 4)

    async def handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        self.connect_walls.append(time.time())
        q = {k: v[-1] for k, v in parse_qs(urlsplit(ws.request.path).query).items()}
        streams = q.get("streams", "btcusdt@trade").split("/")
        symbol = streams[0].split("@")[0].lower()
        mode = q.get("mode", "valid")
        if self.connections > int(q.get("sessions", "1000000000")):
            await ws.close()
            return
        seconds = float(q.get("seconds", "30"))
        rate = float(q.get("rate", "200"))
        size = int(q.get("size", "60000"))
        end = time.monotonic() + seconds
        try:
            if mode == "one_frame":
                await ws.send(self.valid(symbol) if q.get("frame") == "valid" else self.garbage(64))
                await ws.close()
                return
            if mode == "hostile":
                batch = []
                n = int(q.get("n", "40"))
                bad = list(HOSTILE.values())
                for i in range(n):
                    batch.append(self.valid(symbol))
                    if i % 3 == 1 and bad:
                        batch.append(self.trade(symbol, **bad.pop(0)))  # reuses the next id: never stored
                        self.hostile_sent += 1
                for raw in batch:  # one frame each, written back to back: the client reads them together
                    await ws.send(raw)
            if mode == "garbage":
                frames = int(q.get("n", "0"))  # 0: for `seconds`; else exactly n frames (within `seconds`)
                sent = 0
                while time.monotonic() < end and (not frames or sent < frames):
                    await ws.send(self.garbage(size))
                    sent += 1
                return
            per_trade = int(q.get("garbage_per_trade", "0")) if mode == "flood" else 0
            gap = 1.0 / rate
            nxt = time.monotonic()
            while time.monotonic() < end:
                for _ in range(per_trade):
                    await ws.send(self.garbage(size))
                await ws.send(self.valid(symbol))
                nxt += gap
                delay = nxt - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -1.0:  # fell behind (the client pushed back): do not burst to catch up
                    nxt = time.monotonic()
            await ws.close()
        except ConnectionClosed:
            pass

    def http(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.startswith("/stats"):
            body = orjson.dumps(self.stats())
            return Response(200, "OK", Headers({"Content-Type": "application/json"}), body)
        return None


async def _main(port: int, max_seconds: float) -> None:
    server = Server()
    async with serve(server.handle, "127.0.0.1", port, process_request=server.http, max_size=1 << 20) as ws_server:
        bound = ws_server.sockets[0].getsockname()[1]
        print(f"listening on ws://127.0.0.1:{bound}/market/stream", flush=True)
        await asyncio.sleep(max_seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tests.hostile_feed")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.port, args.max_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())


class HostileServer:
    """`python -m tests.hostile_feed --port 0` as a subprocess, for tests and the soak."""

    def __init__(self, max_seconds: float = 300.0) -> None:
        import subprocess
        from pathlib import Path

        root = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.hostile_feed", "--port", "0", "--max-seconds", str(max_seconds)],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on ws://" not in line:
            self.proc.kill()
            raise RuntimeError(f"hostile feed did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1].split("/")[0])

    def url(self, mode: str, **params: object) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"mode": mode, **params}.items())
        return f"ws://127.0.0.1:{self.port}/market/stream?{query}"

    def stats(self) -> dict:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5) as r:
            return orjson.loads(r.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except Exception:  # noqa: BLE001
                self.proc.kill()
                self.proc.wait()
