"""A short summary of the winning path: its first steps and the answer, never the whole tree."""

from __future__ import annotations

MAX_STEPS = 3
MAX_STEP_CHARS = 140


def summarize(chain: str, answer: str | None, reason: str) -> str:
    steps = [_clip(line) for line in _steps(chain)[:MAX_STEPS]]
    parts = [f"{i}. {step}" for i, step in enumerate(steps, start=1)]
    ending = f"Answer: {answer} ({reason})." if answer is not None else f"No explicit answer ({reason})."
    return " ".join([*parts, ending])


def _steps(chain: str) -> list[str]:
    # Steps end at line breaks; blank lines and bare list markers carry no content.
    return [line.strip() for line in chain.splitlines() if len(line.strip()) > 2]


def _clip(step: str) -> str:
    return step if len(step) <= MAX_STEP_CHARS else step[: MAX_STEP_CHARS - 1].rstrip() + "…"
