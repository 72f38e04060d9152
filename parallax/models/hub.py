"""Hugging Face repo ids (`owner/name`) as models: files come from the hub's cache.

`huggingface_hub` (installed with `tokenizers`) downloads into its own cache
(`HF_HUB_CACHE`, default ~/.cache/huggingface/hub) and finds files there again.
With `HF_HUB_OFFLINE=1` it never touches the network: a repo must already be in the
cache. Only what the engine reads is fetched (`allow_patterns`): configs, the
tokenizer, safetensors weights; never other formats a repo may also carry.
Torch-free: the coordinator resolves repo ids too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from parallax.errors import ModelNotFound

# owner/name, as the hub spells them: letters, digits, '-', '_' and '.'.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
# What `parallax.models.registry` and the loaders read from a Hugging Face folder.
MODEL_PATTERNS = ("*.json", "tokenizer.model", "*.safetensors")
SMALL_PATTERNS = ("*.json", "tokenizer.model")  # everything but the weights


def looks_like_repo_id(name: str) -> bool:
    return bool(_REPO_ID.match(name)) and not name.lower().endswith(
        (".gguf", ".json", ".safetensors")
    )


def hub_offline() -> bool:
    """HF_HUB_OFFLINE, read at each call (the hub library reads it once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_snapshot(repo_id: str, allow_patterns: Sequence[str] = MODEL_PATTERNS) -> Path:
    """The local folder of `repo_id`'s files matching `allow_patterns`, downloaded into
    the hub's cache unless there already (or HF_HUB_OFFLINE is set)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - tokenizers depends on it
        raise ModelNotFound(
            f"{repo_id!r} looks like a Hugging Face repo id, but huggingface_hub is not "
            "installed: pip install huggingface_hub, or pass a local path"
        ) from e
    offline = hub_offline()
    try:
        folder = snapshot_download(
            repo_id,
            allow_patterns=list(allow_patterns),
            local_files_only=offline,
            # Like HF_HUB_OFFLINE, read now: the library reads its variables at import.
            cache_dir=os.environ.get("HF_HUB_CACHE") or None,
        )
    except Exception as e:  # the hub raises many kinds (HTTP, offline cache miss, auth)
        how = (
            "it is not in the hub cache and HF_HUB_OFFLINE is set: download it once where "
            "the hub is reachable (`hf download " + repo_id + "`), or unset HF_HUB_OFFLINE"
            if offline
            else "check the repo id, the network and HF_TOKEN for gated repos"
        )
        raise ModelNotFound(
            f"Hugging Face repo {repo_id!r} could not be fetched ({type(e).__name__}: {e}); "
            f"{how}; or pass a local path"
        ) from None
    return Path(folder)
