"""Types of the order book's per-level loop and reads in C (`_bookside.c`)."""

def apply(
    book: dict[str, str],
    levels: list[list[str]],
    start: int,
    best: str | None,
    gone: bool,
    is_bid: bool,
    dec: int,
    grid: str,
    /,
) -> tuple[str | None, bool, int, int]: ...
def apply_cols(
    book: dict[str, str],
    prices: list[str],
    qtys: list[str],
    start: int,
    best: str | None,
    gone: bool,
    is_bid: bool,
    dec: int,
    grid: str,
    /,
) -> tuple[str | None, bool, int, int]: ...
def top(
    book: dict[str, str], best: str, step: int, n: int, probes: int, dec: int, /
) -> list[tuple[str, str]] | None: ...
def top_floats(
    book: dict[str, str], best: str, step: int, n: int, probes: int, dec: int, /
) -> tuple[list[float], list[float]] | None: ...
def band(book: dict[str, str], start: int, stop: int, step: int, dec: int, /) -> float | None: ...
def levels(book: dict[str, str], descending: bool, /) -> list[list[str]] | None: ...
