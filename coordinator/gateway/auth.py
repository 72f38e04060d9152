"""Bearer API keys on /v1/*. No keys configured means the API is open."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from coordinator.gateway.errors import ApiError

_bearer = HTTPBearer(auto_error=False, description="an API key from --api-key")


def _unauthorized(message: str) -> ApiError:
    return ApiError(
        401,
        message,
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


def api_key_guard(keys: tuple[str, ...]) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency that lets a request through only with one of `keys`."""
    encoded = tuple(k.encode() for k in keys)

    async def require_api_key(
        creds: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
    ) -> None:
        if not encoded:
            return
        if creds is None:
            raise _unauthorized(
                "missing API key: send it as the header `Authorization: Bearer <key>`"
            )
        given = creds.credentials.encode()
        # Compare against every key in constant time: timing must not hint at a key.
        matched = [hmac.compare_digest(given, key) for key in encoded]
        if not any(matched):
            raise _unauthorized("incorrect API key")

    return require_api_key
