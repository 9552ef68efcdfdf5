"""The run's paper draft and its review.

write_paper turns the report's tables and the run's records into paper/paper.md and
paper/main.tex (and main.pdf when LaTeX is there); review_paper checks the draft against
the records offline (every number traced, every claim backed, the test split used once)
and, with an LLM, adds a NeurIPS-style review.
"""

from controller.paper.latex import latex_available
from controller.paper.review import review_paper
from controller.paper.writer import PaperOutcome, write_paper

__all__ = ["PaperOutcome", "latex_available", "review_paper", "write_paper"]
