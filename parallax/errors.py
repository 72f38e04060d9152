"""Typed errors. Each message says what went wrong and how to fix it."""

from __future__ import annotations


class ParallaxError(Exception):
    """Base of every error Parallax raises on purpose."""


class InvalidArgument(ParallaxError, ValueError):
    """Input was malformed: maps to HTTP 400 and gRPC INVALID_ARGUMENT."""


class ConfigError(InvalidArgument):
    """A config field or CLI flag is invalid."""


class ModelNotFound(ParallaxError, FileNotFoundError):
    """A model name or path could not be resolved."""


class ModelFormatError(ParallaxError, ValueError):
    """A model file exists but cannot be read (corrupt, unsupported architecture...)."""


class ContextOverflow(InvalidArgument):
    """A prompt plus its requested output does not fit the model's context."""


class CapacityError(ParallaxError):
    """Not enough KV cache or nodes right now; retrying later may succeed."""


class Overloaded(CapacityError):
    """A node's queues are full (gRPC RESOURCE_EXHAUSTED): retry later or elsewhere."""


class PermissionDenied(ParallaxError):
    """A call that does not prove it may act for the request it names (gRPC
    PERMISSION_DENIED): no valid route grant, or not the hop the grant names."""


class StaleRoute(ParallaxError):
    """A route names layers its node no longer serves (gRPC FAILED_PRECONDITION): the
    node was reassigned since the route was chosen, so route the request again."""


class NotCovered(ParallaxError):
    """The cluster's nodes do not cover every layer of the model yet."""
