"""Source partitions run where their symbols' keyed state is (ticklens.ingest.shards, flows/placement).

The oracle is bytewax itself: a real `python -m bytewax.run` with several workers records which
worker each key's stateful step ran on; the placement's hash must name the same worker for every
key, and the partitions each process lists must be disjoint, cover all, and sit on that worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ticklens.ingest.shards import Shard, key_worker, local_shards

KEYS = [
    "btcusdt", "ethusdt", "solusdt", "bnbusdt", "xrpusdt", "dogeusdt", "adausdt", "ltcusdt", "trxusdt",
    "linkusdt", "avaxusdt", "1000pepeusdt", "_feed", "_corr@1m", "btcusdt-ethusdt@1s", "a", "",
    "abcdefgh", "abcdefghi", "x" * 23, "ünïcode",
]  # fmt: skip

FLOW = """
import os
import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource

class _Part(StatelessSinkPartition):
    def __init__(self, worker):
        self.worker = worker
    def write_batch(self, items):
        with open(os.environ["PLACEMENT_OUT"], "a", encoding="utf-8") as fh:
            for key in items:
                fh.write(f"{self.worker}\\t{key}\\n")

class _Sink(DynamicSink):  # no exchange before a dynamic sink: a row's worker is its key's
    def build(self, step_id, worker_index, worker_count):
        return _Part(worker_index)

flow = Dataflow("placement")
keys = op.input("in", flow, TestingSource(KEYS))
state = op.stateful_map("state", op.key_on("key", keys, lambda k: k), lambda s, v: (s, v))
op.output("out", op.map("name", state, lambda kv: kv[0]), _Sink())
"""


def _bytewax_workers(tmp_path: Path, workers: int) -> dict[str, int]:
    mod = tmp_path / "placement_flow.py"
    mod.write_text(f"KEYS = {KEYS!r}\n" + textwrap.dedent(FLOW), encoding="utf-8")
    out = tmp_path / f"out{workers}.tsv"
    env = dict(os.environ, PLACEMENT_OUT=str(out))
    subprocess.run(
        [sys.executable, "-m", "bytewax.run", "placement_flow", "-w", str(workers)],
        cwd=tmp_path, env=env, check=True, timeout=120,
    )  # fmt: skip
    rows = [line.split("\t", 1) for line in out.read_text(encoding="utf-8").splitlines()]
    return {key: int(w) for w, key in rows}


@pytest.mark.parametrize("workers", [2, 3, 5])
def test_key_worker_names_the_worker_bytewax_routes_each_key_to(tmp_path: Path, workers: int) -> None:
    seen = _bytewax_workers(tmp_path, workers)
    assert sorted(seen) == sorted(KEYS)
    assert len(set(seen.values())) > 1  # the keys do spread: the check below is not trivial
    assert {k: key_worker(k, workers) for k in KEYS} == seen


def test_each_partition_is_listed_by_exactly_the_process_of_its_first_symbols_worker(tmp_path: Path) -> None:
    seen = _bytewax_workers(tmp_path, 4)  # 2 processes x 2 workers: workers 0-1 and 2-3
    shards = [Shard(name=f"replay:{i}", symbols=(k,)) for i, k in enumerate(KEYS) if k]
    shards.append(Shard(name="mixed", symbols=("ethusdt", "btcusdt")))
    listed = [local_shards(shards, p * 2, 2, 4) for p in range(2)]
    names = [s.name for part in listed for s in part]
    assert sorted(names) == sorted(s.name for s in shards)  # every partition once
    for p, part in enumerate(listed):
        for s in part:
            assert seen[s.symbols[0]] // 2 == p, s
    assert local_shards(shards, 0, 2, 2) == shards  # one process: all of them, as before
