"""The LLM client: retries, an on-disk response cache, cost accounting, structured outputs.

It speaks the chat-completions API of any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama,
llama.cpp) through the `openai` SDK. The SDK's own retries are off (`max_retries=0`) so that
tenacity alone decides, counts and logs every retry.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict, TypeVar, cast

import openai
import structlog
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ConfigDict, ValidationError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from controller.errors import ControllerError

log = structlog.get_logger(__name__)

T = TypeVar("T", bound=BaseModel)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Local servers (vLLM, Ollama) ignore the key, but the SDK refuses to start without one.
PLACEHOLDER_API_KEY = "sk-no-key-set"
DEFAULT_TIMEOUT_S = 120.0
TOKENS_PER_MILLION = 1_000_000
# Used only when a server omits `usage`, so the budget still sees roughly what was spent.
CHARS_PER_TOKEN_ESTIMATE = 4
ESTIMATED_COMPLETION_TOKENS = 1_000
"""A typical reply's length, for the price check before a call (a module, a plan)."""
RETRY_AFTER_STATUSES = frozenset({429, 503})
FIRST_SERVER_ERROR_STATUS = 500
JSON_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


class LLMError(ControllerError):
    """Root of every error the LLM layer raises."""


class LLMUnavailableError(LLMError, ConnectionError):
    """The endpoint stayed unreachable, overloaded or failing after every retry."""


class LLMRequestError(LLMError, ValueError):
    """The endpoint refused the request itself (4xx other than 429); retrying cannot help."""


class LLMOutputError(LLMError, ValueError):
    """The model's reply did not fit the schema, even after the allowed repairs."""


class ChatMessage(TypedDict):
    """One chat message as the chat-completions API takes it."""

    role: Literal["system", "user", "assistant"]
    content: str


class ModelPrice(BaseModel):
    """What one model costs, in US dollars per million tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    input_usd_per_mtok: float
    """Price of a million prompt tokens."""
    output_usd_per_mtok: float
    """Price of a million completion tokens."""


class PriceTable(BaseModel):
    """Prices by model name; the longest matching prefix wins, else `default`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    prices: dict[str, ModelPrice] = {
        "gpt-4o-mini": ModelPrice(input_usd_per_mtok=0.15, output_usd_per_mtok=0.60),
        "gpt-4o": ModelPrice(input_usd_per_mtok=2.50, output_usd_per_mtok=10.00),
        "gpt-4.1-mini": ModelPrice(input_usd_per_mtok=0.40, output_usd_per_mtok=1.60),
        "gpt-4.1": ModelPrice(input_usd_per_mtok=2.00, output_usd_per_mtok=8.00),
    }
    """Known models; a dated name such as `gpt-4o-2024-08-06` matches `gpt-4o`."""
    default: ModelPrice = ModelPrice(input_usd_per_mtok=2.50, output_usd_per_mtok=10.00)
    """For unknown models. Deliberately not zero, so a budget cap still bites on a model
    nobody priced; set it to zero for a local server."""

    def price_for(self, model: str) -> ModelPrice:
        """The price of `model`: exact name, then longest prefix, then the default."""
        matches = [name for name in self.prices if model.startswith(name)]
        return self.prices[max(matches, key=len)] if matches else self.default

    def cost_usd(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """Dollar cost of one call."""
        price = self.price_for(model)
        spent = prompt_tokens * price.input_usd_per_mtok + completion_tokens * price.output_usd_per_mtok
        return spent / TOKENS_PER_MILLION


class LLMUsage(BaseModel):
    """Running totals (on the client) or one call's share (passed to `on_usage`)."""

    model_config = ConfigDict(extra="forbid")
    calls: int = 0
    """Completed HTTP calls; cache hits are not counted here."""
    cache_hits: int = 0
    """Requests answered from the disk cache, at no cost."""
    retries: int = 0
    """Attempts repeated after a transient error."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, other: LLMUsage) -> None:
        """Fold another usage record into this one."""
        for name in type(self).model_fields:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class RetryPolicy(BaseModel):
    """How hard to try a transient failure (429, 5xx, timeout, connection) again."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    attempts: int = 5
    """Tries in all, the first included."""
    backoff_base_s: float = 1.0
    """First backoff; it doubles per retry, plus up to this much random jitter."""
    backoff_max_s: float = 30.0
    """Ceiling on one exponential backoff."""
    retry_after_max_s: float = 60.0
    """Ceiling on an honoured Retry-After header, so one server cannot stall the run."""


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, openai.RateLimitError | openai.APIConnectionError):
        return True  # APITimeoutError is an APIConnectionError
    if not isinstance(error, openai.APIStatusError):
        return False
    return error.status_code >= FIRST_SERVER_ERROR_STATUS


def _retry_after_s(error: BaseException | None) -> float | None:
    """The Retry-After header in seconds, on a 429 or 503 that sent one."""
    if not isinstance(error, openai.APIStatusError):
        return None
    if error.status_code not in RETRY_AFTER_STATUSES:
        return None
    try:
        return float(error.response.headers.get("retry-after", ""))
    except ValueError:
        return None  # absent, or an HTTP date, which no server we target sends


def _describe(error: BaseException) -> str:
    if isinstance(error, openai.APIStatusError):
        return f"HTTP {error.status_code}"
    return type(error).__name__


def extract_json(text: str) -> Any:
    """The first JSON object in `text`, tolerating ```json fences and surrounding prose.

    A fenced block is tried first; if it holds no JSON object (the fence was inside a
    code string, say), the whole reply is scanned.
    """
    fenced = JSON_FENCE.search(text)
    candidates = [fenced.group(1), text] if fenced else [text]
    decoder = json.JSONDecoder()
    first_error: json.JSONDecodeError | None = None
    for candidate in candidates:
        for start in (i for i, char in enumerate(candidate) if char == "{"):
            try:
                value = decoder.raw_decode(candidate, start)[0]
            except json.JSONDecodeError as error:
                first_error = first_error or error
                continue
            if isinstance(value, dict):
                return value
    if first_error is not None:
        raise first_error
    msg = "no JSON object found in the reply"
    raise ValueError(msg)


class LLMClient:
    """Chat completions with retries, a disk cache and cost accounting (`usage`)."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        temperature: float = 0.0,
        retry: RetryPolicy | None = None,
        prices: PriceTable | None = None,
        cache_dir: Path | None = None,
        before_call: Callable[[float], None] | None = None,
        on_usage: Callable[[LLMUsage], None] | None = None,
    ) -> None:
        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        self.temperature = temperature
        self.retry = retry or RetryPolicy()
        self.prices = prices or PriceTable()
        self.cache_dir = cache_dir
        self.before_call = before_call
        self.on_usage = on_usage
        self.usage = LLMUsage()
        key = api_key or os.environ.get("OPENAI_API_KEY") or PLACEHOLDER_API_KEY
        self.client = openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=0, timeout=timeout_s)

    def complete(self, messages: Sequence[ChatMessage]) -> str:
        """The assistant's reply text, from the cache if this exact request was made before."""
        request: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "temperature": self.temperature,
        }
        key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        cached = self._cache_read(key)
        if cached is not None:
            self.usage.cache_hits += 1
            return cached
        if self.before_call is not None:
            self.before_call(self.estimate_cost_usd(request["messages"]))  # the budget check; raises to refuse
        text, delta = self._call(request)
        if self.on_usage is not None:
            self.on_usage(delta)
        self._cache_write(key, request, text)
        return text

    def estimate_cost_usd(self, messages: Sequence[ChatMessage]) -> float:
        """What a call with these messages will probably cost (prompt size, a typical reply)."""
        prompt_tokens = sum(len(m["content"]) for m in messages) // CHARS_PER_TOKEN_ESTIMATE
        return self.prices.cost_usd(self.model, prompt_tokens, ESTIMATED_COMPLETION_TOKENS)

    def complete_structured(self, messages: Sequence[ChatMessage], schema: type[T], *, max_repairs: int = 2) -> T:
        """A reply validated as `schema`; invalid replies are sent back with the error."""
        instruction = (
            "Reply with exactly one JSON object and nothing else. It must validate against "
            f"this JSON schema:\n{json.dumps(schema.model_json_schema())}"
        )
        conversation: list[ChatMessage] = [{"role": "system", "content": instruction}, *messages]
        problem = ""
        for _ in range(max_repairs + 1):
            reply = self.complete(conversation)
            try:
                return schema.model_validate(extract_json(reply))
            except (ValueError, ValidationError) as error:  # JSONDecodeError is a ValueError
                problem = str(error)
            log.info("llm_output_invalid", schema=schema.__name__, error=problem)
            conversation += [
                {"role": "assistant", "content": reply},
                {
                    "role": "user",
                    "content": f"That reply was invalid:\n{problem}\nReply again with only the corrected JSON object.",
                },
            ]
        first_line = problem.splitlines()[0] if problem else "no reply"
        msg = (
            f"model {self.model} gave no valid {schema.__name__} after {max_repairs + 1} "
            f"tries ({first_line}); try a stronger model or use --agent offline"
        )
        raise LLMOutputError(msg)

    def _call(self, request: dict[str, Any]) -> tuple[str, LLMUsage]:
        """One logical call, retried on transient errors; returns text and its usage.

        Totals in `self.usage` are updated here, retries as they happen, so a call that
        finally fails still shows the retries it spent.
        """
        delta = LLMUsage(calls=1)
        backoff = wait_exponential_jitter(
            multiplier=self.retry.backoff_base_s,
            max=self.retry.backoff_max_s,
            jitter=self.retry.backoff_base_s,
        )

        def wait_s(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            retry_after = _retry_after_s(error)
            floor = min(retry_after, self.retry.retry_after_max_s) if retry_after else 0.0
            return max(backoff(state), floor)

        def count_retry(state: RetryCallState) -> None:
            delta.retries += 1
            self.usage.retries += 1
            error = state.outcome.exception() if state.outcome else None
            reason = _describe(error) if error else "unknown"
            log.warning("llm_retry", retry=state.attempt_number, error=reason)

        retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(self.retry.attempts),
            wait=wait_s,
            before_sleep=count_retry,
            reraise=True,
        )

        def send() -> ChatCompletion:
            return self.client.chat.completions.create(
                model=request["model"],
                temperature=request["temperature"],
                messages=cast("list[Any]", request["messages"]),
            )

        try:
            response = retrying(send)
        except openai.APIStatusError as error:
            if _is_transient(error):
                raise self._unavailable(error) from error
            msg = (
                f"LLM endpoint {self.base_url} refused the request ({_describe(error)}: "
                f"{error.message.splitlines()[0]}); check the model name and OPENAI_API_KEY"
            )
            raise LLMRequestError(msg) from error
        except openai.APIConnectionError as error:
            raise self._unavailable(error) from error
        text = (response.choices[0].message.content or "") if response.choices else ""
        if response.usage is not None:
            delta.prompt_tokens = response.usage.prompt_tokens
            delta.completion_tokens = response.usage.completion_tokens
        else:
            prompt_chars = sum(len(m["content"]) for m in request["messages"])
            delta.prompt_tokens = prompt_chars // CHARS_PER_TOKEN_ESTIMATE
            delta.completion_tokens = len(text) // CHARS_PER_TOKEN_ESTIMATE
        delta.cost_usd = self.prices.cost_usd(self.model, delta.prompt_tokens, delta.completion_tokens)
        self.usage.add(delta.model_copy(update={"retries": 0}))  # retries were counted live
        return text, delta

    def _unavailable(self, error: BaseException) -> LLMUnavailableError:
        msg = (
            f"LLM endpoint {self.base_url} unreachable after {self.retry.attempts} tries "
            f"({_describe(error)}); check OPENAI_BASE_URL or use --agent offline"
        )
        return LLMUnavailableError(msg)

    def _cache_read(self, key: str) -> str | None:
        if self.cache_dir is None:
            return None
        path = self.cache_dir / f"{key}.json"
        try:
            entry = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None  # a miss; a torn entry cannot exist, writes are atomic
        text = entry.get("text") if isinstance(entry, dict) else None
        return text if isinstance(text, str) else None

    def _cache_write(self, key: str, request: dict[str, Any], text: str) -> None:
        if self.cache_dir is None:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        entry = {"key": key, "request": request, "text": text}
        handle, temp = tempfile.mkstemp(dir=self.cache_dir, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as file:
                json.dump(entry, file)
            os.replace(temp, self.cache_dir / f"{key}.json")
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
