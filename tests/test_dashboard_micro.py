"""The Microstructure page in a real browser against the real stack replaying trades and books.

The flow replays the bundled 2024-08-08 trades, bookTicker and depth (data/sample); the page's
figures must hold what `/api/v1/microstructure` serves, and new bars must stream in.
A screenshot goes to tests/artifacts/ (and docs/img/ with TICKLENS_DOCS_SCREENSHOTS=1).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.dashboard_support import ARTIFACTS, BROWSER, ROOT, Stack, dashboard_page, running_stack, wait_until

pytestmark = BROWSER

FILES = [
    "um_btcusdt_20240808_trades.gz",
    "um_ethusdt_20240808_trades.gz",
    "um_btcusdt_20240808_book.gz",
    "um_ethusdt_20240808_book.gz",
]
# The page's figure source as the browser holds it: row count and the newest bar start.
SOURCE_JS = """() => {
  for (const doc of Bokeh.documents) {
    for (const m of doc._all_models.values()) {
      if (m.type === 'ColumnDataSource' && m.data && m.data.cum_ofi !== undefined) {
        const s = m.data.start_ms;
        return {n: s.length, last: s.length ? Number(s[s.length - 1]) : null};
      }
    }
  }
  return null;
}"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("micro-dash")
    streams = ["trade", "bookTicker", "depth"]
    with running_stack(root, "/api/v1/microstructure/btcusdt", 20, within=90, files=FILES, streams=streams) as s:
        yield s


def test_microstructure_page_draws_the_api_bars_and_streams_new_ones(stack: Stack) -> None:
    with dashboard_page(stack.dash_url) as page:
        page.get_by_role("button", name="Microstructure", exact=True).first.click()
        page.get_by_text("bps, time-weighted").first.wait_for(timeout=20_000)
        # Pages are built when first shown: the figures exist a moment before their first data.
        first = wait_until(lambda: (d := page.evaluate(SOURCE_JS)) and d["n"] >= 20 and d, 30, "the figures' data")
        with stack.api() as api:
            body = api.get("/api/v1/microstructure/btcusdt", params={"timeframe": "1s", "limit": 600}).json()
        starts = [b["ts_ms"] for b in body["bars"]]
        assert first["last"] in starts  # the page draws the API's rows
        later = wait_until(lambda: (d := page.evaluate(SOURCE_JS)) and d["last"] > first["last"] and d, 30, "a new bar")
        assert later["n"] > first["n"]  # streamed in, not reloaded away
        page.set_viewport_size({"width": 1400, "height": 1900})
        page.wait_for_timeout(1500)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "microstructure.png"
        page.screenshot(path=str(shot), full_page=True)
        if os.environ.get("TICKLENS_DOCS_SCREENSHOTS"):
            (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, ROOT / "docs" / "img" / "microstructure.png")
        assert not page.console.take(), "browser console errors"
        assert not page.console.failed


# The Market page's best bid/ask lines as the browser holds them.
L1_JS = """() => {
  for (const doc of Bokeh.documents) {
    for (const m of doc._all_models.values()) {
      if (m.type === 'ColumnDataSource' && m.name === 'market-l1') {
        return {ts: Array.from(m.data.ts_ms, Number), bid: Array.from(m.data.bid), ask: Array.from(m.data.ask)};
      }
    }
  }
  return null;
}"""


def test_market_page_draws_best_bid_and_ask_over_the_candles_as_the_api_samples_them(stack: Stack) -> None:
    with dashboard_page(stack.dash_url) as page:
        got = wait_until(lambda: (d := page.evaluate(L1_JS)) and len(d["ts"]) >= 10 and d, 30, "bid/ask lines")
        every = got["ts"][1] - got["ts"][0]
        assert every == 1_000  # one sample per 1s candle
        with stack.api() as api:

            def sampled(ts: int) -> dict:
                at = ts - every  # each point is the state in force at its interval's end
                body = api.get(
                    "/api/v1/quotes/btcusdt/sampled", params={"start": at, "end": at + every, "every_ms": every}
                ).json()
                return body["samples"][0]

            def drawn_as_sampled() -> list | None:
                """The first, middle and last points the page draws, as the API samples them. While
                the books still stream (a loaded machine starts the page early), the newest interval
                may get quotes after the page drew it: read both again until they agree."""
                d = page.evaluate(L1_JS)
                picks = [(i, d["bid"][i], d["ask"][i], sampled(d["ts"][i])) for i in (0, len(d["ts"]) // 2, -1)]
                return picks if all((s["bid"], s["ask"]) == (b, a) for _, b, a, s in picks) else None

            picks = wait_until(drawn_as_sampled, 30, "the page's bid/ask points equal to the API's samples", every=0.5)
            assert all(s["bid"] < s["ask"] for *_, s in picks)
        assert not page.console.take(), "browser console errors"
