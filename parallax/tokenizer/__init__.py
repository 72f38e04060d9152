"""Tokenizers and chat templates for GGUF files and Hugging Face folders (torch-free:
the gateway uses this)."""

from parallax.tokenizer.chat import ChatTemplate
from parallax.tokenizer.detok import IncrementalDetokenizer
from parallax.tokenizer.tokenizer import Tokenizer

__all__ = ["ChatTemplate", "IncrementalDetokenizer", "Tokenizer"]
