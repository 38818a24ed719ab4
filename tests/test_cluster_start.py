"""How a cluster's processes start (flows/runner.py): later processes wait for the earlier ones'
listening sockets instead of meeting timely's one-second retry, and epochs without recovery.

Real sockets on 127.0.0.1; the listening ports are read from /proc/net/tcp as the runner reads them.
"""

from __future__ import annotations

import socket
import threading
import time
from datetime import timedelta

import pytest

from flows.runner import NO_RECOVERY_EPOCH, _await_lower_peers, _epoch_interval, _listening_ports
from ticklens.config import Config

pytestmark = pytest.mark.skipif(_listening_ports() is None, reason="needs Linux /proc/net/tcp")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_listening_ports_names_a_listening_socket_and_not_a_bound_one() -> None:
    with socket.socket() as listening, socket.socket() as bound:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        bound.bind(("127.0.0.1", 0))  # bound, not listening: a peer's connect would be refused
        ports = _listening_ports()
        assert ports is not None
        assert listening.getsockname()[1] in ports
        assert bound.getsockname()[1] not in ports


def test_a_later_process_waits_until_the_earlier_one_listens() -> None:
    port = _free_port()
    listened_at: list[float] = []
    sock = socket.socket()

    def listen_later() -> None:
        time.sleep(0.4)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        listened_at.append(time.monotonic())

    t = threading.Thread(target=listen_later)
    t.start()
    try:
        _await_lower_peers(1, [f"127.0.0.1:{port}", "127.0.0.1:1"], timeout_s=20)
        returned = time.monotonic()
        t.join()
        assert listened_at, "returned before the earlier process listened"
        assert returned >= listened_at[0]
        assert returned - listened_at[0] < 5  # it noticed the socket, not the 20 s timeout
    finally:
        t.join()
        sock.close()


def test_process_zero_and_other_machines_do_not_wait() -> None:
    port = _free_port()  # nobody listens there
    t0 = time.monotonic()
    _await_lower_peers(0, [f"127.0.0.1:{port}", f"127.0.0.1:{_free_port()}"], timeout_s=10)
    _await_lower_peers(1, [f"10.1.2.3:{port}", f"127.0.0.1:{_free_port()}"], timeout_s=10)
    assert time.monotonic() - t0 < 5


def test_a_peer_that_never_listens_leaves_it_to_timely_after_the_timeout() -> None:
    port = _free_port()
    t0 = time.monotonic()
    _await_lower_peers(1, [f"127.0.0.1:{port}", "127.0.0.1:1"], timeout_s=0.5)
    waited = time.monotonic() - t0
    assert 0.5 <= waited < 5


def test_epochs_follow_the_snapshot_interval_only_with_recovery() -> None:
    cfg = Config.model_validate(
        {
            "symbols": ["btcusdt"],
            "source": {"kind": "replay", "paths": ["a.csv"]},
            "recovery": {"snapshot_interval_s": 7},
        }
    )
    assert _epoch_interval(cfg, recovery=True) == timedelta(seconds=7)
    assert _epoch_interval(cfg, recovery=False) == NO_RECOVERY_EPOCH >= timedelta(minutes=10)
