"""Binance's `.CHECKSUM` files: `<sha256 hex>  <file name>`, the `sha256sum` format."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

_LINE = re.compile(r"^([0-9a-fA-F]{64})\s+\*?(\S.*?)\s*$")
MAX_CHECKSUM_BYTES = 4096  # one line; anything longer is not a checksum file


def parse_checksum(text: str, name: str) -> str:
    """The lower-case hex digest listed for `name` (a bare file name); ValueError when there is none."""
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if m and Path(m.group(2)).name == name:
            return m.group(1).lower()
    raise ValueError(f"no sha256 for {name} in its .CHECKSUM: {text[:120]!r}")


def checksum_line(digest: str, name: str) -> str:
    return f"{digest}  {name}\n"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while buf := fh.read(chunk):
            h.update(buf)
    return h.hexdigest()
