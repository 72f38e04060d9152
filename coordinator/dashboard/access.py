"""Who may read the cluster: `/cluster/*`, `/metrics` and the event stream.

With no keys configured everything is open (a loopback coordinator: the config
refuses another host without keys unless `--insecure-open`). With keys, a read
needs an API key or a read-only dashboard key, sent as `Authorization: Bearer KEY`
or, for the browser's EventSource (which cannot set headers), as `?key=KEY`.
A dashboard key never opens the completions API (coordinator/gateway/app.py
checks API keys only).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from fastapi import Request

from coordinator.gateway.errors import ApiError

KEY_PARAM = "key"


def _given(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, credentials = auth.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.query_params.get(KEY_PARAM) or None


def read_guard(
    api_keys: tuple[str, ...], dashboard_keys: tuple[str, ...]
) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency: lets a request through with any of the keys (or none set)."""
    encoded = tuple(k.encode() for k in (*api_keys, *dashboard_keys))

    async def require_read_key(request: Request) -> None:
        if not encoded:
            return
        given = _given(request)
        if given is None:
            raise ApiError(
                401,
                "missing key: send an API key or a dashboard key as the header "
                "`Authorization: Bearer <key>` (the dashboard: open it at /?key=<key>)",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        # Every key compared in constant time: timing must not hint at a key.
        matched = [hmac.compare_digest(given.encode(), key) for key in encoded]
        if not any(matched):
            raise ApiError(
                401, "incorrect key", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
            )

    return require_read_key
