"""Route grants: what the gateway lets one request do, and proof of who sends what.

- The gateway signs a `RouteGrant` per request (and per replay) with the coordinator's
  Ed25519 key: request id, hops, reply_to, sampling parameters, expiry. Nodes get the
  public key at join and take a request (Submit, or a Forward's first chunk) only with a
  valid grant that names them; every later message for it (Forward chunks, PushTokens,
  Release) carries the grant's signature, compared with the one the node holds.
- A node MACs each event it Delivers under a key derived from its own node secret and
  the request id, so the gateway knows which node sent it (the coordinator holds every
  node's secret) and takes tokens only from the request's last hop.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from parallax.errors import PermissionDenied
from parallax.rpc import parallax_pb2 as pb

GRANT_TTL_S = 600.0  # a request must reach its hops within this; it may run longer
DELIVER_LABEL = b"parallax-deliver-v1"


def sampling_digest(sampling: pb.SamplingParams) -> bytes:
    return hashlib.sha256(sampling.SerializeToString(deterministic=True)).digest()


class RouteSigner:
    """The coordinator's signing key (kept in --state-dir when given, so nodes need no
    new key after a restart)."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_key = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> RouteSigner:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> RouteSigner:
        if path.is_file():
            return cls(Ed25519PrivateKey.from_private_bytes(path.read_bytes()))
        signer = cls.generate()
        raw = signer._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        path.touch(mode=0o600)
        path.write_bytes(raw)
        return signer

    def sign(self, submit: pb.SubmitRequest, now: float | None = None) -> pb.Capability:
        """The capability for `submit` as it stands (set its route, reply_to and
        sampling first)."""
        grant = pb.RouteGrant(
            request_id=submit.request_id,
            hops=submit.route.hops,
            reply_to=submit.reply_to,
            sampling_sha256=sampling_digest(submit.sampling),
            expires_at=(time.time() if now is None else now) + GRANT_TTL_S,
        )
        body = grant.SerializeToString(deterministic=True)
        return pb.Capability(grant=body, signature=self._key.sign(body))


class RouteVerifier:
    """A node's check of the grants it is shown, under the coordinator's public key."""

    def __init__(self, public_key: bytes) -> None:
        try:
            self._key = Ed25519PublicKey.from_public_bytes(public_key)
        except ValueError:
            raise PermissionDenied("the coordinator's route key is not an Ed25519 key") from None

    def verify(self, submit: pb.SubmitRequest, now: float | None = None) -> None:
        """Raise PermissionDenied unless `submit` carries a valid, unexpired grant for
        exactly this request, route, reply_to and sampling."""
        cap = submit.capability
        if not cap.signature:
            raise PermissionDenied(f"request {submit.request_id}: no route grant")
        try:
            self._key.verify(cap.signature, cap.grant)
        except InvalidSignature:
            raise PermissionDenied(f"request {submit.request_id}: bad grant signature") from None
        grant = pb.RouteGrant.FromString(cap.grant)
        same = (
            grant.request_id == submit.request_id
            and list(grant.hops) == list(submit.route.hops)
            and grant.reply_to == submit.reply_to
            and grant.sampling_sha256 == sampling_digest(submit.sampling)
        )
        if not same:
            raise PermissionDenied(f"request {submit.request_id}: the grant is for another request")
        if grant.expires_at < (time.time() if now is None else now):
            raise PermissionDenied(f"request {submit.request_id}: the grant expired")


def same_signature(held: bytes, shown: bytes) -> bool:
    return bool(held) and hmac.compare_digest(held, shown)


def _event_key(node_secret: bytes, request_id: str) -> bytes:
    return hmac.new(node_secret, DELIVER_LABEL + request_id.encode(), hashlib.sha256).digest()


def event_mac(node_secret: bytes, event: pb.TokenEvent) -> bytes:
    bare = pb.TokenEvent()
    bare.CopyFrom(event)
    bare.ClearField("mac")
    body = bare.SerializeToString(deterministic=True)
    return hmac.new(_event_key(node_secret, event.request_id), body, hashlib.sha256).digest()


def event_mac_ok(node_secret: bytes, event: pb.TokenEvent) -> bool:
    return bool(node_secret) and hmac.compare_digest(event_mac(node_secret, event), event.mac)
