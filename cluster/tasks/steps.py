"""How chains are cut into steps for tree search.

A step format says how to ask the engine for the next step of a path (stop strings, or a
grammar the engine must follow), and how to read what came back: the step's text as the
tree stores it, and whether it ends the chain with an answer. It never judges a step;
verifiers do. Each task family picks its format (`Task.step_format`); free text cut at a
delimiter (`DelimitedSteps`) serves every family without a grammar of its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cluster.answers import extract_stated_answer
from cluster.types import Completion, Problem

AnswerOf = Callable[[str], "str | None"]


@dataclass(frozen=True, slots=True)
class StepChoice:
    """A step in two parts, so that k greedy proposals take two rounds of engine calls, not k:
    which move to make (`regex`, k sampled in one call at the effort's temperature: the model
    picks what to try), then each move's working out (`rest_regex`, greedy, the k at once:
    the model's best arithmetic, not a sample of it)."""

    regex: str
    max_tokens: int
    rest_regex: str
    rest_max_tokens: int


@dataclass(frozen=True, slots=True)
class StepRequest:
    """How to ask the engine for the next step."""

    stop: tuple[str, ...] = ()
    regex: str | None = None
    # The most tokens a step can take, where the grammar bounds it.
    max_tokens: int | None = None
    # None: the effort's temperature.
    temperature: float | None = None
    # The same step in two parts, for proposing several greedy steps at once.
    choice: StepChoice | None = None


@dataclass(frozen=True, slots=True)
class Step:
    text: str
    # The chain's final answer when this step ends it; None while it goes on.
    answer: str | None
    # No step can follow this one (an answer, the end of the sequence, or a broken step).
    terminal: bool


class StepFormat(ABC):
    def __init__(
        self, problem: Problem, delimiter: str, answer_of: AnswerOf, temperature: float | None = None
    ) -> None:
        self.problem = problem
        self.delimiter = delimiter
        self.temperature = temperature
        self._answer_of = answer_of

    def prompt(self, base_prompt: str, steps: Sequence[str]) -> str:
        """The prompt that asks for the step after `steps`: the path so far, as the model wrote it."""
        return base_prompt + "".join(step + self.delimiter for step in steps)

    def chain_text(self, steps: Sequence[str]) -> str:
        return self.delimiter.join(steps)

    def answer(self, text: str) -> str | None:
        """The final answer a whole chain states, in the task family's own format."""
        return self._answer_of(text)

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
        return Step(text, self.answer(self.chain_text([*steps, text])), terminal=True)
