"""Prefix-cache probing across tenants, on the real engine: a tenant's cached-token count says
nothing about another tenant's prompts, because each tenant's calls carry its own `cache_salt`.

Without salts the probe works (the engine reports the victim's blocks as cached), which is what
the salt must prevent; with them the attacker sees no cached token at all, not even for the
system prompt both share (salted blocks are never shared between tenants).
"""

from __future__ import annotations

import uuid

import pytest
from ray import serve

from cluster.auth import cache_salt
from cluster.local import APP_NAME, LocalCluster
from cluster.types import GenerationRequest, GenerationResult

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# The CPU build's KV-cache block: prefix-cache hits count whole blocks only.
BLOCK_TOKENS = 128


def _generate(prompt: str, tenant: str | None) -> GenerationResult:
    handle = serve.get_deployment_handle("BranchGenerator", app_name=APP_NAME)
    request = GenerationRequest(
        prompt=prompt,
        n=1,
        max_tokens=1,
        temperature=0.0,
        # One replica for every call: the probe is about the cache, not routing.
        affinity_key="probe",
        cache_salt=cache_salt(tenant) if tenant is not None else None,
    )
    result: GenerationResult = handle.generate.remote(request).result(timeout_s=120)
    return result


def _victim_prompt() -> str:
    # Several blocks long and new to the engine: the secret is in the first block.
    secret = f"Account {uuid.uuid4().hex} owes 4,210 dollars."
    return secret + " " + " ".join(f"Line {i}: the ledger of branch {i % 5} is balanced." for i in range(40))


def test_unsalted_calls_reveal_a_cached_prompt(cluster: LocalCluster) -> None:
    prompt = _victim_prompt()
    victim = _generate(prompt, None)
    probe = _generate(prompt, None)
    assert victim.prompt_tokens >= 2 * BLOCK_TOKENS
    assert probe.cached_tokens >= BLOCK_TOKENS  # what an attacker could read without salts


def test_another_tenants_probe_sees_no_cached_token(cluster: LocalCluster) -> None:
    prompt = _victim_prompt()
    victim = _generate(prompt, "acme")
    assert victim.prompt_tokens >= 2 * BLOCK_TOKENS
    probe = _generate(prompt, "beta")
    assert probe.cached_tokens == 0
    # The victim's own next call is still served from the cache: salts cost no reuse within a tenant.
    again = _generate(prompt, "acme")
    assert BLOCK_TOKENS <= again.cached_tokens < again.prompt_tokens
