"""Spot-check prompts: many and varied by default, or a private file per cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.verify.verifier import PROMPTS, read_prompts, tokenize_prompts
from parallax.errors import ConfigError
from parallax.models.registry import resolve_model
from parallax.tokenizer import Tokenizer


def test_the_built_in_prompts_are_many_and_distinct():
    assert len(PROMPTS) >= 100 and len(set(PROMPTS)) == len(PROMPTS)


def test_a_private_prompt_file_is_read_one_per_line(tmp_path: Path):
    f = tmp_path / "checks.txt"
    f.write_text("What is a lemon?\n\n  Name a bird.  \n", encoding="utf-8")
    assert read_prompts(str(f)) == ("What is a lemon?", "Name a bird.")


@pytest.mark.parametrize("content", [None, "", "\n  \n"])
def test_a_missing_or_empty_prompt_file_says_so(tmp_path: Path, content: str | None):
    f = tmp_path / "checks.txt"
    if content is not None:
        f.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match="--verify-prompts"):
        read_prompts(str(f))


def test_every_built_in_prompt_tokenizes_for_the_default_model():
    tok = Tokenizer.from_model(resolve_model("smollm2-135m"))
    ids = tokenize_prompts(tok, PROMPTS)
    assert len(ids) == len(PROMPTS) and len(set(ids)) == len(PROMPTS)
