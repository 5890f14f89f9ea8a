"""The search query language, parsed once and compiled for each index engine.

``q`` is words, ``"quoted phrases"``, ``-excluded`` words (or ``-"phrases"``) and prefixes
``word*``. Parsing never fails: a word is a run of letters and digits and everything else is a
separator, an unclosed quote runs to the end, and operators of the engines (``AND``, ``NEAR``,
``:``, ``^``…) are ordinary words. The engine queries are built from folded words alone, each
quoted, so no input can reach either engine's syntax. A query with nothing left to look for
matches nothing. Words match stems (see ``services.search_text``); phrases and prefixes match
the folded words as written.
"""

import re
from dataclasses import dataclass
from typing import Final

from conversation_service.db.search_rank import phrase_starts
from conversation_service.services.search_text import fold, stem, stems_everywhere, words

# Bounds the engine query whatever the input: terms beyond these are ignored.
MAX_TERMS: Final = 16
MAX_PHRASE_WORDS: Final = 8
MIN_PREFIX_CHARS: Final = 2

_TOKEN: Final = re.compile(r'(-?)"([^"]*)"?|(-?)(\S+)')


@dataclass(frozen=True, slots=True)
class Term:
    """One word (matched by its stems), phrase or prefix; ``negated`` when it excludes."""

    words: tuple[str, ...]  # as written (not folded), one or more
    prefix: bool = False
    negated: bool = False

    @property
    def is_word(self) -> bool:
        """A single word without ``*``: matched by stems rather than as written."""
        return len(self.words) == 1 and not self.prefix


@dataclass(frozen=True, slots=True)
class ParsedQuery:
    """The terms of a query; ``matches_nothing`` when no positive term is left."""

    terms: tuple[Term, ...]

    @property
    def positive(self) -> tuple[Term, ...]:
        """The terms a hit must contain."""
        return tuple(t for t in self.terms if not t.negated)

    @property
    def negative(self) -> tuple[Term, ...]:
        """The terms a hit must not contain."""
        return tuple(t for t in self.terms if t.negated)

    @property
    def matches_nothing(self) -> bool:
        """True when there is no positive term (``-x`` alone, punctuation only…)."""
        return not self.positive


def parse(q: str) -> ParsedQuery:
    """Parse ``q``; never raises."""
    terms: list[Term] = []
    for match in _TOKEN.finditer(q):
        if len(terms) >= MAX_TERMS:
            break
        if match.group(2) is not None:
            negated, body, quoted = match.group(1) == "-", match.group(2), True
        else:
            negated, body, quoted = match.group(3) == "-", match.group(4), False
        prefix = not quoted and body.endswith("*")
        found = tuple(m.group() for m in words(body))[:MAX_PHRASE_WORDS]
        if not found:
            continue
        if prefix and len(fold(found[-1])) < MIN_PREFIX_CHARS:
            prefix = False  # "a*" would match most of the index
        # "e-mail" is two words written as one: a phrase, as the writer meant it.
        terms.append(Term(found, prefix=prefix, negated=negated))
    return ParsedQuery(tuple(terms))


def _fts5_term(term: Term) -> str:
    if term.is_word:
        forms = sorted(stems_everywhere(term.words[0]))
        return "search_stems : (" + " OR ".join(f'"{f}"' for f in forms) + ")"
    phrase = " ".join(fold(w) for w in term.words)
    return f'search_words : ("{phrase}"' + ("*)" if term.prefix else ")")


def fts5_match(query: ParsedQuery) -> str:
    """The FTS5 MATCH expression of a query with at least one positive term."""
    positive = " AND ".join(_fts5_term(t) for t in query.positive)
    if not query.negative:
        return positive
    negative = " OR ".join(_fts5_term(t) for t in query.negative)
    return f"({positive}) NOT ({negative})"


def _ts_term(term: Term) -> str:
    if term.is_word:
        forms = sorted(stems_everywhere(term.words[0]))
        return "(" + " | ".join(f"'{f}':A" for f in forms) + ")"
    folded = [fold(w) for w in term.words]
    parts = [f"'{w}':B" for w in folded[:-1]]
    parts.append(f"'{folded[-1]}':*B" if term.prefix else f"'{folded[-1]}':B")
    return "(" + " <-> ".join(parts) + ")"


def tsquery(query: ParsedQuery) -> str:
    """The ``to_tsquery('simple', …)`` text of a query with at least one positive term."""
    text = " & ".join(_ts_term(t) for t in query.positive)
    for term in query.negative:
        text += f" & !{_ts_term(term)}"
    return text


def rank_terms(query: ParsedQuery) -> str:
    """The positive terms of ``query`` for SQLite's ``search_rank`` (``db.search_rank``), as
    one bind parameter."""
    terms = []
    for term in query.positive:
        if term.is_word:
            terms.append(" ".join(["w", *sorted(stems_everywhere(term.words[0]))]))
        else:
            terms.append(" ".join(["*" if term.prefix else "p", *(fold(w) for w in term.words)]))
    return "\t".join(terms)


def highlights(content: str, language: str | None, query: ParsedQuery) -> list[tuple[int, int]]:
    """Spans of ``content`` (in characters) that match a positive term of ``query``."""
    found = list(words(content))
    folded = [fold(m.group()) for m in found]
    spans: list[tuple[int, int]] = []
    singles: set[str] = set()
    for term in query.positive:
        if term.is_word:
            singles |= stems_everywhere(term.words[0])
    for i, m in enumerate(found):
        if singles and (folded[i] in singles or stem(m.group(), language) in singles):
            spans.append(m.span())
    for term in query.positive:
        if term.is_word:
            continue
        want = [fold(w) for w in term.words]
        for i in phrase_starts(folded, want, term.prefix):
            spans.append((found[i].start(), found[i + len(want) - 1].end()))
    return _merge(spans)


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


SNIPPET_CHARS: Final = 240
_LEAD_CHARS: Final = 60
ELLIPSIS: Final = "…"


def snippet(content: str, spans: list[tuple[int, int]]) -> dict[str, object]:
    """A window of ``content`` around the first match, with the matches inside it re-based."""
    if len(content) <= SNIPPET_CHARS:
        start, end = 0, len(content)
    else:
        first = spans[0][0] if spans else 0
        start = max(0, first - _LEAD_CHARS)
        # Start on a word boundary when one is near, so the window does not open mid-word.
        space = content.rfind(" ", max(0, start - 20), start + 1)
        if start > 0 and space != -1:
            start = space + 1
        end = min(len(content), start + SNIPPET_CHARS)
        space = content.rfind(" ", end - 20, end)
        if end < len(content) and space > start:
            end = space
    lead = ELLIPSIS if start > 0 else ""
    tail = ELLIPSIS if end < len(content) else ""
    text = lead + content[start:end] + tail
    offset = len(lead) - start
    inside = [[s + offset, min(e, end) + offset] for s, e in spans if s >= start and s < end]
    return {"text": text, "highlights": inside}
