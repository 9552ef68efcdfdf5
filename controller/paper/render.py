"""Rendering the paper's templates so that run text is always escaped and numbers recorded.

Every `{{ value }}` goes through `Renderer.finalize`: a string from the run is escaped for
the format, a `Number` is printed and appended to the renderer's ledger (in the order it
appears in the file, which is what the review reads back), markup made by one of the
filters passes as is, and anything else (a bare int or float, None) is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from controller.paper.latex import escape_tex
from controller.paper.numbers import Number
from controller.paper.prose import Cite, Code, Paragraph
from controller.paper.trace import Format

MD_SPECIALS = frozenset("\\`*_[]<>#|!~$")
SAFE_PATH = re.compile(r"^[A-Za-z0-9_./-]+$")
BACKTICKS = re.compile(r"`+")
WHITESPACE = re.compile(r"\s+")


class Markup(str):
    """Text already in the output format (made by a filter); printed as is."""

    __slots__ = ()


class PaperRenderError(TypeError):
    """A template tried to print something that is neither run text nor a recorded Number."""


def escape_md(text: str) -> str:
    """Untrusted text as Markdown that prints literally, on one line."""
    out = []
    for char in WHITESPACE.sub(" ", text):
        if char == "&":
            out.append("&amp;")
        elif char in MD_SPECIALS:
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def md_code(text: str) -> str:
    """A Markdown code span holding `text` literally, whatever backticks it contains."""
    flat = " ".join(text.split())
    longest = max((len(m.group(0)) for m in BACKTICKS.finditer(flat)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def quote_md(text: str) -> str:
    """A quotation of a run record in Markdown (the review checks it against the record)."""
    return f"<q>{escape_md(text)}</q>"


def record_md(text: str) -> str:
    """Record text shown without quotation marks (figure captions)."""
    return f"<span>{escape_md(text)}</span>"


def record_tex(text: str) -> str:
    return "\\record{" + escape_tex(text) + "}"


class Renderer:
    """One file's rendering: escaping for its format and the ledger of numbers printed."""

    def __init__(self, fmt: Format) -> None:
        self.fmt = fmt
        self.inserted: list[Number] = []

    def number(self, value: Number) -> str:
        self.inserted.append(value)
        printed = value.printed
        if self.fmt == "md":
            return printed
        if printed in {"inf", "-inf"}:
            return "$-\\infty$" if printed.startswith("-") else "$\\infty$"
        return "$-$" + printed[1:] if printed.startswith("-") else printed

    def text(self, value: str) -> str:
        return escape_md(value) if self.fmt == "md" else escape_tex(value)

    def finalize(self, value: Any) -> str:
        if isinstance(value, Markup):
            return str(value)
        if isinstance(value, Number):
            return self.number(value)
        if isinstance(value, str):
            return self.text(value)
        msg = f"the paper prints run text and recorded Numbers only, not {type(value).__name__} {value!r}"
        raise PaperRenderError(msg)

    # -- filters ------------------------------------------------------------------------

    def code(self, value: str) -> Markup:
        return Markup(md_code(value) if self.fmt == "md" else "\\texttt{" + escape_tex(value) + "}")

    def quote(self, value: str) -> Markup:
        return Markup(quote_md(value) if self.fmt == "md" else "``" + record_tex(value) + "''")

    def record(self, value: str) -> Markup:
        return Markup(record_md(value) if self.fmt == "md" else record_tex(value))

    def cite(self, keys: Iterable[str]) -> Markup:
        keys = list(keys)
        if not keys:
            return Markup("")
        return Markup("[@" + "; @".join(keys) + "]" if self.fmt == "md" else "\\citep{" + ",".join(keys) + "}")

    def path(self, value: str) -> Markup:
        if not SAFE_PATH.match(value):
            msg = f"unsafe path in the paper: {value!r}"
            raise PaperRenderError(msg)
        return Markup(value)

    def prose(self, paragraphs: list[Paragraph]) -> Markup:
        rendered = []
        for paragraph in paragraphs:
            parts: list[str] = []
            for segment in paragraph:
                if isinstance(segment, Code):
                    parts.append(self.code(segment.text))
                elif isinstance(segment, Cite):
                    parts.append(self.cite(segment.keys))
                else:
                    parts.append(self.finalize(segment))
            rendered.append("".join(parts))
        return Markup("\n\n".join(rendered))

    def join(self, values: Iterable[Any], separator: str = ", ") -> Markup:
        """Items (Numbers, names as Markup, text) joined, each printed through finalize.

        The separator is a literal of the template (trusted), so it is not escaped.
        """
        return Markup(separator.join(self.finalize(v) for v in values))

    def environment(self) -> Environment:
        env = Environment(
            loader=PackageLoader("controller", "templates/paper"),
            undefined=StrictUndefined,
            autoescape=False,  # noqa: S701 - escaping is finalize's job, per output format
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            finalize=self.finalize,
        )
        env.globals["dash"] = Markup("\u2013" if self.fmt == "md" else "\\textendash{}")
        env.filters.update(
            code=self.code,
            quote=self.quote,
            record=self.record,
            cite=self.cite,
            path=self.path,
            prose=self.prose,
            join_items=self.join,
        )
        return env

    def render(self, template: str, context: dict[str, Any]) -> str:
        return self.environment().get_template(template).render(**context)
