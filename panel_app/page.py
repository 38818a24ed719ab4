"""What every dashboard page shares: the API handle, a message line, and the refresh contract.

The app calls `show()` when a page becomes visible (load everything) and
`refresh()` about once a second while it stays visible (stream what is new).
Both may raise `ApiDown`; the app turns that into its banner.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

import panel as pn
import param

from panel_app.client import Api, ApiDown, ApiError
from panel_app.text import Note
from ticklens.domain.times import iso_ms, parse_time

UP = "#26a69a"
DOWN = "#ef5350"
ACCENT = "#1f6feb"


class Page(param.Parameterized):
    """One sidebar entry."""

    title: ClassVar[str] = "page"

    def __init__(self, api: Api, **params: object) -> None:
        super().__init__(**params)
        self.api = api
        self.message = Note("warning", margin=(5, 10))

    def say(self, text: str, kind: str = "warning") -> None:
        """Show a message above the page (empty text hides it)."""
        self.message.alert_type = kind
        self.message.object = text
        self.message.visible = bool(text)

    def say_error(self, err: ApiError) -> None:
        self.say(f"The API refused: {err}", "danger")

    def safely(self, fn: Callable[..., Any]) -> Callable[..., None]:
        """For widget callbacks (outside the app's clock): API trouble becomes a message, not a dead click."""

        def run(*args: Any, **kwargs: Any) -> None:
            try:
                fn(*args, **kwargs)
            except ApiDown as e:
                self.say(f"The API is not answering ({e}); try again once it is back.", "danger")
            except ApiError as e:
                self.say_error(e)

        return run

    def view(self) -> pn.viewable.Viewable:
        raise NotImplementedError

    def fill_symbols(self) -> None:
        """Give the page's `symbol` selector the API's symbols, once, without the selection's own
        callback running while it is filled (`_loading`); with none yet, say so."""
        if self.param.symbol.objects:  # type: ignore[attr-defined]
            return
        syms = self.api.symbols()
        if not syms:
            self.say("No symbols yet: the store is empty and none are configured.")
            return
        self._loading = True
        try:
            self.param.symbol.objects = syms  # type: ignore[attr-defined]
            if self.symbol not in syms:  # type: ignore[attr-defined]
                self.symbol = syms[0]
        finally:
            self._loading = False

    def show(self) -> None:
        """Load from scratch (page opened, selection changed)."""

    def refresh(self) -> None:
        """Stream what is new; called about once a second while visible."""


def freshness_badge(status: dict | None, api_down: str | None) -> str:
    """How old the newest data is, as a coloured pill.

    The flow writes its status every couple of seconds while it runs, so the age of
    that write says whether data is flowing; the newest trade time says how far it got.
    """
    if api_down:
        return '<span class="tl-badge" style="background:#cf222e">API down</span>'
    if not status:
        return '<span class="tl-badge" style="background:#8b949e">…</span>'
    now = time.time() * 1000
    written = status.get("status_time")
    age_s = (now - parse_time(written)) / 1000 if written else None
    newest = max((s.get("last_trade_ms") or 0 for s in status.get("per_symbol", [])), default=0)
    if not newest:
        newest_txt = "no trades yet"
    elif 0 <= now - newest < 3_600_000:  # live data: its age is the useful number
        newest_txt = f"newest trade {(now - newest) / 1000:.1f} s old"
    else:  # a replay of older data: when it is at
        newest_txt = "newest trade " + iso_ms(newest).replace("T", " ")[:19] + "Z"
    if not status.get("running"):
        color, state = "#8b949e", "flow stopped"
    elif age_s is not None and age_s < 10:
        color, state = "#1a7f37", f"live · {age_s:.1f} s ago"
    elif age_s is not None and age_s < 60:
        color, state = "#bf8700", f"stale · {age_s:.0f} s ago"
    else:
        color, state = "#cf222e", "no updates" if age_s is None else f"stale · {age_s:.0f} s ago"
    return (
        f'<span class="tl-badge" style="background:{color}" title="when the flow last wrote its status">{state}</span>'
        f'<span style="margin-left:8px;font-size:12px;color:#ffffffcc">{newest_txt}</span>'
    )


def section(title: str, *objects: Any, **options: Any) -> pn.Card:
    """A titled card of a page, as wide as the page."""
    return pn.Card(*objects, title=title, sizing_mode="stretch_width", **options)


def card(label: str, value: str, sub: str = "", color: str = "inherit") -> str:
    """A small stat tile as HTML (used in summaries and badges)."""
    return (
        f'<div class="tl-card"><div class="tl-label">{label}</div>'
        f'<div class="tl-value" style="color:{color}">{value}</div>'
        f'<div class="tl-sub">{sub}</div></div>'
    )


def fmt_num(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "–"
    ax = abs(x)
    if ax >= 1e9:
        return f"{x / 1e9:.{digits}f} B"
    if ax >= 1e6:
        return f"{x / 1e6:.{digits}f} M"
    if ax >= 1e4:
        return f"{x:,.{digits}f}"
    return f"{x:.{max(digits, 4 if ax < 10 else digits)}f}"


def fmt_price(x: float | None, decimals: int | None) -> str:
    """A price with the symbol's own decimals (`price_decimals` of /api/v1/symbols): 0.0061922, 64,123.50."""
    if x is None:
        return "–"
    if decimals is None:
        return fmt_num(x)
    return f"{x:,.{decimals}f}"


def price_format(decimals: int | None, extra: int = 0) -> str:
    """The numbro format (Bokeh axes and hovers) for prices with `decimals` (+ `extra`) decimals."""
    d = (2 if decimals is None else decimals) + extra
    return "0,0." + "0" * d if d > 0 else "0,0"
