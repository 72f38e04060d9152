"""Proofs on the control plane: the join token's challenge answer, and node identity.

Both are HMAC-SHA256 over a domain label and the request, so a proof made for one
call cannot be used for another, and neither the join token nor a node's secret
ever travels in a request (docs/SECURITY.md says why HMAC and not the bare secret).

A request is bound through its deterministic serialization with the proof field
cleared: both ends use the same protobuf runtime, and any change a man in the
middle makes to the request fails the check.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from google.protobuf.message import Message

NONCE_BYTES = 32
SECRET_BYTES = 32
JOIN_LABEL = b"parallax-join-v1"
NODE_LABEL = b"parallax-node-v1"


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def new_node_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def _body(request: Message, proof_fields: tuple[str, ...]) -> bytes:
    """The request's bytes without its proofs (a copy: the caller's message is kept)."""
    bare = type(request)()
    bare.CopyFrom(request)
    for name in proof_fields:
        bare.ClearField(name)
    return bare.SerializeToString(deterministic=True)


def _frame(*parts: bytes) -> bytes:
    # Length-prefixed, so no two different part lists give the same bytes.
    return b"".join(len(p).to_bytes(8, "big") + p for p in parts)


def join_proof(token: str, nonce: bytes, request: Message) -> bytes:
    """The answer to a join challenge: proves the token without sending it."""
    body = _body(request, ("token_proof",))
    return hmac.new(token.encode(), _frame(JOIN_LABEL, nonce, body), hashlib.sha256).digest()


def join_proof_ok(token: str, nonce: bytes, request: Message, proof: bytes) -> bool:
    return hmac.compare_digest(join_proof(token, nonce, request), proof)


def node_mac(
    secret: bytes,
    method: str,
    node_id: str,
    counter: int,
    request: Message,
    proof_fields: tuple[str, ...],
) -> bytes:
    """A node's proof of one call: `method` is the RPC name, `counter` grows per call;
    `proof_fields` are left out of what is signed (the proof itself, the token's)."""
    body = _body(request, proof_fields)
    msg = _frame(NODE_LABEL, method.encode(), node_id.encode(), str(counter).encode(), body)
    return hmac.new(secret, msg, hashlib.sha256).digest()


def node_mac_ok(
    secret: bytes,
    method: str,
    node_id: str,
    counter: int,
    request: Message,
    proof_fields: tuple[str, ...],
    mac: bytes,
) -> bool:
    expected = node_mac(secret, method, node_id, counter, request, proof_fields)
    return hmac.compare_digest(expected, mac)
