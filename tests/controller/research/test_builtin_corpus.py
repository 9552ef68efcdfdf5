"""The built-in literature corpus: every line a valid `Paper`, hand-written, well formed.

`problems` names what is wrong with a list of records; the corpus must have none, and the
tests at the end show that each check does catch a broken copy of the corpus.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from bibtexparser.entrypoint import parse_string

from controller.research.papers import Paper, citation_key, dedupe, normalize_title

CORPUS = Path(__file__).resolve().parents[3] / "controller" / "research" / "corpus" / "builtin.jsonl"
TAGS = frozenset(
    {
        "augmentation",
        "regularisation",
        "normalisation",
        "architecture",
        "head",
        "optimisation",
        "schedule",
        "small-data",
        "statistics",
        "digits",
        "classification",
    }
)
SUMMARY_PARTS = ("Task:", "Method:", "Result:", "Limitations:")
ARXIV_ID = re.compile(r"^\d{4}\.\d{4,5}$")
MIN_RECORDS = 30


def load() -> list[Paper]:
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    return [Paper.model_validate_json(line) for line in lines]


def problems(papers: list[Paper]) -> list[str]:
    """Everything that makes `papers` an unfit built-in corpus (empty when fit)."""
    found: list[str] = []
    if len(papers) < MIN_RECORDS:
        found.append(f"only {len(papers)} records")
    seen: dict[str, str] = {}
    for paper in papers:
        name = paper.title[:40]
        title = normalize_title(paper.title)
        if title in seen:
            found.append(f"{name}: duplicate title")
        seen[title] = paper.title
        if not paper.authors or any(len(a.split()) < 2 for a in paper.authors):
            found.append(f"{name}: authors missing or not 'Given Family'")
        if paper.year is None or not 1990 <= paper.year <= 2026:
            found.append(f"{name}: year {paper.year}")
        if not paper.venue:
            found.append(f"{name}: no venue")
        summary = paper.summary or ""
        if not 100 <= len(summary) <= 700:
            found.append(f"{name}: summary of {len(summary)} characters")
        positions = [summary.find(part) for part in SUMMARY_PARTS]
        if -1 in positions or positions != sorted(positions):
            found.append(f"{name}: summary lacks Task/Method/Result/Limitations in order")
        if paper.abstract is not None:
            found.append(f"{name}: copies an abstract")
        if not paper.tags or not set(paper.tags) <= TAGS:
            found.append(f"{name}: tags {paper.tags}")
        if paper.sources != ["builtin"]:
            found.append(f"{name}: sources {paper.sources}")
        if paper.key or paper.bibtex:
            found.append(f"{name}: key/bibtex are computed, not stored")
        if paper.ids.doi is not None and (paper.ids.doi != paper.ids.doi.lower() or paper.ids.doi.startswith("http")):
            found.append(f"{name}: doi {paper.ids.doi} not bare lowercase")
        if paper.ids.arxiv is not None and not ARXIV_ID.match(paper.ids.arxiv):
            found.append(f"{name}: arxiv id {paper.ids.arxiv}")
        if paper.open_access:
            if not paper.ids.arxiv or paper.license != "arxiv":
                found.append(f"{name}: open access without an arXiv id and licence")
            elif paper.pdf_url != f"https://arxiv.org/pdf/{paper.ids.arxiv}":
                found.append(f"{name}: pdf_url {paper.pdf_url}")
        elif paper.pdf_url is not None or paper.license is not None:
            found.append(f"{name}: closed paper with a pdf_url or licence")
        if paper.url is not None and not paper.url.startswith("https://"):
            found.append(f"{name}: url {paper.url}")
    return found


def bibliography_problems(papers: list[Paper]) -> list[str]:
    """What goes wrong when the corpus becomes citable records: merges, key clashes, bad BibTeX."""
    found: list[str] = []
    merged = dedupe(papers)
    if len(merged) != len(papers):
        found.append(f"dedupe kept {len(merged)} of {len(papers)} records")
    keys = [p.key for p in merged]
    if len(set(keys)) != len(keys):
        found.append("citation keys not unique")
    plain = [citation_key(p) for p in papers]
    if len(set(plain)) != len(plain):  # a clash would give one paper an arbitrary "a"/"b" suffix
        found.append("two records share a base citation key")
    for paper in merged:
        library = parse_string(paper.bibtex)
        if library.failed_blocks or [e.key for e in library.entries] != [paper.key]:
            found.append(f"{paper.key}: BibTeX does not parse to one entry")
            continue
        entry = library.entries[0]
        if entry.fields_dict["title"].value != paper.title.replace("_", " "):
            found.append(f"{paper.key}: BibTeX title differs")
    return found


@pytest.fixture(scope="module")
def corpus() -> list[Paper]:
    return load()


def test_every_line_is_a_paper() -> None:
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    assert lines, "empty corpus"
    assert all(line.strip() for line in lines), "blank line in the corpus"
    for number, line in enumerate(lines, 1):
        try:
            Paper.model_validate_json(line)
        except ValueError as error:
            pytest.fail(f"line {number}: {error}")


def test_corpus_is_well_formed(corpus: list[Paper]) -> None:
    assert len(corpus) >= MIN_RECORDS
    assert problems(corpus) == []


def test_corpus_survives_dedupe_with_parsable_bibtex(corpus: list[Paper]) -> None:
    assert bibliography_problems(corpus) == []


def test_corpus_covers_every_topic(corpus: list[Paper]) -> None:
    used = {tag for paper in corpus for tag in paper.tags}
    assert used == TAGS


def test_duplicates_are_caught(corpus: list[Paper]) -> None:
    again = corpus[0].model_copy(update={"title": corpus[0].title.upper() + "!"})
    assert any("duplicate title" in p for p in problems([*corpus, again]))
    assert any("dedupe kept" in p for p in bibliography_problems([*corpus, again]))


@pytest.mark.parametrize(
    ("update", "expected"),
    [
        ({"authors": []}, "authors"),
        ({"authors": ["Hinton"]}, "authors"),
        ({"year": 1989}, "year"),
        ({"venue": None}, "no venue"),
        ({"summary": "Task: too short."}, "summary of"),
        ({"summary": "x" * 200}, "Task/Method/Result/Limitations"),
        ({"abstract": "Copied text."}, "abstract"),
        ({"tags": ["vision"]}, "tags"),
        ({"sources": ["arxiv"]}, "sources"),
        ({"key": "custom2020"}, "computed"),
    ],
)
def test_field_checks_fail_on_bad_records(corpus: list[Paper], update: dict[str, object], expected: str) -> None:
    broken = corpus[0].model_copy(update=update)
    assert any(expected in p for p in problems([broken, *corpus[1:]]))


def test_identifier_checks_fail_on_bad_records(corpus: list[Paper]) -> None:
    arxiv_paper = next(p for p in corpus if p.open_access)
    doi_paper = next(p for p in corpus if p.ids.doi and p.ids.doi != p.ids.doi.upper())
    upper_doi = (doi_paper.ids.doi or "").upper()
    upper = doi_paper.model_copy(update={"ids": doi_paper.ids.model_copy(update={"doi": upper_doi})})
    no_id = arxiv_paper.model_copy(update={"ids": arxiv_paper.ids.model_copy(update={"arxiv": None})})
    wrong_pdf = arxiv_paper.model_copy(update={"pdf_url": "https://example.org/paper.pdf"})
    closed = doi_paper.model_copy(update={"open_access": False, "license": None, "pdf_url": "https://arxiv.org/pdf/1"})
    for broken, expected in [
        (upper, "not bare lowercase"),
        (no_id, "open access without"),
        (wrong_pdf, "pdf_url"),
        (closed, "closed paper"),
    ]:
        assert any(expected in p for p in problems([broken])), expected
