"""Client SDK: ask the cluster a question and follow its progress, over plain HTTP.

The chat call goes through the official `openai` client unchanged; the extension fields
(`reasoning`, trees, progress events) are read from the same responses.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import httpx
from openai import OpenAI
from openai.types.shared import ReasoningEffort

LOCAL_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True, slots=True)
class ReasoningAnswer:
    answer: str
    summary: str
    tree_id: str
    effort: str
    strategy: str
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cached_tokens: int
    branches: int
    elapsed_s: float
    # `reasoning.status`: complete, or incomplete when a deadline, the budget or an engine
    # failure stopped the search early (`incomplete_reason`) and this is its best answer.
    status: str = "complete"
    incomplete_reason: str | None = None
    # A program verified the answer (not a model's opinion).
    verified: bool = False


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    event_id: str
    kind: str
    data: dict[str, Any]


class ReasoningClient:
    def __init__(self, url: str = LOCAL_URL, api_key: str = "local", timeout_s: float = 600.0) -> None:
        self._url = url.rstrip("/")
        self._api_key = api_key
        self._openai = OpenAI(base_url=f"{self._url}/v1", api_key=api_key, timeout=timeout_s, max_retries=0)
        self._http = httpx.Client(
            base_url=self._url, timeout=30.0, headers={"Authorization": f"Bearer {api_key}"}
        )

    @staticmethod
    def new_request_id() -> str:
        return uuid.uuid4().hex

    def ask(
        self,
        question: str,
        effort: str = "medium",
        *,
        task: str = "general",
        request_id: str | None = None,
        max_completion_tokens: int | None = None,
        strategy: str | None = None,
    ) -> ReasoningAnswer:
        """`strategy` replaces the effort's own search strategy, within the effort's budget."""
        started = time.monotonic()
        response = self._openai.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": question}],
            reasoning_effort=cast(ReasoningEffort, effort),
            max_completion_tokens=max_completion_tokens,
            extra_body={"task": task, "strategy": strategy},
            extra_headers={"X-Request-Id": request_id or self.new_request_id()},
        )
        reasoning = (response.model_extra or {})["reasoning"]
        usage = response.usage
        assert usage is not None
        return ReasoningAnswer(
            answer=response.choices[0].message.content or "",
            summary=reasoning["summary"],
            tree_id=reasoning["tree_id"],
            effort=reasoning["effort"],
            strategy=reasoning["strategy"],
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            reasoning_tokens=_detail(usage.completion_tokens_details, "reasoning_tokens"),
            cached_tokens=_detail(usage.prompt_tokens_details, "cached_tokens"),
            branches=reasoning["branches"],
            elapsed_s=time.monotonic() - started,
            status=reasoning["status"],
            incomplete_reason=reasoning["incomplete_reason"],
            verified=reasoning["verified"],
        )

    def served_model(self) -> str:
        """The name of the model the cluster serves (`root` of GET /v1/models)."""
        return str(self._get("/v1/models")["data"][0]["root"])

    def tree(self, tree_id: str) -> dict[str, Any]:
        return self._get(f"/v1/trees/{tree_id}")

    def events(self, tree_id: str, after: str = "0") -> tuple[str | None, list[ProgressEvent]]:
        """Progress events after `after`; (None, []) while the tree does not exist yet."""
        response = self._http.get(f"/v1/trees/{tree_id}/events", params={"after": after})
        if response.status_code == 404:
            return None, []
        response.raise_for_status()
        body = response.json()
        events = [ProgressEvent(e["id"], e["kind"], e["data"]) for e in body["events"]]
        return body["status"], events

    def follow(self, tree_id: str) -> Iterator[ProgressEvent]:
        """Yield progress events until the tree is no longer running."""
        after = "0"
        while True:
            status, events = self.events(tree_id, after)
            yield from events
            if events:
                after = events[-1].event_id
            if status not in (None, "running"):
                return
            if status is None:
                time.sleep(0.2)

    def health(self) -> dict[str, Any]:
        response = self._http.get("/healthz")
        return response.json()

    def _get(self, path: str) -> dict[str, Any]:
        response = self._http.get(path)
        response.raise_for_status()
        return response.json()

    def close(self) -> None:
        self._http.close()
        self._openai.close()


def _detail(details: object, name: str) -> int:
    value = getattr(details, name, None) if details is not None else None
    return int(value or 0)
