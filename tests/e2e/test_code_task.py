"""The code task family end to end: a HumanEval-style request on the real engine, its answer
checked by running the request's own examples in the sandbox inside the verifier replica."""

from __future__ import annotations

import httpx
import pytest

from cluster.local import LocalCluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REQUEST = '''def add(a: int, b: int) -> int:
    """Return the sum of a and b.

    >>> add(2, 3)
    5
    >>> add(-1, 1)
    0
    """
'''


def test_a_code_request_is_answered_and_its_examples_run(cluster: LocalCluster) -> None:
    body = {
        "model": "default",
        "messages": [{"role": "user", "content": REQUEST}],
        "reasoning_effort": "low",
        "task": "code",
        "max_completion_tokens": 160,
    }
    response = httpx.post(f"{cluster.url}/v1/chat/completions", json=body, timeout=300)
    assert response.status_code == 200, response.text
    reasoning = response.json()["reasoning"]
    tree = httpx.get(f"{cluster.url}/v1/trees/{reasoning['tree_id']}", timeout=10).json()
    (chain,) = [node for node in tree["nodes"] if node["parent_id"] is not None]
    # The verifier ran the two visible examples against whatever the model wrote.
    assert "code_tests" in chain["verdicts"], chain["verdicts"]
    assert "of 2 examples from the request pass" in chain["verdicts"]["code_tests"]
    # Passing visible examples never makes an answer verified: they are not the hidden tests.
    assert reasoning["verified"] is False
