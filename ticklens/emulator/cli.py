"""`ticklens feed` / `python -m ticklens.emulator`: the command line of the local feed."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path

from ticklens.emulator.rest import BookFaults
from ticklens.emulator.server import FeedState, serve
from ticklens.emulator.session import MALFORMED_KINDS, Faults
from ticklens.emulator.simulator import Simulator
from ticklens.emulator.tape import load_tape
from ticklens.emulator.timeline import Timeline


def _parse_skip(spec: str) -> tuple[str, int, int]:
    try:
        sym, _, rng = spec.partition(":")
        a, _, b = rng.partition("-")
        return sym.lower(), int(a), int(b or a)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--skip-ids {spec!r}: expected SYMBOL:FROM-TO") from None


def _parse_speed(v: str) -> float | None:
    if v in ("max", "0"):
        return None
    x = float(v)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"--speed {v!r}: a positive factor, 0 or max")
    return x


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ticklens feed", description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="*", type=Path, help="WS recordings and/or archive CSVs to replay")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9443, help="0 picks a free port (printed)")
    p.add_argument("--speed", type=_parse_speed, default=1.0, help="trade-time factor; 0 or max: as fast as read")
    p.add_argument("--loop", action="store_true", help="start again at the end, times and ids shifted on")
    p.add_argument(
        "--start-now", action="store_true", help="with --loop: begin where the shifted trade times reach now"
    )
    p.add_argument(
        "--simulate",
        action="store_true",
        help="generate the trades (/market) instead of replaying files; files given beside it serve their book"
        " streams and depth snapshots (/public) at --speed",
    )
    p.add_argument("--symbols", default="btcusdt,ethusdt", help="simulated symbols, comma-separated")
    p.add_argument("--rate", type=float, default=50.0, help="simulated trades per second (all symbols)")
    p.add_argument("--no-bursts", action="store_true", help="simulate a steady rate (benchmarks)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--drop-after", type=int, default=0, help="drop a connection after N messages")
    p.add_argument("--drop-count", type=int, default=1, help="how many connections to drop (0: every one)")
    p.add_argument("--resend", type=int, default=0, help="a new connection starts N trades back (duplicates)")
    p.add_argument("--skip-ids", type=_parse_skip, action="append", default=[], help="SYMBOL:FROM-TO never sent")
    p.add_argument("--malformed-every", type=int, default=0, help="a malformed message after every N trades")
    p.add_argument("--malformed", default=",".join(MALFORMED_KINDS), help="kinds to inject, comma-separated")
    b = p.add_argument_group("book faults (recordings with depth streams)")
    b.add_argument("--depth-drop-every", type=int, default=0, help="per symbol: one depth event not sent after every N")
    b.add_argument("--depth-drop-count", type=int, default=0, help="at most this many dropped per connection (0: all)")
    b.add_argument("--depth-fail", type=int, default=0, help="the first N snapshot requests answer HTTP 503")
    b.add_argument("--depth-stale", type=int, default=0, help="the first N snapshots served are stale")
    b.add_argument("--stale-by", type=int, default=200, help="depth events a stale snapshot is behind")
    return p


def _replayed(args: argparse.Namespace, skip_ids: bool = True) -> Timeline:
    """The timeline of the files given (paced by --speed, --loop, --start-now)."""
    tape = load_tape(args.files)
    for note in tape.notes:
        print(f"ticklens feed: {note}", file=sys.stderr)
    offset = 0
    if args.loop and args.start_now and len(tape) and tape.span_ms > 0:
        offset = max(0, int(time.time() * 1000) - int(tape.cols["ts_ms"][0]))
    skip = args.skip_ids if skip_ids else []
    return Timeline(tape=tape, speed=args.speed, loop=args.loop, skip_ids=skip, offset_ms=offset)


def build_state(args: argparse.Namespace) -> FeedState:
    if args.simulate:
        symbols = [s.strip().lower() for s in args.symbols.split(",") if s.strip()]
        tl = Timeline(simulator=Simulator(symbols, args.rate, args.seed, not args.no_bursts), speed=1.0)
        book_tl = _replayed(args, skip_ids=False) if args.files else None  # --skip-ids: the simulated trades'
    else:
        if not args.files:
            raise SystemExit("ticklens feed: give files to replay, or --simulate --symbols …")
        tl, book_tl = _replayed(args), None
    if args.simulate and args.skip_ids:
        tl.skip = [(tl.symbols.index(s), a, b) for s, a, b in args.skip_ids if s in tl.symbols]
    kinds = tuple(k for k in args.malformed.split(",") if k)
    bad = [k for k in kinds if k not in MALFORMED_KINDS]
    if bad:
        raise SystemExit(f"ticklens feed: unknown --malformed kinds {bad}; known: {', '.join(MALFORMED_KINDS)}")
    faults = Faults(
        args.drop_after,
        args.malformed_every,
        kinds or MALFORMED_KINDS,
        args.resend,
        depth_drop_every=args.depth_drop_every,
        depth_drop_count=args.depth_drop_count,
    )
    book_faults = BookFaults(stale_by=args.stale_by)
    if args.depth_fail:
        book_faults.fail["*"] = args.depth_fail
    if args.depth_stale:
        book_faults.stale["*"] = args.depth_stale
    return FeedState(tl, faults, drop_count=args.drop_count, book_faults=book_faults, book_timeline=book_tl)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("ticklens feed: binds to 127.0.0.1 only", file=sys.stderr)
        return 2
    state = build_state(args)
    loop = asyncio.new_event_loop()
    task = loop.create_task(serve(state, args.host, args.port))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: state.stop() if state.stop else task.cancel())
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        pass
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
