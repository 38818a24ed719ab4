"""How the sources split into partitions: each configured symbol in exactly one partition.

Bytewax gives every source partition to one worker, so these groups are what a cluster
spreads over its processes. Replay: one partition per symbol whose files name it (an
archive CSV `BTCUSDT-trades-…`, a recording `um_btcusdt_20240718_trades.gz`); a file that
names no configured symbol, or several, is read by every partition, each keeping its own
symbols (so by default such a replay stays one partition). Live: one partition per
connection group of at most `max_streams_per_connection` streams. `source.partitions`
asks for a number instead (live groups still hold at most 200 streams). Partition names
depend only on the pipeline file, so a resumed flow finds its partitions' state again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ticklens.config import Config
from ticklens.ingest.replay import file_kind


@dataclass(frozen=True, slots=True)
class Shard:
    name: str
    symbols: tuple[str, ...]
    paths: tuple[Path, ...] = ()  # replay files this partition reads
    shared: bool = False  # reads a file that also holds other partitions' symbols
    index: int = 0
    count: int = 1
    foreign: frozenset[str] = field(default_factory=frozenset)  # configured symbols of other partitions


def named_symbol(path: Path, symbols: list[str]) -> str | None:
    """The configured symbol a file's name is for, if it names exactly one (else None)."""
    kind, sym = file_kind(path)
    if sym is not None:
        return sym
    tokens = set(re.split(r"[^a-z0-9]+", path.name.lower()))
    named = [s for s in symbols if s in tokens]
    return named[0] if len(named) == 1 else None


def _split(symbols: list[str], n: int) -> list[list[str]]:
    """`symbols` dealt round-robin into n non-empty groups, in config order within each."""
    n = max(1, min(n, len(symbols)))
    return [symbols[i::n] for i in range(n)]


def _shards(name: str, groups: list[list[str]], files: dict[int, list[Path]], shared: bool) -> list[Shard]:
    n = len(groups)
    every = set().union(*map(set, groups))
    return [
        Shard(
            name=name if n == 1 else f"{name}:{i}/{n}",
            symbols=tuple(g),
            paths=tuple(files.get(i, ())),
            shared=shared,
            index=i,
            count=n,
            foreign=frozenset(every - set(g)),
        )
        for i, g in enumerate(groups)
    ]


def replay_shards(cfg: Config) -> list[Shard]:
    symbols = list(cfg.symbols)
    paths = list(cfg.source.paths)
    owner = {p: named_symbol(p, symbols) for p in paths}
    shared_files = [p for p in paths if owner[p] is None]
    n = cfg.source.partitions or (1 if shared_files else len(symbols))
    groups = _split(symbols, n)
    where = {s: i for i, g in enumerate(groups) for s in g}
    files: dict[int, list[Path]] = {}
    for p in paths:
        sym = owner[p]
        # A file for an unconfigured symbol is read once (its trades are counted as ignored).
        targets = range(len(groups)) if sym is None else [where.get(sym, 0)]
        for i in targets:
            files.setdefault(i, []).append(p)
    return _shards("replay", groups, files, shared=bool(shared_files) and len(groups) > 1)


def live_shards(cfg: Config) -> list[Shard]:
    symbols = list(cfg.symbols)
    per = cfg.source.max_streams_per_connection
    n = max(cfg.source.partitions or 1, -(-len(symbols) // per))
    return _shards(cfg.source.kind, _split(symbols, n), {}, shared=False)


def shards(cfg: Config) -> list[Shard]:
    return replay_shards(cfg) if cfg.source.kind == "replay" else live_shards(cfg)


# --- where bytewax runs a key ----------------------------------------------------------------------
# Bytewax 0.21's Rust core routes a keyed item to worker `DefaultHasher(key) % workers`, where
# DefaultHasher is SipHash-1-3 with zero keys over the key's UTF-8 bytes and Rust's 0xff string
# terminator (tests/test_placement.py checks this against a real bytewax run). A source partition
# runs on one of the workers that list it. Listing each partition only on the process of its
# first symbol's worker puts the partition where its symbols' keyed state is, so in a cluster a
# symbol's trades do not cross processes between the source and its steps.

_M64 = (1 << 64) - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M64


def siphash13(data: bytes) -> int:
    """SipHash-1-3 with the key (0, 0): Rust's `DefaultHasher` over `data`."""
    v0, v1, v2, v3 = 0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & _M64
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _M64
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _M64
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _M64
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)

    n = len(data)
    whole = n - n % 8
    words = [int.from_bytes(data[i : i + 8], "little") for i in range(0, whole, 8)]
    words.append(int.from_bytes(data[whole:], "little") | ((n & 0xFF) << 56))
    for m in words:
        v3 ^= m
        rounds(1)
        v0 ^= m
    v2 ^= 0xFF
    rounds(3)
    return v0 ^ v1 ^ v2 ^ v3


def key_worker(key: str, workers: int) -> int:
    """The worker (0-based, over all processes) that bytewax gives the keyed state of `key`."""
    return siphash13(key.encode() + b"\xff") % workers


def home_worker(shard: Shard, workers: int) -> int:
    """The worker a partition should run on: its first symbol's (all of them, for one symbol)."""
    return key_worker(shard.symbols[0], workers) if shard.symbols else 0


def local_shards(shards: list[Shard], first_worker: int, local_workers: int, workers: int) -> list[Shard]:
    """The partitions this process lists: those whose home worker is one of its own
    (`first_worker` … `first_worker + local_workers - 1` of `workers`). Every partition is
    listed by exactly one process; within a process bytewax spreads them over its workers."""
    if local_workers >= workers:
        return list(shards)
    mine = range(first_worker, first_worker + local_workers)
    return [s for s in shards if home_worker(s, workers) in mine]
