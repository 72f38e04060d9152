"""One frozen, validated config object per process; the CLI is generated from them."""

from parallax.config.base import ConfigBase, opt

__all__ = ["ConfigBase", "opt"]
