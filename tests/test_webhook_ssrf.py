"""Webhooks cannot be turned against the machine's own network: real receivers on 127.0.0.1 are
refused unless `alerts.webhook_allow` lists them, redirects are not followed, and a slow or
endless receiver is cut off (real sockets, the real dispatcher and flow)."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from storage import open_store
from tests.api_support import rows
from tests.flow_support import run_flow, write_config
from tests.test_alerts import BTC_B, LEVEL, create_rules
from ticklens.config import StoreConfig
from ticklens.domain.alerts.rules import AlertRule
from ticklens.notify.webhooks import WebhookDispatcher, WebhookRefused, resolve_target


class _Counting(BaseHTTPRequestHandler):
    hits: list[tuple[str, str]]  # (peer address, Host header)
    redirect: str | None = None

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.hits.append((self.client_address[0], self.headers["Host"]))
        if self.redirect:
            self.send_response(302)
            self.send_header("Location", self.redirect)
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def receiver():
    servers = []

    def start(redirect: str | None = None) -> tuple[int, list]:
        handler = type("R", (_Counting,), {"hits": [], "redirect": redirect})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1], handler.hits

    yield start
    for s in servers:
        s.shutdown()


@pytest.fixture
def dispatcher(tmp_path: Path):
    def make(allow: list[str]) -> WebhookDispatcher:
        return WebhookDispatcher(open_store(StoreConfig(path=tmp_path / "store.db")), allow=allow)

    return make


def _post(d: WebhookDispatcher, url: str) -> int:
    return d.post(url, b"{}", {"Content-Type": "application/json"})


def test_the_flow_refuses_a_loopback_webhook_unless_allowed(tmp_path: Path, receiver) -> None:
    port, hits = receiver()
    url = f"http://127.0.0.1:{port}/hook"
    for allow, want in (([], "failed"), (["127.0.0.1"], "sent")):
        run_dir = tmp_path / ("allowed" if allow else "refused")
        run_dir.mkdir()
        cfg = write_config(
            run_dir,
            source={"paths": [str(BTC_B)]},
            symbols=["btcusdt"],
            timeframes=["1s"],
            alerts={"webhook_allow": allow},
        )
        db = run_dir / "ticklens.db"
        (rid,) = create_rules(
            db, [{"name": "hook", "condition": f"price crosses_above {LEVEL}", "symbols": ["btcusdt"], "webhook": url}]
        )
        before = len(hits)
        res = run_flow(cfg, "--no-recovery")
        assert res.returncode == 0, res.stderr[-3000:]
        stored = rows(db, "SELECT webhook_status FROM alert_events WHERE rule_id=?", (rid,))
        assert len(stored) > 5 and {s for (s,) in stored} == {want}
        if allow:
            assert len(hits) - before == len(stored)
        else:
            assert len(hits) == before == 0  # never connected
            assert "127.0.0.1 (loopback): add it to alerts.webhook_allow" in res.stderr


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/hook",
        "http://localhost:{port}/hook",
        "http://[::1]:{port}/hook",
        "http://[::ffff:127.0.0.1]:{port}/hook",
        "http://0.0.0.0:{port}/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1:6379/",
        "http://192.168.1.1/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
        "http://100.64.0.1/",
        "http://2130706433:{port}/hook",  # 127.0.0.1 as one decimal number
    ],
)
def test_internal_addresses_are_refused_without_connecting(url: str, receiver, dispatcher) -> None:
    port, hits = receiver()
    with pytest.raises(WebhookRefused, match="webhook_allow"):
        _post(dispatcher([]), url.format(port=port))
    assert hits == []


def test_the_allow_list_takes_addresses_networks_and_host_names(receiver, dispatcher) -> None:
    port, hits = receiver()
    assert _post(dispatcher(["127.0.0.1"]), f"http://127.0.0.1:{port}/a") == 200
    assert _post(dispatcher(["127.0.0.0/8"]), f"http://127.0.0.1:{port}/b") == 200
    # By name: resolved once, the request goes to the checked address with the name as Host.
    d = dispatcher(["localhost", "::1"])
    try:
        assert _post(d, f"http://localhost:{port}/c") == 200
    except httpx.ConnectError:  # localhost resolved to ::1 first, where the receiver does not listen
        pytest.skip("localhost resolves to ::1 first here")
    assert hits[-1] == ("127.0.0.1", f"localhost:{port}")
    with pytest.raises(WebhookRefused):
        _post(dispatcher(["10.0.0.0/8"]), f"http://127.0.0.1:{port}/d")
    assert len(hits) == 3


def test_a_mixed_dns_answer_is_refused_and_the_checked_address_is_the_one_used() -> None:
    def answer(*addrs: str):
        def resolve(host, port, **kw):  # type: ignore[no-untyped-def]
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addrs]

        return resolve

    with pytest.raises(WebhookRefused, match="127.0.0.1"):
        resolve_target("https://hooks.example.com/x", [], resolver=answer("93.184.216.34", "127.0.0.1"))
    url, host, tls = resolve_target("https://hooks.example.com:8443/x?a=1", [], resolver=answer("93.184.216.34"))
    assert (str(url), host, tls) == ("https://93.184.216.34:8443/x?a=1", "hooks.example.com:8443", "hooks.example.com")


def test_redirects_are_not_followed(receiver, dispatcher) -> None:
    port_b, hits_b = receiver()
    port_a, hits_a = receiver(redirect=f"http://127.0.0.1:{port_b}/elsewhere")
    assert _post(dispatcher(["127.0.0.1"]), f"http://127.0.0.1:{port_a}/hook") == 302
    assert len(hits_a) == 1 and hits_b == []


def _raw_server(behaviour) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    state: dict = {"sent": 0, "closed_at": None}

    def run() -> None:
        conn, _ = srv.accept()
        conn.recv(65536)
        try:
            behaviour(conn, state)
        except OSError:
            state["closed_at"] = time.monotonic()
        finally:
            conn.close()
            srv.close()

    threading.Thread(target=run, daemon=True).start()
    return srv.getsockname()[1], state


def test_a_slow_receiver_is_cut_at_the_deadline(dispatcher) -> None:
    def drip(conn: socket.socket, state: dict) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for _ in range(60):  # one header line a second, each within the read timeout
            time.sleep(1)
            conn.sendall(b"X-Slow: 1\r\n")

    port, _ = _raw_server(drip)
    d = dispatcher(["127.0.0.1"])
    d.deadline_s = 2.0
    t0 = time.monotonic()
    with pytest.raises(httpx.HTTPError):
        _post(d, f"http://127.0.0.1:{port}/hook")
    assert time.monotonic() - t0 < 4.0


def test_an_endless_response_body_is_not_read_to_its_end(dispatcher) -> None:
    def endless(conn: socket.socket, state: dict) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
        for _ in range(2_000):  # 128 MB if read to the end
            conn.sendall(chunk)
            state["sent"] += 65536

    port, state = _raw_server(endless)
    t0 = time.monotonic()
    assert _post(dispatcher(["127.0.0.1"]), f"http://127.0.0.1:{port}/hook") == 200
    assert time.monotonic() - t0 < 3.0
    deadline = time.monotonic() + 5
    while state["closed_at"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state["closed_at"] is not None and state["sent"] < 16 << 20


@pytest.mark.parametrize(
    "url",
    [
        "http://user:pw@example.com/",
        "http://evil.example@169.254.169.254/",
        "ftp://example.com/",
        "http:///x",
        "http://example.com:99999/",
        "http://exa mple.com/",
        "http://example.com/\r\nX-Injected: 1",
    ],
)
def test_webhook_urls_with_credentials_bad_ports_or_control_characters_are_invalid_rules(url: str) -> None:
    with pytest.raises(ValueError, match="webhook"):
        AlertRule(name="x", metric="price", symbol="btcusdt", operator=">", threshold=1, webhook=url)


def test_the_flow_takes_webhook_allow_from_the_config_it_was_built_with(
    tmp_path: Path, receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flow built in-process from a Config (not from TICKLENS_CONFIG) delivers by that config's
    `alerts.webhook_allow`: the sink hands it to the dispatcher."""
    from bytewax.testing import run_main

    from flows.dataflow import build_flow
    from ticklens.config import load_config

    port, hits = receiver()
    cfg = load_config(
        write_config(
            tmp_path,
            source={"paths": [str(BTC_B)]},
            symbols=["btcusdt"],
            timeframes=["1s"],
            alerts={"webhook_allow": ["127.0.0.1"]},
        )
    )
    monkeypatch.setenv("TICKLENS_CONFIG", str(tmp_path / "no-such-pipeline.yaml"))
    monkeypatch.setenv("TICKLENS_QUIET", "1")
    db = tmp_path / "ticklens.db"
    url = f"http://127.0.0.1:{port}/hook"
    (rid,) = create_rules(
        db, [{"name": "hook", "condition": f"price crosses_above {LEVEL}", "symbols": ["btcusdt"], "webhook": url}]
    )
    run_main(build_flow(cfg))
    stored = rows(db, "SELECT webhook_status FROM alert_events WHERE rule_id=?", (rid,))
    assert len(stored) > 5 and {s for (s,) in stored} == {"sent"}
    assert len(hits) == len(stored)
