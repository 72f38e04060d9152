"""Wire limits every side agrees on (torch-free, so configs can check against them)."""

# Most hidden-state rows one Forward carries, whatever either side's step budget: a
# protocol constant, so a node never sends a message its peer's own settings refuse
# (senders split larger steps; `--max-batch-tokens` may not exceed it).
MAX_FORWARD_ROWS = 4096
