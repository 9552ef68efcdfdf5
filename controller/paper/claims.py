"""Claims of improvement, and whether the results back them.

A claim is a clause with a claim word (supported, improves, outperforms, beats, ...) that is
not negated within a few words before it ("not supported", "did not improve"). Its subjects
are the arms and hypotheses it names in code (`novelty:x`, `x`); the baseline is the
comparator, never a subject. A claim is backed only when every subject it names (the
clause's, else the sentence's) improved on the baseline with a Holm-corrected Welch
p < alpha, and for a hypothesis, when the loop also judged it supported. A claim that names
nothing is unbacked. Quotations of the run's records (a hypothesis statement says what was
hoped, not what was found) are not claims.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from controller.paper.latex import escape_tex
from controller.paper.trace import TEX_GROUP, Format, mask
from controller.stats import DEFAULT_ALPHA

BASELINE = "baseline"
CLAIM_WORD = re.compile(
    r"\b(?:supported|supports|improves?|improved|improvements?|outperforms?|outperformed|beats?|"
    r"significantly better|significant improvement)\b",
    re.IGNORECASE,
)
NEGATION = re.compile(r"\b(?:not|no|never|neither|nor|without|cannot|fails?|failed)\b|n't\b", re.IGNORECASE)
NEGATION_WINDOW_WORDS = 4
"""How far before a claim word a negation still negates it ("was not judged supported")."""
SENTENCE = re.compile(r"(?<=[.!?])\s+|\n")
CLAUSE = re.compile(r"[;,]|\s(?:but|while|whereas|although|though)\s")
_MD_CODE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")
_TEX_CODE = re.compile(r"\\texttt(" + TEX_GROUP + ")")


def backing(aggregate: Mapping[str, Any], journal: list[Any], higher_is_better: bool) -> dict[str, bool]:
    """Every arm and hypothesis name -> whether the results back a claim of improvement for it."""
    backed: dict[str, bool] = {}
    for name, arm in (aggregate.get("arms") or {}).items():
        versus = arm.get("vs_baseline") or {}
        p_holm, diff = versus.get("p_holm"), versus.get("diff")
        improved = diff is not None and (diff > 0 if higher_is_better else diff < 0)
        backed[name] = bool(improved and p_holm is not None and p_holm < DEFAULT_ALPHA)
    for outcome in journal:
        hypothesis = outcome.get("hypothesis", {}).get("id") if isinstance(outcome, dict) else None
        if isinstance(hypothesis, str):
            backed[hypothesis] = bool(outcome.get("supported")) and backed.get(f"novelty:{hypothesis}", False)
    return backed


def _mentions(text: str, fmt: Format, names: Mapping[str, bool]) -> list[str]:
    """The known names a piece of text puts in code, in order."""
    if fmt == "md":
        written = [m.group(2).strip() for m in _MD_CODE.finditer(text)]
        return [w for w in written if w in names]
    by_escaped = {escape_tex(name): name for name in names}
    written = [m.group(1)[1:-1] for m in _TEX_CODE.finditer(text)]
    return [by_escaped[w] for w in written if w in by_escaped]


def _claims(clause: str) -> bool:
    """Whether the clause holds a claim word that no nearby negation cancels."""
    for match in CLAIM_WORD.finditer(clause):
        before = clause[: match.start()].split()[-NEGATION_WINDOW_WORDS:]
        if not NEGATION.search(" ".join(before)):
            return True
    return False


def _prose_of(text: str, fmt: Format) -> str:
    """Text with code blanked, so a claim word inside a name (`ablation:x-improves`) is no claim."""
    pattern = _MD_CODE if fmt == "md" else _TEX_CODE
    return pattern.sub(lambda m: " " * len(m.group(0)), text)


def unbacked_claims(text: str, fmt: Format, backed: Mapping[str, bool]) -> list[str]:
    """Each claim sentence the results do not back, with why."""
    problems: list[str] = []
    for sentence in SENTENCE.split(mask(text, fmt, keep_code=True)):
        if not _claims(_prose_of(sentence, fmt)):
            continue
        sentence_subjects = [n for n in _mentions(sentence, fmt, backed) if n != BASELINE]
        shown = " ".join(sentence.split())[:160]
        for clause in CLAUSE.split(sentence):
            if not _claims(_prose_of(clause, fmt)):
                continue
            subjects = [n for n in _mentions(clause, fmt, backed) if n != BASELINE] or sentence_subjects
            if not subjects:
                problems.append(f"claim names no arm or hypothesis: {shown!r}")
                break
            weak = [n for n in subjects if not backed.get(n, False)]
            if weak:
                problems.append(
                    f"claim about {', '.join(weak)} without a Holm-corrected p < {DEFAULT_ALPHA}: {shown!r}"
                )
                break
    return problems
