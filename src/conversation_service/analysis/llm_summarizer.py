"""Summaries from an LLM behind an OpenAI-compatible ``/chat/completions`` endpoint.

Every failure surfaces as ``SummarizerError`` with a ``retryable`` flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from conversation_service.analysis.summarize import (
    SummarizerError,
    SummaryInput,
    primary_subtag,
    shorten,
)

LANGUAGE_NAMES = {
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "de": "German",
    "pt": "Portuguese",
    "it": "Italian",
}
NO_UPDATE = "NO_UPDATE"
SYSTEM_PROMPT = (
    "You maintain the running summary of a conversation between a user and an AI assistant. "
    "You receive the current summary (possibly empty) and the messages that came after it. "
    "Write the updated summary: keep what still matters from the current summary, add the new "
    "facts, requests, decisions and open questions, and leave out greetings and small talk. "
    "Write it in {language}, in at most {max_words} words, as plain text with no preamble. "
    "If the new messages add nothing worth keeping, answer exactly " + NO_UPDATE + "."
)


class LLMSummarizer:
    """Summaries from an OpenAI-compatible endpoint: ``POST {base_url}/chat/completions``.

    With no ``client`` each call opens and closes its own ``httpx.AsyncClient``, which suits RQ
    jobs (a fresh event loop per job); pass a long-lived client to reuse connections.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        client: httpx.AsyncClient | None = None,
        *,
        max_words: int = 200,
        max_message_chars: int = 4000,
        temperature: float = 0.2,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self._api_key = api_key
        self.timeout = timeout
        self._client = client
        self.max_words = max_words
        self.max_message_chars = max_message_chars
        self.temperature = temperature

    def build_request(
        self, previous: str | None, messages: Sequence[SummaryInput], language: str | None
    ) -> dict[str, Any]:
        """The JSON body sent to the endpoint."""
        code = primary_subtag(language)
        if code is None:
            language_name = "the language the conversation is written in"
        else:
            language_name = LANGUAGE_NAMES.get(code, f"the language with ISO code '{code}'")
        transcript = "\n".join(
            f"[#{m.seq}] {m.role}: {shorten(m.content.strip(), self.max_message_chars)}"
            for m in sorted(messages, key=lambda m: m.seq)
        )
        user_content = (
            f"Current summary:\n{previous.strip() if previous else '(none)'}\n\n"
            f"New messages:\n{transcript}"
        )
        system = SYSTEM_PROMPT.format(language=language_name, max_words=self.max_words)
        return {
            "model": self.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": user_content},
            ],
            "temperature": self.temperature,
        }

    async def summarize(
        self, previous: str | None, messages: Sequence[SummaryInput], language: str | None
    ) -> str | None:
        """Ask the model for the next summary; raise ``SummarizerError`` on any failure."""
        if not any(m.content.strip() for m in messages):
            return None
        body = self.build_request(previous, messages, language)
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        if self._client is not None:
            response = await self._post(self._client, body, headers)
        else:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await self._post(client, body, headers)
        return self._parse(response)

    async def _post(
        self, client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str]
    ) -> httpx.Response:
        try:
            return await client.post(self.url, json=body, headers=headers, timeout=self.timeout)
        except httpx.TimeoutException as exc:
            raise SummarizerError(
                f"LLM summarizer: no answer from {self.url} within {self.timeout:g}s "
                f"({type(exc).__name__})",
                retryable=True,
            ) from exc
        except httpx.HTTPError as exc:
            raise SummarizerError(
                f"LLM summarizer: request to {self.url} failed: {type(exc).__name__}: {exc}",
                retryable=True,
            ) from exc

    def _parse(self, response: httpx.Response) -> str | None:
        if not response.is_success:
            status = response.status_code
            raise SummarizerError(
                f"LLM summarizer: {self.url} answered HTTP {status}: {response.text[:300]!r}",
                retryable=status in (408, 409, 425, 429) or status >= 500,
            )
        try:
            payload = response.json()
            content = payload["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise SummarizerError(
                f"LLM summarizer: malformed completion from {self.url}: {response.text[:300]!r}",
                retryable=False,
            ) from exc
        if not isinstance(content, str):
            raise SummarizerError(
                f"LLM summarizer: completion from {self.url} has no text content",
                retryable=False,
            )
        text = content.strip()
        if not text or text.strip(" .") == NO_UPDATE:
            return None
        return text
