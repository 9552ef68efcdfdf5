"""Offline sources: a corpus of papers on disk (BibTeX or JSON Lines), and the built-in set.

A corpus is a `.bib` file, a `.jsonl` file (one Paper-shaped object a line: at least a
title, any other field of `controller.research.papers.Paper`), or a folder holding such
files. It is searched by TF-IDF cosine over title, abstract, summary and tags. Only
papers that share at least one term with the query come back: a paper with a score of
zero says nothing about the question, and returning it would pad the literature with noise.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

from bibtexparser.entrypoint import parse_string
from bibtexparser.model import Entry
from pydantic import ValidationError
from typing_extensions import override

from controller.errors import BadInputError
from controller.research.papers import Paper, PaperIds, normalize_arxiv, normalize_doi
from controller.research.sources.base import Source
from controller.research.text import rank

CORPUS_SUFFIXES = (".bib", ".jsonl")
BUILTIN_NAME = "builtin"
BUILTIN_PACKAGE = "controller.research"
BUILTIN_RESOURCE = "corpus/builtin.jsonl"
_SAFE_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_:.+-]{0,79}$")
"""A BibTeX key kept as the citation key only when it passes unchanged through LaTeX."""
_YEAR = re.compile(r"\d{4}")
_ARXIV_ID = re.compile(r"^(\d{4}\.\d{4,5}|[a-z-]+(\.[A-Z]{2})?/\d{7})(v\d+)?$", re.IGNORECASE)


def _fix(path: Path) -> str:
    return f"a corpus is a .bib file, a .jsonl file of Paper records, or a folder of them ({path})"


class LocalCorpus(Source):
    """Papers from local files, searched offline; loaded (and checked) when constructed."""

    def __init__(self, path: Path, name: str = "corpus") -> None:
        self.path = Path(path)
        self.name = name
        self.papers = load_corpus(self.path, name)
        """Every record, in file order, each with `sources == [name]`."""
        self._documents = [_document(p) for p in self.papers]

    @override
    def search(self, query: str, limit: int) -> list[Paper]:
        if limit <= 0 or not self.papers:
            return []
        ranked = [(i, score) for i, score in rank(query, self._documents) if score > 0]
        return [self.papers[i].model_copy(deep=True) for i, _ in ranked[:limit]]


def builtin_corpus() -> LocalCorpus:
    """The papers this team curated (with summaries and tags), shipped in the package."""
    resource = resources.files(BUILTIN_PACKAGE).joinpath(BUILTIN_RESOURCE)
    with resources.as_file(resource) as path:
        return LocalCorpus(path, name=BUILTIN_NAME)


def load_corpus(path: Path, name: str) -> list[Paper]:
    """Every paper in a .bib or .jsonl file, or in the folder's such files (sorted by name)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in CORPUS_SUFFIXES)
        if not files:
            msg = f"corpus folder {path} holds no .bib or .jsonl file; {_fix(path)}"
            raise BadInputError(msg)
        return [paper for file in files for paper in load_corpus(file, name)]
    if not path.is_file():
        msg = f"corpus {path} does not exist; {_fix(path)}"
        raise BadInputError(msg)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        msg = f"corpus file {path} cannot be read as UTF-8 text ({error}); save it as UTF-8"
        raise BadInputError(msg) from error
    suffix = path.suffix.lower()
    if suffix == ".bib":
        papers = _from_bibtex(text, path, name)
    elif suffix == ".jsonl":
        papers = _from_jsonl(text, path, name)
    else:
        msg = f"corpus file {path} is neither .bib nor .jsonl; {_fix(path)}"
        raise BadInputError(msg)
    if not papers:
        msg = f"corpus file {path} holds no papers; add entries or leave it out"
        raise BadInputError(msg)
    return papers


def _from_jsonl(text: str, path: Path, name: str) -> list[Paper]:
    papers = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            msg = f"{path}:{number}: not valid JSON ({error}); each line must be one JSON object"
            raise BadInputError(msg) from error
        if not isinstance(record, dict):
            msg = f"{path}:{number}: not a JSON object; each line must be one Paper record"
            raise BadInputError(msg)
        try:
            paper = Paper.model_validate({**record, "sources": [name]})
        except ValidationError as error:
            msg = f"{path}:{number}: not a Paper record ({_first_problem(error)}); each line needs at least a title"
            raise BadInputError(msg) from error
        if not paper.title.strip():
            msg = f"{path}:{number}: the title is empty; each line needs a title"
            raise BadInputError(msg)
        ids = PaperIds(
            **{
                **paper.ids.model_dump(),
                "doi": normalize_doi(paper.ids.doi),
                "arxiv": normalize_arxiv(paper.ids.arxiv),
            }
        )
        papers.append(paper.model_copy(update={"ids": ids}))
    return papers


def _first_problem(error: ValidationError) -> str:
    first = error.errors()[0]
    return f"{'.'.join(str(p) for p in first['loc']) or 'record'}: {first['msg']}"


def _from_bibtex(text: str, path: Path, name: str) -> list[Paper]:
    library = parse_string(text)
    if library.failed_blocks:
        block = library.failed_blocks[0]
        msg = (
            f"{path}:{(block.start_line or 0) + 1}: BibTeX entry could not be parsed (unbalanced braces or a "
            "missing comma?); fix or remove it"
        )
        raise BadInputError(msg)
    papers = []
    for entry in library.entries:
        fields = {key.lower(): _plain(str(field.value)) for key, field in entry.fields_dict.items()}
        if not fields.get("title"):
            msg = f"{path}:{(entry.start_line or 0) + 1}: BibTeX entry {entry.key} has no title; add one or remove it"
            raise BadInputError(msg)
        papers.append(_bib_paper(entry, fields, name))
    return papers


def _bib_paper(entry: Entry, fields: dict[str, str], name: str) -> Paper:
    eprint = fields.get("eprint", "")
    is_arxiv = fields.get("archiveprefix", "").lower() == "arxiv" or bool(_ARXIV_ID.match(eprint))
    year = _YEAR.search(fields.get("year", ""))
    authors = [_given_first(a) for a in re.split(r"\s+and\s+", fields.get("author", "")) if a.strip()]
    keywords = [k.strip() for k in re.split(r"[,;]", fields.get("keywords", "")) if k.strip()]
    return Paper(
        key=entry.key if _SAFE_KEY.match(entry.key) else "",
        sources=[name],
        ids=PaperIds(doi=normalize_doi(fields.get("doi")), arxiv=normalize_arxiv(eprint) if is_arxiv else None),
        title=fields["title"],
        authors=authors,
        year=int(year.group()) if year else None,
        venue=fields.get("journal") or fields.get("booktitle") or None,
        abstract=fields.get("abstract") or None,
        url=fields.get("url") or None,
        tags=keywords,
    )


def _plain(value: str) -> str:
    """A BibTeX value without grouping braces and with single spaces."""
    return " ".join(value.replace("{", "").replace("}", "").split())


def _given_first(author: str) -> str:
    """ "He, Kaiming" -> "Kaiming He" (the form the APIs use); other forms unchanged."""
    parts = [p.strip() for p in author.split(",")]
    return f"{parts[1]} {parts[0]}" if len(parts) == 2 and all(parts) else " ".join(author.split())


def _document(paper: Paper) -> str:
    return " ".join(filter(None, [paper.title, paper.abstract, paper.summary, " ".join(paper.tags)]))
