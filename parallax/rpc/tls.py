"""Mutual TLS on every gRPC link: node to node, node to coordinator, gateway to node.

One cluster CA signs a certificate for every process. Each side presents its own and
accepts only peers signed by that CA, so a host without a cluster certificate can
neither join nor inject hidden states into a node, and nobody on the path can read them.

Volunteers come and go on addresses nobody knows in advance, so certificates are not
bound to host names: every certificate carries the one DNS name `CLUSTER_NAME`, and a
channel checks the peer against that name instead of the address it dials. Membership
is proven by the CA's signature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import grpc

from parallax.errors import ConfigError

CLUSTER_NAME = "parallax-cluster"
_PEM = b"-----BEGIN "


@dataclass(frozen=True)
class Tls:
    """PEM bytes of this process's certificate chain and key, and the cluster CA."""

    cert_chain: bytes = field(repr=False)
    private_key: bytes = field(repr=False)
    root_certificates: bytes = field(repr=False)

    @classmethod
    def from_files(cls, cert: str, key: str, ca: str) -> Tls | None:
        """None when no file is given (plain gRPC); ConfigError naming the flag when only
        some are given or one cannot be read."""
        given = {"--tls-cert": cert, "--tls-key": key, "--tls-ca": ca}
        if not any(given.values()):
            return None
        missing = [flag for flag, path in given.items() if not path]
        if missing:
            raise ConfigError(
                f"TLS needs --tls-cert, --tls-key and --tls-ca together; missing "
                f"{', '.join(missing)} (deploy/README.md shows how to make them)"
            )
        pems = [_read_pem(flag, path) for flag, path in given.items()]
        return cls(*pems)

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.root_certificates,
            require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.cert_chain,
        )


def _read_pem(flag: str, path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{flag}={path!r}: cannot read it ({e.strerror})") from None
    if _PEM not in data:
        raise ConfigError(f"{flag}={path!r}: not a PEM file (expected '-----BEGIN ...')")
    return data


def open_channel(address: str, tls: Tls | None, options: tuple = ()) -> grpc.aio.Channel:
    """An asyncio channel to `address`: plain, or mutual TLS checked against the CA."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(
        address,
        tls.channel_credentials(),
        options=(*options, ("grpc.ssl_target_name_override", CLUSTER_NAME)),
    )


def add_port(server: grpc.aio.Server, target: str, tls: Tls | None) -> int:
    """Bind `target` (plain or TLS); the bound port, 0 when it could not bind."""
    if tls is None:
        return server.add_insecure_port(target)
    return server.add_secure_port(target, tls.server_credentials())
