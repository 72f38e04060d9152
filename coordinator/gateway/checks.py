"""Checks every generation request passes before any token is produced."""

from __future__ import annotations

from coordinator.gateway.context import GatewayContext
from coordinator.gateway.errors import ApiError, bad_request
from coordinator.gateway.schemas import ChatCompletionRequest, CompletionRequest, unsupported_values


def check_request(gw: GatewayContext, body: ChatCompletionRequest | CompletionRequest) -> None:
    """400 for parameters accepted only with neutral values, 404 for another model,
    then 503/429 from the backend when the cluster cannot run anything now."""
    bad = unsupported_values(body)
    if bad is not None:
        param, why = bad
        raise bad_request(f"parameter {param!r} is not supported here: {why}", param=param)
    if body.model != gw.model_id:
        raise ApiError(
            404,
            f"the model {body.model!r} does not exist; this server serves {gw.model_id!r}",
            type="not_found_error",
            param="model",
            code="model_not_found",
        )
    gw.backend.check_ready()
