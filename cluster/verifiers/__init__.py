"""Verifiers: each judges one candidate of one problem and returns a `Verdict`.

Importing this package registers the built-in verifiers; `build_verifier(name)` builds any
registered one. The model-judge verifier ("judge") lives in `cluster.verifiers.judge`, which
is not imported here (it needs a model client); `build_verifier("judge")` imports it on demand.
"""

from cluster.verifiers.arithmetic import (
    ArithmeticClaim,
    ArithmeticStepVerifier,
    find_arithmetic_claims,
)
from cluster.verifiers.base import (
    NEUTRAL_SCORE,
    UnknownVerifierError,
    Verifier,
    build_verifier,
    known_verifiers,
    register_verifier,
)
from cluster.verifiers.code_tests import CodeTestsVerifier
from cluster.verifiers.game24 import (
    Game24Check,
    Game24Verifier,
    check_game24,
    extract_game24_expression,
)
from cluster.verifiers.numeric import NumericAnswerVerifier
from cluster.verifiers.python_program import PythonProgramVerifier

__all__ = [
    "NEUTRAL_SCORE",
    "ArithmeticClaim",
    "ArithmeticStepVerifier",
    "CodeTestsVerifier",
    "Game24Check",
    "Game24Verifier",
    "NumericAnswerVerifier",
    "PythonProgramVerifier",
    "UnknownVerifierError",
    "Verifier",
    "build_verifier",
    "check_game24",
    "extract_game24_expression",
    "find_arithmetic_claims",
    "known_verifiers",
    "register_verifier",
]
