"""`create_app`: the OpenAI-compatible HTTP API over a `Backend`.

Also here: `GET /v1/models`, `GET /v1/models/{id}`, `GET /health`, and the
Bearer API-key check on /v1/*, /tokenize and /detokenize (no keys configured
means the API is open).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from coordinator.gateway.backend import Backend
from coordinator.gateway.body_limit import BodyLimit
from coordinator.gateway.endpoints import chat_router, completions_router
from coordinator.gateway.errors import ApiError, install_error_handlers
from coordinator.gateway.generation import GatewayContext
from coordinator.gateway.params import check_model
from coordinator.gateway.textstream import TokenTexts
from coordinator.gateway.tokenize import tokenize_router, version_router
from parallax import __version__
from parallax.config.coordinator import CoordinatorConfig
from parallax.errors import CapacityError, NotCovered
from parallax.tokenizer.tokenizer import Tokenizer


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
    bearer = HTTPBearer(auto_error=False, description="an API key from --api-key")

    async def require_api_key(
        creds: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
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


OWNER = "parallax"


def _model_card(gw: GatewayContext) -> dict[str, Any]:
    return {
        "id": gw.model_id,
        "object": "model",
        "created": gw.started,
        "owned_by": OWNER,
        # The longest sequence (prompt + completion) a request may reach: the model's
        # positions capped by the KV the cluster reserves. vLLM's name, then ours.
        "max_model_len": gw.context_length,
        "context_length": gw.context_length,
    }


def models_router(gw: GatewayContext) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(gw)]}

    @router.get("/v1/models/{model_id:path}")
    async def retrieve_model(model_id: str) -> dict[str, Any]:
        check_model(gw, model_id)
        return _model_card(gw)

    return router


def health_router(gw: GatewayContext) -> APIRouter:
    router = APIRouter()

    @router.get("/health", response_model=None)
    async def health() -> JSONResponse:
        """200 while requests can run (busy included), 503 while layers are missing."""
        try:
            gw.backend.check_ready()
        except NotCovered as e:
            return JSONResponse({"status": "unavailable", "reason": str(e)}, status_code=503)
        except CapacityError:
            return JSONResponse({"status": "busy", "model": gw.model_id})
        return JSONResponse({"status": "ok", "model": gw.model_id})

    return router


def create_app(
    backend: Backend,
    config: CoordinatorConfig,
    tokenizer: Tokenizer,
    model_id: str,
    context_length: int,
) -> FastAPI:
    """`model_id` is the model's own name; --served-model-name replaces it for clients."""
    gw = GatewayContext(
        backend=backend,
        tokenizer=tokenizer,
        model_id=config.served_model_name or model_id,
        context_length=context_length,
        api_keys=tuple(config.api_key),
        texts=TokenTexts(tokenizer),
    )
    app = FastAPI(
        title="Parallax",
        summary="OpenAI-compatible API of a peer-to-peer LLM inference cluster",
        version=__version__,
        openapi_url="/openapi.json",
    )
    app.state.gateway = gw
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=int(config.max_request_mb * 2**20))
    guarded = [Depends(api_key_guard(gw.api_keys))]
    app.include_router(models_router(gw), dependencies=guarded, tags=["models"])
    strict = config.strict_params
    app.include_router(chat_router(gw, strict), dependencies=guarded, tags=["chat"])
    app.include_router(completions_router(gw, strict), dependencies=guarded, tags=["completions"])
    app.include_router(tokenize_router(gw), dependencies=guarded, tags=["tokenize"])
    app.include_router(health_router(gw), tags=["health"])
    app.include_router(version_router(), tags=["health"])
    return app
