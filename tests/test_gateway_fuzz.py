"""Schemathesis fuzzing of /openapi.json: whatever a client sends, never a 5xx."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.support.gateway import MODEL_ID, load_tokenizer, running_gateway

EXAMPLES_PER_OPERATION = 25


def _aim_at_the_served_model(case) -> None:
    """Random model names would all stop at the 404: most cases must get further."""
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("model"), str) and hash(str(body)) % 8:
        body["model"] = MODEL_ID


def test_no_input_makes_the_gateway_fail(smollm2_path):
    tokenizer = load_tokenizer(smollm2_path)
    with running_gateway(tokenizer, context_length=64) as gw:
        schema = schemathesis.openapi.from_url(gw.base_url + "/openapi.json")
        operations = [op.ok() for op in schema.get_all_operations()]
        assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/completions"}
        for op in operations:

            @given(case=op.as_strategy())
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            def fuzz(case) -> None:
                _aim_at_the_served_model(case)
                case.call_and_validate(checks=[not_a_server_error], timeout=10)

            fuzz()
