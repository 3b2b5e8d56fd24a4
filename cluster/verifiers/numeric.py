"""Compares a candidate's final answer with the problem's known reference answer."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from cluster.answers import answers_equivalent, extract_answer
from cluster.types import Candidate, Problem, Verdict
from cluster.verifiers.base import Verifier, register_verifier

# References copied from GSM8K keep the worked solution before "#### 72".
_REFERENCE_MARKERS = ("####", "\\boxed")


@register_verifier
class NumericAnswerVerifier(Verifier):
    """Passes a candidate whose final answer equals the reference (exactly, as rationals).

    A candidate with no final answer fails: an answer the grader cannot find is not given.
    """

    name: ClassVar[str] = "numeric"

    def applies_to(self, problem: Problem) -> bool:
        return bool(problem.reference and problem.reference.strip())

    async def verify(self, problem: Problem, candidate: Candidate) -> Verdict:
        if not self.applies_to(problem) or problem.reference is None:
            return self.abstain("no reference answer to compare with")
        # A symbolic comparison (math-verify, SymPy) may take a second: off the event loop.
        return await asyncio.to_thread(self._compare, problem.reference, candidate)

    def _compare(self, reference_text: str, candidate: Candidate) -> Verdict:
        reference = _reference_answer(reference_text)
        answer = _candidate_answer(candidate)
        if answer is None:
            return self.verdict(0.0, False, "no final answer found")
        if answers_equivalent(answer, reference):
            return self.verdict(1.0, True, f"answer {answer!r} equals reference {reference!r}")
        return self.verdict(0.0, False, f"answer {answer!r} differs from reference {reference!r}")


def _candidate_answer(candidate: Candidate) -> str | None:
    if candidate.answer and candidate.answer.strip():
        return candidate.answer
    return extract_answer(candidate.text)


def _reference_answer(reference: str) -> str:
    if any(marker in reference for marker in _REFERENCE_MARKERS):
        return extract_answer(reference) or reference
    return reference
