"""The ticklens dataflow: `python -m bytewax.run flows` builds it from pipeline.yaml."""

from __future__ import annotations

from bytewax.dataflow import Dataflow


def flow() -> Dataflow:
    """Bytewax entry point: reads TICKLENS_CONFIG (default ./pipeline.yaml)."""
    from flows.dataflow import build_flow
    from ticklens.config import load_config

    return build_flow(load_config())
