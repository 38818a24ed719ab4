"""What the dashboard does once per server process, not once per browser session.

Panel runs `app.py` afresh for every session, but imports modules once: code here runs once.
"""

from __future__ import annotations

import gc

_done = False


def freeze_imports() -> None:
    """Move what the imports made (Bokeh, Panel, pandas: ~10^6 objects) out of the collector's reach.

    Panel runs a full `gc.collect()` after sessions end, and the collector's oldest generation
    walks every live object: with the imports frozen that walk covers the sessions' objects only
    (measured: a seventh of the server's time with tabs opening and closing; docs/performance.md).
    """
    global _done
    if not _done:
        _done = True
        gc.collect()
        gc.freeze()
