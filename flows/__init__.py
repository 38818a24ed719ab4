"""The ticklens dataflow: `python -m bytewax.run flows` builds it from pipeline.yaml."""

from __future__ import annotations

from bytewax.dataflow import Dataflow


def flow() -> Dataflow:
    """Bytewax entry point: reads TICKLENS_CONFIG (default ./pipeline.yaml)."""
    import os

    from flows.dataflow import build_flow
    from ticklens.config import load_config

    os.umask(0o077)  # as flows.runner: what the flow creates is private to this user
    return build_flow(load_config())
