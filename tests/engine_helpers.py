"""Kept only for tests/test_engine_batching.py and tests/test_engine_parity.py, whose
owner moves their imports to tests.support.engine; delete this file then."""

from tests.support.engine import greedy_pipeline, local_engine, shard_runners

__all__ = ["greedy_pipeline", "local_engine", "shard_runners"]
