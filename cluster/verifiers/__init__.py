"""Verifiers: each judges one candidate of one problem and returns a `Verdict`.

`build_verifier(name)` builds any registered verifier; the built-in ones (listed in
`cluster.verifiers.base.VERIFIER_MODULES`) register themselves when a name is first looked up.
"""

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

__all__ = [
    "NEUTRAL_SCORE",
    "UnknownVerifierError",
    "Verifier",
    "VerifierDeps",
    "VerifierSpec",
    "build_verifier",
    "describe",
    "known_verifiers",
    "register_verifier",
]
