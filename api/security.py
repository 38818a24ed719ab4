"""Who may call the API: the token, the loopback rule, and the shape a write must have.

One ASGI middleware, before any router runs:

- **Exposure.** Without a token, a request that reached this server on a non-loopback
  address is refused (403): `uvicorn --host 0.0.0.0` cannot open an unauthenticated API
  to the network even though the config says 127.0.0.1.
- **Token.** With one (`TICKLENS_API_TOKEN` or `api.token`), every request but the OpenAPI
  page needs `Authorization: Bearer <token>` (401 otherwise; compared in constant time,
  never logged or echoed).
- **Writes** (POST, PUT, PATCH, DELETE) come from the dashboard's origin or from no browser
  at all: a foreign `Origin` (or `Sec-Fetch-Site: cross-site`) is refused (403); a body must
  be `application/json` (uploads: `multipart/form-data`), so a cross-site form or a
  `text/plain` fetch, which browsers send without asking, cannot act (415). A write with
  no body and no content type (`POST /api/stop` from the original design's scripts) passes.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import json_response
from ticklens.config import TOKEN_ENV, is_loopback

PUBLIC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON = "application/json"
MULTIPART = "multipart/form-data"


class Guard:
    def __init__(
        self, app: ASGIApp, token: str | None, origins: Iterable[str], upload_prefixes: tuple[str, ...]
    ) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.origins = frozenset(o.rstrip("/") for o in origins)
        self.upload_prefixes = upload_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, detail = refusal
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        await json_response({"detail": detail}, status_code=status, headers=headers)(scope, receive, send)

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """(status, reason) when the request may not go on, else None."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        server = scope.get("server")
        if self.token is None and server and not is_loopback(str(server[0])):
            return 403, (
                f"this API has no token and answers on loopback addresses only (the request came to {server[0]});"
                f" set {TOKEN_ENV} or api.token to serve other addresses"
            )
        path = scope["path"]
        if self.token is not None and path not in PUBLIC_PATHS and not self._authorised(headers):
            return 401, "missing or wrong API token: send the header `Authorization: Bearer <token>`"
        if scope["method"] in WRITE_METHODS:
            return self._write_refusal(path, headers)
        return None

    def _authorised(self, headers: dict[str, str]) -> bool:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        assert self.token is not None
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token)

    def _write_refusal(self, path: str, headers: dict[str, str]) -> tuple[int, str] | None:
        origin = headers.get("origin")
        if origin is not None and origin.rstrip("/") not in self.origins:
            return 403, f"cross-site write refused: origin {origin[:100]!r} is not the dashboard's"
        if headers.get("sec-fetch-site") == "cross-site":
            return 403, "cross-site write refused (Sec-Fetch-Site: cross-site)"
        ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        upload = path.startswith(self.upload_prefixes)
        allowed = (JSON, MULTIPART) if upload else (JSON,)
        if ctype in allowed:
            return None
        length = headers.get("content-length", "")
        empty = headers.get("transfer-encoding") is None and length in ("", "0")
        if not ctype and empty:
            return None  # a bodiless write (POST /api/stop): nothing a form could smuggle
        want = " or ".join(allowed)
        return 415, f"a write needs Content-Type {want}{'' if upload else ' (or no body)'}, not {ctype or 'none'!r}"
