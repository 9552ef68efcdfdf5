"""The paper's prose, written by the LLM from placeholders and checked before it is used.

The model never sees a number: it gets the run's structure (hypotheses, verdicts, which way
each arm moved) and placeholders such as `{{arm:novelty:x.mean}}`, which the writer replaces
with numbers resolved from the records. The rule for what comes back, sentence by sentence:
- a placeholder that names no known value rejects the sentence;
- a word holding a digit is kept only when it is a known name (an arm, a hypothesis, the
  dataset or architecture, e.g. `resnet18`), and is then set as code; any other digit is a
  number the model invented, and the whole sentence is dropped (stripping just the digits
  would leave a sentence that asserts something else, so it is not repaired);
- a sentence that claims an improvement the results do not back (see claims.py) is dropped.
What was dropped, and why, is kept in numbers.json. A section left empty falls back to the
template's own prose.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from jinja2 import Environment, PackageLoader, StrictUndefined
from pydantic import BaseModel, ConfigDict

from controller.llm import LLMClient
from controller.paper.claims import unbacked_claims
from controller.paper.numbers import Number

log = structlog.get_logger(__name__)

PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
DIGIT = re.compile(r"\d")
WORD_PUNCTUATION = "()[]{},.;:!?\"'`*"
PROSE_SECTIONS = ("abstract", "introduction", "discussion", "conclusion")


class PaperProse(BaseModel):
    """What the model writes: four sections of plain prose with placeholders, no digits."""

    model_config = ConfigDict(extra="forbid")

    abstract: str
    introduction: str
    discussion: str
    conclusion: str


@dataclass(frozen=True)
class Code:
    """A name set in code (an arm, a hypothesis)."""

    text: str


@dataclass(frozen=True)
class Cite:
    """Citation keys, each resolving in references.bib."""

    keys: tuple[str, ...]


Segment = str | Number | Code | Cite
Paragraph = list[Segment]


@dataclass(frozen=True)
class Rejected:
    """A sentence of model prose that did not make it into the paper."""

    section: str
    sentence: str
    reason: str


def _words(text: str, names: set[str]) -> tuple[list[Segment], str | None]:
    """Plain text split into text and code segments; the reason to reject it, if any."""
    segments: list[Segment] = []
    for piece in re.split(r"(\s+)", text):
        core = piece.strip(WORD_PUNCTUATION)
        if core and core in names:
            start = piece.index(core)
            segments += [piece[:start].replace("`", ""), Code(core), piece[start + len(core) :].replace("`", "")]
        elif DIGIT.search(piece):
            return [], f"invented number {piece!r}"
        else:
            segments.append(piece.replace("`", ""))
    return [s for s in segments if s != ""], None


def _sentence(
    text: str, values: Mapping[str, Number], names: set[str], cite_keys: set[str]
) -> tuple[Paragraph, str | None]:
    """One sentence as segments, or the reason it is rejected."""
    segments: Paragraph = []
    position = 0
    for match in PLACEHOLDER.finditer(text):
        plain, reason = _words(text[position : match.start()], names)
        if reason:
            return [], reason
        segments += plain
        ref = match.group(1)
        if ref.startswith("cite:"):
            keys = tuple(k.strip() for k in ref.removeprefix("cite:").split(",") if k.strip())
            if not keys or not set(keys) <= cite_keys:
                return [], f"unknown citation {ref!r}"
            segments.append(Cite(keys))
        elif ref in values:
            segments.append(values[ref])
        else:
            return [], f"unknown placeholder {ref!r}"
        position = match.end()
    plain, reason = _words(text[position:], names)
    return ([], reason) if reason else ([*segments, *plain], None)


def as_markdown(paragraph: Paragraph) -> str:
    """A paragraph as the claim checker reads it (names in code, numbers printed)."""
    out = []
    for segment in paragraph:
        if isinstance(segment, Number):
            out.append(segment.printed)
        elif isinstance(segment, Code):
            out.append(f"`{segment.text}`")
        elif isinstance(segment, Cite):
            out.append("[@" + "; @".join(segment.keys) + "]")
        else:
            out.append(segment)
    return "".join(out)


def sanitize(
    section: str,
    text: str,
    values: Mapping[str, Number],
    names: set[str],
    cite_keys: set[str],
    backed: Mapping[str, bool],
) -> tuple[list[Paragraph], list[Rejected]]:
    """Model prose as paragraphs of checked segments, and the sentences dropped (see module doc)."""
    paragraphs: list[Paragraph] = []
    rejected: list[Rejected] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        paragraph: Paragraph = []
        for sentence in SENTENCE_END.split(" ".join(block.split())):
            if not sentence:
                continue
            segments, reason = _sentence(sentence, values, names, cite_keys)
            if reason is None:
                claims = unbacked_claims(as_markdown(segments), "md", backed)
                reason = claims[0] if claims else None
            if reason is not None:
                rejected.append(Rejected(section, sentence, reason))
                continue
            if paragraph:
                paragraph.append(" ")
            paragraph += segments
        if paragraph:
            paragraphs.append(paragraph)
    return paragraphs, rejected


def write_prose(
    client: LLMClient,
    context: Mapping[str, Any],
    values: Mapping[str, Number],
    names: set[str],
    cite_keys: set[str],
    backed: Mapping[str, bool],
) -> tuple[dict[str, list[Paragraph]], list[Rejected], str | None]:
    """The model's sections (checked), what was dropped, and an error when the call failed."""
    env = Environment(
        loader=PackageLoader("controller", "prompts"),
        undefined=StrictUndefined,
        autoescape=False,  # noqa: S701 - a prompt, not HTML
        trim_blocks=True,
        lstrip_blocks=True,
    )
    prompt = env.get_template("paper_prose.j2").render(
        **context, placeholders=sorted(values), cite_keys=sorted(cite_keys)
    )
    try:
        reply = client.complete_structured([{"role": "user", "content": prompt}], PaperProse)
    except Exception as exc:  # the template prose stands in; the paper is written whatever the model does
        log.warning("paper.prose_failed", error=str(exc))
        return {}, [], f"{type(exc).__name__}: {exc}"
    sections: dict[str, list[Paragraph]] = {}
    rejected: list[Rejected] = []
    for section in PROSE_SECTIONS:
        paragraphs, dropped = sanitize(section, getattr(reply, section), values, names, cite_keys, backed)
        rejected += dropped
        if paragraphs:
            sections[section] = paragraphs
    return sections, rejected, None
