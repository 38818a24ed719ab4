"""Reading WebSocket recordings: one `<receive ns> <raw JSON>` line per message (gzip or plain).

The one reader of recordings, used by replay (`ticklens.ingest.replay`) and by the
local feed (`ticklens.emulator`); ticklens writes the same format when
`source.record` is set (`ticklens.ingest.hub`).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CHUNK_BYTES = 1 << 20  # read (and inflate) this much at a time: a call per chunk, not per line
_GZIP = 31  # zlib's window bits for a gzip member (header and CRC-32 trailer checked)


@dataclass(frozen=True, slots=True)
class RecordedLine:
    line_no: int  # 1-based: a resume position counts lines consumed
    recv_ns: int | None  # None: the line has no receive time (kept as a reject by replay)
    body: bytes  # the message as received (no trailing newline)
    raw: bytes  # the whole line


def read_recording(path: Path, skip: int = 0) -> Iterator[RecordedLine]:
    """The lines after the first `skip`, in file order."""
    for line_no, raw in recording_lines(path, skip):
        head, _, body = raw.partition(b" ")
        yield RecordedLine(line_no, int(head) if head.isdigit() else None, body, raw)


def recording_lines(path: Path, skip: int = 0) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without its line end) after the first `skip` lines.

    The lines `gzip.open(path)` iterates, split in bulk: a replay reads ~170,000 lines a
    recording, and a call into the gzip reader for each cost more than the inflating.
    """
    line_no, rest = 0, b""
    for chunk in _chunks(path):
        lines = (rest + chunk).split(b"\n") if rest else chunk.split(b"\n")
        rest = lines.pop()
        if line_no + len(lines) <= skip:
            line_no += len(lines)
            continue
        for line in lines:
            line_no += 1
            if line_no > skip:
                yield line_no, line.rstrip(b"\r\n")
    if rest:
        line_no += 1
        if line_no > skip:
            yield line_no, rest.rstrip(b"\r\n")


def _chunks(path: Path) -> Iterator[bytes]:
    """The file's bytes (inflated if it is .gz: every gzip member, as `gzip.open` reads them)."""
    with open(path, "rb") as fh:
        if not path.name.endswith(".gz"):
            while buf := fh.read(CHUNK_BYTES):
                yield buf
            return
        inflate, fed = zlib.decompressobj(_GZIP), False
        while buf := fh.read(CHUNK_BYTES):
            while buf:
                if not fed:
                    buf = buf.lstrip(b"\x00")  # zero padding between or after members (as gzip allows)
                    if not buf:
                        break
                fed = True
                try:
                    out = inflate.decompress(buf)
                except zlib.error as e:  # as gzip.open says it, with the file named
                    raise gzip.BadGzipFile(f"{path}: not a gzipped file or a damaged one ({e})") from None
                if out:
                    yield out
                if not inflate.eof:
                    break
                buf = inflate.unused_data  # the next member, if any
                inflate, fed = zlib.decompressobj(_GZIP), False
        if fed:
            raise EOFError("Compressed file ended before the end-of-stream marker was reached")
