"""The OpenAI-compatible HTTP gateway. Never imports torch or `node/`."""
