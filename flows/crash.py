"""Root-cause tracebacks for a cluster: in multi-process mode bytewax reports a failing step only
as `PanicException: Send thread panic`, in every process, so each source, step and sink
prints its own Python traceback (once per process, marked) before bytewax sees it.

Active only when the process runs in a cluster (`-a/--addresses` on its command line);
a single process gets bytewax's own exception and the runner's one-line summary.
"""

from __future__ import annotations

import faulthandler
import functools
import os
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

MARK = "[ticklens] root cause"
F = TypeVar("F", bound=Callable[..., Any])
_reported = threading.Event()


def in_cluster(argv: list[str] | None = None) -> bool:
    args = sys.argv if argv is None else argv
    return any(a in ("-a", "--addresses") or a.startswith("--addresses=") for a in args)


def install() -> None:
    """Hard crashes (a segfault in a C extension) still print a traceback of every thread."""
    faulthandler.enable(file=sys.stderr, all_threads=True)


def report(where: str, e: BaseException) -> None:
    """Print the traceback of the first failure in this process, marked for the supervisor."""
    if _reported.is_set() or isinstance(e, (StopIteration, KeyboardInterrupt)):
        return
    _reported.set()
    text = "".join(traceback.format_exception(e))
    sys.stderr.write(f"{MARK} in {where} (pid {os.getpid()}):\n{text}")
    sys.stderr.flush()


def traced(where: str, fn: F) -> F:
    """`fn`, reporting an exception it raises (and re-raising it); `fn` itself outside a cluster."""
    if not in_cluster():
        return fn

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BaseException as e:
            report(where, e)
            raise

    return call  # type: ignore[return-value]


def trace_methods(obj: Any, where: str, *names: str) -> Any:
    """`obj` with its methods `names` traced (source and sink partitions)."""
    if in_cluster():
        for name in names:
            setattr(obj, name, traced(f"{where}.{name}", getattr(obj, name)))
    return obj
