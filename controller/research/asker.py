"""The front-end's LLM calls: a prompt template, a reply schema, and what the call cost.

Every call goes through LLMClient.complete_structured (cached, budgeted, retried; malformed
replies are re-asked) and is measured from the client's running usage, so each summary and
each session turn records its own tokens and dollars and they add up to the run's totals.
"""

from __future__ import annotations

from typing import Any, TypeVar

from jinja2 import Environment, PackageLoader, StrictUndefined
from pydantic import BaseModel

from controller.llm import ChatMessage, LLMClient

Reply = TypeVar("Reply", bound=BaseModel)
SYSTEM_TEMPLATE = "research_system.j2"


class Spent(BaseModel):
    """Tokens and dollars one call (with its re-asks) spent; zero when the cache answered."""

    tokens: int = 0
    cost_usd: float = 0.0


class Asker:
    """Renders controller/prompts/<template> and asks the model for a `schema` reply."""

    def __init__(self, client: LLMClient, *, max_repairs: int = 2) -> None:
        self.client = client
        self.max_repairs = max_repairs
        self._env = Environment(
            loader=PackageLoader("controller", "prompts"),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,  # noqa: S701 - renders prompts, not HTML
        )

    def render(self, template: str, **context: Any) -> str:
        return self._env.get_template(template).render(**context).strip() + "\n"

    def ask(self, template: str, schema: type[Reply], **context: Any) -> tuple[Reply, Spent]:
        usage = self.client.usage
        tokens, cost = usage.prompt_tokens + usage.completion_tokens, usage.cost_usd
        messages: list[ChatMessage] = [
            {"role": "system", "content": self.render(SYSTEM_TEMPLATE)},
            {"role": "user", "content": self.render(template, **context)},
        ]
        reply = self.client.complete_structured(messages, schema, max_repairs=self.max_repairs)
        spent = Spent(
            tokens=usage.prompt_tokens + usage.completion_tokens - tokens, cost_usd=round(usage.cost_usd - cost, 12)
        )
        return reply, spent
