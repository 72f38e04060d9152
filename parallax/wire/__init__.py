"""Wire encoding of tensors (`codec`: raw bytes plus dtype and shape, validated on
decode) and the limits every side agrees on (`limits`, torch-free)."""
