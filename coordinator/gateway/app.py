"""`create_app`: the OpenAI-compatible HTTP API over a `Backend`."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from coordinator.gateway.auth import api_key_guard
from coordinator.gateway.backend import Backend
from coordinator.gateway.chat import chat_router
from coordinator.gateway.completions import completions_router
from coordinator.gateway.context import GatewayContext
from coordinator.gateway.errors import install_error_handlers
from coordinator.gateway.models_api import health_router, models_router
from coordinator.gateway.token_text import TokenTexts
from parallax.config.coordinator import CoordinatorConfig
from parallax.tokenizer.tokenizer import Tokenizer


def create_app(
    backend: Backend,
    config: CoordinatorConfig,
    tokenizer: Tokenizer,
    model_id: str,
    context_length: int,
) -> FastAPI:
    gw = GatewayContext(
        backend=backend,
        tokenizer=tokenizer,
        model_id=model_id,
        context_length=context_length,
        api_keys=tuple(config.api_key),
        texts=TokenTexts(tokenizer),
    )
    app = FastAPI(
        title="Parallax",
        summary="OpenAI-compatible API of a peer-to-peer LLM inference cluster",
        version="0.1.0",
        openapi_url="/openapi.json",
    )
    app.state.gateway = gw
    install_error_handlers(app)
    guarded = [Depends(api_key_guard(gw.api_keys))]
    app.include_router(models_router(gw), dependencies=guarded, tags=["models"])
    app.include_router(chat_router(gw), dependencies=guarded, tags=["chat"])
    app.include_router(completions_router(gw), dependencies=guarded, tags=["completions"])
    app.include_router(health_router(gw), tags=["health"])
    return app
