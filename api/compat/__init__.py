"""The original design's REST API on its original paths (`../shared/seed/seed-api.md`): `/health`, `/api/...`.

Its clients (the original Streamlit dashboard and scripts) work unchanged but for
the host. A thin layer: every answer comes from the same store reader, rule store
and `ticklens.domain` code as /api/v1, only reshaped; each endpoint's OpenAPI
description names the /api/v1 endpoint with the richer answer (docs/api.md has
the table).
"""

from __future__ import annotations

from fastapi import APIRouter

from api.compat import alerts, analytics, control, data, market
from api.compat.common import TAG

router = APIRouter()
for _module in (control, market, analytics, alerts, data):
    router.include_router(_module.router)

__all__ = ["TAG", "router"]
