"""`ticklens` command line: run the flow, the local feed, the API, the dashboard, or all of them."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from ticklens.config import ConfigError, config_path, load_config

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


def cmd_up(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    os.umask(0o077)  # inherited by every child: the store and its logs are private to this user
    # The children run in their own sessions: a SIGTERM or SIGHUP to us must stop them too.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    env = dict(os.environ, TICKLENS_CONFIG=str(Path(args.config or config_path()).resolve()))
    procs: dict[str, subprocess.Popen] = {}
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
            denv = dict(env, TICKLENS_API=f"http://{cfg.api.host}:{cfg.api.port}")
            procs["dashboard"] = _spawn(
                "dashboard",
                [
                    _python(),
                    "-m",
                    "panel",
                    "serve",
                    "panel_app/app.py",
                    "--address",
                    cfg.dashboard.host,
                    "--port",
                    str(cfg.dashboard.port),
                    "--allow-websocket-origin",
                    f"{cfg.dashboard.host}:{cfg.dashboard.port}",
                    "--allow-websocket-origin",
                    f"localhost:{cfg.dashboard.port}",
                ],
                denv,
            )
            print(f"[ticklens] dashboard http://{cfg.dashboard.host}:{cfg.dashboard.port}/app", file=sys.stderr)
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
            _stop_api_flow(procs, cfg.api.host, cfg.api.port)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        _stop_all(procs, deadline)


def _stop_api_flow(procs: dict[str, subprocess.Popen], host: str, port: int) -> None:
    """A flow started with POST /api/v1/start runs in its own session: ask the API to stop it too."""
    api = procs.get("api")
    if api is None or api.poll() is not None:
        return
    import httpx

    with contextlib.suppress(httpx.HTTPError):
        httpx.post(f"http://{host}:{port}/api/v1/stop", timeout=API_STOP_S)


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
