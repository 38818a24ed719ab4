"""Sub-cent prices on the dashboard keep their digits: tiles, axes, hovers and tables use the symbol's
own decimals (`price_decimals` of /api/v1/symbols), in headless Chromium against the real stack.

The flow replays a 1000PEPEUSDT-like symbol (the bundled BTCUSDT trades scaled to ~0.0221, 7
decimals) beside the real ETHUSDT (2 decimals); the pair is 1000pepeusdt-ethusdt.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.dashboard_support import BROWSER, SAMPLE, Stack, dashboard_page, running_stack, scaled_recording, wait_until

pytestmark = BROWSER

PEPE = "1000pepeusdt"
BTC_FILES = ["um_btcusdt_20240718_trades.gz", "um_btcusdt_20240719_trades.gz"]
ETH_FILES = ["um_ethusdt_20240718_trades.gz", "um_ethusdt_20240719_trades.gz"]
SEVEN = re.compile(r"^\d\.\d{7}$")  # 0.0221234

# A named Bokeh model's property as the browser holds it.
MODEL_JS = """([name, prop]) => {
  for (const d of (window.Bokeh && Bokeh.documents) || []) {
    const m = d.get_model_by_name(name);
    if (m) return JSON.stringify(m[prop]);
  }
  return null;
}"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("precision")
    pepe = scaled_recording([SAMPLE / f for f in BTC_FILES], root / "pepe.gz", PEPE, "0.000000338", 7, 10_000)
    replay = ([PEPE, "ethusdt"], [pepe, *(SAMPLE / f for f in ETH_FILES)])
    with running_stack(root, f"/api/v1/ohlc/{PEPE}", 40, within=60, replay=replay) as s:
        yield s


@pytest.fixture(scope="module")
def page(stack: Stack) -> Iterator[object]:
    with dashboard_page(stack.dash_url, ready_ms=90_000) as pg:  # a loaded 2-core machine is slow
        yield pg


def _tile(page: object, label: str) -> str:
    return page.locator(".tl-card", has_text=label).locator(".tl-value").first.inner_text().strip()


def test_the_api_gives_each_symbols_price_decimals(stack: Stack) -> None:
    with stack.api() as api:
        infos = {s["symbol"]: s for s in api.get("/api/v1/symbols").json()["symbols"]}
        bars = api.get(f"/api/v1/ohlc/{PEPE}", params={"timeframe": "1s", "limit": 100}).json()["bars"]
        closes = [b["close"] for b in bars]
    assert infos[PEPE]["price_decimals"] == 7 and infos["ethusdt"]["price_decimals"] == 2
    assert any(len(repr(c).split(".")[1]) == 7 for c in closes)  # the data really has 7 decimals


def test_market_tiles_axis_and_hover_show_all_seven_decimals(page: object, stack: Stack) -> None:
    assert page.get_by_label("Symbol").input_value() == PEPE  # the first symbol
    wait_until(lambda: SEVEN.match(_tile(page, "last price")), 15, "a 7-decimal last price")
    with stack.api() as api:

        def same_as_api() -> bool:
            """The tile is one of the API's newest closes, with 7 decimals (both move while the
            replay streams, and the page follows a moment later: more on a loaded machine)."""
            tile = _tile(page, "last price")
            bars = api.get(f"/api/v1/ohlc/{PEPE}", params={"timeframe": "1s", "limit": 30}).json()["bars"]
            return tile in {f"{b['close']:.7f}" for b in bars}

        wait_until(same_as_api, 30, "the tile equal to one of the API's newest closes with 7 decimals", every=0.1)
    for label in ("high", "low", "VWAP"):
        assert SEVEN.match(_tile(page, label)), (label, _tile(page, label))
    assert page.evaluate(MODEL_JS, ["market-price-format", "format"]) == '"0,0.0000000"'
    tooltips = page.evaluate(MODEL_JS, ["market-hover", "tooltips"])
    assert "@close{0,0.0000000}" in tooltips and "@open{0,0.0000000}" in tooltips
    # ETH: its own 2 decimals.
    page.get_by_label("Symbol").select_option("ethusdt")
    wait_until(lambda: re.match(r"^\d,\d{3}\.\d{2}$", _tile(page, "last price")), 15, "a 2-decimal ETH price")
    assert page.evaluate(MODEL_JS, ["market-price-format", "format"]) == '"0,0.00"'
    page.get_by_label("Symbol").select_option(PEPE)
    assert not page.console.take()


def test_statistics_table_shows_each_symbol_in_its_decimals(page: object) -> None:
    page.get_by_role("button", name="Statistics", exact=True).first.click()
    row = page.locator(".tabulator-row").filter(has_text=PEPE).first
    row.wait_for(timeout=40_000)

    def cells(sym: str) -> dict[str, str]:
        r = page.locator(".tabulator-row").filter(has_text=sym).first
        return {
            f: r.locator(f'.tabulator-cell[tabulator-field="{f}"]').first.inner_text().strip()
            for f in ("last", "min", "max", "vwap", "std")
        }

    pepe = wait_until(lambda: (c := cells(PEPE)) and SEVEN.match(c["last"]) and c, 20, "PEPE's last in 7 decimals")
    assert all(SEVEN.match(pepe[f]) for f in ("min", "max", "vwap")), pepe
    assert re.match(r"^\d\.\d{9}$", pepe["std"]), pepe  # a std of prices: 2 decimals finer
    eth = cells("ethusdt")
    assert all(re.match(r"^\d,\d{3}\.\d{2}$", eth[f]) for f in ("last", "min", "max", "vwap")), eth
    page.get_by_role("button", name="Market", exact=True).first.click()
    assert not page.console.take()


def test_pair_spread_of_a_sub_cent_leg_keeps_its_digits(page: object) -> None:
    page.get_by_role("button", name="Pair", exact=True).first.click()
    page.get_by_text("Engle-Granger p").first.wait_for(timeout=40_000)
    # The spread is in leg a's (1000pepeusdt's) price units: its 7 decimals and 2 more.
    wait_until(
        lambda: page.evaluate(MODEL_JS, ["pair-spread-format", "format"]) == '"0,0.000000000"', 15, "the spread axis"
    )
    assert "@spread{0,0.000000000}" in page.evaluate(MODEL_JS, ["pair-spread-hover", "tooltips"])
    page.get_by_role("button", name="Market", exact=True).first.click()
    assert not page.console.take()
