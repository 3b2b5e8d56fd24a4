"""The verifiers that run model-written Python (program of thought, code examples), with
real sandboxed runs: agreeing, disagreeing, crashing and looping programs."""

from __future__ import annotations

import pytest

from cluster.sandbox import Sandbox, SandboxSettings
from cluster.types import Candidate, ChatMessage, Problem, Verdict
from cluster.verifiers import VerifierDeps, build_verifier
from cluster.verifiers.code_blocks import last_python_block, text_outside_fences
from cluster.verifiers.code_tests import CodeTestsVerifier, visible_examples
from cluster.verifiers.python_program import PythonProgramVerifier

pytestmark = pytest.mark.integration

# Limits no normal program comes near, even on a loaded machine; looping programs run in
# a sandbox that stops them after a second.
SANDBOX = Sandbox(SandboxSettings(wall_seconds=60))
IMPATIENT = Sandbox(SandboxSettings(wall_seconds=1))
FENCE = "```"


def chain(program: str, prose_after: str = "") -> str:
    return f"Seven pencils at 15 cents each.\n\n{FENCE}python\n{program}\n{FENCE}\n\n{prose_after}"


def math_problem() -> Problem:
    question = "A shop sells pencils at 15 cents each. How many cents do 7 pencils cost?"
    return Problem(messages=(ChatMessage("user", question),), task="math")


async def program_verdict(text: str, answer: str | None = None, sandbox: Sandbox = SANDBOX) -> Verdict:
    verifier = PythonProgramVerifier(sandbox=sandbox)
    return await verifier.verify(math_problem(), Candidate("n1", text, answer))


# --- finding code --------------------------------------------------------------------------------


def test_the_last_python_fence_is_the_program_and_other_fences_are_not() -> None:
    text = (
        f"{FENCE}python\nprint(1)\n{FENCE}\n{FENCE}output\n1\n{FENCE}\n"
        f"1. then\n   {FENCE}py\n   print(2)\n   {FENCE}\n{FENCE}text\nprint(3)\n{FENCE}\nThe answer is 2."
    )
    assert last_python_block(text) == "print(2)\n"
    assert text_outside_fences(text).splitlines() == ["1. then", "The answer is 2."]
    assert last_python_block("no code here, just print(1)") is None


# --- program of thought ----------------------------------------------------------------------------


async def test_a_program_that_agrees_with_the_stated_answer_passes() -> None:
    verdict = await program_verdict(chain("cost = 7 * 15\nprint(cost)", "The answer is 105."))
    assert (verdict.verifier, verdict.passed, verdict.score) == ("python_program", True, 1.0)
    assert verdict.judges_answer is True
    assert "105" in verdict.reason


async def test_a_program_that_disagrees_fails_and_says_both_values() -> None:
    verdict = await program_verdict(chain("print(7 * 15 - 1)", "The answer is 105."))
    assert (verdict.passed, verdict.score) == (False, 0.0)
    assert "'104'" in verdict.reason and "'105'" in verdict.reason


async def test_the_answer_the_search_extracted_is_the_one_checked() -> None:
    verdict = await program_verdict(chain("print(105)", "So 7 pencils cost 105 cents."), answer="110")
    assert verdict.passed is False
    assert "'110'" in verdict.reason


async def test_agreement_only_shows_consistency_not_correctness() -> None:
    # A wrong program (7 + 15) agreeing with the wrong answer it produced still passes:
    # the verifier checks the chain against its own program, not against the truth.
    verdict = await program_verdict(chain("print(7 + 15)", "The answer is 22."))
    assert verdict.passed is True


async def test_float_rounding_in_the_printed_value_still_agrees() -> None:
    verdict = await program_verdict(chain("print(19.99 * 3)", "The answer is $59.97."))
    assert verdict.passed is True


async def test_an_integer_one_off_is_never_rounding() -> None:
    verdict = await program_verdict(chain("print(1000000001)", "The answer is 1000000000."))
    assert verdict.passed is False


async def test_a_program_may_use_sympy() -> None:
    program = (
        "from sympy import Rational, solve, symbols\n"
        "n = symbols('n')\n"
        "print(solve(Rational(15) * 7 - n, n)[0])\n"
    )
    verdict = await program_verdict(chain(program, "The answer is 105."))
    assert verdict.passed is True, verdict.reason


async def test_the_last_number_the_program_prints_is_its_answer() -> None:
    program = "for pencils in range(1, 8):\n    print('pencils', pencils, 'cost', 15 * pencils)"
    verdict = await program_verdict(chain(program, "The answer is 105."))
    assert verdict.passed is True


async def test_only_the_last_python_block_runs() -> None:
    first_try = f"{FENCE}python\nprint(100)\n{FENCE}\nLet me fix that.\n"
    text = first_try + chain("print(105)", "The answer is 105.")
    assert (await program_verdict(text)).passed is True


async def test_a_crashing_program_fails_with_its_exception() -> None:
    verdict = await program_verdict(chain("price = 15\nprint(7 * prce)", "The answer is 105."))
    assert (verdict.passed, verdict.score) == (False, 0.0)
    assert "NameError: name 'prce' is not defined" in verdict.reason
    assert "Traceback" not in verdict.reason and "/sandbox" not in verdict.reason


async def test_a_looping_program_fails_with_a_timeout() -> None:
    verdict = await program_verdict(chain("while True:\n    pass", "The answer is 105."), sandbox=IMPATIENT)
    assert verdict.passed is False
    assert "timeout" in verdict.reason


async def test_a_program_that_prints_nothing_fails() -> None:
    verdict = await program_verdict(chain("cost = 7 * 15", "The answer is 105."))
    assert verdict.passed is False
    assert "printed nothing" in verdict.reason


async def test_a_chain_without_python_abstains() -> None:
    verdict = await program_verdict("7 * 15 = 105. The answer is 105.")
    assert verdict.passed is None


async def test_a_chain_without_a_stated_answer_abstains() -> None:
    # The program's own numbers and output are not the chain's answer.
    text = f"Let me compute it.\n{FENCE}python\nprint(7 * 15)\n{FENCE}\n{FENCE}output\n105\n{FENCE}\n"
    verdict = await program_verdict(text)
    assert verdict.passed is None
    assert "no final answer" in verdict.reason


async def test_without_a_sandbox_the_program_verifier_abstains() -> None:
    unavailable = Sandbox(SandboxSettings(python="/usr/bin/no-such-python"))
    verifier = PythonProgramVerifier(sandbox=unavailable)
    text = chain("print(105)", "The answer is 105.")
    verdict = await verifier.verify(math_problem(), Candidate("n1", text, None))
    assert verdict.passed is None
    assert "not run" in verdict.reason


def test_the_program_verifier_judges_math_problems_only() -> None:
    verifier = PythonProgramVerifier(sandbox=SANDBOX)
    assert verifier.applies_to(math_problem())
    general = Problem(messages=(ChatMessage("user", "Write a haiku."),), task="general")
    assert not verifier.applies_to(general)


# --- code examples -----------------------------------------------------------------------------------

BELOW_ZERO = '''from typing import List


def below_zero(operations: List[int]) -> bool:
    """ You're given deposits and withdrawals on an account that starts at zero. Return
    True if the balance ever falls below zero.
    >>> below_zero([1, 2, 3])
    False
    >>> below_zero([1, 2, -4, 5])
    True
    """
'''

RIGHT = """def below_zero(operations: List[int]) -> bool:
    balance = 0
    for operation in operations:
        balance += operation
        if balance < 0:
            return True
    return False
"""


def code_problem(request: str = BELOW_ZERO) -> Problem:
    return Problem(messages=(ChatMessage("user", request),), task="code")


async def code_verdict(answer: str, request: str = BELOW_ZERO, sandbox: Sandbox = SANDBOX) -> Verdict:
    verifier = CodeTestsVerifier(sandbox=sandbox)
    return await verifier.verify(code_problem(request), Candidate("n1", answer, None))


def test_examples_are_read_from_docstrings_without_the_closing_quotes() -> None:
    examples = visible_examples(BELOW_ZERO)
    assert [(e.source, e.want) for e in examples] == [
        ("below_zero([1, 2, 3])\n", "False\n"),
        ("below_zero([1, 2, -4, 5])\n", "True\n"),
    ]


async def test_a_right_function_passes_every_visible_example() -> None:
    # The answer uses List without importing it: the request's imports come first.
    verdict = await code_verdict(f"Here it is:\n\n{FENCE}python\n{RIGHT}{FENCE}\n")
    assert (verdict.verifier, verdict.passed, verdict.score) == ("code_tests", True, 1.0)
    assert verdict.reason == "2 of 2 examples from the request pass"


async def test_a_bare_function_without_a_fence_is_run_as_is() -> None:
    assert (await code_verdict(RIGHT)).passed is True


async def test_a_partly_wrong_function_scores_the_share_that_passes() -> None:
    verdict = await code_verdict("def below_zero(operations):\n    return False\n")
    assert (verdict.passed, verdict.score) == (False, 0.5)
    assert "below_zero([1, 2, -4, 5]) printed 'False', expected 'True'" in verdict.reason


async def test_a_crashing_function_fails_every_example() -> None:
    verdict = await code_verdict("def below_zero(operations):\n    return operations[10] < 0\n")
    assert (verdict.passed, verdict.score) == (False, 0.0)
    assert "IndexError: list index out of range" in verdict.reason


async def test_a_looping_function_fails_with_a_timeout() -> None:
    looping = "def below_zero(operations):\n    while True:\n        pass\n"
    verdict = await code_verdict(looping, sandbox=IMPATIENT)
    assert (verdict.passed, verdict.score) == (False, 0.0)
    assert "timeout" in verdict.reason


async def test_an_answer_that_is_not_python_fails() -> None:
    verdict = await code_verdict("I would loop over the operations and track the balance.")
    assert (verdict.passed, verdict.score) == (False, 0.0)
    assert "SyntaxError" in verdict.reason


async def test_what_the_function_prints_while_defined_is_not_its_output() -> None:
    verdict = await code_verdict("print('loading')\n" + RIGHT)
    assert verdict.passed is True


async def test_only_visible_examples_are_run_so_hard_coding_them_passes() -> None:
    # What a pass establishes: the visible examples are reproduced, nothing more.
    hard_coded = "def below_zero(operations):\n    return operations == [1, 2, -4, 5]\n"
    assert (await code_verdict(hard_coded)).passed is True


async def test_expected_exceptions_shared_state_and_directives_follow_doctest() -> None:
    request = '''def make_counter(start):
    """A counter object.
    >>> counter = make_counter(3)
    >>> counter.step()
    4
    >>> list(range(counter.step(), 20))  # doctest: +ELLIPSIS
    [5, 6, ..., 19]
    >>> make_counter(-1)
    Traceback (most recent call last):
        ...
    ValueError: start must not be negative
    """
'''
    answer = """class Counter:
    def __init__(self, start):
        if start < 0:
            raise ValueError("start must not be negative")
        self.value = start

    def step(self):
        self.value += 1
        return self.value


def make_counter(start):
    return Counter(start)
"""
    verdict = await code_verdict(answer, request)
    assert (verdict.passed, verdict.reason) == (True, "4 of 4 examples from the request pass")
    wrong_message = answer.replace("start must not be negative", "negative start")
    failed = await code_verdict(wrong_message, request)
    assert (failed.passed, failed.score) == (False, 0.75)
    assert "should raise 'ValueError: start must not be negative'" in failed.reason


async def test_a_request_without_examples_abstains() -> None:
    request = 'def add(a, b):\n    """Return the sum of a and b."""\n'
    verifier = CodeTestsVerifier(sandbox=SANDBOX)
    assert not verifier.applies_to(code_problem(request))
    verdict = await code_verdict("def add(a, b):\n    return a + b\n", request)
    assert verdict.passed is None


def test_both_verifiers_are_built_by_name_with_a_shared_sandbox() -> None:
    program = build_verifier("python_program", VerifierDeps(sandbox=SANDBOX))
    code = build_verifier("code_tests", VerifierDeps(sandbox=SANDBOX))
    assert isinstance(program, PythonProgramVerifier) and isinstance(code, CodeTestsVerifier)
    assert program._sandbox is code._sandbox is SANDBOX
