"""Reading numbers and quotations back out of the generated paper, for the review.

The tracing rule. A numeric literal is a run of digits (with an optional sign, decimal
part and exponent) that is not glued to a word: not preceded by a letter, digit, `_` or
`.`, and not followed by a letter, digit or `_` (so `resnet18`, `s0`, `x86_64` and `1in`
are not numbers). Before tokenizing, the parts of the text that are not prose are masked:
code (Markdown code spans and fences, LaTeX \\texttt), labels, references, citations, link
targets, image paths, the LaTeX preamble and comments, the Markdown reference list, and
the "Figure N" labels the writer numbers itself. Quotations of the run's own records
(hypothesis statements, reasons, figure captions: `<q>`/`<span>` in Markdown, `\\record{}`
in LaTeX) are masked too, and each must equal one of those records verbatim.

Every remaining literal must be, in order, the printed value of the next entry the writer
recorded in numbers.json, and each entry must still resolve to the same printed value from
its source file. A changed, added or removed number therefore fails the review.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Literal

Format = Literal["md", "tex"]
MAX_REPORTED = 8
"""Mismatches listed in one failing check (the rest are counted)."""

NUMBER = re.compile(r"(?<![\w.])[-+]?(?>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)(?!\w)")
HAS_DIGIT = re.compile(r"\d")
TEX_GROUP = r"\{(?:\\[A-Za-z]+\{\}|\\.|\{\}|[^{}\\])*\}"
"""One brace group of escaped text: escape_tex output holds `\\x`, `\\name{}` and `{}` only."""
_MD_CODE = (
    re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE),
    re.compile(r"(?<!`)(`+)(?!`).+?(?<!`)\1(?!`)", re.DOTALL),
)
_MD_MARKUP = (
    re.compile(r"<!--.*?-->", re.DOTALL),
    re.compile(r"<a id=\"[^\"]*\"></a>"),
    re.compile(r"!\[[^\]]*\]"),
    re.compile(r"\]\([^)]*\)"),
    re.compile(r"\[@[^\]]*\]"),
    re.compile(r"\b(?:Figure|Table) \d+\b"),
)
_TEX_CODE = (re.compile(r"\\texttt" + TEX_GROUP),)
_TEX_MARKUP = (
    re.compile(r"(?<!\\)%.*$", re.MULTILINE),
    re.compile(r"\\(?:label|ref|autoref|eqref|url|bibliography|bibliographystyle|cite[pt]?)" + TEX_GROUP),
    re.compile(r"\\includegraphics(?:\[[^\]]*\])?" + TEX_GROUP),
    re.compile(r"\\\\\[[^\]]*\]"),
)
_MD_QUOTE = re.compile(r"<(q|span)>(.*?)</\1>", re.DOTALL)
_TEX_QUOTE = re.compile(r"\\record(" + TEX_GROUP + ")")
MD_REFERENCES = re.compile(r"^## References\s*$", re.MULTILINE)
TEX_BODY = "\\begin{document}"


def quotations(text: str, fmt: Format) -> list[str]:
    """The quoted record texts, as written (escaped), in order."""
    if fmt == "md":
        return [m.group(2) for m in _MD_QUOTE.finditer(text)]
    return [m.group(1)[1:-1] for m in _TEX_QUOTE.finditer(text)]


def body(text: str, fmt: Format) -> str:
    """The part of the file that is the paper's text (no preamble, no reference list)."""
    if fmt == "md":
        end = MD_REFERENCES.search(text)
        return text[: end.start()] if end else text
    start = text.find(TEX_BODY)
    return text[start + len(TEX_BODY) :] if start >= 0 else text


def mask(text: str, fmt: Format, *, keep_code: bool = False) -> str:
    """The body with everything that is not asserted prose blanked out (same length)."""
    text = body(text, fmt)
    if fmt == "tex":
        text = text.replace("$-$", "  -")  # the writer's minus sign in LaTeX (same length: offsets hold)
    md = fmt == "md"
    # Code first: an arm name in a code span may hold anything, quote markers included.
    patterns = [] if keep_code else list(_MD_CODE if md else _TEX_CODE)
    patterns += [_MD_QUOTE if md else _TEX_QUOTE, *(_MD_MARKUP if md else _TEX_MARKUP)]
    for pattern in patterns:
        text = pattern.sub(lambda m: " " * len(m.group(0)), text)
    return text


def numbers_in(text: str, fmt: Format) -> list[str]:
    """Every numeric literal the paper asserts, in order of appearance."""
    return [m.group(0) for m in NUMBER.finditer(mask(text, fmt))]


def compare_numbers(found: list[str], recorded: list[str]) -> list[str]:
    """Differences between the numbers in the text and those recorded, as readable lines."""
    problems: list[str] = []
    matcher = difflib.SequenceMatcher(a=recorded, b=found, autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            continue
        wrote, expected = found[b0:b1], recorded[a0:a1]
        if op == "replace":
            problems.append(f"printed {', '.join(wrote)} where the records give {', '.join(expected)}")
        elif op == "insert":
            problems.append(f"untraced number(s) {', '.join(wrote)} (no source recorded)")
        else:
            problems.append(f"recorded number(s) {', '.join(expected)} missing from the text")
    return problems


def summarize_problems(problems: Iterable[str]) -> str:
    """A check's detail: the first few problems and how many more there were."""
    items = list(problems)
    shown = "; ".join(items[:MAX_REPORTED])
    more = len(items) - MAX_REPORTED
    return shown + (f"; and {more} more" if more > 0 else "")
