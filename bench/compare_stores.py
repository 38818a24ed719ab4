"""Do two checkouts of ticklens write the same store from the same input? (a refactor's proof)

Runs `python -m flows.runner --no-recovery` from each tree (the same interpreter and venv;
`cwd` decides which tree's packages load) over the bundled recordings, both windows, with a
pair on 1s/1m, a correlation set, per-symbol stats and alert rules stored before the start, and
compares every row of ticks, bars, gaps, pair_stats, symbol_stats, correlation and
alert_events, leaving out only wall-clock columns (updated_ms, wall_ms, detected_ms,
filled_ms).

    .venv/bin/python bench/compare_stores.py --before /work/base --after .
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
PATHS = sorted(str(p) for p in SAMPLE.glob("um_*usdt_2024*_trades.gz")) + [
    str(SAMPLE / "BTCUSDT-trades-2020-12-09T00.csv.gz")
]
TABLES = {
    "ticks": "symbol, trade_id",
    "bars": "symbol, timeframe, start_ms",
    "gaps": "symbol, from_id",
    "pair_stats": "pair, timeframe, start_ms",
    "symbol_stats": "symbol, timeframe, start_ms",
    "correlation": "timeframe, sym_a, sym_b, start_ms",
    "alert_events": "event_ms, rule_id, symbol, ref",
}
WALL_CLOCK = {"updated_ms", "wall_ms", "detected_ms", "filled_ms", "id"}
RULES = [
    '{"name":"btc up","metric":"price","symbol":"btcusdt","operator":"crosses_above","threshold":64000}',
    '{"name":"eth big","metric":"trade_size","symbol":"ethusdt","operator":">=","threshold":20}',
    '{"name":"btc vol","metric":"volume","symbol":"btcusdt","operator":">","threshold":30,"timeframe":"1m"}',
    '{"name":"z","metric":"zscore","pair":["btcusdt","ethusdt"],"operator":">","threshold":2,"timeframe":"1s"}',
]


def run(tree: Path, work: Path) -> Path:
    db = work / "ticklens.db"
    cfg = {
        "symbols": ["btcusdt", "ethusdt"],
        "source": {"kind": "replay", "paths": PATHS, "speed": "max"},
        "store": {"path": str(db)},
        "pairs": [{"legs": ["btcusdt", "ethusdt"], "window": 60, "timeframes": ["1s", "1m"], "adf_every": 5}],
        "correlation": {"symbols": ["btcusdt", "ethusdt"], "window": 30, "timeframe": "1s"},
        "stats": {"window": 20, "timeframes": ["1s", "1m"]},
    }
    (work / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, TICKLENS_CONFIG=str(work / "pipeline.yaml"), TICKLENS_QUIET="1")
    # Rules first, with the tree's own schema (a store made by that tree).
    subprocess.run([sys.executable, "-c", _SEED_RULES, str(db), *RULES], cwd=tree, env=env, check=True)
    res = subprocess.run([sys.executable, "-m", "flows.runner", "--no-recovery"], cwd=tree, env=env)
    if res.returncode:
        raise SystemExit(f"the flow of {tree} failed ({res.returncode})")
    return db


# Creates the schema and inserts the rules as JSON, the way each tree's API would.
_SEED_RULES = """
import sys, time, sqlite3
try:
    from storage.sqlite.connection import connect
except ImportError:
    from storage.sqlite import connect
conn = connect(sys.argv[1]); conn.close()
conn = sqlite3.connect(sys.argv[1])
now = int(time.time() * 1000)
for text in sys.argv[2:]:
    conn.execute("INSERT INTO alert_rules(rule, enabled, version, created_ms, updated_ms) VALUES(?,1,1,?,?)",
                 (text, now, now))
conn.commit()
"""


def table(db: Path, name: str) -> tuple[list[str], list[tuple]]:
    with sqlite3.connect(db) as conn:
        cols = [c[1] for c in conn.execute(f"PRAGMA table_info({name})") if c[1] not in WALL_CLOCK]
        rows = conn.execute(f"SELECT {','.join(cols)} FROM {name} ORDER BY {TABLES[name]}").fetchall()
    return cols, rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", type=Path, required=True)
    ap.add_argument("--after", type=Path, default=ROOT)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stores = []
        for label, tree in (("before", args.before), ("after", args.after)):
            work = Path(tmp) / label
            work.mkdir()
            stores.append(run(tree.resolve(), work))
        a, b = stores
        same = True
        for name in TABLES:
            (ca, ra), (cb, rb) = table(a, name), table(b, name)
            ok = ca == cb and ra == rb
            same &= ok
            print(f"{name:13} {len(ra):>8,} rows before, {len(rb):>8,} after: {'identical' if ok else 'DIFFERENT'}")
        print("stores identical" if same else "stores DIFFER")
        return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
