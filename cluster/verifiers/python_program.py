"""Program of thought: runs the chain's own Python program and compares what it prints
with the answer the chain states."""

from __future__ import annotations

from fractions import Fraction
from typing import ClassVar

from cluster.answers import answers_equivalent, extract_answer, parse_number
from cluster.sandbox import Sandbox, SandboxError
from cluster.types import Candidate, Problem, Verdict
from cluster.verifiers.base import Verifier, VerifierDeps, register_verifier
from cluster.verifiers.code_blocks import last_python_block, text_outside_fences

# Floats printed by a program carry binary rounding (19.99 * 3 prints 59.970000000000006);
# a difference this small relative to the values is that rounding, not another answer.
# Integers and stated answers are compared exactly.
FLOAT_REL_TOLERANCE = Fraction(1, 10**9)


@register_verifier
class PythonProgramVerifier(Verifier):
    """Runs the last ```python block of a math chain in the sandbox and checks that what it
    prints agrees with the chain's stated final answer.

    What a pass establishes: the chain's answer is what the chain's own program computes,
    checked by running it rather than by trusting the model's arithmetic. It does not prove
    the answer right: the model wrote the program, and a program that models the problem
    wrongly agrees with a wrong answer. So a pass means "a program checked the answer" (the
    arithmetic and the stated result are consistent), not "the answer is correct"; only a
    reference answer (the `numeric` verifier) says that.

    Verdicts: agreement passes (score 1.0); disagreement, a crash, a timeout or any other
    limit fails (score 0.0, with the reason); no Python block, no stated answer or no
    sandbox on this machine abstain.
    """

    name: ClassVar[str] = "python_program"
    tasks = frozenset({"math"})
    # The chain's own program agreeing with it is evidence, not proof; disagreeing (or crashing)
    # shows the chain inconsistent, not its answer wrong.
    proves = False
    refutes = False

    def __init__(self, sandbox: Sandbox | None = None) -> None:
        self._sandbox = sandbox or Sandbox()

    @classmethod
    def build(cls, deps: VerifierDeps) -> PythonProgramVerifier:
        return cls(deps.sandbox)

    async def verify(self, problem: Problem, candidate: Candidate) -> Verdict:
        program = last_python_block(candidate.text)
        if program is None:
            return self.abstain("no ```python block in the chain")
        stated = _stated_answer(candidate)
        if stated is None:
            return self.abstain("the chain states no final answer to check its program against")
        try:
            result = await self._sandbox.run(program)
        except SandboxError as error:
            return self.abstain(f"the program was not run: {error}")
        if not result.ok:
            return self.verdict(0.0, False, f"the program stopped ({result.status}): {result.reason}")
        printed = printed_answer(result.stdout)
        if printed is None:
            return self.verdict(0.0, False, "the program printed nothing")
        if agrees(printed, stated):
            return self.verdict(1.0, True, f"the program prints {printed!r}, as the chain answers")
        return self.verdict(0.0, False, f"the program prints {printed!r} but the chain answers {stated!r}")


def printed_answer(stdout: str) -> str | None:
    """What a program's output says: its stated answer or last number, else its last line."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if not lines:
        return None
    return extract_answer(stdout) or lines[-1]


def agrees(printed: str, stated: str) -> bool:
    """Whether a printed answer says what the stated one says, up to float rounding."""
    if answers_equivalent(printed, stated):
        return True
    printed_value, stated_value = parse_number(printed), parse_number(stated)
    if printed_value is None or stated_value is None or not _is_float_text(printed):
        return False
    # Exact rational arithmetic: a float() of a huge printed integer would overflow.
    tolerance = FLOAT_REL_TOLERANCE * max(abs(printed_value), abs(stated_value))
    return abs(printed_value - stated_value) <= tolerance


def _is_float_text(text: str) -> bool:
    return "." in text or "e" in text.lower()


def _stated_answer(candidate: Candidate) -> str | None:
    # The answer the search extracted is the one the service returns; without one, only the
    # prose counts: the program's own numbers and output blocks state nothing.
    if candidate.answer and candidate.answer.strip():
        return candidate.answer
    return extract_answer(text_outside_fences(candidate.text))
