"""The process-wide stop request: set by the runner on SIGINT/SIGTERM, read by every source.

A graceful stop is an end of input, not an exception: sources end their input,
the flow drains and every sink closes normally.
"""

from __future__ import annotations

import threading

STOP = threading.Event()
