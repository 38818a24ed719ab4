"""Delivers alert triggers to webhooks from a background thread, never blocking the flow.

Each trigger is POSTed as JSON with its dedup key (also sent as the
`Idempotency-Key` header). Connection errors, 429 and 5xx are retried with
exponential backoff; other 4xx are final. The outcome is written back to
`alert_events.webhook_status`, so triggers still `pending` when the flow stops
are sent by the next start. A receiver can drop repeats by the dedup key (a
crash between its 2xx and our bookkeeping can repeat one POST).

A webhook URL is someone else's input, so delivery cannot be turned against the
machine's own network (SSRF): the host is resolved once, every address it
resolves to must be global (or allowed by `alerts.webhook_allow`), and the
request goes to that checked address (Host header and TLS name kept), so a DNS
answer that changes in between (rebinding) is never used. No redirects, no
proxies from the environment, a total deadline per request and a bounded
response body.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import socket
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import certifi
import orjson

from storage.port import RuleStore, Store
from ticklens.domain.alerts.engine import AlertFired
from ticklens.domain.alerts.rules import parse_webhook, webhook_refusal
from ticklens.domain.times import iso_ms

# httpx is imported by the first webhook sent (most flows send none; it costs ~0.1 s of start-up).
if TYPE_CHECKING:
    import httpx

QUEUE_MAX = 10_000
MAX_ATTEMPTS = 8
BACKOFF_S = 0.25
BACKOFF_MAX_S = 30.0
TIMEOUT_S, CONNECT_TIMEOUT_S = 5.0, 3.0
DEADLINE_S = 10.0  # a whole request, however slowly the receiver answers
MAX_BODY = 64 << 10  # bytes of a response read (and then dropped)


class WebhookRefused(ValueError):
    """The URL's host is, or resolves to, an address webhooks may not reach."""


def resolve_target(url: str, allow: Sequence[str], resolver=socket.getaddrinfo) -> tuple[httpx.URL, str, str]:  # type: ignore[no-untyped-def]
    """(URL with the checked address as host, Host header, TLS name); WebhookRefused, or OSError
    when the name does not resolve (retried). `resolver`: getaddrinfo's signature."""
    import httpx

    _, host, port = parse_webhook(url)
    infos = resolver(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addrs = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addrs:
        raise OSError(f"{host} resolves to no address")
    for addr in addrs:  # one bad address is enough: a rebinding answer may mix them
        why = webhook_refusal(addr, host, allow)
        if why:
            raise WebhookRefused(why)
    target = httpx.URL(url)
    host_header = target.netloc.decode("ascii")
    return target.copy_with(host=addrs[0]), host_header, host


def payload(e: AlertFired) -> dict:
    return {
        "dedup_key": e.dedup_key,
        "rule_id": e.rule_id,
        "rule_name": e.rule_name,
        "symbol": e.key,
        "metric": e.metric,
        "timeframe": e.timeframe,
        "operator": e.operator,
        "value": e.value,
        "threshold": e.threshold,
        "event_ms": e.event_ms,
        "event_time": iso_ms(e.event_ms),
        "ref": e.ref,
    }


def _from_row(r: dict) -> AlertFired:
    return AlertFired(
        rule_id=r["rule_id"],
        rule_name=r["rule_name"],
        key=r["symbol"],
        metric=r["metric"],
        timeframe=r["timeframe"],
        operator=r["operator"],
        value=r["value"],
        threshold=r["threshold"],
        event_ms=r["event_ms"],
        ref=r["ref"],
        webhook=r["webhook"],
    )


class WebhookDispatcher:
    """A bounded queue and one sender thread; retries wait in a timer heap, not in the queue."""

    def __init__(self, store: Store, allow: Sequence[str] = ()) -> None:
        self.store = store
        self.allow = list(allow)  # alerts.webhook_allow of the flow's config
        self.refused = 0
        self.deadline_s = DEADLINE_S
        self._tls: ssl.SSLContext | None = None  # built once: a client per request is then cheap
        self.queue: queue.Queue[AlertFired] = queue.Queue(maxsize=QUEUE_MAX)
        self.dropped = 0  # queue full: left `pending` in the store for the next start
        self.sent = 0
        self._stop = threading.Event()
        self._retry: list[tuple[float, int, int, AlertFired]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def _ensure_started(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ticklens-webhooks", daemon=True)
            self._thread.start()

    def start(self) -> None:
        """Start the sender and queue what an earlier run left undelivered."""
        conn = self.store.rules()
        try:
            pending = [_from_row(r) for r in conn.pending_webhooks()]
        finally:
            conn.close()
        self.submit(pending)
        self._ensure_started()

    def submit(self, events: list[AlertFired]) -> None:
        for e in events:
            if not e.webhook:
                continue
            try:
                self.queue.put_nowait(e)
            except queue.Full:
                self.dropped += 1
        if events:
            self._ensure_started()

    def _busy(self) -> bool:
        return not self.queue.empty() or bool(self._retry)

    def _run(self) -> None:
        conn = self.store.rules()
        try:
            while not (self._stop.is_set() and not self._busy()):
                now = time.monotonic()
                if self._retry and self._retry[0][0] <= now:
                    _, _, attempt, e = heapq.heappop(self._retry)
                else:
                    wait = min(0.1, self._retry[0][0] - now) if self._retry else 0.1
                    try:
                        e = self.queue.get(timeout=max(wait, 0.001))
                    except queue.Empty:
                        continue
                    attempt = 0
                self._send(conn, e, attempt + 1)
        finally:
            conn.close()

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """POST to the checked address of `url`; the status code. Raises WebhookRefused,
        OSError (name resolution) or httpx.HTTPError (including the deadline)."""
        import httpx

        target, host_header, tls_name = resolve_target(url, self.allow)
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=certifi.where())
        timeout = httpx.Timeout(TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        client = httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False, verify=self._tls)
        # The deadline closes the client from a timer thread: a blocked read fails at once.
        timer = threading.Timer(self.deadline_s, client.close)
        timer.start()
        try:
            with client.stream(
                "POST",
                target,
                content=body,
                headers={**headers, "Host": host_header},
                extensions={"sni_hostname": tls_name},
            ) as r:
                read = 0
                for chunk in r.iter_raw():
                    read += len(chunk)
                    if read >= MAX_BODY:
                        break
                return r.status_code
        finally:
            timer.cancel()
            client.close()

    def _send(self, conn: RuleStore, e: AlertFired, attempt: int) -> None:
        import httpx

        retry = False
        try:
            code = self.post(
                e.webhook,  # type: ignore[arg-type]
                orjson.dumps(payload(e)),
                {"Content-Type": "application/json", "Idempotency-Key": e.dedup_key},
            )
            if code < 300:
                status = "sent"
                self.sent += 1
            elif code == 429 or code >= 500:
                retry = True
            else:  # a redirect is not followed: final, like any other 3xx/4xx
                status = "failed"
        except (WebhookRefused, ValueError) as why:
            self.refused += 1
            print(f"[ticklens] webhook of rule {e.rule_name!r} not sent: {why}", file=sys.stderr, flush=True)
            status = "failed"
        except (httpx.HTTPError, OSError):
            retry = True
        if retry:
            if attempt < MAX_ATTEMPTS:
                delay = min(BACKOFF_MAX_S, BACKOFF_S * 2 ** (attempt - 1))
                heapq.heappush(self._retry, (time.monotonic() + delay, next(self._seq), attempt, e))
                status = "pending"
            else:
                status = "failed"
        conn.mark_webhook((e.rule_id, e.event_ms, e.key, e.ref), status, attempt)

    def close(self, timeout_s: float = 10.0) -> None:
        """Finish what is queued (bounded); the rest stays `pending` in the store."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
