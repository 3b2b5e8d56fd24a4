"""Runs the configured verifiers over a batch of candidates: programs first, judges last."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from cluster.types import Candidate, Problem, Verdict, VerifyRequest, VerifyResult
from cluster.verifiers.base import Verifier


class VerificationService:
    def __init__(self, verifiers: Mapping[str, Verifier]) -> None:
        self._verifiers = dict(verifiers)

    async def verify(self, request: VerifyRequest) -> VerifyResult:
        chain = [self._get(name) for name in request.verifiers]
        verdicts = await asyncio.gather(*(self._judge(request.problem, c, chain) for c in request.candidates))
        return VerifyResult(tuple(verdicts))

    def _get(self, name: str) -> Verifier:
        try:
            return self._verifiers[name]
        except KeyError:
            raise ValueError(
                f"verifier {name!r} is not deployed; deployed: {sorted(self._verifiers)}"
            ) from None

    @staticmethod
    async def _judge(
        problem: Problem, candidate: Candidate, chain: Sequence[Verifier]
    ) -> tuple[Verdict, ...]:
        verdicts: list[Verdict] = []
        for verifier in chain:
            if not verifier.applies_to(problem):
                continue
            # A model judge only speaks where no program could judge the answer.
            if verifier.kind == "model" and any(v.passed is not None and v.judges_answer for v in verdicts):
                continue
            verdicts.append(await verifier.verify(problem, candidate))
        return tuple(verdicts)
