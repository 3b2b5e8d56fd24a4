"""The Game of 24 verifiers: the final expression, and every step, checked exactly.

Only the model's expression and steps are checked; nothing here searches for a solution
(the search is the model's). The game's rules are the task's (`cluster.tasks.game24`).
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from cluster.tasks.game24 import (
    GAME24_NUMBERS,
    NotInPool,
    check_game24,
    combine,
    extract_game24_expression,
    parse_game24_step,
    readable,
    starting_pool,
    step_error,
)
from cluster.types import Candidate, Problem, Verdict
from cluster.verifiers.base import Verifier, register_verifier

# Right numbers but wrong value is closer than a malformed or number-breaking answer; the
# small credit lets a search prefer such branches without ever letting them pass.
RIGHT_NUMBERS_SCORE = 0.25


@register_verifier
class Game24Verifier(Verifier):
    """Passes a candidate whose final expression makes 24 from the problem's four numbers.

    Scores: 1.0 when it does; RIGHT_NUMBERS_SCORE when it uses exactly the four numbers but
    evaluates to something else; 0.0 when it is missing, malformed, divides by zero or uses
    the wrong numbers.
    """

    name: ClassVar[str] = "game24"
    tasks = frozenset({"game24"})

    def applies_to(self, problem: Problem) -> bool:
        numbers = problem.numbers
        return (
            super().applies_to(problem)
            and numbers is not None
            and len(numbers) == GAME24_NUMBERS
            and all(isinstance(number, int) for number in numbers)
            and readable(numbers)
        )

    async def verify(self, problem: Problem, candidate: Candidate) -> Verdict:
        if not self.applies_to(problem) or problem.numbers is None:
            return self.abstain("not a Game of 24 problem with four numbers")
        # A scan of the whole chain: off the event loop.
        expression = await asyncio.to_thread(_candidate_expression, candidate)
        if expression is None:
            return self.verdict(0.0, False, "no arithmetic expression found in the answer")
        check = check_game24(expression, problem.numbers)
        if check.ok:
            return self.verdict(1.0, True, check.reason)
        evaluated_with_right_numbers = check.uses_numbers and check.value is not None
        score = RIGHT_NUMBERS_SCORE if evaluated_with_right_numbers else 0.0
        return self.verdict(score, False, check.reason)


def _candidate_expression(candidate: Candidate) -> str | None:
    # The extracted answer is the model's own final statement; the full text is the fallback.
    if candidate.answer:
        expression = extract_game24_expression(candidate.answer)
        if expression is not None:
            return expression
    return extract_game24_expression(candidate.text)


@register_verifier
class Game24StepsVerifier(Verifier):
    """Checks every step of a Game of 24 chain exactly; says nothing about the final answer.

    Score: the share of steps that are right up to the first wrong one (a wrong step makes
    everything after it meaningless). Abstains when the chain has no steps in the format.
    """

    name: ClassVar[str] = "game24_steps"
    judges_answer: ClassVar[bool] = False
    tasks = frozenset({"game24"})

    def applies_to(self, problem: Problem) -> bool:
        return super().applies_to(problem) and problem.numbers is not None and readable(problem.numbers)

    async def verify(self, problem: Problem, candidate: Candidate) -> Verdict:
        if not self.applies_to(problem) or problem.numbers is None:
            return self.abstain("not a Game of 24 problem with numbers a step can name")
        steps = [step for line in candidate.text.splitlines() if (step := parse_game24_step(line))]
        if not steps:
            return self.abstain("no steps of the form 'a op b = c (left: ...)'")
        pool = starting_pool(problem.numbers)
        for index, step in enumerate(steps):
            try:
                pool = combine(pool, step)
                error = step_error(step, pool)
            except NotInPool as not_in_pool:
                error = str(not_in_pool)
            if error is not None:
                return self.verdict(index / len(steps), False, f"step {index + 1}: {error}")
        return self.verdict(1.0, True, f"all {len(steps)} steps are right")
