"""Novelty: how close each candidate idea lies to the papers retrieved for the topic.

An idea's text (statement and module descriptions) is compared with each paper's title,
abstract and summary by TF-IDF cosine. An idea at or above TOO_CLOSE to some paper restates
it: it is rejected with that paper cited. novelty.json records, for every idea the session
considered, its nearest papers and the verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from controller.plan import Hypothesis
from controller.research.papers import Paper
from controller.research.text import similarity

TOO_CLOSE = 0.14
"""Cosine at which an idea is taken to restate a paper rather than extend it. Calibrated on
the built-in corpus and the offline idea bank: the cutout idea (DeVries and Taylor's method,
unchanged) scores 0.15 against that paper; every other bank idea's nearest paper is at most
0.11. Ideas are a sentence and papers a paragraph, so cosines stay low; a model's longer
ideas may need another threshold (RunConfig does not expose one yet)."""
NEAREST = 3


class Neighbour(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str
    title: str
    score: float


class NoveltyVerdict(BaseModel):
    """One idea against the literature."""

    model_config = ConfigDict(extra="forbid")

    idea: str
    """The hypothesis id."""
    text: str
    nearest: list[Neighbour] = Field(default_factory=list)
    verdict: Literal["novel", "too_close"]
    cited: str | None = None
    """The paper an idea too close to was rejected for."""
    threshold: float = TOO_CLOSE


class NoveltyReport(BaseModel):
    """novelty.json."""

    model_config = ConfigDict(extra="forbid")

    method: str = "tf-idf cosine (scikit-learn), unigrams and bigrams, English stop words removed"
    threshold: float = TOO_CLOSE
    papers: int = 0
    ideas: list[NoveltyVerdict] = Field(default_factory=list)

    def verdict(self, idea: str) -> NoveltyVerdict | None:
        return next((v for v in reversed(self.ideas) if v.idea == idea), None)


TEMPLATE_TERMS = {
    "shift": "random translation shift data augmentation",
    "noise": "gaussian input noise injection data augmentation",
    "shift_noise": "random translation shift and gaussian noise data augmentation",
    "cutout": "cutout random erasing occlusion square mask data augmentation",
    "identity": "no augmentation",
    "linear": "linear classifier head",
    "mlp": "multilayer perceptron classifier head with dropout",
    "bn_mlp": "batch normalization multilayer perceptron classifier head",
}
"""What the offline agent's templates do, in the words papers use."""
HYPER_TERMS = {
    "width": "wider network channels width",
    "lr": "learning rate",
    "epochs": "longer training epochs",
    "batch_size": "batch size",
}


def _module_words(description: str) -> str:
    if description.startswith("template:"):
        name = description.removeprefix("template:").split()[0]
        return TEMPLATE_TERMS.get(name, name.replace("_", " "))
    return description


def idea_text(hypothesis: Hypothesis) -> str:
    """What an idea claims, in words: statement plus what each module and hyperparameter does."""
    modules = " ".join(_module_words(d) for d in hypothesis.modules.values())
    hyper = " ".join(HYPER_TERMS.get(key, key) for key in hypothesis.hyper)
    return " ".join(filter(None, [hypothesis.statement, modules, hyper]))


def judge(
    hypotheses: Sequence[Hypothesis], papers: Sequence[Paper], threshold: float = TOO_CLOSE
) -> list[NoveltyVerdict]:
    """Each hypothesis's nearest papers and whether it is too close to one."""
    texts = [idea_text(h) for h in hypotheses]
    docs = [" ".join(filter(None, [p.title, p.abstract, p.summary])) for p in papers]
    scores = similarity(texts, docs)
    verdicts = []
    for hypothesis, text, row in zip(hypotheses, texts, scores, strict=True):
        ranked = sorted(range(len(papers)), key=lambda j: (-row[j], j))[:NEAREST]
        nearest = [Neighbour(key=papers[j].key, title=papers[j].title, score=row[j]) for j in ranked]
        close = nearest[0] if nearest and nearest[0].score >= threshold else None
        verdicts.append(
            NoveltyVerdict(
                idea=hypothesis.id,
                text=text,
                nearest=nearest,
                verdict="too_close" if close else "novel",
                cited=close.key if close else None,
                threshold=threshold,
            )
        )
    return verdicts
