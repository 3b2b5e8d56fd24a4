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
    VerifierDeps,
    VerifierSpec,
    build_verifier,
    describe,
    known_verifiers,
    register_verifier,
)
from cluster.verifiers.game24 import (
    Game24Check,
    Game24Verifier,
    check_game24,
    extract_game24_expression,
)
from cluster.verifiers.numeric import NumericAnswerVerifier

__all__ = [
    "NEUTRAL_SCORE",
    "ArithmeticClaim",
    "ArithmeticStepVerifier",
    "Game24Check",
    "Game24Verifier",
    "NumericAnswerVerifier",
    "UnknownVerifierError",
    "Verifier",
    "VerifierDeps",
    "VerifierSpec",
    "build_verifier",
    "check_game24",
    "describe",
    "extract_game24_expression",
    "find_arithmetic_claims",
    "known_verifiers",
    "register_verifier",
]
