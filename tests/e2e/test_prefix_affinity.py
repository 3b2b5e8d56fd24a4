"""Prefix-cache affinity on the real engine: a tree's second call is served from the prefix cache.

The call goes through the branch-generator's handle, so the affinity router picks the replica
and vLLM reports the cached prompt tokens (usage.prompt_tokens_details.cached_tokens).
"""

from __future__ import annotations

import uuid

import pytest
from ray import serve

from cluster.local import APP_NAME, LocalCluster
from cluster.types import GenerationRequest, GenerationResult

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# The CPU build's KV-cache block: prefix-cache hits count whole blocks only.
BLOCK_TOKENS = 128


def _generate(request: GenerationRequest) -> GenerationResult:
    handle = serve.get_deployment_handle("BranchGenerator", app_name=APP_NAME)
    result: GenerationResult = handle.generate.remote(request).result(timeout_s=120)
    return result


def test_second_call_of_a_tree_reuses_the_cached_prefix(cluster: LocalCluster) -> None:
    tree_id = uuid.uuid4().hex
    # Several blocks long, and new to the engine: it starts with the tree id.
    prompt = f"Tree {tree_id}. " + " ".join(f"Step {i}: put {i} apples in basket {i % 7}." for i in range(40))
    request = GenerationRequest(prompt=prompt, n=1, max_tokens=1, temperature=0.0, affinity_key=tree_id)
    first = _generate(request)
    second = _generate(request)
    assert first.prompt_tokens >= 2 * BLOCK_TOKENS
    assert first.cached_tokens == 0
    assert second.replica == first.replica
    assert BLOCK_TOKENS <= second.cached_tokens < second.prompt_tokens
