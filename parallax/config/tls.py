"""TLS flags shared by `parallax run` and `parallax join`: none given = plain gRPC."""

from __future__ import annotations

from typing import Any

from parallax.config.base import opt
from parallax.rpc.tls import Tls


def tls_cert_opt() -> Any:
    return opt(
        "",
        help="PEM certificate of this process, signed by the cluster CA; with --tls-key and "
        "--tls-ca every gRPC link uses mutual TLS",
        env="PARALLAX_TLS_CERT",
    )


def tls_key_opt() -> Any:
    return opt("", help="PEM private key of --tls-cert", env="PARALLAX_TLS_KEY")


def tls_ca_opt() -> Any:
    return opt(
        "",
        help="PEM certificate of the cluster CA; peers must be signed by it",
        env="PARALLAX_TLS_CA",
    )


def load_tls(config: Any) -> Tls | None:
    """Read a config's TLS files (ConfigError naming the flag when one is missing or
    unreadable)."""
    return Tls.from_files(config.tls_cert, config.tls_key, config.tls_ca)
