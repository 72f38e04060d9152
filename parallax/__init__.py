"""Parallax: decentralized peer-to-peer LLM inference.

`parallax/` holds what every side shares: the CLI, config, model specs, the wire
codec and the generated gRPC stubs. It never imports `node/` or `coordinator/`.
"""

__version__ = "0.1.0"
