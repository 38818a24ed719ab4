"""Types of the order book's per-level loop in C (`_bookside.c`)."""

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
