"""API-key authentication: who is calling, what they may ask for, which trees they may read.

The config holds no API key, only each key's SHA-256 (`reasoning-cluster auth hash-key`
prints it): a presented key is hashed and compared with every stored hash in constant time.
Tenants own the trees they create; ops identities may read every tree, and each has its
own name, so the audit log says who read what.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from cluster.api import ApiError
from cluster.config import ANONYMOUS, AuthConfig
from cluster.types import Effort

OPS_PREFIX = "ops:"
# Bytes of randomness in a key made by `reasoning-cluster auth hash-key`.
NEW_KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class Caller:
    # The owner recorded on trees this caller creates: a tenant name, or "ops:<name>".
    tenant: str
    max_effort: Effort
    is_ops: bool = False

    def may_read(self, owner: str) -> bool:
        return self.is_ops or owner == self.tenant


def hash_key(key: str) -> str:
    """What the config stores for `key` (its `api_key_sha256`)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh API key with 256 bits of randomness."""
    return "rc-" + secrets.token_urlsafe(NEW_KEY_BYTES)


def authenticate(authorization: str | None, config: AuthConfig) -> Caller:
    """Map a `Bearer <key>` header to a caller; open mode when no tenants are configured."""
    if config.is_open:
        return Caller(ANONYMOUS, Effort.XHIGH)
    digest = hash_key(_bearer_key(authorization)).encode()
    found: Caller | None = None
    # Every stored hash is compared, so the time taken says nothing about which one matched.
    for name, ops in config.ops.items():
        if hmac.compare_digest(digest, ops.api_key_sha256.get_secret_value().encode()):
            found = Caller(OPS_PREFIX + name, Effort.XHIGH, is_ops=True)
    for name, tenant in config.tenants.items():
        if hmac.compare_digest(digest, tenant.api_key_sha256.get_secret_value().encode()):
            found = Caller(name, tenant.max_effort)
    if found is None:
        message = "the API key is not valid for this service"
        raise ApiError(401, message, type="authentication_error", code="invalid_api_key")
    return found


def _bearer_key(authorization: str | None) -> str:
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            401,
            "send an API key as 'Authorization: Bearer <key>'",
            type="authentication_error",
            code="missing_api_key",
        )
    return key.strip()


def scoped_tree_id(tenant: str, request_id: str) -> str:
    """The tree id of a client-chosen `X-Request-Id`: one namespace of ids per tenant.

    Two tenants sending the same request id get different trees, so an id tells nobody
    whether another tenant used it, and nobody can take an id away from another tenant.
    """
    return hashlib.sha256(f"tree\0{tenant}\0{request_id}".encode()).hexdigest()[:32]


def cache_salt(tenant: str) -> str:
    """vLLM's `cache_salt` for a tenant's engine calls: prefix-cache blocks are never shared
    between tenants, so cached-token counts cannot reveal another tenant's prompts."""
    return hashlib.sha256(f"cache\0{tenant}".encode()).hexdigest()[:32]
