"""A local Binance-compatible REST history server: `GET /fapi/v1/aggTrades` from recorded trades,
by `fromId` or by a `startTime`/`endTime` window (less than an hour, as Binance requires)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.http_support import LoopbackServer, QuietHandler


def agg_trades_from_recordings(paths: list[Path]) -> dict[str, list[dict]]:
    """Plain trades as aggTrades with a = f = l = t, as the local feed sends them."""
    out: dict[str, list[dict]] = {}
    for p in paths:
        with gzip.open(p, "rt") as fh:
            for line in fh:
                d = json.loads(line.partition(" ")[2])["data"]
                agg = {"a": d["t"], "p": d["p"], "q": d["q"], "f": d["t"], "l": d["t"], "T": d["T"], "m": d["m"]}
                out.setdefault(d["s"], []).append(agg)
    for rows in out.values():
        rows.sort(key=lambda r: r["a"])
    return out


class RestHistory(LoopbackServer):
    def __init__(self, trades: dict[str, list[dict]], fail_first: int = 0, down: bool = False) -> None:
        self.trades = trades
        self.fail_first = fail_first  # answer this many requests with 503 first (retries must cope)
        self.down = down
        self.requests: list[dict] = []
        history = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                url = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                history.requests.append(q)
                if history.down or len(history.requests) <= history.fail_first:
                    self._send(503, {"code": -1001, "msg": "unavailable"})
                    return
                if url.path != "/fapi/v1/aggTrades" or q.get("symbol") not in history.trades:
                    self._send(400, {"code": -1121, "msg": "Invalid symbol."})
                    return
                limit = min(int(q.get("limit", 500)), 1000)
                trades = history.trades[q["symbol"]]
                if "fromId" in q:
                    rows = [r for r in trades if r["a"] >= int(q["fromId"])][:limit]
                elif "startTime" in q and "endTime" in q:
                    start, end = int(q["startTime"]), int(q["endTime"])
                    if not 0 <= end - start < 3_600_000:  # Binance's rule for a time window
                        self._send(400, {"code": -1127, "msg": "More than 1 hours between startTime and endTime."})
                        return
                    rows = [r for r in trades if start <= r["T"] <= end][:limit]
                else:
                    rows = trades[-limit:]  # no position: the newest trades
                self._send(200, rows)

            def _send(self, code: int, body: object) -> None:
                self.send_body(code, json.dumps(body).encode(), "application/json")

        super().__init__(Handler)


def rest_history(trades: dict[str, list[dict]], **kw: object) -> RestHistory:
    """The server for `trades`, serving inside a `with` block."""
    return RestHistory(trades, **kw)  # type: ignore[arg-type]
