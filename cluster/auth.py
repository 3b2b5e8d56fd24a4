"""API-key authentication: who is calling, what they may ask for, which trees they may read."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from cluster.api import ApiError
from cluster.config import AuthConfig
from cluster.types import Effort

ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: str
    max_effort: Effort
    is_ops: bool = False

    def may_read(self, owner: str) -> bool:
        return self.is_ops or owner == self.tenant


def authenticate(authorization: str | None, config: AuthConfig) -> Caller:
    """Map a `Bearer <key>` header to a caller; open mode when no tenants are configured."""
    if not config.tenants and not config.ops_api_keys:
        return Caller(ANONYMOUS, Effort.XHIGH)
    key = _bearer_key(authorization)
    for ops_key in config.ops_api_keys:
        if hmac.compare_digest(key, ops_key):
            return Caller("ops", Effort.XHIGH, is_ops=True)
    for name, tenant in config.tenants.items():
        if hmac.compare_digest(key, tenant.api_key):
            return Caller(name, tenant.max_effort)
    raise ApiError(
        401, "the API key is not valid for this service", type="authentication_error", code="invalid_api_key"
    )


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
