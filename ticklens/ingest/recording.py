"""Reading WebSocket recordings: one `<receive ns> <raw JSON>` line per message (gzip or plain).

The one reader of recordings, used by replay (`ticklens.ingest.replay`) and by the
local feed (`ticklens.emulator`); ticklens writes the same format when
`source.record` is set (`ticklens.ingest.hub`).
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class RecordedLine:
    line_no: int  # 1-based: a resume position counts lines consumed
    recv_ns: int | None  # None: the line has no receive time (kept as a reject by replay)
    body: bytes  # the message as received (no trailing newline)
    raw: bytes  # the whole line


def read_recording(path: Path, skip: int = 0) -> Iterator[RecordedLine]:
    """The lines after the first `skip`, in file order."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        for line_no, line in enumerate(fh, start=1):
            if line_no <= skip:
                continue
            raw = line.rstrip(b"\r\n")
            head, _, body = raw.partition(b" ")
            yield RecordedLine(line_no, int(head) if head.isdigit() else None, body, raw)
