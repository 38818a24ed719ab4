"""The store: an interface (`storage.port`) and its backends (`storage.sqlite`, `storage.postgres`)."""

from __future__ import annotations

from storage.port import Store
from ticklens.config import RETENTION_TABLES, StoreConfig


def retention_days(cfg: StoreConfig) -> dict[str, float]:
    """Table -> days kept, for the tables `store.retention` limits."""
    out = {t: cfg.retention.days_for(t) for t in RETENTION_TABLES}
    return {t: d for t, d in out.items() if d is not None}


def open_store(cfg: StoreConfig) -> Store:
    """The backend `store.kind` names, for the flow, the API and the tools alike; its readers also read
    the ticks moved to Parquet (`storage.tier`), whichever the backend."""
    from storage.tier import TieredStore

    backend: Store
    if cfg.kind == "postgres":
        from storage.postgres import PostgresStore

        backend = PostgresStore(cfg)
    else:
        from storage.sqlite import SqliteStore

        backend = SqliteStore(
            cfg.path,
            max_size_mb=cfg.max_size_mb,
            cache_mb=cfg.cache_mb,
            rejects_max_rows=cfg.rejects_max_rows,
            retention_days=retention_days(cfg),
        )
    return TieredStore(backend, cfg.cold_path)
