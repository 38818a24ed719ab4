"""Time at the edges: ISO-8601 / epoch-ms text in, ISO-8601 UTC with `Z` out.

Inside, time is UTC epoch milliseconds; these two functions are the only
place text becomes time and back, so the API, exports and uploads agree.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from functools import lru_cache

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
FAR_PAST = -(2**62)  # an open start of a time range, as a bound every comparison and store index takes
FAR_FUTURE = 2**62
_DIGITS = re.compile(r"^\d{1,15}$")


_MILLIS = [f".{i:03d}Z" for i in range(1000)]


@lru_cache(maxsize=1 << 16)
def _second(s: int) -> str:
    t = time.gmtime(s)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"


def iso_ms(ms: int) -> str:
    """Epoch ms as `2024-07-18T23:59:01.123Z`.

    Called for every row of a response, so the second's text is cached: trades
    share seconds, and the dashboard asks for the same bars again and again.
    """
    s, r = divmod(int(ms), 1000)
    return _second(s) + _MILLIS[r]


def parse_time(text: str) -> int:
    """ISO-8601 (naive means UTC) or integer epoch milliseconds → epoch ms.

    Raises ValueError with a message a person can act on.
    """
    s = str(text).strip()
    if not s:
        raise ValueError("empty time; give ISO-8601 (2024-07-18T23:59:00Z) or epoch milliseconds")
    if _DIGITS.match(s):
        ms = int(s)
    else:
        try:
            dt = datetime.fromisoformat(s)
        except ValueError:
            raise ValueError(f"{s[:40]!r} is neither ISO-8601 (2024-07-18T23:59:00Z) nor epoch milliseconds") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        ms = (dt - EPOCH) // timedelta(milliseconds=1)
    if not 0 <= ms <= MAX_MS:
        raise ValueError(f"{s[:40]!r} is outside 1970 … 9999")
    return ms


def now_ms() -> int:
    """Wall-clock epoch milliseconds (UTC)."""
    return time.time_ns() // 1_000_000


def bounds(start_ms: int | None, end_ms: int | None) -> tuple[int, int]:
    """A half-open range's open ends (None) as far-away bounds, so one comparison or query serves every range."""
    return (FAR_PAST if start_ms is None else start_ms, FAR_FUTURE if end_ms is None else end_ms)
