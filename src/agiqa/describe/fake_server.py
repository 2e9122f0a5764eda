"""A local OpenAI-compatible chat-completions server for tests and the throughput benchmark.

It listens on 127.0.0.1 (a free port by default), answers ``POST /v1/chat/completions`` with a
deterministic description of the image it received, and injects faults from a script: per image
(keyed by the sha256 of the image bytes inside the data URL) a queue of faults consumed one per
request, then ``default`` for every later request. It counts and records every request, so a test
can assert that a rerun makes zero calls.

Fault kinds:

- ``ok``: a normal reply;
- ``rate_limit``: HTTP 429 with a ``Retry-After`` header (``retry_after`` seconds);
- ``server_error``: HTTP 500;
- ``slow``: a normal reply after ``slow_seconds`` (past the client's timeout);
- ``malformed``: HTTP 200 with a body that is not JSON;
- ``empty``: a reply whose content is the empty string;
- ``truncated``: a reply cut at max_tokens (``finish_reason: length``);
- ``error_text``: HTTP 200 whose content is ``ERROR_TEXT`` (what SCVA stored on failure);
- ``refusal``: HTTP 200 whose content is ``REFUSAL_TEXT``;
- ``mentions_error``: a usable reply that mentions an error mid-sentence
  (``mentions_error_for``);
- ``unauthorized``: HTTP 401;
- ``bad_request``: HTTP 400.

Run by hand: ``python -m agiqa.describe.fake_server --latency 0.2`` prints its base URL.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import json
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = (
    "ok",
    "rate_limit",
    "server_error",
    "slow",
    "malformed",
    "empty",
    "truncated",
    "error_text",
    "refusal",
    "mentions_error",
    "unauthorized",
    "bad_request",
)
PROMPT_TOKENS = 120
COMPLETION_TOKENS = 30
ERROR_TEXT = "Error"
REFUSAL_TEXT = "I'm sorry, but I can't help with describing this image."


@dataclass(frozen=True)
class RequestRecord:
    """What the server saw in one request and how it answered."""

    image_sha256: str
    mime: str
    model: str
    body: dict[str, Any]
    fault: str
    authorized: bool
    received: float  # time.monotonic() when the request arrived


@dataclass
class ServerState:
    """Fault script and request log, shared by the handler threads under one lock."""

    api_key: str | None
    latency: float
    slow_seconds: float
    retry_after: float
    default: str
    echo_key: bool = False
    script: dict[str, deque[str]] = field(default_factory=dict)
    records: list[RequestRecord] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    peak_in_flight: int = 0

    def enter(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def next_fault(self, image_sha256: str) -> str:
        with self.lock:
            queue = self.script.get(image_sha256)
            return queue.popleft() if queue else self.default

    def record(self, record: RequestRecord) -> None:
        with self.lock:
            self.records.append(record)


class FakeOpenAIServer:
    """An OpenAI-compatible endpoint on 127.0.0.1 with scripted faults; use as a context manager.

    Args:
        api_key: Bearer token the server requires (401 otherwise); None accepts any.
        latency: Seconds every request waits before it is answered.
        slow_seconds: How long a ``slow`` fault waits before answering.
        retry_after: Value of the ``Retry-After`` header of a ``rate_limit`` fault, in seconds.
        default: Fault applied once an image's scripted faults are used up.
        echo_key: Quote the received bearer token in error messages, as some real APIs do,
            to test that clients mask it.
        port: Port to listen on; 0 picks a free one.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        latency: float = 0.0,
        slow_seconds: float = 2.0,
        retry_after: float = 1.0,
        default: str = "ok",
        echo_key: bool = False,
        port: int = 0,
    ) -> None:
        _check_fault(default)
        self.state = ServerState(api_key, latency, slow_seconds, retry_after, default, echo_key)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler_class(self.state))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def script(self, image_sha256: str, *faults: str) -> None:
        """Queue faults for the next requests about one image (in order, one per request)."""
        for fault in faults:
            _check_fault(fault)
        with self.state.lock:
            self.state.script.setdefault(image_sha256, deque()).extend(faults)

    @property
    def records(self) -> list[RequestRecord]:
        with self.state.lock:
            return list(self.state.records)

    @property
    def calls(self) -> int:
        """Number of requests received so far."""
        with self.state.lock:
            return len(self.state.records)

    def calls_per_image(self) -> Counter[str]:
        return Counter(r.image_sha256 for r in self.records)

    def successes_per_image(self) -> Counter[str]:
        """Requests answered with a usable description, per image sha256."""
        return Counter(r.image_sha256 for r in self.records if r.fault == "ok" and r.authorized)

    @property
    def peak_in_flight(self) -> int:
        """Most requests being answered at the same moment since the last reset."""
        with self.state.lock:
            return self.state.peak_in_flight

    def reset_counts(self) -> None:
        with self.state.lock:
            self.state.records.clear()
            self.state.peak_in_flight = 0

    def start(self) -> FakeOpenAIServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def description_for(image_sha256: str) -> str:
    """The deterministic description the server writes for an image."""
    return (
        f"Test picture {image_sha256[:12]}: simple shapes on a plain background, flat colours, "
        "frontal view, bright even lighting, clean and sharp overall quality."
    )


def mentions_error_for(image_sha256: str) -> str:
    """The usable ``mentions_error`` reply: the word "error" mid-sentence, not a failure."""
    return (
        f"Test picture {image_sha256[:12]}: a blocky compression error is visible along the "
        "edges of the shapes; otherwise flat colours and even lighting."
    )


def _check_fault(fault: str) -> None:
    if fault not in FAULTS:
        raise ValueError(f"unknown fault '{fault}' (known: {', '.join(FAULTS)})")


def _handler_class(state: ServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        pass

    Handler.state = state
    return Handler


class _Handler(BaseHTTPRequestHandler):
    state: ServerState
    protocol_version = "HTTP/1.1"
    # headers and body go out in separate writes: without this, Nagle's algorithm and delayed
    # ACKs add ~40 ms to every reply and the benchmark would measure the TCP stack
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request stderr lines."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})
            return
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            self._send_json(400, {"error": {"message": "request body is not JSON"}})
            return
        received = time.monotonic()
        image_sha256, mime = _image_of(body)
        authorized = self._authorized()
        fault = self.state.next_fault(image_sha256) if authorized else "unauthorized"
        self.state.record(
            RequestRecord(
                image_sha256, mime, str(body.get("model")), body, fault, authorized, received
            )
        )
        self.state.enter()
        try:
            if self.state.latency:
                time.sleep(self.state.latency)
            # a client that timed out has hung up: there is nobody left to answer
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._answer(fault, body, image_sha256)
        finally:
            self.state.leave()

    def _authorized(self) -> bool:
        if self.state.api_key is None:
            return True
        return self.headers.get("Authorization") == f"Bearer {self.state.api_key}"

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        if self.state.echo_key:
            message += f" (request key: {self.headers.get('Authorization', '')[7:]})"
        self._send_json(status, {"error": {"message": message}}, headers)

    def _answer(self, fault: str, body: dict[str, Any], image_sha256: str) -> None:
        if fault == "rate_limit":
            headers = {"Retry-After": _format_seconds(self.state.retry_after)}
            self._error(429, "rate limit reached", headers)
        elif fault == "server_error":
            self._error(500, "internal error")
        elif fault == "unauthorized":
            self._error(401, "invalid api key")
        elif fault == "bad_request":
            self._error(400, "image could not be decoded")
        elif fault == "malformed":
            self._send_raw(200, b'{"id": "chatcmpl-x", "choices": [ {"message": ', "json")
        else:
            if fault == "slow":
                time.sleep(self.state.slow_seconds)
            self._send_json(200, _completion(fault, body, image_sha256))

    def _send_json(self, status: int, payload: object, headers: dict[str, str] | None = None):
        self._send_raw(status, json.dumps(payload).encode(), "json", headers)

    def _send_raw(
        self, status: int, data: bytes, kind: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", f"application/{kind}")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def _completion(fault: str, body: dict[str, Any], image_sha256: str) -> dict[str, Any]:
    text = description_for(image_sha256)
    finish = "stop"
    if fault == "empty":
        text = ""
    elif fault == "truncated":
        text, finish = " ".join(text.split()[:4]), "length"
    elif fault == "error_text":
        text = ERROR_TEXT
    elif fault == "refusal":
        text = REFUSAL_TEXT
    elif fault == "mentions_error":
        text = mentions_error_for(image_sha256)
    return {
        "id": f"chatcmpl-{image_sha256[:16]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(body.get("model")),
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        },
    }


def _image_of(body: dict[str, Any]) -> tuple[str, str]:
    """(sha256 of the image bytes, MIME type) of the first data-URL image in the request."""
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            url = (part.get("image_url") or {}).get("url", "") if isinstance(part, dict) else ""
            if url.startswith("data:") and ";base64," in url:
                header, payload = url[5:].split(";base64,", 1)
                try:
                    data = base64.b64decode(payload, validate=True)
                except (binascii.Error, ValueError):
                    return "undecodable", header
                return hashlib.sha256(data).hexdigest(), header
    return "no-image", ""


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def main() -> None:
    """Serve until interrupted, printing the base URL first."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--default", default="ok", choices=FAULTS)
    args = parser.parse_args()
    with FakeOpenAIServer(latency=args.latency, default=args.default, port=args.port) as server:
        print(server.base_url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
