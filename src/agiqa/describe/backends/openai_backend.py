"""Any OpenAI-compatible chat-completions endpoint through the official ``openai`` client.

OpenAI, Volcengine Ark (Doubao), vLLM, Ollama, LM Studio... all speak this protocol. The image
is sent inline as a base64 data URL with its true MIME type. The API key is read from the
environment variable named by ``api_key_env`` (never from config or the command line) and is
masked out of every error message. The client's own retries are off (``max_retries=0``): the
runner retries with backoff and jitter, honours Retry-After and counts every attempt.
"""

from __future__ import annotations

import base64
import email.utils
import json
import os
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from agiqa.describe.backends.base import (
    BACKENDS,
    Backend,
    BackendContext,
    FatalError,
    ImageItem,
    PermanentError,
    Reply,
    TransientError,
    Usage,
)
from agiqa.describe.templates import Template
from agiqa.errors import ConfigError

# statuses that say "try again later" rather than "this request is wrong"
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
# statuses that every later request would get as well
FATAL_STATUS = frozenset({401, 403, 404})
TOKEN_PARAMS = ("max_tokens", "max_completion_tokens")
DETAILS = ("auto", "low", "high")


@dataclass(frozen=True)
class OpenAIOptions:
    """Config keys of the ``openai`` backend.

    Attributes:
        model: Model id as the endpoint knows it.
        base_url: Endpoint root, e.g. ``https://ark.cn-beijing.volces.com/api/v3``; None uses
            ``OPENAI_BASE_URL`` or OpenAI's default.
        api_key_env: Environment variable holding the key; "" for keyless local servers.
        max_tokens: Cap on reply tokens; a reply cut at the cap is a failure.
        max_tokens_param: ``max_tokens`` (most servers) or ``max_completion_tokens`` (newer
            OpenAI models).
        temperature, top_p, seed: Sent only when set (None keeps the endpoint's default).
        detail: OpenAI image detail (``auto``, ``low``, ``high``); None sends none.
        timeout: Seconds before a request counts as timed out (and is retried).
    """

    model: str
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    max_tokens: int = 300
    max_tokens_param: str = "max_tokens"
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    detail: str | None = None
    timeout: float = 60.0

    def __post_init__(self) -> None:
        if not str(self.model or "").strip():
            raise ValueError("needs a model")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if self.max_tokens_param not in TOKEN_PARAMS:
            raise ValueError(f"max_tokens_param must be one of {TOKEN_PARAMS}")
        if self.detail is not None and self.detail not in DETAILS:
            raise ValueError(f"detail must be one of {DETAILS}")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")


@BACKENDS.register("openai")
class OpenAIBackend(Backend):
    """Chat completions with the image as a data URL; one request per ``describe`` call."""

    Options = OpenAIOptions

    def __init__(self, options: OpenAIOptions, context: BackendContext) -> None:
        super().__init__(options, context)
        from openai import OpenAI  # deferred: only this backend needs the client

        self._key = read_api_key(options.api_key_env)
        self._client = OpenAI(
            api_key=self._key,
            base_url=options.base_url or None,
            max_retries=0,
            timeout=options.timeout,
        )
        self.endpoint = public_endpoint(str(self._client.base_url))

    def identity(self) -> dict[str, Any]:
        o = self.options
        return {
            "backend": "openai",
            "model": o.model,
            "endpoint": self.endpoint,
            "generation": {
                o.max_tokens_param: o.max_tokens,
                "temperature": o.temperature,
                "top_p": o.top_p,
                "seed": o.seed,
                "detail": o.detail,
            },
        }

    def request(self, item: ImageItem, template: Template) -> dict[str, Any]:
        """The keyword arguments of ``chat.completions.create`` for one image."""
        o = self.options
        image_url: dict[str, Any] = {"url": data_url(item.data, item.mime)}
        if o.detail:
            image_url["detail"] = o.detail
        messages: list[dict[str, Any]] = []
        if template.system:
            messages.append({"role": "system", "content": template.system})
        content = [
            {"type": "text", "text": template.user},
            {"type": "image_url", "image_url": image_url},
        ]
        messages.append({"role": "user", "content": content})
        kwargs: dict[str, Any] = {"model": o.model, "messages": messages}
        kwargs[o.max_tokens_param] = o.max_tokens
        for name in ("temperature", "top_p", "seed"):
            if getattr(o, name) is not None:
                kwargs[name] = getattr(o, name)
        return kwargs

    def describe(self, item: ImageItem, template: Template) -> Reply:
        try:
            response = self._client.chat.completions.create(**self.request(item, template))
        except Exception as error:  # the client raises many types; classify them all
            raise self._classify(error) from None
        return _reply(response)

    def _classify(self, error: Exception) -> Exception:
        import openai

        message = self.redact(_short(error))
        if isinstance(error, openai.APITimeoutError):
            return TransientError(f"timed out after {self.options.timeout:g} s")
        if isinstance(error, openai.APIConnectionError):
            return TransientError(f"connection error: {message}")
        if isinstance(error, openai.APIStatusError):
            status = error.status_code
            message = self.redact(_status_message(error))
            if status in RETRYABLE_STATUS or status >= 500:
                wait = retry_after_seconds(error.response.headers)
                return TransientError(f"HTTP {status}: {message}", retry_after=wait)
            if status in FATAL_STATUS:
                return FatalError(f"HTTP {status}: {message}")
            return PermanentError(f"HTTP {status}: {message}")
        if isinstance(error, (openai.APIResponseValidationError, ValueError, KeyError)):
            return TransientError(f"malformed reply: {message}")
        return TransientError(f"{type(error).__name__}: {message}")

    def redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key and len(self._key) >= 4 else text

    def close(self) -> None:
        self._client.close()


def read_api_key(variable: str) -> str:
    """The API key from the environment; a clear error names the variable, never a value."""
    if not variable:
        return "not-needed"  # keyless local servers (vLLM, Ollama) still need a non-empty key
    value = os.environ.get(variable, "").strip()
    if not value:
        raise ConfigError(
            f"environment variable {variable} is not set: the openai backend reads the API key "
            "from it (set it, or name another variable with api_key_env / --api-key-env)"
        )
    return value


def public_endpoint(url: str) -> str:
    """``url`` without credentials, query or fragment (it goes into cache keys)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def retry_after_seconds(headers: Any) -> float | None:
    """The wait a response asks for: ``retry-after-ms``, or ``retry-after`` seconds or date."""
    if headers is None:
        return None
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _reply(response: Any) -> Reply:
    choices = getattr(response, "choices", None)
    if not choices:
        raise TransientError("malformed reply: no choices")
    choice = choices[0]
    text = _content_text(getattr(choice.message, "content", None))
    usage = getattr(response, "usage", None)
    return Reply(
        text=text,
        finish_reason=str(choice.finish_reason or "stop"),
        usage=Usage(
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        ),
        model=str(getattr(response, "model", "") or ""),
        fingerprint=getattr(response, "system_fingerprint", None),
    )


def _content_text(content: Any) -> str:
    """Message content as text (some servers send a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") if isinstance(p, dict) else str(p) for p in content]
        return "".join(parts)
    return json.dumps(content)


def _status_message(error: Any) -> str:
    """The server's own error message (``{"error": {"message": ...}}`` or similar)."""
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        text = inner.get("message") if isinstance(inner, dict) else inner
        if text:
            return _short(str(text))
    return _short(error)


def _short(error: object, limit: int = 200) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
