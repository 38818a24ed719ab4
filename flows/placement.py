"""Which bytewax workers this process runs: set by the runner before the flow starts, read by the
sources' `list_parts` (bytewax 0.21 does not tell a source which worker asks), so that each source
partition runs in the process where its symbols' keyed steps are (ticklens.ingest.shards)."""

from __future__ import annotations

from ticklens.ingest.shards import Shard, local_shards

# (first worker index of this process, workers in it, workers in the cluster); None: all local.
_LOCAL: tuple[int, int, int] | None = None


def set_local(process_id: int, workers_per_process: int, processes: int) -> None:
    global _LOCAL
    _LOCAL = (process_id * workers_per_process, workers_per_process, processes * workers_per_process)


def local_parts(shards: list[Shard]) -> list[Shard]:
    """The partitions this process should list (all of them outside a cluster)."""
    if _LOCAL is None:
        return list(shards)
    return local_shards(shards, *_LOCAL)
