"""Runs the examples a code request shows (HumanEval style `>>>` lines) against the
candidate's function, each in its own sandboxed run."""

from __future__ import annotations

import ast
import asyncio
import doctest
from dataclasses import dataclass
from typing import ClassVar

from cluster.sandbox import Sandbox, SandboxError, SandboxResult, SandboxStatus, last_exception_line
from cluster.types import Candidate, Problem, Verdict
from cluster.verifiers.base import Verifier, VerifierDeps, register_verifier
from cluster.verifiers.code_blocks import last_python_block

# Runs inside the sandbox, after REQUEST, CANDIDATE, SETUP and EXAMPLE are assigned. The
# request's imports come first (a candidate that writes only the function still finds
# `List`), then the candidate, then the examples before this one (doctest examples share
# one namespace), all with their output discarded; only this example prints to stdout. A
# parse of the request that fails just means it brings no imports. The namespace is not
# "__main__", so a candidate's `if __name__ == "__main__":` demo does not run.
_HARNESS = """
import ast, contextlib, io


def _imports(source):
    try:
        body = ast.parse(source).body
    except SyntaxError:
        body = []
    kept = [node for node in body if isinstance(node, (ast.Import, ast.ImportFrom))]
    return ast.Module(body=kept, type_ignores=[])


namespace = {"__name__": "candidate"}
with contextlib.redirect_stdout(io.StringIO()):
    exec(compile(_imports(REQUEST), "request.py", "exec"), namespace)
    exec(compile(CANDIDATE, "candidate.py", "exec"), namespace)
    for source in SETUP:
        with contextlib.suppress(Exception):
            exec(compile(source, "example.py", "single"), namespace)
exec(compile(EXAMPLE, "example.py", "single"), namespace)
"""


@dataclass(frozen=True, slots=True)
class ExampleOutcome:
    example: doctest.Example
    passed: bool
    # Why it failed, for the verdict's reason; empty when it passed.
    detail: str = ""


@register_verifier
class CodeTestsVerifier(Verifier):
    """Checks a candidate function against the `>>>` examples visible in the request.

    The examples are read by the standard library's `doctest.DocTestParser` and compared by
    its `OutputChecker` (directives such as +ELLIPSIS apply), exactly as doctest would. Each
    example runs in its own sandbox with the candidate (the last ```python block of the
    answer, or the whole answer when it has none). Only what the request shows is run:
    hidden tests never reach this verifier, so a pass means "the candidate reproduces the
    request's examples", not "the candidate is correct".

    Score: the share of examples that pass; passed only when all of them do. Abstains when
    the request has no examples or the sandbox is unavailable here.
    """

    name: ClassVar[str] = "code_tests"
    tasks = frozenset({"code"})
    # Passing the examples a request shows does not prove a function right (it may fit only
    # them); failing one proves it wrong.
    proves = False

    def __init__(self, sandbox: Sandbox | None = None) -> None:
        self._sandbox = sandbox or Sandbox()

    @classmethod
    def build(cls, deps: VerifierDeps) -> CodeTestsVerifier:
        return cls(deps.sandbox)

    def applies_to(self, problem: Problem) -> bool:
        return super().applies_to(problem) and bool(visible_examples(problem.question))

    async def verify(self, problem: Problem, candidate: Candidate) -> Verdict:
        examples = visible_examples(problem.question)
        if not examples:
            return self.abstain("the request shows no >>> examples to run")
        code = last_python_block(candidate.text) or candidate.text
        request_code = _request_code(problem.question)
        try:
            outcomes = await asyncio.gather(
                *(self._run(request_code, code, examples, index) for index in range(len(examples)))
            )
        except SandboxError as error:
            return self.abstain(f"the examples were not run: {error}")
        passed = sum(outcome.passed for outcome in outcomes)
        summary = f"{passed} of {len(outcomes)} examples from the request pass"
        failures = [outcome for outcome in outcomes if not outcome.passed]
        if failures:
            return self.verdict(passed / len(outcomes), False, f"{summary}; {failures[0].detail}")
        return self.verdict(1.0, True, summary)

    async def _run(
        self, request_code: str, code: str, examples: list[doctest.Example], index: int
    ) -> ExampleOutcome:
        example = examples[index]
        setup = [earlier.source for earlier in examples[:index]]
        program = (
            f"REQUEST = {request_code!r}\nCANDIDATE = {code!r}\nSETUP = {setup!r}\n"
            f"EXAMPLE = {example.source!r}\n{_HARNESS}"
        )
        return judge_example(example, await self._sandbox.run(program))


def judge_example(example: doctest.Example, result: SandboxResult) -> ExampleOutcome:
    """Whether the run of one example printed (or raised) what the example wants."""
    checker = doctest.OutputChecker()
    flags = _option_flags(example)
    shown = example.source.strip()
    if example.exc_msg is None:
        if result.status is SandboxStatus.OK and checker.check_output(example.want, result.stdout, flags):
            return ExampleOutcome(example, True)
        if result.status is SandboxStatus.OK:
            detail = f"{shown} printed {result.stdout.strip()!r}, expected {example.want.strip()!r}"
        else:
            detail = f"{shown} stopped ({result.status}): {result.reason}"
        return ExampleOutcome(example, False, detail)
    # doctest compares the traceback's last line, "Type: message", with the example's.
    raised = last_exception_line(result.stderr) if result.status is SandboxStatus.ERROR else None
    if raised is not None and checker.check_output(example.exc_msg, raised + "\n", flags):
        return ExampleOutcome(example, True)
    expected = example.exc_msg.strip()
    return ExampleOutcome(example, False, f"{shown} should raise {expected!r}: {result.reason}")


def visible_examples(request: str) -> list[doctest.Example]:
    """The `>>>` examples of the request's docstrings (of the whole text when it is not Python).

    Docstrings are read rather than the source, as doctest does, so that a closing quote
    on the line after the last example's output is not taken for part of that output.
    """
    parser = doctest.DocTestParser()
    try:
        return [example for text in _docstrings(request) for example in parser.get_examples(text)]
    except ValueError:
        # Inconsistent indentation: doctest itself could not run these examples either.
        return []


def _request_code(request: str) -> str:
    """The request's Python: its last ```python block, or all of it."""
    return last_python_block(request) or request


def _docstrings(request: str) -> list[str]:
    try:
        tree = ast.parse(_request_code(request))
    except (SyntaxError, ValueError, RecursionError):
        return [request]
    documented = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    nodes = [node for node in ast.walk(tree) if isinstance(node, documented)]
    return [doc for node in nodes if (doc := ast.get_docstring(node))]


def _option_flags(example: doctest.Example) -> int:
    flags = 0
    for flag, enabled in example.options.items():
        flags = flags | flag if enabled else flags & ~flag
    return flags
