"""Flow throughput with 100 active alert rules on 4 symbols vs none (`python bench/bench_alerts.py`).

Input: the bundled hour of BTCUSDT trades (2020-12-09) copied to 4 symbols
(renamed, each copy shifted by a few ms), in one time-ordered `@trade`
recording as the live feed would deliver it. Each run is the whole flow in this
process (bytewax.testing.run_main) into a fresh store; the rules are stored
before the run, as the API would. Runs alternate and the median is reported.
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402
from bytewax.testing import run_main  # noqa: E402

from flows.dataflow import build_flow  # noqa: E402
from storage.sqlite import SqliteStore  # noqa: E402
from ticklens.config import parse_config  # noqa: E402
from ticklens.domain.alerts.rules import AlertRule  # noqa: E402

SYMBOLS = ("btcusdt", "ethusdt", "solusdt", "bnbusdt")


def _rule_set(
    hysteresis: float, cross_cooldown_s: float, sizes: tuple[float, float], volume: float, vol: float, ret: float
) -> list[AlertRule]:
    """25 rules per symbol: 16 price crossings (8 levels over the hour's range 18135 … 18378, above
    and below), 4 price levels with a 30 s cooldown, 2 trade sizes, 1s volume, 1s volatility, 1m return."""
    out = []
    for s in SYMBOLS:
        for k in range(8):
            lvl = 18_150 + 30 * k + 0.005
            for op, ex in (("crosses_above", lvl - hysteresis), ("crosses_below", lvl + hysteresis)):
                out.append(
                    AlertRule(
                        name=f"{s} {op} {k}",
                        metric="price",
                        symbol=s,
                        operator=op,
                        threshold=lvl,
                        exit_threshold=ex if hysteresis else None,
                        cooldown_s=cross_cooldown_s,
                    )
                )
        for k in range(4):
            out.append(
                AlertRule(
                    name=f"{s} l{k}", metric="price", symbol=s, operator=">", threshold=18_200 + 50 * k, cooldown_s=30
                )
            )
        out.append(AlertRule(name=f"{s} big", metric="trade_size", symbol=s, operator=">", threshold=sizes[0]))
        out.append(AlertRule(name=f"{s} huge", metric="trade_size", symbol=s, operator=">=", threshold=sizes[1]))
        out.append(
            AlertRule(name=f"{s} vol", metric="volume", symbol=s, timeframe="1s", operator=">", threshold=volume)
        )
        out.append(
            AlertRule(
                name=f"{s} rv", metric="volatility", symbol=s, timeframe="1s", operator=">", threshold=vol, window=30
            )
        )
        out.append(AlertRule(name=f"{s} ret", metric="return", symbol=s, timeframe="1m", operator="<", threshold=ret))
    assert len(out) == 100
    return out


def hundred_rules() -> list[AlertRule]:
    """The busy set: bare crossings, trades over 0.5 BTC; a trigger every ~10 trades."""
    return _rule_set(hysteresis=0, cross_cooldown_s=0, sizes=(0.5, 5), volume=20, vol=2e-4, ret=-0.001)


def typical_rules() -> list[AlertRule]:
    """Settings a trader would use: crossings with $5 hysteresis and a 60 s cooldown, whale-size
    trades, higher volume/volatility thresholds. Thresholds lie inside the data's range, so
    every batch is scanned (no bounds shortcut)."""
    return _rule_set(hysteresis=5, cross_cooldown_s=60, sizes=(5, 10), volume=50, vol=5e-4, ret=-0.002)


def four_symbol_recording(out: Path, n_trades: int) -> Path:
    """`<recv ns> <combined-stream JSON>` lines of 4 renamed, time-shifted copies of the BTC hour."""
    base = pl.read_csv(
        ROOT / "data" / "sample" / "BTCUSDT-trades-2020-12-09T00.csv.gz",
        schema_overrides={"price": pl.Utf8, "qty": pl.Utf8},
    ).head(n_trades // len(SYMBOLS))
    parts = []
    for k, sym in enumerate(SYMBOLS):
        t = pl.col("time") + k
        parts.append(
            base.select(
                t.alias("t"),
                pl.concat_str(
                    [
                        ((t + 5) * 1_000_000).cast(pl.Utf8),
                        pl.lit(f' {{"stream":"{sym}@trade","data":{{"e":"trade","E":'),
                        t.cast(pl.Utf8),
                        pl.lit(',"T":'),
                        t.cast(pl.Utf8),
                        pl.lit(f',"s":"{sym.upper()}","t":'),
                        pl.col("id").cast(pl.Utf8),
                        pl.lit(',"p":"'),
                        pl.col("price"),
                        pl.lit('","q":"'),
                        pl.col("qty"),
                        pl.lit('","X":"MARKET","m":'),
                        pl.col("is_buyer_maker").cast(pl.Utf8).str.to_lowercase(),
                        pl.lit("}}"),
                    ]
                ).alias("line"),
            )
        )
    lines = pl.concat(parts).sort("t", maintain_order=True)["line"]
    with gzip.open(out, "wt", compresslevel=1) as fh:
        fh.write("\n".join(lines.to_list()) + "\n")
    return out


def quiet(rules: list[AlertRule]) -> list[AlertRule]:
    """The same rules with thresholds no value reaches: evaluation cost without trigger writes."""
    far = {"price": 1e9, "trade_size": 1e9, "volume": 1e12, "volatility": 1.0, "return": -1.0}
    out = []
    for r in rules:
        thr = far[r.metric]
        if r.operator in ("crosses_below", "<", "<="):
            thr = -1e9 if r.metric != "return" else -50.0
        out.append(r.model_copy(update={"threshold": thr}))
    return out


def run_once(paths: list[Path], tmp: Path, rules: list[AlertRule], tag: str) -> tuple[float, float, int, int]:
    db = tmp / f"{tag}.db"
    cfg = parse_config(
        {
            "symbols": list(SYMBOLS),
            "source": {"kind": "replay", "paths": [str(p) for p in paths], "speed": "max"},
            "store": {"path": str(db)},
            "progress_interval_s": 3600,
        }
    )
    store = SqliteStore(db).rules()
    for r in rules:
        store.create_rule(r)
    flow = build_flow(cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    run_main(flow)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    trades = store.conn.execute("SELECT COUNT(*) FROM ticks").fetchone()[0]
    fired = store.conn.execute("SELECT COUNT(*) FROM alert_events").fetchone()[0]
    store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return elapsed, cpu, trades, fired


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trades", type=int, default=400_000, help="total over the 4 symbols (at most 4 x 100,311)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ["TICKLENS_QUIET"] = "1"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        paths = [four_symbol_recording(tmp / "four_symbols_trades.gz", args.trades)]
        rules = hundred_rules()
        variants = {
            "no rules": [],
            "100 quiet rules": quiet(rules),
            "100 typical rules": typical_rules(),
            "100 busy rules": rules,
        }
        wall: dict[str, list[float]] = {k: [] for k in variants}
        cpu: dict[str, list[float]] = {k: [] for k in variants}
        fired: dict[str, int] = {}
        for i in range(args.repeats):
            for tag, rs in variants.items():
                elapsed, cpu_s, trades, n = run_once(paths, tmp, rs, f"v{len(fired)}_{i}_{len(rs)}")
                wall[tag].append(trades / elapsed)
                cpu[tag].append(trades / cpu_s)
                fired[tag] = n
                print(
                    f"run {i} {tag:>15}: {trades:,} trades in {elapsed:.2f} s wall, {cpu_s:.2f} s CPU"
                    f" = {trades / elapsed:,.0f} trades/s ({trades / cpu_s:,.0f} per CPU-second), {n:,} triggers"
                )
        base = statistics.median(cpu["no rules"])
        for tag in variants:
            w, c = statistics.median(wall[tag]), statistics.median(cpu[tag])
            print(
                f"median {tag:>15}: {w:,.0f} trades/s wall, {c:,.0f} trades per CPU-second"
                f" ({c / base - 1:+.1%} vs no rules), {fired[tag]:,} triggers"
            )


if __name__ == "__main__":
    main()
