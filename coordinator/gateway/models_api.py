"""`GET /v1/models`, `GET /v1/models/{id}` and `GET /health`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from coordinator.gateway.context import GatewayContext
from coordinator.gateway.errors import ApiError
from parallax.errors import CapacityError, NotCovered

OWNER = "parallax"


def _model_card(gw: GatewayContext) -> dict[str, Any]:
    return {
        "id": gw.model_id,
        "object": "model",
        "created": gw.started,
        "owned_by": OWNER,
        "context_length": gw.context_length,
    }


def models_router(gw: GatewayContext) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(gw)]}

    @router.get("/v1/models/{model_id:path}")
    async def retrieve_model(model_id: str) -> dict[str, Any]:
        if model_id != gw.model_id:
            raise ApiError(
                404,
                f"the model {model_id!r} does not exist; this server serves {gw.model_id!r}",
                type="not_found_error",
                param="model",
                code="model_not_found",
            )
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
