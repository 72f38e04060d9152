"""Tiny random checkpoints in Hugging Face layout, generated on the fly for tests."""

from __future__ import annotations

from pathlib import Path

import torch

FAMILIES = ("llama", "qwen2", "qwen3", "mistral")
VOCAB = 260  # 256 byte-level symbols + 3 special tokens + 1 spare
EOS_ID = 258  # <|im_end|>
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def save_tiny_tokenizer(path: Path) -> None:
    """A byte-level tokenizer (no merges) with ChatML special tokens."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "chat_template": CHAT_TEMPLATE,
                "eos_token": "<|im_end|>",
                "bos_token": None,
                "model_max_length": 512,
            }
        )
    )


def hf_config(family: str, num_layers: int = 4, **overrides):
    import transformers as tf

    common = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=EOS_ID,
    )
    common.update(overrides)
    if family == "llama":
        common.setdefault(
            "rope_scaling",
            {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        )
        return tf.LlamaConfig(**common)
    if family == "qwen2":
        return tf.Qwen2Config(**common)
    if family == "qwen3":
        return tf.Qwen3Config(head_dim=16, **common)
    if family == "mistral":
        common.setdefault("sliding_window", None)
        return tf.MistralConfig(**common)
    raise ValueError(family)


def make_tiny_model(path: Path, family: str = "llama", seed: int = 0, **overrides) -> Path:
    """Save a random model of `family` to `path`; returns the folder."""
    import transformers as tf

    torch.manual_seed(seed)
    cfg = hf_config(family, **overrides)
    model = tf.AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.float32)
    with torch.no_grad():
        # Larger weights than the default init make logits well separated, so greedy
        # comparisons are not decided by float noise.
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.1)
            elif "bias" in name:
                p.normal_(0.0, 0.05)
    model.save_pretrained(path, safe_serialization=True)
    save_tiny_tokenizer(path)
    return path


def load_reference(path: Path):
    import transformers as tf

    return tf.AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
