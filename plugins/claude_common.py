"""What the Claude captioner and the Claude judge share: options, the API client with
bounded concurrency and our own retries, token/cost accounting, the on-disk response
cache and the Message Batches path.

The key is read from ``ANTHROPIC_API_KEY`` only and lives in memory only: it is never
written, logged or put in an error message (errors are scrubbed of it, just in case).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tenacity import Retrying, RetryCallState, wait_exponential_jitter

from clood_candy import fsutil

T = TypeVar("T")
PLUGIN = "claude"
KEY_ENV = "ANTHROPIC_API_KEY"
BASE_URL_ENV = "ANTHROPIC_BASE_URL"
DEFAULT_MODEL = "claude-sonnet-5-5"
# USD per million tokens (input, output), from the published price pages; override or
# extend with ``[plugins.claude] prices = { "model-id" = [in, out] }``.
PRICES: dict[str, tuple[float, float]] = {
    "claude-sonnet-5-5": (2.0, 10.0),
    "claude-sonnet-5": (2.0, 10.0),
    "claude-opus-5-5": (4.0, 20.0),
    "claude-opus-5": (5.0, 25.0),
    "claude-fable-5-1": (10.0, 50.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-sonnet-4-5": (3.0, 15.0),
}
BATCH_DISCOUNT = 0.5  # the Batches API bills half
RETRY_STATUS = {408, 409, 429}  # plus every 5xx (529 = overloaded)


class ClaudeOptions(BaseModel):
    """The ``[plugins.claude]`` table (shared by the captioner and the judge)."""

    model_config = ConfigDict(extra="forbid")

    model: str = DEFAULT_MODEL
    judge_model: str | None = None  # the judge's model, when it should differ from the captioner's
    base_url: str | None = None  # default: $ANTHROPIC_BASE_URL, else the SDK's
    max_concurrency: int = Field(4, ge=1, le=64)
    max_attempts: int = Field(6, ge=1, le=20)  # requests per photo/pair, all causes together
    malformed_retries: int = Field(2, ge=0, le=10)  # re-asks after a reply we cannot parse
    backoff_initial: float = Field(1.0, ge=0)
    backoff_max: float = Field(60.0, ge=0)
    retry_after_max: float = Field(120.0, ge=0)  # never wait longer than this on retry-after
    timeout: float = Field(120.0, gt=0)
    max_tokens: int = Field(4096, ge=256)  # room for adaptive thinking before the tool call
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = "low"  # None: omit (older models)
    # Newer models reject forced tool choice, so by default we ask for the tool and
    # re-ask when it is missing; "tool" forces it on models that allow it.
    tool_choice: Literal["auto", "any", "tool"] = "auto"
    max_edge: int = Field(1568, ge=64, le=8000)  # long edge of images sent
    batch: bool = False
    batch_threshold: int = Field(200, ge=1)  # more photos than this: the Batches API
    batch_poll_initial: float = Field(5.0, gt=0)
    batch_poll_max: float = Field(120.0, gt=0)
    batch_timeout: float = Field(24 * 3600.0, gt=0)
    cache: bool = True
    prices: dict[str, tuple[float, float]] = Field(default_factory=dict)

    def price(self) -> tuple[float, float] | None:
        return {**PRICES, **self.prices}.get(self.model)


def load_options(ctx) -> ClaudeOptions:
    return ctx.typed_options(PLUGIN, ClaudeOptions)


def unavailable_reason(ctx) -> str | None:
    if not os.environ.get(KEY_ENV):
        return f"no API key: set {KEY_ENV} to use Claude"
    try:
        load_options(ctx)
    except ValueError as exc:
        return str(exc)
    return None


def image_block(path: Path, max_edge: int) -> tuple[dict[str, Any], str]:
    """A base64 JPEG image block (long edge ≤ max_edge) and the sha256 of what was sent."""
    with Image.open(path) as im:
        scale = min(1.0, max_edge / max(im.size))
        im.draft("RGB", (int(im.width * scale), int(im.height * scale)))  # JPEG: decode at 1/2, 1/4… when enough
        im = ImageOps.exif_transpose(im).convert("RGB")
        im.thumbnail((max_edge, max_edge), Image.Resampling.LANCZOS)  # only ever shrinks
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    block = {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                         "data": base64.b64encode(data).decode("ascii")}}
    return block, hashlib.sha256(data).hexdigest()


class MalformedReply(Exception):
    """The reply arrived but is not the tool call we asked for."""


def tool_input(message: Any, tool_name: str) -> dict[str, Any]:
    for block in message.content:
        if getattr(block, "type", None) == "tool_use" and block.name == tool_name:
            if not isinstance(block.input, dict):
                raise MalformedReply(f"tool input is not an object: {type(block.input).__name__}")
            return block.input
    cut = " (cut off at max_tokens)" if getattr(message, "stop_reason", None) == "max_tokens" else ""
    raise MalformedReply(f"no {tool_name} tool call in the reply{cut}")


@dataclass
class Request:
    """One API call to make: ``params`` for messages.create (model and limits added by
    the client) and the hash of the image it carries, for the cache key."""

    id: str
    params: dict[str, Any]
    image_hash: str = ""


@dataclass
class Outcome(Generic[T]):
    value: T | None = None
    error: str | None = None
    usage: dict[str, float] = field(default_factory=dict)


@dataclass
class _Tally:
    input_tokens: int = 0
    output_tokens: int = 0
    attempts: int = 0

    def add(self, usage: Any) -> None:
        self.input_tokens += int(getattr(usage, "input_tokens", 0) or 0)
        self.output_tokens += int(getattr(usage, "output_tokens", 0) or 0)


def retry_after(exc: BaseException | None) -> float | None:
    response = getattr(exc, "response", None)
    if response is None:
        return None
    headers = response.headers
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            return float(headers.get(name)) / scale
        except (TypeError, ValueError):
            continue
    return None


def transient(exc: BaseException) -> bool:
    import anthropic

    if isinstance(exc, anthropic.APIStatusError):
        return exc.status_code in RETRY_STATUS or exc.status_code >= 500
    return isinstance(exc, anthropic.APIConnectionError)  # includes timeouts


class ClaudeClient:
    """Runs requests through the SDK with bounded threads and tenacity retries (the
    SDK's own retries are off, so attempts never multiply)."""

    def __init__(self, opts: ClaudeOptions, cache_dir: Path | None = None):
        import anthropic  # here, not at the top: the SDK takes seconds to import and most runs never use it

        key = os.environ.get(KEY_ENV)
        if not key:
            raise RuntimeError(f"no API key: set {KEY_ENV}")
        self.opts = opts
        self._key = key
        self.base_url = opts.base_url or os.environ.get(BASE_URL_ENV) or None
        self.sdk = anthropic.Anthropic(api_key=key, base_url=self.base_url, max_retries=0, timeout=opts.timeout)
        self.cache_dir = cache_dir if opts.cache else None
        self._fatal: str | None = None  # a bad key fails every call: stop asking
        self._lock = threading.Lock()
        self.log = logging.getLogger("clood_candy.claude")

    # --- helpers ----------------------------------------------------------

    def scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def describe(self, exc: BaseException) -> str:
        import anthropic

        if isinstance(exc, anthropic.APIStatusError):
            kind = getattr(exc, "type", None) or type(exc).__name__
            detail = getattr(exc, "api_message", None) or ""
            text = f"HTTP {exc.status_code} {kind}" + (f": {detail}" if detail else "")
        elif isinstance(exc, anthropic.APITimeoutError):
            text = f"timed out after {self.opts.timeout:g}s"
        elif isinstance(exc, anthropic.APIConnectionError):
            text = f"cannot connect to {self.base_url or 'the Anthropic API'}"
        elif isinstance(exc, MalformedReply):
            text = f"malformed reply: {exc}"
        else:
            text = f"{type(exc).__name__}: {exc}"
        return self.scrub(" ".join(text.split()))[:300]

    def cost(self, tally: _Tally, discount: float = 1.0) -> float | None:
        price = self.opts.price()
        if price is None:
            return None
        return round((tally.input_tokens * price[0] + tally.output_tokens * price[1]) / 1e6 * discount, 6)

    def full_params(self, params: dict[str, Any]) -> dict[str, Any]:
        full = {"model": self.opts.model, "max_tokens": self.opts.max_tokens, **params}
        if self.opts.effort:
            full["output_config"] = {"effort": self.opts.effort}
        tools = full.get("tools") or []
        if tools and self.opts.tool_choice != "auto":
            full["tool_choice"] = ({"type": "tool", "name": tools[0]["name"]} if self.opts.tool_choice == "tool"
                                   else {"type": "any"})
        return full

    def _cache_path(self, request: Request) -> Path | None:
        if self.cache_dir is None:
            return None
        # Keyed by (model, prompt hash, image hash); the prompt hash covers everything
        # sent except the image bytes, which the image hash stands for.
        prompt = json.dumps(_without_image_data(self.full_params(request.params)), sort_keys=True)
        prompt_hash = hashlib.sha256(prompt.encode()).hexdigest()
        key = hashlib.sha256(f"{self.opts.model}\n{prompt_hash}\n{request.image_hash}".encode()).hexdigest()
        return self.cache_dir / f"{key[:40]}.json"

    def _cached(self, request: Request, parse: Callable[[Any], T]) -> Outcome[T] | None:
        path = self._cache_path(request)
        if path is None or not path.is_file():
            return None
        from anthropic.types import Message

        try:
            message = Message.model_validate(fsutil.read_json(path))
            value = parse(message)
        except Exception:  # a stale or damaged entry: ask again
            return None
        return Outcome(value=value, usage={"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0,
                                           "attempts": 0, "cached": 1, "seconds": 0.0})

    def _store(self, request: Request, message: Any) -> None:
        path = self._cache_path(request)
        if path is not None:
            fsutil.write_json(path, message.model_dump(mode="json", exclude_none=True))

    # --- the synchronous path --------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, MalformedReply):
            return 0.0
        server_says = retry_after(exc)
        if server_says is not None:
            return min(max(server_says, 0.0), self.opts.retry_after_max)
        return wait_exponential_jitter(initial=self.opts.backoff_initial, max=self.opts.backoff_max,
                                       jitter=self.opts.backoff_initial)(state)

    def call(self, request: Request, parse: Callable[[Any], T]) -> Outcome[T]:
        cached = self._cached(request, parse)
        if cached is not None:
            return cached
        if self._fatal:
            return Outcome(error=self._fatal, usage={"attempts": 0})
        tally, malformed = _Tally(), [0]
        began = time.perf_counter()

        def attempt() -> T:
            tally.attempts += 1
            message = self.sdk.messages.create(**self.full_params(request.params))
            tally.add(message.usage)
            try:
                value = parse(message)
            except MalformedReply:
                malformed[0] += 1
                raise
            except (ValidationError, ValueError, TypeError, KeyError) as exc:
                malformed[0] += 1
                raise MalformedReply(_first_line(exc)) from None
            self._store(request, message)
            return value

        def should_retry(state: RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            if exc is None:
                return False
            if isinstance(exc, MalformedReply):
                return malformed[0] <= self.opts.malformed_retries
            return transient(exc)

        def stop(state: RetryCallState) -> bool:
            return state.attempt_number >= self.opts.max_attempts

        outcome: Outcome[T] = Outcome()
        try:
            outcome.value = Retrying(retry=should_retry, stop=stop, wait=self._wait, reraise=True)(attempt)
        except Exception as exc:  # every failure becomes a one-line reason on that photo
            outcome.error = f"{self.describe(exc)} (after {tally.attempts} attempt{'s' * (tally.attempts != 1)})"
            if getattr(exc, "status_code", None) in (401, 403):
                with self._lock:
                    self._fatal = outcome.error
        outcome.usage = self._usage(tally, time.perf_counter() - began)
        return outcome

    def _usage(self, tally: _Tally, seconds: float, discount: float = 1.0) -> dict[str, float]:
        usage: dict[str, float] = {"input_tokens": tally.input_tokens, "output_tokens": tally.output_tokens,
                                   "attempts": tally.attempts, "seconds": round(seconds, 3)}
        cost = self.cost(tally, discount)
        if cost is not None:
            usage["cost_usd"] = cost
        return usage

    def run(self, requests: list[Request], parse: Callable[[Any], T],
            advance: Callable[..., None] = lambda n=1, note="": None) -> dict[str, Outcome[T]]:
        """Every request gets an Outcome (a value or an error), never an exception."""

        def one(request: Request) -> tuple[str, Outcome[T]]:
            try:
                result = self.call(request, parse)
            except Exception as exc:  # a bug of ours must still not lose the photo
                result = Outcome(error=self.describe(exc))
            advance(1)
            return request.id, result

        with ThreadPoolExecutor(max_workers=self.opts.max_concurrency, thread_name_prefix="claude") as pool:
            return dict(pool.map(one, requests))

    # --- the Message Batches path ----------------------------------------

    def run_batch(self, requests: list[Request], parse: Callable[[Any], T],
                  advance: Callable[..., None] = lambda n=1, note="": None) -> dict[str, Outcome[T]]:
        """Half price, slower. What the batch does not answer well goes through ``run``."""
        results: dict[str, Outcome[T]] = {}
        todo: list[Request] = []
        for request in requests:
            cached = self._cached(request, parse)
            if cached is not None:
                results[request.id] = cached
                advance(1)
            else:
                todo.append(request)
        if not todo:
            return results
        by_custom = {f"r{i}": r for i, r in enumerate(todo)}  # custom_id must match ^[a-zA-Z0-9_-]{1,64}$
        retry = Retrying(retry=lambda s: bool(s.outcome and s.outcome.failed and transient(s.outcome.exception())),
                         stop=lambda s: s.attempt_number >= self.opts.max_attempts, wait=self._wait, reraise=True)
        began = time.perf_counter()
        leftovers: list[Request] = []
        try:
            batch = retry(self.sdk.messages.batches.create, requests=[
                {"custom_id": cid, "params": self.full_params(r.params)} for cid, r in by_custom.items()])
            delay = self.opts.batch_poll_initial
            while batch.processing_status != "ended":
                if time.perf_counter() - began > self.opts.batch_timeout:
                    retry(self.sdk.messages.batches.cancel, batch.id)
                    raise TimeoutError(f"batch {batch.id} not done after {self.opts.batch_timeout:g}s")
                time.sleep(delay)
                delay = min(delay * 2, self.opts.batch_poll_max)
                batch = retry(self.sdk.messages.batches.retrieve, batch.id)
            seen: set[str] = set()
            for line in retry(self.sdk.messages.batches.results, batch.id):
                request = by_custom.get(line.custom_id)
                if request is None or line.result.type != "succeeded":
                    continue
                tally = _Tally(attempts=1)
                tally.add(line.result.message.usage)
                try:
                    value = parse(line.result.message)
                except Exception:
                    continue  # left for the synchronous path, which re-asks
                self._store(request, line.result.message)
                usage = self._usage(tally, time.perf_counter() - began, BATCH_DISCOUNT)
                results[request.id] = Outcome(value=value, usage={**usage, "batch": 1})
                seen.add(line.custom_id)
                advance(1)
            leftovers = [r for cid, r in by_custom.items() if cid not in seen]
        except Exception as exc:
            # The batch as a whole failed: the ordinary path still captions everything.
            self.log.warning("claude: batch failed (%s); asking one by one", self.describe(exc))
            leftovers = [r for r in todo if r.id not in results]
        results.update(self.run(leftovers, parse, advance))
        return results


def _without_image_data(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get("type") == "base64" and "data" in value:
            return {k: v for k, v in value.items() if k != "data"}
        return {k: _without_image_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_image_data(v) for v in value]
    return value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def tool_schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}
