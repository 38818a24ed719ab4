"""Pure planning of a cluster: which source partition reads which files and symbols, and the merged
status view of several workers' documents (no processes: the cluster tests run those)."""

from __future__ import annotations

from pathlib import Path

from ticklens.config import parse_config
from ticklens.domain.status import merged_flow, with_merged_flow
from ticklens.ingest.shards import live_shards, replay_shards


def _cfg(symbols: list[str], paths: list[str] | None = None, **source: object):
    kind = "replay" if paths is not None else "binance"
    src = {"kind": kind, **({"paths": paths} if paths is not None else {}), **source}
    return parse_config({"symbols": symbols, "source": src})


def test_replay_files_named_for_one_symbol_give_one_partition_per_symbol() -> None:
    files = ["BTCUSDT-trades-2020-12-09T00.csv.gz", "um_ethusdt_20240718_trades.gz", "um_btcusdt_20240719_trades.gz"]
    shards = replay_shards(_cfg(["btcusdt", "ethusdt"], files))
    assert [s.name for s in shards] == ["replay:0/2", "replay:1/2"]
    by = {s.symbols: [p.name for p in s.paths] for s in shards}
    assert by == {("btcusdt",): [files[0], files[2]], ("ethusdt",): [files[1]]}
    assert all(not s.shared for s in shards)
    every = [sym for s in shards for sym in s.symbols]
    assert sorted(every) == ["btcusdt", "ethusdt"]  # each symbol in exactly one partition


def test_a_file_holding_several_symbols_keeps_one_partition_unless_asked() -> None:
    files = ["session.jsonl.gz", "um_btcusdt_20240719_trades.gz"]
    (only,) = replay_shards(_cfg(["btcusdt", "ethusdt"], files))
    assert only.name == "replay" and only.symbols == ("btcusdt", "ethusdt") and not only.foreign
    two = replay_shards(_cfg(["btcusdt", "ethusdt", "solusdt"], files, partitions=2))
    assert [s.symbols for s in two] == [("btcusdt", "solusdt"), ("ethusdt",)]
    # The shared file is read by both (each keeps its own symbols); the named one by its owner only.
    assert [[p.name for p in s.paths] for s in two] == [files, [files[0]]]
    assert all(s.shared for s in two) and two[1].foreign == {"btcusdt", "solusdt"}


def test_live_partitions_are_connection_groups_of_at_most_200_streams() -> None:
    syms = [f"s{i:03d}usdt" for i in range(450)]
    shards = live_shards(_cfg(syms))
    assert len(shards) == 3 and all(len(s.symbols) <= 200 for s in shards)
    assert sorted(x for s in shards for x in s.symbols) == sorted(syms)
    assert [s.name for s in live_shards(_cfg(["btcusdt", "ethusdt"]))] == ["binance"]
    assert len(live_shards(_cfg(["btcusdt", "ethusdt"], partitions=2))) == 2


def test_status_of_a_cluster_is_merged_and_a_single_process_stands_alone() -> None:
    single = {"flow": ({"pid": 7, "trades_total": 10, "trades_per_s": 1.0, "feeds": {"replay": {}}}, 1000)}
    assert with_merged_flow(single) == single
    w0 = {"pid": 1, "worker": 0, "workers": 2, "started_ms": 5_000, "trades_total": 30, "trades_per_s": 3.0,
          "rejects": 1, "feeds": {"replay:0/2": {"reconnects": 0}}}  # fmt: skip
    w1 = {"pid": 2, "worker": 1, "workers": 2, "started_ms": 5_100, "trades_total": 12, "trades_per_s": 2.5,
          "rejects": 0, "feeds": {"replay:1/2": {"reconnects": 2}}}  # fmt: skip
    old = {"pid": 9, "worker": 2, "workers": 3, "started_ms": 1, "trades_total": 999}
    stale = {"flow": ({"pid": 3, "trades_total": 5}, 2_000), "flow:2": (old, 2_500)}
    docs = {**stale, "flow:0": (w0, 9_000), "flow:1": (w1, 9_500), "symbol:btcusdt": ({"trades": 30}, 9_000)}
    merged, updated = merged_flow(docs)  # type: ignore[misc]
    assert updated == 9_500
    assert merged["trades_total"] == 42 and merged["trades_per_s"] == 5.5 and merged["rejects"] == 1
    assert merged["pids"] == [1, 2] and merged["pid"] == 1 and merged["workers"] == 2
    assert set(merged["feeds"]) == {"replay:0/2", "replay:1/2"}
    out = with_merged_flow(docs)
    assert out["flow"] == (merged, 9_500) and out["symbol:btcusdt"] == docs["symbol:btcusdt"]
    # A later single-process run wins over an earlier cluster's documents.
    later = {**docs, "flow": ({"pid": 4, "trades_total": 1}, 10_000)}
    assert with_merged_flow(later)["flow"] == later["flow"]


def test_partition_paths_are_the_config_paths(tmp_path: Path) -> None:
    f = tmp_path / "XRPUSDT-trades-2020.csv"
    (s,) = replay_shards(_cfg(["xrpusdt"], [str(f)]))
    assert s.paths == (f,) and s.name == "replay"
