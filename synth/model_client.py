"""One client for every LLM call the project makes: annotation, PDF OCR, synthesis.

Two backends behind one method, ``chat(requests) -> results`` (row-aligned):

- ``OpenAIClient``: any OpenAI-compatible ``/chat/completions`` endpoint (vLLM's
  server, SGLang, llama.cpp, a hosted API) over stdlib HTTP. Requests in a batch run
  on a small thread pool, each start spaced by a rate limit; 408/409/429/5xx,
  connection errors and timeouts are retried with exponential backoff (Retry-After
  honoured); other 4xx fail at once with the server's message.
- ``VLLMClient``: in-process vLLM for a local GPU. ``vllm`` is imported when the
  client is built, never at module import, so this module imports on a CPU box.

Structured answers: a request may carry a JSON schema. It is sent as an
OpenAI ``response_format`` (vLLM: structured-output decoding) and the answer is
parsed (code fences and chatter around the JSON tolerated) and checked against the
schema subset we use (object/array/string/integer/number/boolean, required, enum,
minimum/maximum). An answer that does not parse or validate is retried like a
server error; when retries run out the result carries the error instead of raising,
so one bad document never sinks a batch.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)


class AnswerError(ValueError):
    """The model answered, but not with JSON that fits the requested schema."""


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, str]]  # [{"role": "system"|"user"|"assistant", "content": ...}]
    schema: dict[str, Any] | None = None  # JSON schema the answer must follow
    max_tokens: int = 512
    temperature: float = 0.0


@dataclass
class ChatResult:
    text: str | None = None  # raw answer
    data: Any = None  # parsed JSON when the request had a schema
    error: str | None = None  # why there is no (valid) answer
    attempts: int = 0


class ModelClient(Protocol):
    model: str

    def chat(self, requests: Sequence[ChatRequest]) -> list[ChatResult]: ...


def parse_answer(text: str, schema: dict[str, Any]) -> Any:
    """The JSON value in a model's answer, checked against ``schema``."""
    stripped = _FENCE.sub("", text.strip())
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError:
        start = min((i for i in (stripped.find("{"), stripped.find("[")) if i >= 0), default=-1)
        if start < 0:
            raise AnswerError(f"no JSON in answer: {text[:200]!r}") from None
        try:
            data, _ = json.JSONDecoder().raw_decode(stripped[start:])
        except json.JSONDecodeError as exc:
            raise AnswerError(f"answer is not valid JSON ({exc}): {text[:200]!r}") from None
    validate(data, schema)
    return data


def validate(value: Any, schema: dict[str, Any], where: str = "$") -> None:
    """Check the JSON-schema subset the project uses; raises AnswerError naming the path."""
    kind = schema.get("type")
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
    }
    if kind and not checks[kind](value):
        raise AnswerError(f"{where}: expected {kind}, got {json.dumps(value)[:80]}")
    if "enum" in schema and value not in schema["enum"]:
        raise AnswerError(f"{where}: {value!r} is not one of {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"]:
        raise AnswerError(f"{where}: {value} is below {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        raise AnswerError(f"{where}: {value} is above {schema['maximum']}")
    if kind == "object":
        for key in schema.get("required", []):
            if key not in value:
                raise AnswerError(f"{where}: missing required key {key!r}")
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                validate(value[key], sub, f"{where}.{key}")
    if kind == "array" and "items" in schema:
        for i, item in enumerate(value):
            validate(item, schema["items"], f"{where}[{i}]")


class _RateLimiter:
    """Spaces request starts at least ``1/rate`` seconds apart, across threads."""

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self.lock = threading.Lock()
        self.next_at = 0.0

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_at)
            self.next_at = start + self.interval
        time.sleep(max(0.0, start - now))


@dataclass
class OpenAIClient:
    """Client of an OpenAI-compatible chat-completions endpoint (``base_url`` ends in /v1)."""

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"  # name of the variable holding the key, if any
    timeout_s: float = 120.0
    max_retries: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    requests_per_second: float | None = None
    concurrency: int = 8
    _limiter: _RateLimiter = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._limiter = _RateLimiter(self.requests_per_second)

    def chat(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        if len(requests) <= 1 or self.concurrency <= 1:
            return [self._one(r) for r in requests]
        with ThreadPoolExecutor(min(self.concurrency, len(requests))) as pool:
            return list(pool.map(self._one, requests))

    def _body(self, req: ChatRequest) -> bytes:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": req.messages,
            "max_tokens": req.max_tokens,
            "temperature": req.temperature,
        }
        if req.schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": req.schema, "strict": True},
            }
        return json.dumps(body).encode()

    def _post(self, body: bytes) -> str:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        url = self.base_url.rstrip("/") + "/chat/completions"
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
            payload = json.loads(resp.read())
        try:
            return payload["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise AnswerError(f"response has no choices[0].message.content: {payload}") from exc

    def _one(self, req: ChatRequest) -> ChatResult:
        body = self._body(req)
        result = ChatResult()
        delay = self.backoff_s
        for attempt in range(1, self.max_retries + 2):
            result.attempts = attempt
            self._limiter.wait()
            retry_after = None
            try:
                result.text = self._post(body)
                result.data = parse_answer(result.text, req.schema) if req.schema else None
                result.error = None
                return result
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode("utf-8", "replace")
                result.error = f"HTTP {exc.code} from {self.base_url}: {detail}"
                if exc.code not in RETRY_STATUS:
                    return result
                retry_after = exc.headers.get("Retry-After")
            except AnswerError as exc:
                result.error = str(exc)
                continue  # a fresh sample, no need to wait
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                result.error = f"no answer from {self.base_url} within {self.timeout_s}s: {reason}"
            if attempt <= self.max_retries:
                wait = float(retry_after) if retry_after and retry_after.isdigit() else delay
                time.sleep(min(wait, self.max_backoff_s))
                delay = min(delay * 2, self.max_backoff_s)
        return result


class VLLMClient:
    """In-process vLLM engine on a local GPU; same ``chat`` contract as OpenAIClient."""

    def __init__(self, model: str, **engine_args: Any):
        try:
            import vllm
        except ImportError as exc:
            raise RuntimeError(
                "the vLLM backend needs `pip install vllm` on a GPU machine; on other "
                "machines point OpenAIClient at a vLLM server instead"
            ) from exc
        self.model = model
        self._vllm = vllm
        self._llm = vllm.LLM(model=model, **engine_args)

    def _params(self, req: ChatRequest) -> Any:
        kwargs: dict[str, Any] = {"temperature": req.temperature, "max_tokens": req.max_tokens}
        if req.schema is not None:
            sp = self._vllm.sampling_params
            if hasattr(sp, "StructuredOutputsParams"):  # vLLM >= 0.10.2
                kwargs["structured_outputs"] = sp.StructuredOutputsParams(json=req.schema)
            else:
                kwargs["guided_decoding"] = sp.GuidedDecodingParams(json=req.schema)
        return self._vllm.SamplingParams(**kwargs)

    def chat(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        if not requests:
            return []
        outputs = self._llm.chat(
            [r.messages for r in requests], sampling_params=[self._params(r) for r in requests]
        )
        results = []
        for req, out in zip(requests, outputs, strict=True):
            text = out.outputs[0].text
            try:
                data = parse_answer(text, req.schema) if req.schema else None
                results.append(ChatResult(text=text, data=data, attempts=1))
            except AnswerError as exc:
                results.append(ChatResult(text=text, error=str(exc), attempts=1))
        return results


def open_client(
    endpoint: str | None = None, model: str = "", vllm_model: str | None = None, **options: Any
) -> ModelClient:
    """An HTTP client for ``endpoint`` + ``model``, or an in-process vLLM for ``vllm_model``."""
    if vllm_model:
        return VLLMClient(vllm_model, **options)
    if not endpoint or not model:
        raise ValueError(
            "give an OpenAI-compatible endpoint (…/v1) and a model name, or a vLLM model path"
        )
    return OpenAIClient(endpoint, model, **options)
