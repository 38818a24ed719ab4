"""Delivers alert triggers to webhooks from a background thread, never blocking the flow.

Each trigger is POSTed as JSON with its dedup key (also sent as the
`Idempotency-Key` header). Connection errors, 429 and 5xx are retried with
exponential backoff; other 4xx are final. The outcome is written back to
`alert_events.webhook_status`, so triggers still `pending` when the flow stops
are sent by the next start. A receiver can drop repeats by the dedup key (a
crash between its 2xx and our bookkeeping can repeat one POST).
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time

import httpx
import orjson

from storage.port import RuleStore, Store
from ticklens.domain.alerts.engine import AlertFired
from ticklens.domain.times import iso_ms

QUEUE_MAX = 10_000
MAX_ATTEMPTS = 8
BACKOFF_S = 0.25
BACKOFF_MAX_S = 30.0
TIMEOUT_S = 5.0


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

    def __init__(self, store: Store) -> None:
        self.store = store
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
        client = httpx.Client(timeout=TIMEOUT_S, follow_redirects=False)
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
                self._send(client, conn, e, attempt + 1)
        finally:
            client.close()
            conn.close()

    def _send(self, client: httpx.Client, conn: RuleStore, e: AlertFired, attempt: int) -> None:
        retry = False
        try:
            r = client.post(
                e.webhook,  # type: ignore[arg-type]
                content=orjson.dumps(payload(e)),
                headers={"Content-Type": "application/json", "Idempotency-Key": e.dedup_key},
            )
            if r.status_code < 300:
                status = "sent"
                self.sent += 1
            elif r.status_code == 429 or r.status_code >= 500:
                retry = True
            else:
                status = "failed"
        except httpx.HTTPError:
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
