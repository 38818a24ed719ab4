"""The pure core of ticklens: records, bars, dedup, alignment, statistics and alert rules.

Nothing here does I/O or knows bytewax, a store or a socket: the flow, the API
and the store backends import it, never the other way round (import-linter
checks this, see `pyproject.toml`).
"""
