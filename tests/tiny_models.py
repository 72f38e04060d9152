"""Kept only for tests/test_engine_parity.py, whose owner moves its import to
tests.support.tiny_models; delete this file then."""

from tests.support.tiny_models import load_reference, make_tiny_model

__all__ = ["load_reference", "make_tiny_model"]
