"""A small model for cluster files the planner reads (`parallax plan`)."""

SMALL_MODEL = {
    "num_layers": 8,
    "hidden_size": 512,
    "intermediate_size": 1024,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "vocab_size": 1000,
    "dtype_bytes": 2,
}
