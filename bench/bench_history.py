"""History download + verify throughput against a local archive server, with a plain-download baseline.

    .venv/bin/python bench/bench_history.py --days 8 --repeats 3 --parallel 4

Input: `--days` daily BTCUSDT `trades` zips in the archive's layout, each 24 time- and id-shifted
copies of the bundled real hour (bench/synth.py: ~2.4 M trades, ~25 MB a day), served by
`python -m http.server` on 127.0.0.1 in its own process. Every run is a fresh process and an
empty directory, timed from spawn to exit:

- baseline: one httpx connection streaming the same zips to disk in order, no checksum
  requested, nothing hashed, nothing renamed (the cheapest way to move the same bytes);
- download: `ticklens history download --parallel N` (checksums fetched, every byte hashed,
  atomic renames, manifest) and the same with `--parallel 1`;
- rerun: the same command again over the complete directory (everything skipped);
- continuity: `ticklens history verify --archive-only` over the downloaded days (each copied
  hour has the real file's one missing id, so it must list exactly 24 x days gaps).

Peak RSS is each process's own maximum (`wait4`), so constant memory shows as a flat figure
whatever --days is.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procstat import peak_rss_mb  # noqa: E402
from bench.synth import shifted_archive_days  # noqa: E402
from ticklens.cluster import free_ports  # noqa: E402

BASELINE = r"""
import sys, time, httpx
base, out, *paths = sys.argv[1:]
t0 = time.perf_counter()
with httpx.Client(timeout=60) as c:
    for p in paths:
        with c.stream("GET", base + p) as r, open(out + "/" + p.rsplit("/", 1)[1], "wb") as fh:
            r.raise_for_status()
            for chunk in r.iter_raw(1 << 16):
                fh.write(chunk)
print(time.perf_counter() - t0)
"""


def timed(cmd: list[str]) -> tuple[float, float, int, str]:
    """(seconds, peak RSS MB, exit code, stdout) of one process. VmHWM is read until the process is
    a zombie, so the last figure is the peak (rusage's maxrss would also count this parent's
    memory, inherited at fork)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = 0.0
    while True:
        peak = max(peak, peak_rss_mb(proc.pid))
        if _state(proc.pid) in ("Z", ""):
            break
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    out = proc.communicate()[0]
    return elapsed, peak, proc.returncode, out


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ticklens-bench-history")
    args = ap.parse_args()

    site = args.work / "site"
    files = shifted_archive_days(site, args.days)
    total = sum(p.stat().st_size for p in files)
    rel = ["/" + str(p.relative_to(site)) for p in files]
    last = (date(2020, 12, 9) + timedelta(days=args.days - 1)).isoformat()
    (port,) = free_ports(1)
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(site), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)

    py = sys.executable
    runs: dict[str, list[tuple[float, float, float]]] = {}  # (wall s, in-process s, peak RSS MB)

    def record(name: str, cmd: list[str], report: Path | None = None) -> None:
        s, rss, rc, out = timed(cmd)
        if rc != 0:
            raise SystemExit(f"{name} exited with {rc}: {' '.join(cmd)}")
        # In-process time, imports left out: the baseline prints it, ticklens writes it in --report.
        if report is not None:
            inner = json.loads(report.read_text())["elapsed_s"]
        else:
            inner = float(out) if name.startswith("baseline") else float("nan")
        runs.setdefault(name, []).append((s, inner, rss))

    try:
        for i in range(args.repeats):
            base_dir = args.work / f"baseline{i}"
            base_dir.mkdir(parents=True, exist_ok=True)
            record("baseline (1 connection, no verification)", [py, "-c", BASELINE, url, str(base_dir), *rel])
            for par in dict.fromkeys((args.parallel, 1)):
                out = args.work / f"dl{i}-p{par}"
                cmd = [py, "-m", "ticklens.cli", "history", "download", "--symbols", "BTCUSDT", "--data", "trades"]
                cmd += ["--from", "2020-12-09", "--to", last, "--dir", str(out), "--base-url", url]
                cmd += ["--parallel", str(par), "--no-monthly", "--report", str(args.work / "dl.json")]
                record(f"ticklens download --parallel {par}", cmd, args.work / "dl.json")
                if par == args.parallel:
                    record("rerun (all verified, skipped)", cmd)  # no bytes: wall time and files/s only
                    verify = [py, "-m", "ticklens.cli", "history", "verify", "--archive-only", "--symbols", "BTCUSDT"]
                    verify += ["--data", "trades", "--from", "2020-12-09", "--to", last, "--dir", str(out)]
                    verify += ["--report", str(args.work / "verify.json")]
                    s, rss, rc, _ = timed(verify)
                    gaps = json.loads((args.work / "verify.json").read_text())[0]["gap_count"]
                    if rc != 1 or gaps != 24 * args.days:
                        raise SystemExit(f"continuity found {gaps} gaps (rc {rc}), expected {24 * args.days}")
                    runs.setdefault("continuity (verify --archive-only)", []).append((s, float("nan"), rss))
                for p in out.rglob("*.zip"):
                    p.unlink()  # keep the disk use of a long run bounded
                (out / ".ticklens-verified.jsonl").unlink()
            for p in base_dir.iterdir():
                p.unlink()
    finally:
        server.terminate()
        server.wait(timeout=10)

    report = json.loads((args.work / "verify.json").read_text())[0]
    print(f"{args.days} files, {total / 1e6:.1f} MB, {report['rows']:,} trades; {args.repeats} runs each")
    print("wall: process spawn to exit (imports included); in-process: the transfer alone")
    print(f"{'variant':42} {'wall s, each run':34} {'MB/s':>6} {'files/s':>7} {'in-proc MB/s':>12} {'RSS MB':>6}")
    for name, rs in runs.items():
        secs = [s for s, _, _ in rs]
        med = statistics.median(secs)
        inner = statistics.median(i for _, i, _ in rs)
        inner_txt = f"{total / 1e6 / inner:12.1f}" if inner == inner else f"{'':12}"
        extra = f"  ({report['rows'] / med:,.0f} rows/s)" if name.startswith("continuity") else ""
        print(
            f"{name:42} {' · '.join(f'{s:.2f}' for s in secs):34} {total / 1e6 / med:6.1f} "
            f"{len(files) / med:7.2f} {inner_txt} {max(r for _, _, r in rs):6.0f}{extra}"
        )


if __name__ == "__main__":
    main()
