"""`ticklens history …`: download, verify --archive-only, rest-fill (ingest comes with the store interface).

Exit codes: 0 all good (a missing day is listed, not an error), 1 something failed (a file that
would not verify, a trade-id gap, a REST error), 2 bad arguments or nothing to read,
130 interrupted (rerun to resume).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path

from ticklens.domain.times import iso_ms, now_ms, parse_time
from ticklens.history.layout import DEFAULT_BASE_URL, KINDS, plan

DEFAULT_DIR = Path("data/archive")
DEFAULT_REST_URL = "https://fapi.binance.com"


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day like 2024-07-01") from None


def _time(text: str) -> int:
    try:
        return parse_time(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _symbols(text: str) -> list[str]:
    out = [s.strip().upper() for s in text.split(",") if s.strip()]
    if not out or not all(s.isalnum() and len(s) <= 20 for s in out):
        raise argparse.ArgumentTypeError(f"{text!r}: give symbols like BTCUSDT,ETHUSDT")
    return list(dict.fromkeys(out))


def _positive(text: str) -> int:
    n = int(text)
    if not 1 <= n <= 64:
        raise argparse.ArgumentTypeError(f"{text}: between 1 and 64")
    return n


def _range_args(p: argparse.ArgumentParser, data: bool = True) -> None:
    p.add_argument("--symbols", type=_symbols, required=True, help="comma-separated, e.g. BTCUSDT,ETHUSDT")
    if data:
        p.add_argument("--data", choices=list(KINDS), default="aggTrades")
    p.add_argument("--from", dest="start", type=_day, required=True, help="first day (UTC), 2024-07-01")
    p.add_argument("--to", dest="end", type=_day, required=True, help="last day (UTC), included")
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"local archive (default {DEFAULT_DIR})")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The `history` command group under `ticklens`."""
    p = sub.add_parser("history", help="Binance's public archives: download, verify, fill the recent hours")
    hs = p.add_subparsers(dest="history_command", required=True)

    d = hs.add_parser("download", help="fetch archive zips, each verified against its .CHECKSUM")
    _range_args(d)
    d.add_argument("--base-url", default=DEFAULT_BASE_URL, help="archive host or a mirror")
    d.add_argument("--parallel", type=_positive, default=4, help="files at once (default 4)")
    d.add_argument("--timeout", type=float, default=30.0, help="seconds per connect/read before a retry")
    d.add_argument("--attempts", type=_positive, default=5, help="tries per request on 5xx/timeouts")
    d.add_argument("--recheck", action="store_true", help="compare verified files with the archive's checksums again")
    d.add_argument("--no-monthly", action="store_true", help="daily files only")
    d.add_argument("--report", type=Path, help="also write the outcome of every file as JSON here")
    d.set_defaults(func=cmd_download)

    v = hs.add_parser("verify", help="trade-id continuity of the downloaded trades/aggTrades (--archive-only)")
    _range_args(v)
    v.add_argument(
        "--archive-only", action="store_true", help="check the archive files alone (the store audit comes later)"
    )
    v.add_argument("--report", type=Path, help="also write every gap as JSON here")
    v.set_defaults(func=cmd_verify)

    f = hs.add_parser("rest-fill", help="aggTrades not archived yet, from REST, in the archive's CSV layout")
    f.add_argument("--symbols", type=_symbols, required=True)
    f.add_argument("--from", dest="start", type=_time, required=True, help="ISO-8601 or epoch ms")
    f.add_argument("--to", dest="end", type=_time, help="ISO-8601 or epoch ms (default now)")
    f.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    f.add_argument("--rest-url", default=DEFAULT_REST_URL)
    f.add_argument("--per-minute", type=int, choices=range(1, 121), default=100, metavar="1..120")
    f.set_defaults(func=cmd_rest_fill)

    # Hook for the next round (issue 16 B): replay the verified files into the store.
    i = hs.add_parser("ingest", help="(coming) replay downloaded files into the store")
    _range_args(i)
    i.set_defaults(func=cmd_ingest)


def _human(n: float) -> str:
    from ticklens.history.progress import human_bytes

    return human_bytes(n)


def cmd_download(args: argparse.Namespace) -> int:
    from ticklens.history.download import Downloader, Settings

    today = datetime.now(UTC).date()
    try:
        the_plan = plan(args.symbols, args.data, args.start, args.end, today, monthly=not args.no_monthly)
    except ValueError as e:
        print(f"ticklens history: {e}", file=sys.stderr)
        return 2
    settings = Settings(args.base_url, args.dir, args.parallel, args.timeout, args.attempts, recheck=args.recheck)
    progress = None
    if sys.stdout.isatty():
        from ticklens.history.progress import BarProgress

        progress = BarProgress()
    import asyncio

    try:
        report = asyncio.run(Downloader(settings, progress).run(the_plan))
    except KeyboardInterrupt:
        print("interrupted: verified files are kept, partial ones are resumed by the next run", file=sys.stderr)
        return 130
    done, skipped = report.of("downloaded"), report.of("skipped")
    missing, failed = report.of("missing"), report.of("failed")
    print(
        f"downloaded {len(done)} ({_human(report.bytes)}), skipped {len(skipped)} already verified, "
        f"missing {len(missing)}, failed {len(failed)} in {report.elapsed_s:.1f} s, {report.mb_per_s:.1f} MB/s"
    )
    for o in missing:
        print(f"missing: {o.file.rel} ({o.reason})")
    for o in failed:
        print(f"FAILED: {o.file.rel}: {o.reason}")
    if report.not_yet:
        days = sorted({d for _, d in report.not_yet})
        print(
            f"not archived yet: {days[0]} … {days[-1]} ({len(days)} days): "
            "`ticklens history rest-fill` fetches recent aggTrades from REST"
        )
    if args.report:
        rows = [{"file": o.file.rel, "status": o.status, "bytes": o.bytes, "reason": o.reason} for o in report.outcomes]
        args.report.write_text(json.dumps({"elapsed_s": report.elapsed_s, "files": rows}, indent=1))
    return 0 if report.ok else 1


def cmd_verify(args: argparse.Namespace) -> int:
    from ticklens.history.continuity import check_archive

    if not args.archive_only:
        print(
            "ticklens history verify: the store audit (bars vs klines) comes with `history ingest`; "
            "use --archive-only for the archive's trade-id continuity",
            file=sys.stderr,
        )
        return 2
    if KINDS[args.data].id_column is None:
        print(f"ticklens history verify: {args.data} has no trade ids; use trades or aggTrades", file=sys.stderr)
        return 2
    results = check_archive(args.dir, args.symbols, args.data, args.start, args.end)
    status = 0
    for c in results:
        if not c.files:
            print(f"{c.symbol} {c.data}: no downloaded files for {args.start} … {args.end} in {args.dir}")
            status = max(status, 2)
            continue
        print(
            f"{c.symbol} {c.data}: {len(c.files)} files, {c.rows:,} rows, ids {c.first_id}…{c.last_id}: "
            f"{c.gap_count} gaps ({c.missing:,} ids missing), {c.repeated_count} repeated ids, {c.late_count} late ids"
        )
        for g in c.gaps:
            where = f"across {g.before_file} → {g.after_file}" if g.across_files else f"in {g.after_file}"
            print(
                f"  gap ids {g.first_missing}…{g.last_missing} ({g.missing}) between "
                f"{iso_ms(g.before_ms)} and {iso_ms(g.after_ms)} {where}"
            )
        for x in c.disorder:
            what = "repeated" if x.repeated else "late"
            print(f"  {what} id {x.trade_id} after {x.previous_id} at {iso_ms(x.ts_ms)} in {x.file}")
        if not c.ok:
            status = max(status, 1)
    if args.report:
        out = [
            {
                "symbol": c.symbol,
                "data": c.data,
                "files": c.files,
                "rows": c.rows,
                "first_id": c.first_id,
                "last_id": c.last_id,
                "gap_count": c.gap_count,
                "missing": c.missing,
                "repeated_count": c.repeated_count,
                "late_count": c.late_count,
                "gaps": [
                    {
                        "first_missing": g.first_missing,
                        "last_missing": g.last_missing,
                        "before": iso_ms(g.before_ms),
                        "after": iso_ms(g.after_ms),
                        "before_file": g.before_file,
                        "after_file": g.after_file,
                    }
                    for g in c.gaps
                ],
            }
            for c in results
        ]
        args.report.write_text(json.dumps(out, indent=1))
    return status


def cmd_rest_fill(args: argparse.Namespace) -> int:
    from ticklens.history.rest_fill import fill_symbols

    end = args.end if args.end is not None else now_ms()
    if end < args.start:
        print("ticklens history rest-fill: --to is before --from", file=sys.stderr)
        return 2
    try:
        reports = fill_symbols(args.rest_url, args.dir, args.symbols, args.start, end, args.per_minute)
    except KeyboardInterrupt:
        print("interrupted: day files already written are kept; rerun to complete", file=sys.stderr)
        return 130
    except (RuntimeError, ValueError) as e:
        print(f"ticklens history rest-fill: {e}", file=sys.stderr)
        return 1
    for r in reports:
        ids = f"ids {r.first_id}…{r.last_id}" if r.rows else "no trades"
        print(f"{r.symbol}: {r.rows:,} aggTrades ({ids}) in {r.requests} requests → {len(r.files)} day files")
        for p in r.files:
            print(f"  {p}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    print(
        "ticklens history ingest: not available yet (issue 16, with the store interface); "
        "the downloaded files are listed by ticklens.history.layout.local_files",
        file=sys.stderr,
    )
    return 2
