"""`source.streams` and the routed connections: which streams go on which path, at most 200 a connection.

Pure configuration and URL planning (no sockets); the expected URLs are written out here from
Binance's routing (book data on `/public`, `@aggTrade` on `/market`) and its stream names.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from ticklens.config import ConfigError, parse_config
from ticklens.ingest.websocket import connections

WS = "wss://fstream.binance.com/market/stream"


def _cfg(symbols: list[str], **source: object):
    return parse_config({"symbols": symbols, "source": {"kind": "binance", "url": WS, **source}})


def test_the_trade_stream_alone_is_the_default() -> None:
    cfg = _cfg(["btcusdt"], stream="aggTrade")
    assert cfg.source.streams == ["aggTrade"] and cfg.source.book_streams == []
    (conn,) = connections(cfg.source, cfg.symbols)
    assert conn.url == f"{WS}?streams=btcusdt@aggTrade" and not conn.depth


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ({"streams": ["aggTrade", "trade"]}, "one trade stream"),
        ({"streams": ["depth", "depth"]}, "twice"),
        ({"streams": []}, "at least one"),
        ({"streams": ["kline_1m"]}, "streams"),
        ({"streams": ["depth"], "depth_speed_ms": 50}, "depth_speed_ms"),
        ({"stream": "trade", "streams": ["aggTrade", "depth"]}, "contradicts"),
    ],
)
def test_bad_stream_lists_are_refused_naming_the_field(source: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        _cfg(["btcusdt"], **source)


def test_book_streams_go_to_public_trades_to_market_at_most_200_streams_a_connection() -> None:
    symbols = [f"s{i:03d}usdt" for i in range(250)]
    cfg = _cfg(symbols, stream="aggTrade", streams=["aggTrade", "bookTicker", "depth"], depth_speed_ms=100)
    conns = connections(cfg.source, cfg.symbols)
    by_path: dict[str, list[list[str]]] = {}
    for c in conns:
        parts = urlsplit(c.url)
        assert parts.netloc == "fstream.binance.com"
        (names,) = parse_qs(parts.query)["streams"]
        streams = names.split("/")
        assert len(streams) <= 200
        assert c.depth == (parts.path == "/public/stream")
        assert set(c.symbols) == {s.split("@")[0] for s in streams}
        by_path.setdefault(parts.path, []).append(streams)
    market = [s for group in by_path["/market/stream"] for s in group]
    public = [s for group in by_path["/public/stream"] for s in group]
    assert sorted(market) == sorted(f"{s}@aggTrade" for s in symbols)
    assert sorted(public) == sorted([f"{s}@bookTicker" for s in symbols] + [f"{s}@depth@100ms" for s in symbols])
    assert len(by_path["/market/stream"]) == 2 and len(by_path["/public/stream"]) == 3  # 250/200, 500/200
    # a symbol's book streams share one connection (one connection at a time feeds a book)
    for group in by_path["/public/stream"]:
        syms = [s.split("@")[0] for s in group]
        assert all(syms.count(s) == 2 for s in set(syms))


def test_the_local_feeds_fault_query_is_kept_on_both_paths_and_250ms_is_plain_depth() -> None:
    cfg = parse_config(
        {
            "symbols": ["btcusdt"],
            "source": {
                "kind": "feed",
                "url": "ws://127.0.0.1:9443/market/stream?depth_drop_every=400",
                "stream": "trade",
                "streams": ["trade", "depth"],
                "depth_speed_ms": 250,
            },
        }
    )
    urls = sorted(c.url for c in connections(cfg.source, cfg.symbols))
    # `@trade` rides /public with the book data (counted there on Binance: docs/feed.md)
    assert urls == ["ws://127.0.0.1:9443/public/stream?streams=btcusdt@trade/btcusdt@depth&depth_drop_every=400"]
