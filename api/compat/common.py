"""What the original-API routers share: their OpenAPI tag, the pointer to the richer v1 answer, the error
answer, number hygiene."""

from __future__ import annotations

import math
from typing import Any

from api.compat.models import ErrorAnswer
from api.deps import json_response

TAG = "original API (compatible)"


def richer(v1: str, what: str) -> str:
    """The OpenAPI description line that names the ticklens endpoint with the richer answer."""
    return f"{what}\n\n**Richer answer:** `{v1}`."


def or_error(model: Any, v1: str, what: str) -> dict[str, Any]:
    """Route settings of an answer that is the `error` answer instead when the data are too few:
    both models for the OpenAPI page, and the description naming the v1 endpoint (`richer`)."""
    return {"response_model": model | ErrorAnswer, "description": richer(v1, what)}


def num(v: float | None) -> float | None:
    """A finite float, else None (NaN and infinities are not JSON numbers)."""
    return v if v is not None and math.isfinite(v) else None


def error_answer(text: str, **context: Any) -> Any:
    """HTTP 200 with an `error` key: the original's "not enough data" answer that clients test for."""
    return json_response({"error": text, **context})
