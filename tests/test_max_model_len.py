"""--max-model-len: the planner's KV reserve, the gateway's limit and /v1/models follow it."""

from __future__ import annotations

import httpx
import openai
import pytest

from coordinator.scheduler.memory import MemoryModel
from coordinator.server import allocate_options
from parallax.config.coordinator import CoordinatorConfig
from parallax.errors import ConfigError
from parallax.models.registry import resolve_model
from tests.support.cluster import Cluster


def _options(path, max_model_len: int):
    resolved = resolve_model(str(path))
    return resolved, allocate_options(
        CoordinatorConfig(model=str(path), max_model_len=max_model_len), resolved
    )


def test_planner_kv_reserve_follows_max_model_len(smollm2_path):
    resolved, default = _options(smollm2_path, 0)
    assert default.context_tokens == resolved.spec.max_position_embeddings == 8192
    _, short = _options(smollm2_path, 4096)
    assert short.context_tokens == short.reserve_tokens == 4096
    # A layer's planned bytes: its weights plus one full context of KV.
    wide, narrow = MemoryModel.of(resolved.spec, default), MemoryModel.of(resolved.spec, short)
    per_token = narrow.kv_bytes_per_token
    assert wide.layer_bytes - narrow.layer_bytes == pytest.approx(per_token * (8192 - 4096))


def test_longer_than_the_model_is_refused_with_the_flag_to_fix(smollm2_path):
    with pytest.raises(ConfigError, match="--max-model-len=9000.*at most 8192"):
        _options(smollm2_path, 9000)
    with pytest.raises(ConfigError, match="--max-model-len=-1"):
        CoordinatorConfig(max_model_len=-1)


def test_gateway_reports_and_enforces_max_model_len(tiny_models):
    model = str(tiny_models["llama"])  # 512 positions
    with Cluster(
        model, nodes=1, min_stages=1, coordinator_args=("--max-model-len", "128")
    ) as cluster:
        card = httpx.get(f"{cluster.http_url}/v1/models", timeout=5).json()["data"][0]
        assert card["max_model_len"] == card["context_length"] == 128
        client = openai.OpenAI(base_url=f"{cluster.http_url}/v1", api_key="x", max_retries=0)
        prompt = "one two three four"
        with pytest.raises(openai.BadRequestError) as err:
            client.completions.create(model=model, prompt=prompt, max_tokens=128)
        assert err.value.body["code"] == "context_length_exceeded"
        assert "128 tokens" in err.value.body["message"]
        used = client.completions.create(model=model, prompt=prompt, max_tokens=1).usage
        room = 128 - used.prompt_tokens  # exactly the limit is accepted
        out = client.completions.create(model=model, prompt=prompt, max_tokens=room)
        assert out.usage.prompt_tokens + out.usage.completion_tokens <= 128
