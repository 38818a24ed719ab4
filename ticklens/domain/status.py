"""The flow's status documents: one per worker in a cluster, one merged view for readers (pure).

A single-process flow writes its document under `flow`. In a cluster every worker writes
`flow:<worker index>` (each has its own counters and its own sources; workers never write
the same key), and readers see `flow` as the merge of the current run's worker documents:
counters summed, feeds joined, the newest write time. Per-symbol documents
(`symbol:<s>`) need no merging: a symbol's state lives on exactly one worker.
"""

from __future__ import annotations

from typing import Any

Docs = dict[str, tuple[dict[str, Any], int]]

FLOW_KEY = "flow"
# A worker document older than the newest worker's start by more than this belongs to an earlier run.
STALE_MS = 60_000


def flow_key(worker_index: int, worker_count: int) -> str:
    return FLOW_KEY if worker_count <= 1 else f"{FLOW_KEY}:{worker_index}"


def merged_flow(docs: Docs) -> tuple[dict[str, Any], int] | None:
    """The merged `flow` document of the newest run's workers, or None when it has none.

    The run is the one whose document was written last: if that is a single-process
    `flow` it stands alone; else its `workers` count picks `flow:0 … flow:<n-1>`, less any
    left from an earlier run (written before the newest worker started).
    """
    flows = {k: v for k, v in docs.items() if k == FLOW_KEY or k.startswith(FLOW_KEY + ":")}
    if not flows:
        return None
    newest_key = max(flows, key=lambda k: flows[k][1])
    newest, _ = flows[newest_key]
    if newest_key == FLOW_KEY:
        return flows[FLOW_KEY]
    n = int(newest.get("workers", 1))
    started = max(int(d.get("started_ms", 0)) for d, _ in flows.values() if d.get("workers") == n)
    parts = [
        flows[k]
        for i in range(n)
        if (k := f"{FLOW_KEY}:{i}") in flows and flows[k][0].get("workers") == n and flows[k][1] >= started - STALE_MS
    ]
    merged: dict[str, Any] = {
        "pid": parts[0][0].get("pid") if parts else None,
        "pids": [d.get("pid") for d, _ in parts],
        "workers": n,
        "workers_reporting": len(parts),
        "started_ms": min(int(d.get("started_ms", 0)) for d, _ in parts),
        "trades_total": sum(int(d.get("trades_total", 0)) for d, _ in parts),
        "trades_per_s": round(sum(float(d.get("trades_per_s", 0.0)) for d, _ in parts), 1),
        "rejects": sum(int(d.get("rejects", 0)) for d, _ in parts),
        "feeds": {k: v for d, _ in parts for k, v in (d.get("feeds") or {}).items()},
    }
    return merged, max(u for _, u in parts)


def with_merged_flow(docs: Docs) -> Docs:
    """`docs` with `flow` set to the merged view (the per-worker documents stay as they are)."""
    m = merged_flow(docs)
    if m is None or FLOW_KEY in docs and m is docs[FLOW_KEY]:
        return docs
    return {**docs, FLOW_KEY: m}
