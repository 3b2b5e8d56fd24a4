"""How chains are cut into steps for tree search, per task family.

A step format says how to ask the engine for the next step of a path (stop strings, or a
grammar the engine must follow), and how to read what came back: the step's text as the
tree stores it, and whether it ends the chain with an answer. It never judges a step;
verifiers do.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import permutations

from cluster.answers import extract_answer, extract_stated_answer
from cluster.config import TaskSettings
from cluster.types import Completion, Problem, TaskFamily
from cluster.verifiers.game24 import TARGET, extract_game24_expression, number_text, parse_game24_step


@dataclass(frozen=True, slots=True)
class StepRequest:
    """How to ask the engine for the next step."""

    stop: tuple[str, ...] = ()
    regex: str | None = None
    # The most tokens a step can take, where the grammar bounds it.
    max_tokens: int | None = None
    # None: the effort's temperature.
    temperature: float | None = None


@dataclass(frozen=True, slots=True)
class Step:
    text: str
    # The chain's final answer when this step ends it; None while it goes on.
    answer: str | None
    # No step can follow this one (an answer, the end of the sequence, or a broken step).
    terminal: bool


class StepFormat(ABC):
    def __init__(self, problem: Problem, delimiter: str, temperature: float | None = None) -> None:
        self.problem = problem
        self.delimiter = delimiter
        self.temperature = temperature

    def prompt(self, base_prompt: str, steps: Sequence[str]) -> str:
        """The prompt that asks for the step after `steps`: the path so far, as the model wrote it."""
        return base_prompt + "".join(step + self.delimiter for step in steps)

    def chain_text(self, steps: Sequence[str]) -> str:
        return self.delimiter.join(steps)

    def answer(self, text: str) -> str | None:
        """The final answer a whole chain states, in the task family's own format."""
        return task_answer(self.problem, text)

    @abstractmethod
    def request(self, steps: Sequence[str], final: bool, tried: Sequence[str] = ()) -> StepRequest | None:
        """How to ask for the next step; `final`: the depth limit says it must end the chain.

        `tried` are the steps already proposed here; None when no other step is possible.
        """

    @abstractmethod
    def read(self, steps: Sequence[str], completion: Completion, final: bool) -> Step:
        """The step the engine proposed after `steps`."""


class DelimitedSteps(StepFormat):
    """Free text; a step ends where the model writes the delimiter (a blank line by default)."""

    def request(self, steps: Sequence[str], final: bool, tried: Sequence[str] = ()) -> StepRequest | None:
        # The last step allowed must finish the chain: no stop at the delimiter.
        return StepRequest(stop=() if final else (self.delimiter,), temperature=self.temperature)

    def read(self, steps: Sequence[str], completion: Completion, final: bool) -> Step:
        text = completion.text.rstrip()
        stated = extract_stated_answer(text)
        ended = completion.finish_reason == "stop" and completion.stop_reason is None
        if stated is None and not ended and not final:
            # An empty step would only repeat its parent's prompt: nothing to grow from.
            return Step(text, None, terminal=not text.strip())
        answer = task_answer(self.problem, self.chain_text([*steps, text]))
        return Step(text, answer, terminal=True)


# At most this many digits per number keeps a looping model from filling a step with digits.
_NUMBER = r"-?[0-9]{1,4}(/[0-9]{1,4})?"
_NUMBER_CHARS = len("-1234/5678")


class Game24Steps(StepFormat):
    """One line per step: the model writes "a op b = c" with a and b drawn from the numbers
    left (the grammar admits nothing else); the numbers left are appended as the game's
    bookkeeping, "(left: ...)". The chain ends when one number is left; its answer is the
    expression the steps built. Right or wrong, the verifiers decide."""

    def request(self, steps: Sequence[str], final: bool, tried: Sequence[str] = ()) -> StepRequest | None:
        pool = [value for value, _ in self._replay(steps)]
        # Sampling without replacement among siblings: a step already proposed here (or its
        # mirror image, for + and *) is not offered again. The model still chooses. Only
        # steps this format wrote count (they list the numbers left), not free-text chains.
        proposed = [step for text in tried if (step := parse_game24_step(text)) and step.left is not None]
        seen = {(step.a, step.op, step.b) for step in proposed}
        seen |= {(b, op, a) for a, op, b in seen if op in "+*"}
        operations = sorted(
            {
                (number_text(pool[i]), op, number_text(pool[j]))
                for i, j in permutations(range(len(pool)), 2)
                for op in "+-*/"
                if (pool[i], op, pool[j]) not in seen
            }
        )
        if not operations:
            return None
        # The game's rule, not its solution: the step that uses the last two numbers claims
        # the target; the verifiers decide whether the claim holds.
        last = len(pool) == 2
        result = str(TARGET) if last else _NUMBER
        alternatives = "|".join(" ".join(re.escape(part) for part in operation) for operation in operations)
        regex = f"({alternatives}) = {result}"
        # Every token is at least one character, and the end-of-sequence token is one more.
        result_chars = len(result) if last else _NUMBER_CHARS
        longest = max(len(" ".join(operation)) for operation in operations) + len(" = ") + result_chars + 1
        return StepRequest(regex=regex, max_tokens=longest, temperature=self.temperature)

    def read(self, steps: Sequence[str], completion: Completion, final: bool) -> Step:
        text = completion.text.strip()
        step = parse_game24_step(text)
        if step is None:
            return Step(text, None, terminal=True)
        try:
            expressions = _combine(self._replay(steps), step.a, step.op, step.b, step.claimed)
        except ValueError:
            return Step(text, None, terminal=True)
        listed = " ".join(number_text(value) for value, _ in expressions)
        rendered = f"{text} (left: {listed})"
        if len(expressions) > 1:
            return Step(rendered, None, terminal=False)
        return Step(rendered, _outer(expressions[0][1]), terminal=True)

    def _replay(self, steps: Sequence[str]) -> list[tuple[Fraction, str]]:
        """The numbers left after `steps`, each with the expression that built it."""
        pool = [(Fraction(n), str(n)) for n in self.problem.numbers or ()]
        for line in steps:
            step = parse_game24_step(line)
            if step is not None:
                pool = _combine(pool, step.a, step.op, step.b, step.claimed)
        return pool


def _combine(
    pool: Sequence[tuple[Fraction, str]], a: Fraction, op: str, b: Fraction, result: Fraction
) -> list[tuple[Fraction, str]]:
    remaining = list(pool)
    operands = []
    for value in (a, b):
        index = next((i for i, (v, _) in enumerate(remaining) if v == value), None)
        if index is None:
            raise ValueError(f"{number_text(value)} is not among the numbers left")
        operands.append(remaining.pop(index)[1])
    return [*remaining, (result, f"({operands[0]} {op} {operands[1]})")]


def _outer(expression: str) -> str:
    return expression[1:-1] if expression.startswith("(") and expression.endswith(")") else expression


def task_answer(problem: Problem, text: str) -> str | None:
    """The final answer in the task family's own format (Game of 24: the expression)."""
    if problem.task is TaskFamily.GAME24:
        return extract_game24_expression(text)
    return extract_answer(text)


def step_format(problem: Problem, settings: TaskSettings) -> StepFormat:
    if problem.task is TaskFamily.GAME24:
        return Game24Steps(problem, "\n", settings.step_temperature)
    return DelimitedSteps(problem, settings.step_delimiter, settings.step_temperature)
