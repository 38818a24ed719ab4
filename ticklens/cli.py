"""`ticklens` command line: run the flow, the local feed, the API, the dashboard, or all of them."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from ticklens.config import Config, ConfigError, config_path, load_config

ROOT = Path(__file__).resolve().parent.parent


def _python() -> str:
    return sys.executable


def flow_command(workers: int = 1) -> list[str]:
    """The dataflow as its own process (recovery flags come from flows.runner)."""
    return [_python(), "-m", "flows.runner", "-w", str(workers)]


def _spawn(name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    print(f"[ticklens] starting {name}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    return subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True)


# Ctrl-C stops everything within STOP_S: our flow drains first (FLOW_STOP_S), the API is asked
# to stop a flow it started (API_STOP_S), then the rest get SIGINT and, at the deadline, SIGKILL.
STOP_S = 9.0
FLOW_STOP_S = 5.0
API_STOP_S = 3.0


def _interrupt_child(name: str, p: subprocess.Popen) -> None:
    if p.poll() is None:
        print(f"[ticklens] stopping {name}", file=sys.stderr, flush=True)
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGINT)


def _stop_all(procs: dict[str, subprocess.Popen], deadline: float) -> None:
    """SIGINT whatever still runs, wait until `deadline`, then kill the process group of each
    child still running (they run in their own sessions) and reap them all."""
    for name, p in reversed(list(procs.items())):
        _interrupt_child(name, p)
    for p in procs.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=max(0.05, deadline - time.monotonic()))
    for name, p in procs.items():
        if p.poll() is None:
            print(f"[ticklens] {name} did not stop in time; killing it", file=sys.stderr, flush=True)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)  # the child and anything it started
        p.wait()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def dashboard_command(cfg: Config, auth_dir: Path | None = None) -> tuple[list[str], dict[str, str]]:
    """`panel serve` for the dashboard, and the environment it adds. With `dashboard.auth`, Panel's
    login page guards it: the user and password go into a private JSON file in `auth_dir` (not on
    the command line, where `ps` shows them) and the cookie secret into the environment."""
    d = cfg.dashboard
    cmd = [_python(), "-m", "panel", "serve", "panel_app/app.py", "--address", d.host, "--port", str(d.port)]
    cmd += ["--allow-websocket-origin", f"{d.host}:{d.port}", "--allow-websocket-origin", f"localhost:{d.port}"]
    env = {"TICKLENS_API": f"http://{cfg.api.host}:{cfg.api.port}"}
    if d.auth is not None:
        if auth_dir is None:
            raise ValueError("dashboard.auth needs a private directory for its password file")
        path = auth_dir / "dashboard-auth.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({d.auth.user: d.auth.secret()}, fh)
        cmd += ["--basic-auth", str(path)]
        env["PANEL_COOKIE_SECRET"] = secrets.token_urlsafe(32)
    return cmd, env


def cmd_up(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    os.umask(0o077)  # inherited by every child: the store and its logs are private to this user
    # The children run in their own sessions: a SIGTERM or SIGHUP to us must stop them too.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    env = dict(os.environ, TICKLENS_CONFIG=str(Path(args.config or config_path()).resolve()))
    procs: dict[str, subprocess.Popen] = {}
    private = Path(tempfile.mkdtemp(prefix="ticklens-up-"))  # 0700: the dashboard's password file
    try:
        if cfg.source.kind == "feed":
            url = urlparse(cfg.source.url or "")
            feed_cmd = [_python(), "-m", "ticklens.cli", "feed", "--port", str(url.port or cfg.feed.port)]
            if cfg.feed.simulate or not cfg.feed.paths:
                feed_cmd += ["--simulate", "--symbols", ",".join(cfg.symbols)]
            else:
                # Start at the pass nearest now: a restarted demo brings new ids and current times.
                feed_cmd += [str(p) for p in cfg.feed.paths] + ["--loop", "--start-now"]
            feed_cmd += ["--speed", str(cfg.feed.speed)]
            procs["feed"] = _spawn("feed", feed_cmd, env)
            base = f"127.0.0.1:{url.port or cfg.feed.port}"
            print(f"[ticklens] feed      ws://{base}/market/stream (trades)", file=sys.stderr)
            if not cfg.feed.simulate and cfg.feed.paths:
                print(f"[ticklens] books     ws://{base}/public/stream, http://{base}/fapi/v1/depth", file=sys.stderr)
        procs["flow"] = _spawn("flow", flow_command(), env)
        if (ROOT / "api" / "app.py").exists():
            procs["api"] = _spawn(
                "api",
                [
                    _python(),
                    "-m",
                    "uvicorn",
                    "api.app:app",
                    "--host",
                    cfg.api.host,
                    "--port",
                    str(cfg.api.port),
                    "--no-access-log",  # keep the flow's progress lines readable
                ],
                env,
            )
            print(f"[ticklens] API       http://{cfg.api.host}:{cfg.api.port}/docs", file=sys.stderr)
        if (ROOT / "panel_app" / "app.py").exists():
            dash_cmd, dash_env = dashboard_command(cfg, private)
            procs["dashboard"] = _spawn("dashboard", dash_cmd, dict(env, **dash_env))
            login = f" (login: {cfg.dashboard.auth.user})" if cfg.dashboard.auth else ""
            print(f"[ticklens] dashboard http://{cfg.dashboard.host}:{cfg.dashboard.port}/app{login}", file=sys.stderr)
        print("[ticklens] Ctrl-C stops everything", file=sys.stderr, flush=True)
        while True:
            for name, p in procs.items():
                if p.poll() is not None:
                    if name == "flow" and p.returncode == 0:
                        # A replay that ended, or a flow stopped with POST /api/v1/stop: keep serving.
                        what = "replay finished" if cfg.source.kind == "replay" else "flow stopped"
                        print(f"[ticklens] {what}; API and dashboard keep serving", file=sys.stderr)
                        procs.pop(name)
                        break
                    print(f"[ticklens] {name} exited with code {p.returncode}", file=sys.stderr)
                    return p.returncode or 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    finally:
        # The children run in their own sessions, so an aborted cleanup would leave them running:
        # a second Ctrl-C only skips the graceful part, and _stop_all always ends by killing.
        deadline = time.monotonic() + STOP_S
        with contextlib.suppress(KeyboardInterrupt):
            # Our flow and the feed first, reaped before the API is asked anything: the API would
            # otherwise find our flow, stop it itself and wait for a process only we can reap.
            for name in ("flow", "feed", "dashboard"):
                if name in procs:
                    _interrupt_child(name, procs[name])
            if "flow" in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    procs["flow"].wait(timeout=FLOW_STOP_S)
            _stop_api_flow(procs, cfg)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        _stop_all(procs, deadline)
        shutil.rmtree(private, ignore_errors=True)


def _stop_api_flow(procs: dict[str, subprocess.Popen], cfg: Config) -> None:
    """A flow started with POST /api/v1/start runs in its own session: ask the API to stop it too."""
    api = procs.get("api")
    if api is None or api.poll() is not None:
        return
    import httpx

    token = cfg.api.bearer_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(f"http://{cfg.api.host}:{cfg.api.port}/api/v1/stop", timeout=API_STOP_S, headers=headers)


def cmd_flow(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    if args.config:
        env["TICKLENS_CONFIG"] = str(Path(args.config).resolve())
    if args.processes <= 1:
        return subprocess.call(flow_command(args.workers), env=env, cwd=ROOT)
    cfg = load_config(args.config)
    if cfg.store.kind == "sqlite":
        raise ConfigError(
            f"store.kind 'sqlite' has a single writer: --processes {args.processes} needs"
            " store: {kind: postgres, url: postgresql://user@host:port/db} (docs/deploy.md)"
        )
    from ticklens.cluster import run_cluster

    log_dir = cfg.recovery_dir.parent / "flow-logs"
    return run_cluster(args.processes, env, log_dir, workers=args.workers, max_restarts=args.max_restarts)


def cmd_feed(args: argparse.Namespace) -> int:
    from ticklens.emulator.cli import main as feed_main

    return feed_main(args.rest)


def cmd_tier_out(args: argparse.Namespace) -> int:
    """Move ticks older than store.hot_days to the Parquet tier now (the running flow also does, every
    store.tier_every_s): one line per day moved, then a summary."""
    from storage import open_store
    from storage.port import TickCountMismatch
    from storage.tier import TierError
    from storage.tier_out import Moved, tier_out

    cfg = load_config(args.config)
    hot = args.hot_days if args.hot_days is not None else cfg.store.hot_days
    if hot is None:
        print("ticklens store tier-out: store.hot_days is null (keep every tick); give --hot-days N", file=sys.stderr)
        return 2
    symbols = [s.strip().lower() for s in args.symbols.split(",")] if args.symbols else None
    store = open_store(cfg.store)

    def said(m: Moved) -> None:
        print(f"{m.symbol} {m.day}: {m.rows:,} ticks moved ({m.written:,} written) in {m.seconds:.2f} s", flush=True)

    t0 = time.perf_counter()
    try:
        moved = tier_out(store, cfg.store.cold_path, hot, symbols, on_moved=said)
    except (TickCountMismatch, TierError) as e:  # nothing of that day was deleted: rerun later
        print(f"ticklens store tier-out: stopped: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()
    dt = time.perf_counter() - t0
    rows = sum(m.rows for m in moved)
    rate = f", {rows / dt:,.0f} ticks/s" if rows else ""
    print(f"moved {rows:,} ticks of {len(moved)} symbol-days to {cfg.store.cold_path} in {dt:.1f} s{rate}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ticklens", description=__doc__)
    parser.add_argument("--config", help="pipeline file (default: $TICKLENS_CONFIG or ./pipeline.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="feed (offline) or live source, flow, API and dashboard together").set_defaults(
        func=cmd_up
    )
    p_flow = sub.add_parser("flow", help="run the dataflow only")
    p_flow.add_argument("-w", "--workers", type=int, default=1, help="workers per process (they share its GIL)")
    p_flow.add_argument(
        "-p", "--processes", type=int, default=1, help="a local cluster of N processes (a server store: postgres)"
    )
    p_flow.add_argument("--max-restarts", type=int, default=10, help="cluster: restarts after a process dies")
    p_flow.set_defaults(func=cmd_flow)
    p_feed = sub.add_parser("feed", help="local Binance-compatible WebSocket feed", add_help=False)
    p_feed.add_argument("rest", nargs=argparse.REMAINDER)
    p_feed.set_defaults(func=cmd_feed)
    p_store = sub.add_parser("store", help="store maintenance")
    store_sub = p_store.add_subparsers(dest="store_command", required=True)
    p_tier = store_sub.add_parser("tier-out", help="move ticks older than store.hot_days to Parquet (docs/store.md)")
    p_tier.add_argument("--symbols", help="comma-separated (default: every symbol with data)")
    p_tier.add_argument("--hot-days", type=int, default=None, help="override store.hot_days")
    p_tier.set_defaults(func=cmd_tier_out)
    from ticklens.history.commands import add_parser as add_history_parser

    add_history_parser(sub)  # `ticklens history download|verify|rest-fill|ingest`
    raw = list(sys.argv[1:] if argv is None else argv)
    if "feed" in raw:
        # argparse's REMAINDER drops a leading "--option"; hand everything after `feed` to the feed as is.
        i = raw.index("feed")
        args = parser.parse_args(raw[: i + 1])
        args.rest = raw[i + 1 :]
    else:
        args = parser.parse_args(raw)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"ticklens: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
