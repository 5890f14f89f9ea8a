"""LLMSummarizer against a real local HTTP server speaking the OpenAI chat-completions protocol.

The server checks the request shape itself (answering 400 when it is wrong) and picks its
behaviour from the requested model name: a canned completion, NO_UPDATE, a 500, a stall past
the client's timeout, or a malformed body.
"""

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from conversation_service.analysis.llm_summarizer import LLMSummarizer
from conversation_service.analysis.summarize import (
    Summarizer,
    SummarizerError,
    SummaryInput,
)

API_KEY = "sk-test-key"
CANNED_SUMMARY = "The user wants a refund for the broken laptop from order 4411."
MESSAGES = [
    SummaryInput("user", "My order 4411 arrived with a broken screen, I want a refund.", 3),
    SummaryInput("assistant", "I have started the refund for order 4411.", 4),
]


@dataclass
class FakeLLM:
    base_url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


def _shape_error(path: str, headers: Any, body: Any) -> str | None:
    if path != "/v1/chat/completions":
        return f"unexpected path {path}"
    if headers.get("Authorization") != f"Bearer {API_KEY}":
        return "missing bearer token"
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return "model missing"
    messages = body.get("messages")
    if not isinstance(messages, list) or [m.get("role") for m in messages] != ["system", "user"]:
        return "expected a system and a user message"
    if not all(isinstance(m.get("content"), str) and m["content"] for m in messages):
        return "empty message content"
    return None


def _completion(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
    }


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeLLM]:
    state = FakeLLM(base_url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Keep the test output quiet."""

        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up (timeout case)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, b'{"error": "body is not JSON"}')
                return
            problem = _shape_error(self.path, self.headers, body)
            if problem:
                self._send(400, json.dumps({"error": problem}).encode())
                return
            state.requests.append(body)
            model = body["model"]
            if model == "fail-500":
                self._send(500, b'{"error": {"message": "model overloaded"}}')
            elif model == "slow":
                state.release.wait(10)
                self._send(200, json.dumps(_completion("too late")).encode())
            elif model == "malformed":
                self._send(200, b"<html>not json</html>", "text/html")
            elif model == "no-choices":
                self._send(200, b'{"choices": []}')
            elif model == "nothing-new":
                self._send(200, json.dumps(_completion("NO_UPDATE")).encode())
            else:
                self._send(200, json.dumps(_completion(f"  {CANNED_SUMMARY}\n")).encode())

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            """A client that hung up mid-answer is expected here."""

    server = Server(("127.0.0.1", 0), Handler)
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def _summarizer(fake_llm: FakeLLM, model: str = "summary-model", **kwargs: Any) -> LLMSummarizer:
    return LLMSummarizer(fake_llm.base_url, model, API_KEY, **kwargs)


async def test_llm_summary_is_the_completion_text(fake_llm: FakeLLM) -> None:
    summarizer: Summarizer = _summarizer(fake_llm)
    summary = await summarizer.summarize("User: Hello.", MESSAGES, "en")
    assert summary == CANNED_SUMMARY


async def test_llm_request_carries_previous_summary_messages_and_language(
    fake_llm: FakeLLM,
) -> None:
    await _summarizer(fake_llm, "inspect-me").summarize(
        "Earlier: the user asked about 4411.", MESSAGES, "es"
    )
    body = next(r for r in reversed(fake_llm.requests) if r["model"] == "inspect-me")
    system, user = body["messages"]
    assert "Spanish" in system["content"]
    assert "Earlier: the user asked about 4411." in user["content"]
    assert "[#3] user: My order 4411 arrived with a broken screen" in user["content"]
    assert "[#4] assistant: I have started the refund" in user["content"]


async def test_llm_uses_a_client_it_is_given(fake_llm: FakeLLM) -> None:
    async with httpx.AsyncClient() as client:
        summary = await _summarizer(fake_llm, client=client).summarize(None, MESSAGES, None)
        assert not client.is_closed
    assert summary == CANNED_SUMMARY


async def test_llm_no_update_answer_means_nothing_to_say(fake_llm: FakeLLM) -> None:
    assert await _summarizer(fake_llm, "nothing-new").summarize("User: Hi.", MESSAGES, "en") is None


async def test_llm_is_not_called_for_empty_messages(fake_llm: FakeLLM) -> None:
    before = len(fake_llm.requests)
    assert (
        await _summarizer(fake_llm).summarize("User: Hi.", [SummaryInput("user", " ", 1)], "en")
        is None
    )
    assert len(fake_llm.requests) == before


async def test_llm_server_error_raises_a_retryable_summarizer_error(fake_llm: FakeLLM) -> None:
    with pytest.raises(SummarizerError, match="HTTP 500") as caught:
        await _summarizer(fake_llm, "fail-500").summarize(None, MESSAGES, "en")
    assert caught.value.retryable
    assert API_KEY not in str(caught.value)


async def test_llm_rejected_request_raises_a_permanent_summarizer_error(fake_llm: FakeLLM) -> None:
    summarizer = LLMSummarizer(fake_llm.base_url, "summary-model", "wrong-key")
    with pytest.raises(SummarizerError, match="HTTP 400") as caught:
        await summarizer.summarize(None, MESSAGES, "en")
    assert not caught.value.retryable


async def test_llm_timeout_raises_a_retryable_summarizer_error(fake_llm: FakeLLM) -> None:
    with pytest.raises(SummarizerError, match=r"within 0\.2s") as caught:
        await _summarizer(fake_llm, "slow", timeout=0.2).summarize(None, MESSAGES, "en")
    assert caught.value.retryable


@pytest.mark.parametrize("model", ["malformed", "no-choices"])
async def test_llm_malformed_completion_raises_summarizer_error(
    fake_llm: FakeLLM, model: str
) -> None:
    with pytest.raises(SummarizerError, match="malformed completion") as caught:
        await _summarizer(fake_llm, model).summarize(None, MESSAGES, "en")
    assert not caught.value.retryable


async def test_llm_unreachable_endpoint_raises_a_retryable_summarizer_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    summarizer = LLMSummarizer(f"http://127.0.0.1:{port}/v1", "m", API_KEY, timeout=2)
    with pytest.raises(SummarizerError, match=r"request to .* failed") as caught:
        await summarizer.summarize(None, MESSAGES, "en")
    assert caught.value.retryable
