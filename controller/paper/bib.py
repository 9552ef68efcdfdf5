"""references.bib: the built-in entries a run stands on, plus what its literature stage found.

The library is built and written with bibtexparser (parse, add, write), never by pasting
strings, so a malformed literature record is skipped rather than breaking the bibliography.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from bibtexparser.entrypoint import parse_string, write_string
from bibtexparser.library import Library
from bibtexparser.model import Entry, Field

from controller.registry import RunConfig

BUILTIN_BIB = "builtin.bib"
LITERATURE_RECORDS = "literature/papers.jsonl"
SAFE_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_:.+-]{0,79}$")
"""Cite keys that pass unchanged through \\citep{} and Markdown (no brace, comma, backslash)."""
LITERATURE_FIELDS = frozenset(
    {
        "author",
        "title",
        "year",
        "journal",
        "booktitle",
        "volume",
        "number",
        "pages",
        "publisher",
        "doi",
        "url",
        "eprint",
        "archiveprefix",
        "primaryclass",
        "howpublished",
        "institution",
        "school",
        "month",
        "note",
        "editor",
    }
)
LATEX_COMMAND = re.compile(r"\\([A-Za-z@]+)")
SAFE_COMMANDS = frozenset(
    {
        "c",
        "v",
        "u",
        "H",
        "k",
        "r",
        "o",
        "O",
        "aa",
        "AA",
        "ae",
        "AE",
        "oe",
        "OE",
        "ss",
        "l",
        "L",
        "i",
        "j",
        "textendash",
        "textemdash",
        "emph",
        "textit",
        "textbf",
        "textsc",
    }
)
"""Accents and text styles a title may keep; `\\"o`, `\\&` and other one-symbol escapes are not words."""
STATISTICS_KEYS = ("welch1947", "holm1979", "hedges1981")
FRAMEWORK_KEY = "paszke2019pytorch"
TORCHVISION_KEY = "marcel2010torchvision"
DATASET_KEYS: dict[str, tuple[str, ...]] = {
    "digits": ("alpaydin1998digits", "pedregosa2011sklearn"),
    "mnist": ("lecun1998mnist", TORCHVISION_KEY),
    "cifar10": ("krizhevsky2009cifar", TORCHVISION_KEY),
    "fakedata": (TORCHVISION_KEY,),
}
ARCH_KEYS: dict[str, tuple[str, ...]] = {"resnet18": ("he2016resnet", TORCHVISION_KEY)}


@dataclass(frozen=True)
class Bibliography:
    """The entries written to references.bib and which of them the text cites where."""

    entries: list[Entry]
    dataset: list[str]
    """Keys cited for the dataset (and its loader)."""
    model: list[str]
    """Keys for the framework and the architecture."""
    statistics: list[str]
    literature: list[str]
    """Keys from literature/papers.jsonl, cited in the related-work paragraph."""
    skipped: list[str] = field(default_factory=list)
    """Literature records left out, and why."""

    @property
    def keys(self) -> set[str]:
        return {entry.key for entry in self.entries}


def defuse(entry: Entry) -> Entry:
    """A literature entry that bibtex and LaTeX can only print: known fields, no commands.

    Its fields come from outside (a search API), and bibtex copies them into main.bbl, so a
    `\\input{...}` in a title would be run by pdflatex. Accents and escapes stay; any other
    control sequence loses its backslash and prints as a word; `^^` (TeX's way to spell a
    backslash without one) and `#` are removed.
    """
    fields = []
    for item in entry.fields:
        if item.key.lower() not in LITERATURE_FIELDS:
            continue
        value = LATEX_COMMAND.sub(_keep_safe_command, str(item.value))
        fields.append(Field(item.key, value.replace("^^", "").replace("#", "")))
    return Entry(entry.entry_type, entry.key, fields)


def _keep_safe_command(match: re.Match[str]) -> str:
    return match.group(0) if match.group(1) in SAFE_COMMANDS else match.group(1)


def builtin_entries() -> dict[str, Entry]:
    """The packaged built-in bibliography, by key."""
    text = resources.files("controller.paper").joinpath(BUILTIN_BIB).read_text()
    return {entry.key: entry for entry in parse_string(text).entries}


def literature_entries(root: Path) -> tuple[list[Entry], list[str]]:
    """Entries from literature/papers.jsonl (each record's `bibtex`), and what was skipped."""
    path = root / LITERATURE_RECORDS
    if not path.is_file():
        return [], []
    entries: list[Entry] = []
    skipped: list[str] = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skipped.append(f"line {number}: not JSON")
            continue
        bibtex = record.get("bibtex") if isinstance(record, dict) else None
        if not isinstance(bibtex, str) or not bibtex.strip():
            skipped.append(f"line {number}: no bibtex field")
            continue
        parsed = parse_string(bibtex)
        if parsed.failed_blocks or not parsed.entries:
            skipped.append(f"line {number}: bibtex did not parse")
            continue
        for entry in parsed.entries:
            if SAFE_KEY.match(entry.key):
                entries.append(defuse(entry))
            else:
                skipped.append(f"line {number}: unsafe cite key {entry.key[:40]!r}")
    return entries, skipped


def build_bibliography(root: Path, config: RunConfig) -> Bibliography:
    """The run's bibliography: built-in entries for what it used, plus its literature."""
    builtin = builtin_entries()
    dataset = list(dict.fromkeys(DATASET_KEYS.get(config.dataset.split(":")[0], (TORCHVISION_KEY,))))
    model = list(dict.fromkeys([FRAMEWORK_KEY, *ARCH_KEYS.get(config.arch, ())]))
    statistics = list(STATISTICS_KEYS)
    chosen = [builtin[key] for key in dict.fromkeys([*dataset, *model, *statistics])]
    found, skipped = literature_entries(root)
    literature: list[str] = []
    taken = {entry.key for entry in chosen}
    for entry in found:
        if entry.key in taken:
            skipped.append(f"duplicate cite key {entry.key!r}")
            continue
        taken.add(entry.key)
        chosen.append(entry)
        literature.append(entry.key)
    return Bibliography(chosen, dataset, model, statistics, literature, skipped)


def render_bibliography(bibliography: Bibliography) -> str:
    """references.bib as bibtexparser writes it."""
    library = Library()
    library.add(list(bibliography.entries))
    return write_string(library)


def bib_keys(path: Path) -> set[str]:
    """The entry keys of a .bib file (empty when it is absent)."""
    if not path.is_file():
        return set()
    return {entry.key for entry in parse_string(path.read_text(errors="replace")).entries}
