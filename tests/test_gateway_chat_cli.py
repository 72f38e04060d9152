"""`parallax chat` against a live gateway (scripted backend), through its real loop."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from coordinator.chat_cli import chat_loop
from parallax.config.chat import ChatConfig
from parallax.errors import ConfigError
from tests.support.gateway import MODEL_ID, SCRIPT_TEXT, running_gateway


def _user_turns(tokenizer, prompt_ids) -> str:
    return tokenizer.decode(prompt_ids, skip_special_tokens=False)


def test_history_reset_and_quit(tokenizer):
    with running_gateway(tokenizer, api_keys=("sekret",)) as gw:
        config = ChatConfig(
            url=gw.base_url + "/v1", api_key="sekret", system="Be terse.", max_tokens=64
        )
        out = io.StringIO()
        lines = iter(["first question", "second question", "/reset", "third", "/quit", "never"])
        assert chat_loop(config, lines, out) == 0
        text = out.getvalue()
        assert text.count(SCRIPT_TEXT) == 3
        assert MODEL_ID in text
        first, second, third = (_user_turns(tokenizer, r.prompt_ids) for r in gw.backend.requests)
        assert "Be terse." in first and "first question" in first
        # The second turn carries the first question and its answer.
        assert "first question" in second and SCRIPT_TEXT in second
        assert "first question" not in third and "Be terse." in third
        sampling = gw.backend.requests[0].sampling
        assert (sampling.temperature, sampling.max_tokens) == (0.7, 64)


def test_unreachable_server_is_a_clear_error():
    out = io.StringIO()
    config = ChatConfig(url="http://127.0.0.1:9/v1")
    assert chat_loop(config, iter([]), out) == 1
    assert "cannot reach" in out.getvalue()


def test_config_is_validated():
    with pytest.raises(ConfigError, match="--url"):
        ChatConfig(url="localhost:8000")


def test_chat_command_does_not_import_torch():
    code = (
        "import sys; from parallax.cli import load_command; load_command('chat');"
        "import coordinator.gateway.app;"
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
