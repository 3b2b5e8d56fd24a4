"""Fenced code in model output, found by a CommonMark parser (markdown-it-py), not by hand."""

from __future__ import annotations

from dataclasses import dataclass

from markdown_it import MarkdownIt

# Info strings models put on Python fences.
PYTHON_LANGUAGES = frozenset({"python", "python3", "py"})


@dataclass(frozen=True, slots=True)
class Fence:
    # The info string's first word, lower-cased ("python", "output", "" when absent).
    language: str
    code: str
    # Line range [start, end) the fence spans in the text, fence lines included.
    lines: tuple[int, int]


def fences(text: str) -> list[Fence]:
    """Every fenced code block, in order; an unclosed one runs to the end of the text."""
    found = []
    for token in MarkdownIt("commonmark").parse(text):
        if token.type == "fence" and token.map is not None:
            language = token.info.split()[0].lower() if token.info.strip() else ""
            found.append(Fence(language, token.content, (token.map[0], token.map[1])))
    return found


def last_python_block(text: str) -> str | None:
    """The code of the last ```python fence, or None when there is none."""
    python = [fence.code for fence in fences(text) if fence.language in PYTHON_LANGUAGES]
    return python[-1] if python else None


def text_outside_fences(text: str) -> str:
    """The prose of `text`: every line that is not part of a fenced block."""
    inside = {line for fence in fences(text) for line in range(*fence.lines)}
    return "\n".join(line for number, line in enumerate(text.splitlines()) if number not in inside)
