"""A hostile HTTP client against the real API (uvicorn on 127.0.0.1, a store filled by the real flow):
cross-site and untyped writes cannot act, a token guards everything when set, a non-loopback bind
without one refuses to start, internal webhooks are refused at creation, huge upload values and
non-finite thresholds are 422s, a corrupted store answers 503 naming the problem, and an export
that fails mid-stream ends as an error the client sees."""

from __future__ import annotations

import json
import os
import random
import secrets
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from api_support import ApiServer, api_server, free_port, rows, wait_until
from flow_support import BTC_2020, ROOT, run_flow, write_config

from ticklens.domain.times import iso_ms, now_ms

EVIL = "http://evil.example"
RULE = {"name": "btc above", "metric": "price", "symbol": "btcusdt", "operator": ">", "threshold": 20_000}
CSV_HEAD = "symbol,timeframe,timestamp,open,high,low,close,volume"


@pytest.fixture(scope="module")
def filled(tmp_path_factory) -> Path:
    """A store after replaying one hour of Binance's BTCUSDT archive (100,311 trades) through the flow."""
    tmp = tmp_path_factory.mktemp("hostile_api_store")
    config = write_config(tmp, symbols=["btcusdt"], source={"paths": [str(BTC_2020)]}, timeframes=["1s", "1m"])
    done = run_flow(config, "--no-recovery")
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "ticklens.db"


def copy_store(filled: Path, to: Path) -> Path:
    """A clean copy (SQLite's backup: the WAL folded in) that a test may damage."""
    to.mkdir(parents=True, exist_ok=True)
    db = to / "ticklens.db"
    src, dst = sqlite3.connect(filled), sqlite3.connect(db)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return db


def api_config(tmp: Path, db: Path, **overrides: object) -> Path:
    cfg: dict = {
        "symbols": ["btcusdt"],
        "source": {"kind": "replay", "paths": [str(BTC_2020)]},
        "store": {"path": str(db)},
        "timeframes": ["1s", "1m"],
    }
    for k, v in overrides.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def open_api(filled: Path, tmp_path_factory) -> ApiServer:
    """No token configured: the loopback default."""
    tmp = tmp_path_factory.mktemp("open_api")
    db = copy_store(filled, tmp)
    with api_server(api_config(tmp, db), tmp / "uvicorn.log") as server:
        yield server


TOKEN = secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def token_api(filled: Path, tmp_path_factory) -> ApiServer:
    """TICKLENS_API_TOKEN set; webhooks to 127.0.0.1 allowed."""
    tmp = tmp_path_factory.mktemp("token_api")
    db = copy_store(filled, tmp)
    cfg = api_config(tmp, db, alerts={"webhook_allow": ["127.0.0.1"]})
    with api_server(cfg, tmp / "uvicorn.log", token=TOKEN) as server:
        yield server


def _csv(*lines: str) -> bytes:
    return ("\n".join((CSV_HEAD, *lines)) + "\n").encode()


def upload_count(db: Path) -> int:
    return rows(db, "SELECT COUNT(*) FROM bars WHERE origin='upload'")[0][0]


# --- cross-site and untyped writes ---------------------------------------------------------


def test_cross_site_and_untyped_writes_cannot_act(open_api: ApiServer) -> None:
    c = open_api.client
    db = Path(yaml.safe_load(open_api.config.read_text())["store"]["path"])
    rid = c.post("/api/v1/alerts", json=RULE).json()["id"]
    form = {"file": ("bars.csv", _csv("btcusdt,1m,2020-12-09T00:00:00Z,1,1,1,1,1"), "text/csv")}
    cases: list[tuple[str, str, dict]] = []
    for path in ("/api/v1/start", "/api/start", "/api/v1/stop", "/api/stop"):
        # What a cross-site <form> or fetch(no-cors) sends: text/plain, empty body, the foreign Origin.
        cases.append(("POST", path, {"headers": {"Origin": EVIL, "Content-Type": "text/plain"}, "content": b""}))
        cases.append(("POST", path, {"headers": {"Origin": EVIL}}))
        cases.append(("POST", path, {"headers": {"Content-Type": "text/plain"}, "content": b""}))
        cases.append(("POST", path, {"data": {"symbols": "btcusdt"}}))  # form-urlencoded
        cases.append(("POST", path, {"headers": {"Origin": "null", "Content-Type": "application/json"}, "json": {}}))
    body = json.dumps({"enabled": False}).encode()
    cases += [
        ("DELETE", f"/api/v1/alerts/{rid}", {"headers": {"Origin": EVIL}}),
        ("DELETE", f"/api/alerts/{rid}", {"headers": {"Origin": EVIL}}),
        (
            "PATCH",
            f"/api/v1/alerts/{rid}",
            {"headers": {"Origin": EVIL, "Content-Type": "text/plain"}, "content": body},
        ),
        ("PATCH", f"/api/v1/alerts/{rid}", {"headers": {"Content-Type": "text/plain"}, "content": body}),
        ("PATCH", f"/api/v1/alerts/{rid}", {"headers": {"Origin": EVIL}, "json": {"enabled": False}}),
        ("POST", "/api/v1/alerts", {"headers": {"Content-Type": "text/plain"}, "content": json.dumps(RULE).encode()}),
        (
            "POST",
            "/api/alerts",
            {"headers": {"Origin": EVIL}, "json": {"condition": "price > 1", "symbols": ["btcusdt"]}},
        ),
        ("POST", "/api/v1/upload/ohlc", {"headers": {"Origin": EVIL}, "files": form}),
        ("POST", "/api/upload/ohlc", {"headers": {"Origin": EVIL}, "files": form}),
        ("POST", "/api/v1/upload/ohlc", {"headers": {"Content-Type": "text/csv"}, "content": form["file"][1]}),
        ("POST", "/api/v1/alerts", {"headers": {"Sec-Fetch-Site": "cross-site"}, "json": RULE}),
    ]
    for method, path, kw in cases:
        r = c.request(method, path, **kw)
        want = 403 if any(h in kw.get("headers", {}) for h in ("Origin", "Sec-Fetch-Site")) else 415
        assert r.status_code == want, (method, path, kw.get("headers"), r.status_code, r.text)
        detail = r.json()["detail"]
        assert ("cross-site" in detail) if want == 403 else ("application/json" in detail), detail
    # Nothing happened: no flow, the rule as created, no uploaded bar, one rule only.
    assert c.get("/api/v1/status").json()["running"] is False
    assert not db.with_name(db.stem + ".flow.pid").exists()
    rule = c.get(f"/api/v1/alerts/{rid}").json()
    assert (rule["enabled"], rule["version"]) == (True, 1)
    assert [a["id"] for a in c.get("/api/v1/alerts").json()["alerts"]] == [rid]
    assert upload_count(db) == 0
    assert c.delete(f"/api/v1/alerts/{rid}").status_code == 204


def test_the_dashboards_origin_and_the_original_clients_calls_still_write(open_api: ApiServer) -> None:
    c = open_api.client
    db = Path(yaml.safe_load(open_api.config.read_text())["store"]["path"])
    # The original design's scripts (requests): no Origin, JSON bodies, POST /api/stop without a body.
    r = c.post("/api/stop")
    assert r.status_code == 200 and r.json()["status"] == "stopped"
    created = c.post("/api/alerts", json={"name": "x", "condition": "price > 50000", "symbols": ["btcusdt"]})
    assert created.status_code == 200, created.text
    assert c.delete(f"/api/alerts/{created.json()['alert_id']}").json() == {"status": "deleted"}
    files = {
        "file": ("bars.csv", b"symbol,timestamp,open,high,low,close,volume\nbtcusdt,2020-12-08T00:00:00Z,1,2,1,2,3\n")
    }
    assert c.post("/api/upload/ohlc", files=files).json()["status"] == "success"
    assert upload_count(db) == 1
    # A browser on the dashboard's own origin: allowed, and told so by CORS.
    dash = "http://127.0.0.1:5006"
    r = c.post("/api/v1/alerts", json=RULE, headers={"Origin": dash})
    assert r.status_code == 201 and r.headers["access-control-allow-origin"] == dash
    assert c.delete(f"/api/v1/alerts/{r.json()['id']}", headers={"Origin": dash}).status_code == 204
    pre = c.options(
        "/api/v1/start", headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"}
    )  # the preflight a cross-site fetch with JSON would need
    assert "access-control-allow-origin" not in pre.headers


# --- the token -----------------------------------------------------------------------------


def test_a_token_guards_every_read_and_write_and_is_never_shown(token_api: ApiServer) -> None:
    bare = httpx.Client(base_url=token_api.url, timeout=30)
    wrong = httpx.Client(base_url=token_api.url, timeout=30, headers={"Authorization": f"Bearer {TOKEN[:-1]}x"})
    try:
        reads = ["/health", "/api/v1/health", "/api/v1/status", "/api/v1/ohlc/btcusdt", "/api/symbols", "/metrics"]
        reads += ["/api/ohlc/btcusdt", "/api/v1/export/btcusdt", "/api/alerts", "/api/v1/alerts"]
        for path in reads:
            for client in (bare, wrong):
                r = client.get(path)
                assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (path, r.status_code)
                assert TOKEN not in r.text
            assert token_api.client.get(path).status_code == 200, path
        writes = [
            ("POST", "/api/v1/alerts", {"json": RULE}),
            ("POST", "/api/alerts", {"json": {"condition": "price > 1", "symbols": ["btcusdt"]}}),
            ("POST", "/api/v1/stop", {}),
            ("POST", "/api/start", {"json": {"symbols": ["btcusdt"]}}),
            ("POST", "/api/v1/upload/ohlc", {"files": {"file": ("b.csv", _csv("btcusdt,1m,1607385600000,1,1,1,1,1"))}}),
        ]
        for method, path, kw in writes:
            assert bare.request(method, path, **kw).status_code == 401, path
            assert wrong.request(method, path, **kw).status_code == 401, path
        assert token_api.client.get("/api/v1/status").json()["running"] is False
        assert token_api.client.get("/api/v1/alerts").json()["count"] == 0
        # With the token, the same rules about content types apply.
        r = token_api.client.post(
            "/api/v1/alerts", content=json.dumps(RULE).encode(), headers={"Content-Type": "text/plain"}
        )
        assert r.status_code == 415
        made = token_api.client.post("/api/v1/alerts", json=RULE)
        assert made.status_code == 201
        assert token_api.client.delete(f"/api/v1/alerts/{made.json()['id']}").status_code == 204
        # The schema is public (it holds no data) and declares the bearer scheme.
        schema = bare.get("/openapi.json").json()
        assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    finally:
        bare.close()
        wrong.close()
    assert TOKEN not in token_api.log.read_text()


def test_the_token_can_come_from_the_config_file(filled: Path, tmp_path: Path) -> None:
    db = copy_store(filled, tmp_path)
    token = secrets.token_urlsafe(24)
    cfg = api_config(tmp_path, db, api={"token": token})
    with api_server(cfg, tmp_path / "uvicorn.log", ready=(200, 401)) as api:
        assert api.client.get("/api/v1/status").status_code == 401
        ok = httpx.get(f"{api.url}/api/v1/status", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
    assert token not in (tmp_path / "uvicorn.log").read_text()


def test_the_dashboards_client_sends_the_token(token_api: ApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from panel_app.client import Api, ApiError

    monkeypatch.delenv("TICKLENS_API_TOKEN", raising=False)
    with pytest.raises(ApiError) as e:
        Api(token_api.url).status()
    assert e.value.status == 401
    monkeypatch.setenv("TICKLENS_API_TOKEN", TOKEN)
    assert Api(token_api.url).status()["running"] is False


def test_config_errors_and_reprs_never_show_the_token() -> None:
    from ticklens.config import ConfigError, parse_config

    base = {"symbols": ["btcusdt"], "source": {"kind": "feed"}}
    with pytest.raises(ConfigError) as e:
        parse_config({**base, "api": {"token": "short-secret"}})
    assert "api.token" in str(e.value) and "short-secret" not in str(e.value)
    secret = secrets.token_urlsafe(24)
    cfg = parse_config({**base, "api": {"token": secret, "host": "0.0.0.0"}})
    assert secret not in repr(cfg) and secret not in str(cfg.model_dump())
    assert cfg.api.bearer_token() == secret


# --- exposure ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "section,host",
    [("api", "0.0.0.0"), ("api", "192.168.1.20"), ("dashboard", "0.0.0.0"), ("feed", "0.0.0.0"), ("api", "::")],
)
def test_a_non_loopback_bind_without_a_token_refuses_to_start(section: str, host: str, tmp_path: Path) -> None:
    db = tmp_path / "ticklens.db"
    cfg = api_config(tmp_path, db, **{section: {"host": host}})
    env = {k: v for k, v in os.environ.items() if k != "TICKLENS_API_TOKEN"}
    env.update(TICKLENS_CONFIG=str(cfg), TICKLENS_QUIET="1")
    commands = {
        "uvicorn": [sys.executable, "-m", "uvicorn", "api.app:app", "--port", str(free_port())],
        "up": [sys.executable, "-m", "ticklens.cli", "--config", str(cfg), "up"],
    }
    for name, cmd in commands.items():
        t0 = time.monotonic()
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0, (name, done.stderr[-2000:])
        assert f"{section}.host" in done.stderr and "TICKLENS_API_TOKEN" in done.stderr, (name, done.stderr[-2000:])
        assert time.monotonic() - t0 < 30
    assert not db.exists()  # nothing started far enough to create the store
    # With a token (and, for the dashboard, its own login) the same file is accepted.
    from ticklens.config import load_config

    os.environ["TICKLENS_API_TOKEN"] = TOKEN
    try:
        if section == "dashboard":
            with pytest.raises(Exception, match="dashboard.auth"):
                load_config(cfg)
            raw = yaml.safe_load(cfg.read_text())
            raw["dashboard"]["auth"] = {"user": "ops", "password": secrets.token_urlsafe(16)}
            cfg.write_text(yaml.safe_dump(raw))
        if section == "feed":
            with pytest.raises(Exception, match="feed.host"):
                load_config(cfg)
        else:
            assert getattr(load_config(cfg), section).host == host
    finally:
        del os.environ["TICKLENS_API_TOKEN"]


def _non_loopback_address() -> str | None:
    """This machine's address on its default route (no packet is sent), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr


def test_requests_reaching_a_non_loopback_address_without_a_token_are_refused(filled: Path, tmp_path: Path) -> None:
    """`uvicorn --host <address>` bypasses the config's api.host: each request is checked instead."""
    addr = _non_loopback_address()
    if addr is None:
        pytest.skip("no non-loopback address on this machine")
    db = copy_store(filled, tmp_path)
    server = ApiServer(api_config(tmp_path, db), tmp_path / "uvicorn.log", host=addr, ready=(403,))
    try:
        assert server.url.startswith(f"http://{addr}:")
        for method, path in (("GET", "/api/v1/status"), ("GET", "/health"), ("POST", "/api/v1/stop")):
            r = server.client.request(method, path)
            assert r.status_code == 403, (path, r.text)
            assert "TICKLENS_API_TOKEN" in r.json()["detail"] and addr in r.json()["detail"]
    finally:
        server.stop()
    with api_server(api_config(tmp_path, db), tmp_path / "uvicorn2.log", host=addr, token=TOKEN) as api:
        assert api.client.get("/api/v1/status").status_code == 200  # a token: the address may serve


# --- webhooks at rule creation ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url,kind",
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://127.0.0.1:9000/hook", "loopback"),
        ("http://[::1]:22/", "loopback"),
        ("http://localhost:6379/", "loopback"),
        ("http://2130706433:80/", "loopback"),
        ("http://10.0.0.1/", "private"),
        ("http://[::ffff:192.168.0.1]/", "private"),
        ("http://0.0.0.0:8000/", "unspecified"),
        ("http://100.64.0.1/", "non-global"),
    ],
)
def test_a_rule_with_an_internal_webhook_is_a_422_naming_why(open_api: ApiServer, url: str, kind: str) -> None:
    c = open_api.client
    for path, body in (
        ("/api/v1/alerts", {**RULE, "webhook": url}),
        ("/api/alerts", {"name": "x", "condition": "price > 1", "symbols": ["btcusdt"], "webhook": url}),
    ):
        r = c.post(path, json=body)
        assert r.status_code == 422, (path, r.text)
        (err,) = r.json()["detail"]
        assert err["loc"] == ["body", "webhook"] and f"({kind})" in err["msg"] and "alerts.webhook_allow" in err["msg"]
    rid = c.post("/api/v1/alerts", json=RULE).json()["id"]
    try:
        r = c.patch(f"/api/v1/alerts/{rid}", json={"webhook": url})
        assert r.status_code == 422 and f"({kind})" in r.json()["detail"][0]["msg"]
        assert c.get(f"/api/v1/alerts/{rid}").json()["webhook"] is None
    finally:
        c.delete(f"/api/v1/alerts/{rid}")
    assert c.get("/api/v1/alerts").json()["count"] == 0


def test_public_and_allowed_webhooks_are_accepted(open_api: ApiServer, token_api: ApiServer) -> None:
    # A host name is resolved only when a trigger is delivered (the dispatcher checks it then).
    r = open_api.client.post("/api/v1/alerts", json={**RULE, "webhook": "https://hooks.example.com/x"})
    assert r.status_code == 201
    open_api.client.delete(f"/api/v1/alerts/{r.json()['id']}")
    r = token_api.client.post("/api/v1/alerts", json={**RULE, "webhook": "http://127.0.0.1:9000/hook"})
    assert r.status_code == 201, r.text  # alerts.webhook_allow: [127.0.0.1]
    token_api.client.delete(f"/api/v1/alerts/{r.json()['id']}")


# --- upload values and thresholds ------------------------------------------------------------


def test_huge_finite_upload_values_are_row_errors(open_api: ApiServer) -> None:
    db = Path(yaml.safe_load(open_api.config.read_text())["store"]["path"])
    before = upload_count(db)
    t = "2020-12-08T00:0{}:00Z"
    data = (
        "symbol,timeframe,timestamp,open,high,low,close,volume,trades,quote_volume,taker_buy_volume\n"
        f"btcusdt,1m,{t.format(0)},100,101,99,100,1e20,,,\n"
        f"btcusdt,1m,{t.format(1)},1e300,1e300,1e300,1e300,1,,,\n"
        f"btcusdt,1m,{t.format(2)},100,101,99,100,1,1e30,,\n"
        f"btcusdt,1m,{t.format(3)},100,101,99,100,1,,1e300,\n"
        f"btcusdt,1m,{t.format(4)},100,101,99,100,1,,,1e25\n"
        f"btcusdt,1m,{t.format(5)},60000,60001,59999,60000,1e11,,,\n"  # estimated quote volume 6e15
        f"btcusdt,1m,{t.format(6)},60000,60001,59999,60000,12.5,100,750000,6\n"  # fine
    ).encode()
    for path in ("/api/v1/upload/ohlc", "/api/upload/ohlc"):
        r = open_api.client.post(path, files={"file": ("bars.csv", data, "text/csv")})
        assert r.status_code == 422, (path, r.text)
        detail = r.json()["detail"]
        assert detail["bad_rows"] == 6
        errors = {e["row"]: " ".join(e["errors"]) for e in detail["errors"]}
        assert sorted(errors) == [1, 2, 3, 4, 5, 6]
        for row, field in ((1, "volume"), (2, "open"), (3, "trades"), (4, "quote_volume"), (5, "taker_buy_volume")):
            assert field in errors[row] and "at most" in errors[row], (row, errors[row])
        assert "quote volume" in errors[6]
    assert upload_count(db) == before


NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e400"]


def _refuse_constant(token: str) -> None:
    raise AssertionError(f"{token} in an answer: not strict JSON")


@pytest.mark.parametrize("value", NON_FINITE)
def test_a_non_finite_threshold_is_a_422_without_echoing_it(open_api: ApiServer, value: str) -> None:
    c = open_api.client
    rid = c.post("/api/v1/alerts", json=RULE).json()["id"]
    head = {"Content-Type": "application/json"}
    rule = json.dumps({k: v for k, v in RULE.items() if k != "threshold"})[:-1]
    bodies = [
        ("POST", "/api/v1/alerts", f'{rule}, "threshold": {value}}}'),
        ("POST", "/api/v1/alerts", f'{rule}, "threshold": 1, "exit_threshold": {value}}}'),
        (
            "POST",
            "/api/alerts",
            f'{{"name": "x", "condition": "price > 1", "symbols": ["btcusdt"], "exit_threshold": {value}}}',
        ),
        ("PATCH", f"/api/v1/alerts/{rid}", f'{{"threshold": {value}}}'),
    ]
    try:
        for method, path, body in bodies:
            r = c.request(method, path, content=body.encode(), headers=head)
            assert r.status_code == 422, (method, path, r.status_code, r.text)

            detail = json.loads(r.text, parse_constant=_refuse_constant)["detail"]  # strict JSON: no NaN/Infinity
            assert "threshold" in json.dumps(detail), detail
            for token in ("NaN", "Infinity", "inf", "nan"):
                assert token not in r.text, r.text
        assert c.get(f"/api/v1/alerts/{rid}").json()["threshold"] == RULE["threshold"]
    finally:
        c.delete(f"/api/v1/alerts/{rid}")


def test_integers_beyond_64_bits_in_a_bad_body_are_a_422_not_a_500(open_api: ApiServer) -> None:
    # Found by the stateful fuzz: the 422 body echoes the input, and orjson cannot write 2**100.
    big = str(-(2**100))
    head = {"Content-Type": "application/json"}
    for path, body in (
        ("/api/alerts", f'{{"condition": "price > 1", "symbols": ["btcusdt"], "extra": [{big}]}}'),
        ("/api/v1/alerts", f'{{"name": "x", "metric": "price", "operator": ">", "threshold": 1, "y": {big}}}'),
    ):
        r = open_api.client.post(path, content=body.encode(), headers=head)
        assert r.status_code == 422, (path, r.status_code, r.text[:300])
        assert big in r.text  # echoed as text
    assert open_api.client.get("/api/v1/alerts").json()["count"] == 0


# --- a corrupted store ----------------------------------------------------------------------


def corrupt_pages(db: Path, table: str, where: float, pages: int = 3, seed: int = 18) -> list[int]:
    """Overwrite `pages` leaf pages of `table`'s B-tree (ticks live in `tick_rows` since schema v4), `where` along it (0..1), with random bytes."""
    conn = sqlite3.connect(db)
    try:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        leaves = [
            p
            for (p,) in conn.execute(
                "SELECT pageno FROM dbstat WHERE name=? AND pagetype='leaf' ORDER BY path", (table,)
            )
        ]
    finally:
        conn.close()
    assert len(leaves) > 10, leaves
    start = int(len(leaves) * where)
    chosen = leaves[start : start + pages]
    rng = random.Random(seed)
    with open(db, "r+b") as f:
        for page in chosen:
            f.seek((page - 1) * size)
            f.write(rng.randbytes(size))
    return chosen


READS = [
    "/api/v1/ohlc/btcusdt",
    "/api/v1/ticks/btcusdt",
    "/api/v1/status",
    "/api/v1/symbols",
    "/api/v1/alerts",
    "/api/v1/export/btcusdt?kind=ticks",
    "/api/ohlc/btcusdt",
    "/api/ticks/btcusdt",
    "/api/status",
    "/api/symbols",
    "/api/alerts",
]


def test_a_corrupted_store_is_degraded_from_the_start_and_reads_are_503_naming_it(filled: Path, tmp_path: Path) -> None:
    db = copy_store(filled, tmp_path)
    corrupt_pages(db, "tick_rows", 0.5)
    corrupt_pages(db, "bars", 0.5, pages=1)
    with api_server(api_config(tmp_path, db), tmp_path / "uvicorn.log", ready=(200, 503)) as api:
        c = api.client
        h = wait_until(lambda: (r := c.get("/api/v1/health")).status_code == 503 and r, 60, "a degraded health")
        body = h.json()
        assert body["status"] == "degraded" and "integrity check" in body["problem"], body
        assert str(db) in body["problem"]
        compat = c.get("/health")
        assert compat.status_code == 503 and compat.json()["status"] == "degraded"
        assert compat.json()["problem"] == body["problem"]
        for path in READS:
            r = c.get(path)
            assert r.status_code == 503, (path, r.status_code, r.text[:300])
            assert body["problem"] in r.json()["detail"], (path, r.text[:300])
        r = c.post("/api/v1/upload/ohlc", files={"file": ("b.csv", _csv("btcusdt,1m,1607385600000,1,1,1,1,1"))})
        assert r.status_code == 503
        metrics = c.get("/metrics")
        assert metrics.status_code == 200 and "ticklens_store_ok 0.0" in metrics.text
    assert "Traceback" not in (tmp_path / "uvicorn.log").read_text()


def test_corruption_after_start_is_found_by_the_scheduled_check(filled: Path, tmp_path: Path) -> None:
    db = copy_store(filled, tmp_path)
    cfg = api_config(tmp_path, db, store={"check_interval_s": 1})
    with api_server(cfg, tmp_path / "uvicorn.log") as api:
        c = api.client
        wait_until(lambda: c.get("/api/v1/health").json().get("checked_time"), 30, "the first integrity check")
        assert c.get("/api/v1/ohlc/btcusdt?limit=5").status_code == 200
        corrupt_pages(db, "tick_rows", 0.3)
        wait_until(lambda: c.get("/api/v1/health").status_code == 503, 30, "the scheduled check to find it")
        assert c.get("/api/v1/ohlc/btcusdt?limit=5").status_code == 503
        # Restored in place from a good copy: the next check clears it, reads are served again.
        copy_store(filled, tmp_path)
        wait_until(lambda: c.get("/api/v1/health").status_code == 200, 30, "a check to pass again")
        r = c.get("/api/v1/ohlc/btcusdt?limit=5")
        assert r.status_code == 200 and len(r.json()["bars"]) == 5, r.text[:300]


def test_an_export_that_fails_mid_stream_ends_as_an_error_the_client_sees(filled: Path, tmp_path: Path) -> None:
    db = copy_store(filled, tmp_path)
    with api_server(api_config(tmp_path, db), tmp_path / "uvicorn.log") as api:
        c = api.client
        # The start-up check passed; the damage comes after it, past the first 50,000-row chunk.
        wait_until(lambda: c.get("/api/v1/health").json().get("checked_time"), 30, "the first integrity check")
        corrupt_pages(db, "tick_rows", 0.8)
        received = 0
        with pytest.raises(httpx.RemoteProtocolError), c.stream("GET", "/api/v1/export/btcusdt?kind=ticks") as r:
            assert r.status_code == 200
            for chunk in r.iter_bytes():
                received += len(chunk)
        assert received > 1_000_000  # the first chunks arrived: it failed mid-stream
    log = (tmp_path / "uvicorn.log").read_text()
    assert "export of btcusdt ticks failed mid-stream" in log and "malformed" in log, log[-3000:]


def test_a_flow_started_through_the_api_gets_the_secrets_by_environment_not_in_its_file(
    filled: Path, tmp_path: Path
) -> None:
    db = copy_store(filled, tmp_path)
    token, password = secrets.token_urlsafe(24), secrets.token_urlsafe(16)
    cfg = api_config(tmp_path, db, api={"token": token}, dashboard={"auth": {"user": "ops", "password": password}})
    with api_server(cfg, tmp_path / "uvicorn.log", ready=(200, 401)) as api:
        auth = {"Authorization": f"Bearer {token}"}
        before = iso_ms(now_ms())
        r = httpx.post(f"{api.url}/api/v1/start", json={"symbols": ["btcusdt"]}, headers=auth, timeout=30)
        assert r.status_code == 200 and r.json()["changed"], r.text
        try:
            derived = db.with_name(db.stem + ".flow.yaml")
            text = derived.read_text()
            assert token not in text and password not in text and "*****" not in text
            assert yaml.safe_load(text)["dashboard"]["auth"] == {"user": "ops"}
            # The child loads that file (its dashboard.auth needs the password, which only its
            # environment holds) and runs: it writes a status of its own.
            flow_log = db.with_name(db.stem + ".flow.log")
            try:  # a flow's start (imports, its store check) takes a while on a loaded 2-core machine
                status = wait_until(
                    lambda: (
                        (s := httpx.get(f"{api.url}/api/v1/status", headers=auth, timeout=30).json())["running"]
                        and (s["status_time"] or "") > before
                        and s
                    ),
                    120,
                    "the started flow to write its status",
                )
            except AssertionError as e:
                tail = flow_log.read_text()[-3000:] if flow_log.exists() else "(no flow log)"
                raise AssertionError(f"{e}; the flow's log ends:\n{tail}") from None
            assert status["started_by"] == "api"
        finally:
            stop = httpx.post(f"{api.url}/api/v1/stop", headers=auth, timeout=60)
            assert stop.status_code == 200, stop.text
    log = (tmp_path / "uvicorn.log").read_text() + db.with_name(db.stem + ".flow.log").read_text()
    assert token not in log and password not in log
