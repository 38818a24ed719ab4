"""What this download directory holds verified: a small append-only JSON-lines file.

One line per verified zip (path below the directory, size, mtime, sha256). A later run
skips a file whose size and mtime still match its line: no request, no re-hashing. A zip
that exists without a matching line (a run stopped between the rename and this append, or
a file copied in by hand) is hashed again against the `.CHECKSUM` kept beside it. A torn
last line (a crash while appending) is ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

MANIFEST_NAME = ".ticklens-verified.jsonl"


@dataclass(frozen=True, slots=True)
class Entry:
    size: int
    mtime_ns: int
    sha256: str


class Manifest:
    def __init__(self, root: Path) -> None:
        self.path = root / MANIFEST_NAME
        self.entries: dict[str, Entry] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    d = json.loads(line)
                    self.entries[d["rel"]] = Entry(int(d["size"]), int(d["mtime_ns"]), str(d["sha256"]))
                except (ValueError, KeyError, TypeError):
                    continue

    def verified(self, rel: str, path: Path) -> Entry | None:
        """The entry when `path` is still the file that was verified, else None."""
        e = self.entries.get(rel)
        if e is None:
            return None
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return e if (st.st_size, st.st_mtime_ns) == (e.size, e.mtime_ns) else None

    def record(self, rel: str, path: Path, sha256: str) -> None:
        st = path.stat()
        e = Entry(st.st_size, st.st_mtime_ns, sha256)
        self.entries[rel] = e
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"rel": rel, "size": e.size, "mtime_ns": e.mtime_ns, "sha256": sha256})
        with open(self.path, "a") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
