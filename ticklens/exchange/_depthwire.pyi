"""Types of the C fast path of a raw depthUpdate message (`_depthwire.c`)."""

Level = list[str]

def scan(raw: bytes, /) -> tuple[str, int, int | None, int, int, int | None, list[Level], list[Level]] | None: ...
