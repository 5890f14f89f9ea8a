"""Incremental conversation summaries.

A summarizer takes the conversation's current summary and the messages that came after it
and returns the next summary, or None when those messages have nothing worth adding (small
talk, or nothing that outranks what the summary already says): the caller then keeps the
current version. Two implementations share the ``Summarizer`` protocol:

* ``ExtractiveSummarizer`` (default, offline, deterministic): TextRank over the sentences of
  the previous summary and of the new messages, keeping the top few in their original order,
  each speaker's run of sentences prefixed with its role ("User: …", "Usuario: …"). The
  previous summary's sentences compete again each time, so what is still central survives.
* ``LLMSummarizer`` (``analysis.llm_summarizer``): asks an OpenAI-compatible
  ``/chat/completions`` endpoint to rewrite the summary; every failure surfaces as
  ``SummarizerError`` with a ``retryable`` flag.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from conversation_service.analysis.lexicon import (
    ABBREVIATIONS,
    SMALL_TALK,
    STOPWORDS_EN,
    STOPWORDS_ES,
    strip_accents,
)

# --- shared types -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SummaryInput:
    """One message to summarize: its role (user, assistant, system, tool), text and seq."""

    role: str
    content: str
    seq: int


class Summarizer(Protocol):
    """Turns the previous summary plus newer messages into the next summary (None: keep it)."""

    async def summarize(
        self, previous: str | None, messages: Sequence[SummaryInput], language: str | None
    ) -> str | None:
        """The new summary text, or None when ``messages`` add nothing worth keeping."""
        ...


class SummarizerError(Exception):
    """A summary could not be produced; ``retryable`` says whether trying later may succeed."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def primary_subtag(language: str | None) -> str | None:
    if not language:
        return None
    return language.replace("_", "-").split("-", 1)[0].lower()


# --- extractive -------------------------------------------------------------------------------


_STOPWORDS_BY_LANGUAGE = {"en": STOPWORDS_EN, "es": STOPWORDS_ES}
_ALL_STOPWORDS = STOPWORDS_EN | STOPWORDS_ES

ROLE_LABELS: dict[str, dict[str, str]] = {
    "en": {"user": "User", "assistant": "Assistant", "system": "System", "tool": "Tool"},
    "es": {"user": "Usuario", "assistant": "Asistente", "system": "Sistema", "tool": "Herramienta"},
}
_KNOWN_LABELS = frozenset(label for labels in ROLE_LABELS.values() for label in labels.values())
_LABEL_PREFIX = re.compile(r"^(" + "|".join(sorted(_KNOWN_LABELS)) + r"):\s*")

_BOUNDARY = re.compile(r"[.!?…]+[\"'”’»)\]]*\s+")
_TRAILING_WORD = re.compile(r"(\S+)$")
_BULLET = re.compile(r"^\s*(?:[-*•·]|\d{1,3}[.)])\s+")
_WORD = re.compile(r"[^\W\d_]+")
_TERMINAL = (".", "!", "?", "…")
_STEM_LENGTH = 6


def split_sentences(text: str) -> list[str]:
    """Split text into sentences: line breaks, list items and ``.!?…`` ends, not abbreviations.

    Spanish "¿…?" and "¡…!" need no special case: the closing mark ends the sentence and the
    opening one stays with the sentence it opens.
    """
    sentences: list[str] = []
    for raw_line in text.splitlines():
        line = _BULLET.sub("", raw_line).strip()
        start = 0
        for match in _BOUNDARY.finditer(line):
            punctuation = match.group().strip()
            if punctuation.rstrip("\"'”’»)]") == ".":
                word_match = _TRAILING_WORD.search(line, start, match.start())
                word = word_match.group(1).lower().lstrip("(¿¡\"'") if word_match else ""
                if word in ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
                    continue
            piece = line[start : match.end()].strip()
            if piece:
                sentences.append(piece)
            start = match.end()
        tail = line[start:].strip()
        if tail:
            sentences.append(tail)
    return sentences


def _terms(text: str, stopwords: frozenset[str]) -> list[str]:
    """Content words, accent-free and cut to a 6-letter prefix (a stemmer for en and es alike)."""
    words = (strip_accents(w) for w in _WORD.findall(text.lower()))
    return [
        w[:_STEM_LENGTH] for w in words if len(w) > 1 and w not in stopwords and w not in SMALL_TALK
    ]


def meaningful_word_count(text: str, language: str | None = None) -> int:
    """How many words of ``text`` are neither function words nor small talk."""
    stopwords = _STOPWORDS_BY_LANGUAGE.get(primary_subtag(language) or "", _ALL_STOPWORDS)
    words = (strip_accents(w) for w in _WORD.findall(text.lower()))
    return sum(1 for w in words if len(w) > 1 and w not in stopwords and w not in SMALL_TALK)


@dataclass(slots=True)
class _Sentence:
    text: str
    speaker: str | None
    from_previous: bool
    order: tuple[int, int, int]
    terms: Counter[str] = field(default_factory=Counter)
    norm: float = 0.0


def _cosine(a: _Sentence, b: _Sentence) -> float:
    if not a.norm or not b.norm:
        return 0.0
    small, large = (a.terms, b.terms) if len(a.terms) <= len(b.terms) else (b.terms, a.terms)
    dot = sum(count * large[term] for term, count in small.items() if term in large)
    return dot / (a.norm * b.norm)


def _close_sentence(text: str) -> str:
    """End a sentence with terminal punctuation so the rendered summary splits back the same."""
    text = text.rstrip(" ,;:-–—")
    return text if text.endswith(_TERMINAL) else text + "."


def _same_text(a: str, b: str | None) -> bool:
    return b is not None and a.split() == b.split()


def shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:")
    return cut + "…"


class ExtractiveSummarizer:
    """Offline TextRank summarizer for English and Spanish; deterministic for equal input."""

    def __init__(
        self,
        *,
        max_sentences: int = 6,
        max_chars: int = 1200,
        min_new_words: int = 3,
        min_sentence_terms: int = 2,
        max_sentence_chars: int = 300,
        max_candidates: int = 150,
        reserved_new: int = 2,
        roles: Collection[str] = ("user", "assistant"),
        previous_weight: float = 2.0,
        redundancy_threshold: float = 0.8,
        damping: float = 0.85,
    ) -> None:
        if max_sentences < 1 or max_chars < 40 or max_candidates < 1:
            raise ValueError("need max_sentences >= 1, max_chars >= 40 and max_candidates >= 1")
        self.max_sentences = max_sentences
        self.max_chars = max_chars
        self.min_new_words = min_new_words
        self.min_sentence_terms = min_sentence_terms
        # Leave room for a speaker label so a single long sentence can still fit.
        self.max_sentence_chars = max(20, min(max_sentence_chars, max_chars - 20))
        self.max_candidates = max_candidates
        self.reserved_new = reserved_new
        self.roles = frozenset(roles)
        self.previous_weight = previous_weight
        self.redundancy_threshold = redundancy_threshold
        self.damping = damping

    async def summarize(
        self, previous: str | None, messages: Sequence[SummaryInput], language: str | None
    ) -> str | None:
        """The next summary, or None for small talk or when nothing new outranks the old."""
        return self.summarize_sync(previous, messages, language)

    def summarize_sync(
        self, previous: str | None, messages: Sequence[SummaryInput], language: str | None
    ) -> str | None:
        """``summarize`` without the event loop (it is CPU-only).

        A long span is folded in consecutive chunks of at most ``max_candidates`` sentences,
        each chunk updating the summary the previous one produced, so the cost stays linear.
        """
        lang = primary_subtag(language)
        kept = sorted((m for m in messages if m.role in self.roles), key=lambda m: m.seq)
        if sum(meaningful_word_count(m.content, lang) for m in kept) < self.min_new_words:
            return None
        summary = previous
        changed = False
        for chunk in self._chunks(kept):
            updated = self._summarize_chunk(summary, chunk, lang)
            if updated is not None:
                summary, changed = updated, True
        if not changed or summary is None or _same_text(summary, previous):
            return None
        return summary

    def _chunks(self, messages: Sequence[SummaryInput]) -> list[list[SummaryInput]]:
        chunks: list[list[SummaryInput]] = [[]]
        size = 0
        for message in messages:
            count = len(split_sentences(message.content))
            if chunks[-1] and size + count > self.max_candidates:
                chunks.append([])
                size = 0
            chunks[-1].append(message)
            size += count
        return chunks

    def _summarize_chunk(
        self, previous: str | None, messages: Sequence[SummaryInput], lang: str | None
    ) -> str | None:
        stopwords = _STOPWORDS_BY_LANGUAGE.get(lang or "", _ALL_STOPWORDS)
        labels = ROLE_LABELS.get(lang or "", ROLE_LABELS["en"])
        candidates = self._candidates(previous, messages, labels, stopwords)
        if all(s.from_previous for s in candidates):
            return None
        summary = self._render(self._select(candidates, self._rank(candidates)))
        if not summary or _same_text(summary, previous):
            return None
        return summary

    def _candidates(
        self,
        previous: str | None,
        messages: Sequence[SummaryInput],
        labels: dict[str, str],
        stopwords: frozenset[str],
    ) -> list[_Sentence]:
        sentences: list[_Sentence] = []
        seen: set[str] = set()

        def add(
            text: str, speaker: str | None, from_previous: bool, order: tuple[int, int, int]
        ) -> None:
            text = shorten(_close_sentence(text), self.max_sentence_chars)
            key = " ".join(text.lower().split())
            terms = Counter(_terms(text, stopwords))
            if key in seen or len(terms) < self.min_sentence_terms:
                return
            seen.add(key)
            norm = math.sqrt(sum(c * c for c in terms.values()))
            sentences.append(_Sentence(text, speaker, from_previous, order, terms, norm))

        for line_no, line in enumerate((previous or "").splitlines()):
            match = _LABEL_PREFIX.match(line.strip())
            speaker = match.group(1) if match else None
            body = line.strip()[match.end() :] if match else line
            for position, text in enumerate(split_sentences(body)):
                add(text, speaker, True, (0, line_no, position))
        for message in messages:
            speaker = labels.get(message.role, message.role.capitalize())
            texts = split_sentences(message.content)[: self.max_candidates]
            for position, text in enumerate(texts):
                add(text, speaker, False, (1, message.seq, position))
        return sentences

    def _rank(self, sentences: list[_Sentence]) -> list[float]:
        """Personalised PageRank over the cosine-similarity graph (previous summary favoured)."""
        n = len(sentences)
        postings: defaultdict[str, list[int]] = defaultdict(list)
        for i, sentence in enumerate(sentences):
            for term in sentence.terms:
                postings[term].append(i)
        edges: list[dict[int, float]] = [{} for _ in range(n)]
        for i, sentence in enumerate(sentences):
            dots: defaultdict[int, float] = defaultdict(float)
            for term, count in sentence.terms.items():
                for j in postings[term]:
                    if j > i:
                        dots[j] += count * sentences[j].terms[term]
            for j, dot in dots.items():
                weight = dot / (sentence.norm * sentences[j].norm)
                edges[i][j] = weight
                edges[j][i] = weight
        teleport = [self.previous_weight if s.from_previous else 1.0 for s in sentences]
        total = sum(teleport)
        teleport = [t / total for t in teleport]
        out_weight = [sum(e.values()) for e in edges]
        # incoming[i]: (j, share of j's rank that flows to i), fixed order for determinism.
        incoming = [[(j, w / out_weight[j]) for j, w in sorted(edges[i].items())] for i in range(n)]
        dangling_nodes = [i for i in range(n) if not out_weight[i]]
        ranks = list(teleport)
        for _ in range(100):
            dangling = sum(ranks[i] for i in dangling_nodes)
            updated = [
                (1 - self.damping + self.damping * dangling) * teleport[i]
                + self.damping * sum(ranks[j] * share for j, share in incoming[i])
                for i in range(n)
            ]
            delta = sum(abs(a - b) for a, b in zip(updated, ranks, strict=True))
            ranks = updated
            if delta < 1e-9:
                break
        return ranks

    def _select(self, sentences: list[_Sentence], ranks: list[float]) -> list[_Sentence]:
        """The best-ranked sentences that fit, with ``reserved_new`` slots kept for the new span."""
        # Round before ordering so float noise cannot reorder equal scores between runs.
        order = sorted(
            range(len(sentences)), key=lambda i: (-round(ranks[i], 12), sentences[i].order)
        )
        chosen: list[_Sentence] = []

        def fill(limit: int, only_new: bool) -> None:
            nonlocal chosen
            for i in order:
                if len(chosen) >= limit:
                    return
                candidate = sentences[i]
                if (only_new and candidate.from_previous) or candidate in chosen:
                    continue
                if any(_cosine(candidate, c) >= self.redundancy_threshold for c in chosen):
                    continue
                attempt = sorted([*chosen, candidate], key=lambda s: s.order)
                if len(self._render(attempt)) <= self.max_chars:
                    chosen = attempt

        # Without a reservation an established summary's tightly linked sentences would
        # outrank every new topic forever.
        fill(min(self.reserved_new, self.max_sentences), only_new=True)
        fill(self.max_sentences, only_new=False)
        return chosen

    @staticmethod
    def _render(sentences: Sequence[_Sentence]) -> str:
        lines: list[str] = []
        current: list[str] = []
        speaker: str | None = None
        for sentence in sentences:
            if current and sentence.speaker != speaker:
                lines.append(f"{speaker}: {' '.join(current)}" if speaker else " ".join(current))
                current = []
            speaker = sentence.speaker
            current.append(sentence.text)
        if current:
            lines.append(f"{speaker}: {' '.join(current)}" if speaker else " ".join(current))
        return "\n".join(lines)
