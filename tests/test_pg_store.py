"""PostgreSQL-only behaviour: daily tick partitions and retention, the password kept secret, the rule
feed woken by NOTIFY. A real server (tests/pg_support.py), real processes for the flow and the API."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import psycopg
import pytest
from api_support import api_server, wait_until
from flow_support import ROOT, WINDOW_A, run_flow, write_config
from pg_support import PW_SECRET, PW_USER, server

from storage.port import StoreBatch
from storage.postgres import PostgresStore
from storage.postgres.schema import partition_name
from storage.postgres.writer import PartitionUpkeep
from ticklens.config import ConfigError, RetentionConfig, StoreConfig, parse_config
from ticklens.domain.alerts.rules import rule_from_payload
from ticklens.domain.records import Trades

DAY = 86_400_000
D0 = 19_000 * DAY  # 2022-01-08 00:00 UTC


def _store(**cfg: object) -> PostgresStore:
    pg = server()
    store = PostgresStore(StoreConfig(kind="postgres", url=pg.url(pg.create_database("pgs")), **cfg))
    store.ensure()
    return store


def _trades(symbol: str, first: int, ts: np.ndarray) -> Trades:
    n = len(ts)
    ids = np.arange(first, first + n)
    return Trades.from_columns(symbol, trade_id=ids, ts_ms=ts, price=np.full(n, 100.0), qty=np.full(n, 1.0),
                               is_buyer_maker=ids % 2 == 0)  # fmt: skip


def _partitions(store: PostgresStore) -> dict[str, int]:
    with psycopg.connect(store.target.url) as c:
        rows = c.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'ticks'::regclass ORDER BY 1"
        ).fetchall()
        return {r[0]: c.execute(f"SELECT COUNT(*) FROM {r[0]}").fetchone()[0] for r in rows}  # type: ignore[index]


def test_ticks_land_in_daily_partitions_and_retention_drops_whole_old_days() -> None:
    store = _store()
    # Four days of ticks, 100 a day, written as a replay of old data would be.
    ts = np.concatenate([D0 + d * DAY + np.arange(100) * 1000 for d in range(4)])
    w = store.writer()
    w.write(w.prepare(StoreBatch(ticks=[_trades("btcusdt", 1, ts)])))
    w.close()
    parts = _partitions(store)
    days = [partition_name("ticks", D0 // DAY + d) for d in range(4)]
    assert days[0] == "ticks_d20220108"
    assert {name: 100 for name in days}.items() <= parts.items()
    # Retention 2 days, counted from the newest day holding ticks (not the wall clock: the replay stays).
    upkeep = PartitionUpkeep(store.target, RetentionConfig(days=2, ahead_days=1))
    dropped = upkeep.run_once()
    assert dropped == [days[0]]  # every row older than 2 days before 2022-01-11; the 9th's are not
    left = _partitions(store)
    assert days[0] not in left and all(left[d] == 100 for d in days[1:])
    with store.reader() as r:
        assert len(r.ticks("btcusdt", 1000)) == 300
    # Partitions for today and tomorrow exist ahead of any write.
    today = time.strftime("%Y%m%d", time.gmtime())
    assert f"ticks_d{today}" in left
    store.close()


def test_each_symbol_of_a_day_has_its_own_tick_partition_and_an_older_plain_day_takes_them_all() -> None:
    store = _store()
    with psycopg.connect(store.target.url, autocommit=True) as c:  # a day made by an older ticklens: one plain table
        c.execute("CREATE TABLE ticks_d20220109 (LIKE ticks INCLUDING DEFAULTS)")
        c.execute(
            f"ALTER TABLE ticks ATTACH PARTITION ticks_d20220109 FOR VALUES FROM ({D0 + DAY}) TO ({D0 + 2 * DAY})"
        )
    odd = "币安人生usdt"  # a real Binance symbol: not a plain name, so its partition is named by a digest
    w = store.writer()
    first_day = [_trades(s, 1, D0 + np.arange(50) * 60_000 + k) for k, s in enumerate(["btcusdt", "ethusdt", odd])]
    w.write(w.prepare(StoreBatch(ticks=first_day)))
    w.write(
        w.prepare(StoreBatch(ticks=[_trades(s, 100, D0 + DAY + np.arange(10) * 1000) for s in ("btcusdt", "ethusdt")]))
    )
    w.close()
    with psycopg.connect(store.target.url) as c:
        where = dict(
            ((sym, name), n)
            for sym, name, n in c.execute("SELECT symbol, tableoid::regclass::text, COUNT(*) FROM ticks GROUP BY 1, 2")
        )
        digest = c.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'ticks_d20220108'::regclass AND c.relname LIKE 'ticks_d20220108_x%'"
        ).fetchone()
    assert digest is not None and len(digest[0]) == len("ticks_d20220108_x") + 16
    assert where == {
        ("btcusdt", "ticks_d20220108_btcusdt"): 50,
        ("ethusdt", "ticks_d20220108_ethusdt"): 50,
        (odd, digest[0]): 50,
        ("btcusdt", "ticks_d20220109"): 10,
        ("ethusdt", "ticks_d20220109"): 10,
    }
    # Readers see one table: every symbol's ticks, pruned by symbol and time as before.
    with store.reader() as r:
        assert len(r.ticks("ethusdt", 1000)) == 60 and len(r.ticks(odd, 1000)) == 50
    # A writer after a restart finds the day's children and adds to them.
    w = store.writer()
    w.write(w.prepare(StoreBatch(ticks=[_trades("btcusdt", 51, D0 + 3_000_000 + np.arange(5))])))
    w.close()
    with psycopg.connect(store.target.url) as c:
        assert c.execute("SELECT COUNT(*) FROM ticks_d20220108_btcusdt").fetchone()[0] == 55  # type: ignore[index]
    store.close()


def test_the_password_never_shows_in_config_health_errors_or_flow_output(tmp_path) -> None:
    pg = server()
    db = pg.create_database("secret")
    url = f"postgresql://{PW_USER}:{PW_SECRET}@127.0.0.1:{pg.port}/{db}"
    cfg = write_config(tmp_path, symbols=["btcusdt"], store={"kind": "postgres", "url": url},
                       source={"kind": "replay", "paths": [str(WINDOW_A[0])], "speed": "max"})  # fmt: skip
    parsed = parse_config({"symbols": ["btcusdt"], "source": {"kind": "replay", "paths": ["x"]},
                           "store": {"kind": "postgres", "url": url}})  # fmt: skip
    assert PW_SECRET not in repr(parsed) and PW_SECRET not in parsed.store.location
    assert parsed.store.password is not None and parsed.store.password.get_secret_value() == PW_SECRET
    with pytest.raises(ConfigError) as bad:
        parse_config({"symbols": ["btcusdt"], "source": {"kind": "replay", "paths": ["x"]},
                      "store": {"kind": "postgres", "url": url, "pool_max": 0}})  # fmt: skip
    assert PW_SECRET not in str(bad.value)
    # The flow logs in with it (scram: a wrong one is refused) and never prints it.
    done = run_flow(cfg, "--no-recovery")
    assert done.returncode == 0, done.stderr[-2000:]
    assert PW_SECRET not in done.stdout + done.stderr
    with psycopg.connect(pg.url(db)) as c:
        assert c.execute("SELECT COUNT(*) FROM ticks").fetchone()[0] > 0  # type: ignore[index]
    # /health names the server without it.
    with api_server(cfg, tmp_path / "api.log") as api:
        health = api.client.get("/health").json()
        assert health["store"] == f"postgresql://{PW_USER}@127.0.0.1:{pg.port}/{db}"
        assert PW_SECRET not in api.client.get("/metrics").text
    assert PW_SECRET not in (tmp_path / "api.log").read_text()
    # From the environment instead, and a wrong one fails without echoing either.
    env_cfg = write_config(tmp_path, symbols=["btcusdt"], store={"kind": "postgres", "url": pg.url(db, PW_USER)},
                           source={"kind": "replay", "paths": [str(WINDOW_A[0])], "speed": "max"})  # fmt: skip
    env = dict(os.environ, TICKLENS_CONFIG=str(env_cfg), TICKLENS_QUIET="1", TICKLENS_PG_PASSWORD=PW_SECRET)
    ok = subprocess.run([sys.executable, "-m", "flows.runner", "--no-recovery"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-2000:]
    env["TICKLENS_PG_PASSWORD"] = "wrong-" + PW_SECRET
    env["TICKLENS_CONFIG"] = str(env_cfg)
    wrong = subprocess.run([sys.executable, "-m", "flows.runner", "--no-recovery"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr
    assert PW_SECRET not in wrong.stderr


def test_the_rule_feed_reloads_on_notify_without_polling() -> None:
    store = _store()
    feed = store.rule_feed()
    try:
        assert feed.wait_listening(10)  # type: ignore[attr-defined]
        feed.refresh()
        gen = feed.generation
        feed.refresh()
        assert feed.generation == gen  # nothing changed: no reload
        rules = store.rules()
        rid = rules.create_rule(rule_from_payload({"name": "p", "condition": "price > 5", "symbols": ["btcusdt"]}))

        def seen() -> bool:
            feed.refresh()
            return rid in feed.ids

        wait_until(seen, 5, "the new rule in the flow's feed")
        rules.delete_rule(rid)
        wait_until(lambda: (feed.refresh(), rid not in feed.ids)[1], 5, "the deleted rule gone from the feed")
        rules.close()
    finally:
        feed.close()
        store.close()


def test_a_flow_the_api_starts_gets_the_store_password_by_environment_not_in_its_file(tmp_path) -> None:
    from api.supervisor import FlowSupervisor
    from ticklens.config import parse_config

    cfg = parse_config(
        {
            "symbols": ["btcusdt"],
            "source": {"kind": "feed"},
            "store": {
                "kind": "postgres",
                "url": "postgresql://ticklens:s3cret-pw@127.0.0.1:5432/t",
                "path": str(tmp_path / "x.db"),
            },
        }
    )
    sup = FlowSupervisor(cfg, None)  # type: ignore[arg-type]
    derived = sup._derived_config(["btcusdt"])
    assert "password" not in derived["store"] and "s3cret-pw" not in str(derived)
    assert sup._secrets_env()["TICKLENS_PG_PASSWORD"] == "s3cret-pw"
    reloaded = parse_config(derived)
    assert reloaded.store.url == "postgresql://ticklens@127.0.0.1:5432/t" and reloaded.store.password is None


def _table(store: PostgresStore, table: str, order: str) -> list[tuple]:
    """Every column but the wall-clock stamp of the write."""
    with psycopg.connect(store.target.url) as c:
        cols = [
            r[0]
            for r in c.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s AND column_name <> 'updated_ms'"
                " ORDER BY ordinal_position",
                (table,),
            )
        ]
        return c.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {order}").fetchall()


def test_batches_written_as_one_transaction_store_what_they_store_one_after_another() -> None:
    """The flow's writer thread writes batches that waited together as one (`combine`): the same rows
    as writing them one by one, a bar changed in both ending as the later one, late trades of one
    closed bar folded in once each (its revision counts both)."""
    from ticklens.domain.bars import BarBook

    def batches() -> list[StoreBatch]:
        # Closed bars leave the book at once, so a late trade becomes a merge into the stored bar.
        book = BarBook("btcusdt", {"1s": 1000, "1m": 60_000}, lateness_ms=0, keep_closed_ms=0)
        out = []
        ts1 = D0 + np.arange(300) * 10  # 3 s of trades
        ts2 = D0 + 3000 + np.arange(150) * 10  # 1.5 s more: the bar of second 4 is open at the end
        ts3 = D0 + 4500 + np.arange(100) * 10  # … and changed again here
        for first, ts in ((1, ts1), (301, ts2), (451, ts3)):
            t = _trades("btcusdt", first, ts)
            changed, merges = book.add(t)
            changed += book.advance(int(ts[-1]))
            out.append(StoreBatch(ticks=[t], bars=changed, bar_merges=merges, status={"flow": {"n": first}}))
        for first, late_ts in ((551, D0 + 15), (552, D0 + 25)):  # two late trades in the first (closed) second
            t = _trades("btcusdt", first, np.array([late_ts]))
            changed, merges = book.add(t)
            assert merges and not [b for b in changed if b.start_ms == D0 and b.timeframe == "1s"]
            out.append(StoreBatch(ticks=[t], bars=changed, bar_merges=merges))
        return out

    one_by_one, combined = _store(), _store()
    w = one_by_one.writer()
    for b in batches():
        w.write(w.prepare(b))
    w.close()
    w = combined.writer()
    first, *rest = batches()
    w.write(w.prepare(first))
    w.write(w.combine([w.prepare(b) for b in rest]))
    w.close()

    for table, order in (("ticks", "symbol, trade_id"), ("bars", "symbol, timeframe, start_ms"), ("status", "key")):
        want = _table(one_by_one, table, order)
        assert want and _table(combined, table, order) == want, table
    with psycopg.connect(combined.target.url) as c:
        rev, trades = c.execute(
            "SELECT revision, trades FROM bars WHERE timeframe = '1s' AND start_ms = %s", (D0,)
        ).fetchone()  # type: ignore[misc]
        assert (rev, trades) == (2, 100 + 2)  # 100 trades in its second, then the two late ones, one revision each
        assert c.execute("SELECT COUNT(*) FROM bars").fetchone()[0] == 6 + 1  # type: ignore[index]  # seconds 0-5, the minute
