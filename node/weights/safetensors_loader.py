"""Read only a shard's tensors from a Hugging Face safetensors checkpoint."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from tqdm import tqdm

from parallax.errors import ModelFormatError


def tensor_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> file holding it, from the index when sharded."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ModelFormatError(f"{index} is not a valid safetensors index: {e}") from e
        return {name: folder / f for name, f in weight_map.items()}
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelFormatError(f"{folder} has no *.safetensors files")
    out: dict[str, Path] = {}
    for f in files:
        try:
            with safe_open(f, framework="pt") as h:
                out.update(dict.fromkeys(h.keys(), f))
        except (SafetensorError, OSError) as e:
            raise ModelFormatError(f"{f} is not a readable safetensors file: {e}") from e
    return out


def load_safetensors(
    folder: Path,
    wanted: Callable[[str], bool],
    dtype: torch.dtype,
    progress: bool = True,
    convert: Callable[[str, torch.Tensor], Any] | None = None,
) -> dict[str, Any]:
    """`convert(name, tensor)` replaces the cast to `dtype` (quantization at load)."""
    where = {n: f for n, f in tensor_files(folder).items() if wanted(n)}
    by_file: dict[Path, list[str]] = {}
    for name, f in where.items():
        by_file.setdefault(f, []).append(name)
    out: dict[str, torch.Tensor] = {}
    bar = tqdm(total=len(where), desc="loading weights", unit="tensor", disable=not progress)
    for f, names in sorted(by_file.items()):
        try:
            with safe_open(f, framework="pt") as h:
                for name in sorted(names):
                    t = h.get_tensor(name)
                    out[name] = convert(name, t) if convert else t.to(dtype)
                    bar.update(1)
        except (SafetensorError, OSError) as e:
            raise ModelFormatError(f"cannot read {f}: {e}") from e
    bar.close()
    return out
