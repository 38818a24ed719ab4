"""`ticklens history …`: download, ingest, verify, rest-fill.

Exit codes: 0 all good (a missing day is listed, not an error), 1 something failed (a file that
would not verify, a trade-id gap, a minute where the store and Binance's klines differ, a REST
error, the flow), 2 bad arguments or nothing to read, 130 interrupted (rerun to resume).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ticklens.config import Config, ConfigError, config_path, load_config, parse_config
from ticklens.domain.audit import MinuteDiff, audit_dict, minutes_spanned
from ticklens.domain.times import iso_ms, now_ms, parse_time
from ticklens.ingest.archive import DEFAULT_BASE_URL, KINDS, plan

if TYPE_CHECKING:
    from ticklens.history.continuity import Continuity

DEFAULT_DIR = Path("data/archive")  # without a pipeline file (else its history.dir)
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
    p.add_argument("--dir", type=Path, default=None, help=f"local archive (default: history.dir, {DEFAULT_DIR})")


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
    d.add_argument("--ingest", action="store_true", help="then ingest the range into the store (trades, aggTrades)")
    d.set_defaults(func=cmd_download)

    i = hs.add_parser("ingest", help="replay downloaded trades/aggTrades into the store through the flow (resumable)")
    _range_args(i)
    i.add_argument(
        "--snapshot-every", type=float, default=30.0, metavar="S", help="seconds between recovery snapshots (30)"
    )
    i.set_defaults(func=cmd_ingest)

    v = hs.add_parser(
        "verify", help="archive trade-id continuity, and the store's 1m bars against the downloaded 1m klines"
    )
    _range_args(v)
    v.add_argument("--archive-only", action="store_true", help="only the archive's trade-id continuity")
    v.add_argument("--report", type=Path, help="also write every gap and differing minute as JSON here")
    v.set_defaults(func=cmd_verify)

    f = hs.add_parser("rest-fill", help="aggTrades not archived yet, from REST, in the archive's CSV layout")
    f.add_argument("--symbols", type=_symbols, required=True)
    f.add_argument("--from", dest="start", type=_time, required=True, help="ISO-8601 or epoch ms")
    f.add_argument("--to", dest="end", type=_time, help="ISO-8601 or epoch ms (default now)")
    f.add_argument("--dir", type=Path, default=None)
    f.add_argument("--rest-url", default=DEFAULT_REST_URL)
    f.add_argument("--per-minute", type=int, choices=range(1, 121), default=100, metavar="1..120")
    f.set_defaults(func=cmd_rest_fill)


def base_config(args: argparse.Namespace) -> Config:
    """The pipeline file (`--config`, TICKLENS_CONFIG, ./pipeline.yaml); without one, the defaults."""
    path = getattr(args, "config", None)
    if path or config_path().exists():
        return load_config(path)
    return parse_config({"symbols": ["btcusdt"], "source": {"kind": "replay", "paths": ["-"]}})


def _archive_dir(args: argparse.Namespace) -> Path:
    if args.dir is not None:
        return args.dir
    try:
        return base_config(args).history.dir
    except ConfigError:
        return DEFAULT_DIR


def _human(n: float) -> str:
    from ticklens.history.progress import human_bytes

    return human_bytes(n)


def cmd_download(args: argparse.Namespace) -> int:
    from ticklens.history.download import Downloader, Settings

    args.dir = _archive_dir(args)
    if args.ingest and args.data not in ("trades", "aggTrades"):
        print(f"ticklens history download --ingest: {args.data} is not trades or aggTrades", file=sys.stderr)
        return 2
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
    if not report.ok:
        return 1
    return cmd_ingest(args) if args.ingest else 0


def _continuity_lines(c: Continuity) -> list[str]:
    out = [
        f"{c.symbol} {c.data}: {len(c.files)} files, {c.rows:,} rows, ids {c.first_id}…{c.last_id}: "
        f"{c.gap_count} gaps ({c.missing:,} ids missing), {c.repeated_count} repeated ids, {c.late_count} late ids"
    ]
    for g in c.gaps:
        where = f"across {g.before_file} → {g.after_file}" if g.across_files else f"in {g.after_file}"
        out.append(
            f"  gap ids {g.first_missing}…{g.last_missing} ({g.missing}) between "
            f"{iso_ms(g.before_ms)} and {iso_ms(g.after_ms)} {where}"
        )
    for x in c.disorder:
        what = "repeated" if x.repeated else "late"
        out.append(f"  {what} id {x.trade_id} after {x.previous_id} at {iso_ms(x.ts_ms)} in {x.file}")
    return out


# A continuity check's figures in its JSON report, in this order (then the gaps listed).
_CONTINUITY_FIGURES = (
    "symbol", "data", "files", "rows", "first_id", "last_id", "gap_count", "missing", "repeated_count", "late_count",
)  # fmt: skip


def _continuity_json(c: Continuity) -> dict:
    return {
        **{name: getattr(c, name) for name in _CONTINUITY_FIGURES},
        "gaps": [
            {
                "first_missing": g.first_missing,
                "last_missing": g.last_missing,
                "before": iso_ms(g.before_ms),
                "after": iso_ms(g.after_ms),
                "before_file": g.before_file,
                "after_file": g.after_file,
                "minutes": [iso_ms(m) for m in minutes_spanned(g.before_ms, g.after_ms)],
            }
            for g in c.gaps
        ],
    }


def _diff_line(d: MinuteDiff) -> str:
    if d.outcome == "differs":
        what = ", ".join(f"{f.field} {f.ours!r} ≠ {f.binance!r}" for f in d.fields)
    elif d.outcome == "missing_in_store":
        what = f"no bar in the store; Binance has {d.binance.trades if d.binance else 0} trades"
    else:
        what = f"no kline; the store has {d.ours.trades if d.ours else 0} trades"
    return f"  {iso_ms(d.start_ms)} {d.outcome}: {what}"


def cmd_verify(args: argparse.Namespace) -> int:
    from ticklens.history.continuity import check_archive

    args.dir = _archive_dir(args)
    has_ids = KINDS[args.data].id_column is not None
    if args.archive_only and not has_ids:
        print(f"ticklens history verify: {args.data} has no trade ids; use trades or aggTrades", file=sys.stderr)
        return 2
    status = 0
    report: dict[str, list] = {"continuity": [], "audit": []}
    if has_ids:
        for c in check_archive(args.dir, args.symbols, args.data, args.start, args.end):
            if not c.files:
                print(f"{c.symbol} {c.data}: no downloaded files for {args.start} … {args.end} in {args.dir}")
                status = max(status, 2)
                continue
            print("\n".join(_continuity_lines(c)))
            report["continuity"].append(_continuity_json(c))
            if not c.ok:
                status = max(status, 1)
    ids_status = status
    if not args.archive_only:
        store_status = _verify_store(args, report)
        status = max(status, store_status)
        verdict = {0: "equal to Binance's klines", 1: "DIFFERENT from Binance's klines", 2: "nothing to compare"}
        ids = "continuous" if ids_status == 0 else ("with gaps (listed above)" if ids_status == 1 else "not read")
        print(f"verify: archive trade ids {ids if has_ids else 'not checked'}; store 1m bars {verdict[store_status]}")
    if args.report:
        args.report.write_text(json.dumps(report if not args.archive_only else report["continuity"], indent=1))
    return status


def _verify_store(args: argparse.Namespace, report: dict[str, list]) -> int:
    """The store's 1m bars against the downloaded klines-1m, per symbol: 0 equal, 1 differences, 2 nothing to compare."""
    from storage import open_store
    from ticklens.ingest.klines import archive_audit

    cfg = base_config(args)
    start_ms = _day_ms(args.start)
    end_ms = _day_ms(args.end) + 86_400_000
    store = open_store(cfg.store)
    status = 0
    gap_minutes = {c["symbol"]: {m for g in c["gaps"] for m in g["minutes"]} for c in report["continuity"]}
    try:
        for sym in args.symbols:
            with store.reader() as reader:
                rows = (r for chunk in reader.iter_bars(sym.lower(), "1m", start_ms, end_ms) for r in chunk)
                audit, files = archive_audit(args.dir, sym, start_ms, end_ms, rows)
            if not files:
                print(f"{sym} klines-1m: no downloaded klines for {args.start} … {args.end} in {args.dir}")
                status = max(status, 2)
                continue
            print(
                f"{sym} store vs klines {iso_ms(start_ms)} … {iso_ms(end_ms)}: {audit.equal}/{audit.compared} minutes"
                f" equal ({audit.quiet} without trades), {audit.differing} differ"
                f" ({audit.by_outcome['differs']} in values, {audit.by_outcome['missing_in_store']} missing in the store,"
                f" {audit.by_outcome['missing_in_klines']} missing in the klines);"
                f" {audit.bars} bars, {audit.klines} klines from {len(files)} files"
            )
            gaps = gap_minutes.get(sym, set())
            for d in audit.diffs:
                line = _diff_line(d)
                print(line + ("  (inside an archive trade-id gap)" if iso_ms(d.start_ms) in gaps else ""))
            if audit.unaudited_bars:
                days = ", ".join(iso_ms(d)[:10] for d in audit.unaudited_days)
                print(f"  {audit.unaudited_bars} stored bars not audited: no klines downloaded for {days}")
            body = audit_dict(audit)
            report["audit"].append({"symbol": sym, "files": [p.name for p in files], **body})
            if not audit.ok:
                status = max(status, 1)
    finally:
        store.close()
    return status


def _day_ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)


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
    from ticklens.history.ingest import plan_ingest, run_ingest

    args.dir = _archive_dir(args)
    try:
        snapshot_s = getattr(args, "snapshot_every", 30.0)  # `download --ingest` has no such flag
        the_plan = plan_ingest(base_config(args), args.dir, args.symbols, args.data, args.start, args.end, snapshot_s)
    except ValueError as e:
        print(f"ticklens history ingest: {e}", file=sys.stderr)
        return 2
    for sym, paths in the_plan.files.items():
        missing = the_plan.missing_days[sym]
        print(
            f"{sym} {args.data}: {len(paths)} files for {args.start} … {args.end}, {len(missing)} days without a file"
        )
        if missing:
            print(f"  no file for: {', '.join(d.isoformat() for d in missing[:31])}{' …' if len(missing) > 31 else ''}")
    if not the_plan.paths:
        print(f"ticklens history ingest: no downloaded {args.data} files in {args.dir} for the range", file=sys.stderr)
        return 2
    return run_ingest(the_plan)
