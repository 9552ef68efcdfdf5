"""Text similarity for offline search, relevance and novelty: TF-IDF cosine (scikit-learn).

One vectoriser is fitted on the documents and the queries together, so rare words that
two texts share weigh more than common ones; English stop words are dropped.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer  # type: ignore[import-untyped]
from sklearn.metrics.pairwise import cosine_similarity  # type: ignore[import-untyped]

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")
_WORD = re.compile(r"(?u)\b[a-z][a-z0-9]+\b")
_SUFFIXES = (
    "izations",
    "isations",
    "ization",
    "isation",
    "ations",
    "ation",
    "ings",
    "ing",
    "ers",
    "er",
    "ed",
    "es",
    "s",
)
STOP_WORDS = ENGLISH_STOP_WORDS


def stem(word: str) -> str:
    """A light suffix stripper, so augment/augmentation and regularise/regularisation meet."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)].replace("iz", "is")
    return word.replace("iz", "is")


def terms(text: str) -> list[str]:
    """Lowercase stemmed words, stop words removed: what TF-IDF counts."""
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in STOP_WORDS]


def similarity(queries: Sequence[str], documents: Sequence[str]) -> list[list[float]]:
    """cosine[i][j] between queries[i] and documents[j], in [0, 1] (0 where either is empty)."""
    if not queries or not documents:
        return [[0.0] * len(documents) for _ in queries]
    texts = [*queries, *documents]
    if not any(t.strip() for t in texts):
        return [[0.0] * len(documents) for _ in queries]
    vectorizer = TfidfVectorizer(analyzer=_analyse, sublinear_tf=True)
    try:
        matrix = vectorizer.fit_transform(texts)
    except ValueError:  # every word a stop word: nothing to compare
        return [[0.0] * len(documents) for _ in queries]
    scores = cosine_similarity(matrix[: len(queries)], matrix[len(queries) :])
    return [[round(float(value), 6) for value in row] for row in scores]


def _analyse(text: str) -> list[str]:
    words = terms(text)
    return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]


def rank(query: str, documents: Sequence[str]) -> list[tuple[int, float]]:
    """Document indices with their cosine to `query`, best first (ties by index)."""
    scores = similarity([query], documents)[0] if documents else []
    return sorted(enumerate(scores), key=lambda pair: (-pair[1], pair[0]))


def sentences(text: str) -> list[str]:
    """The sentences of a paragraph (a light splitter: enough for abstracts)."""
    return [s.strip() for s in _SENTENCE.split(" ".join(text.split())) if s.strip()]
