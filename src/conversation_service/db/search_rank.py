"""Search's score on SQLite: ``search_rank(search_stems, search_words, terms)``, registered on
every SQLite connection (``db.engine``).

BM25's term-frequency saturation and length normalisation without its inverse document frequency,
whose corpus-wide count FTS5's own ``bm25`` makes on every query (35 ms for a common word at
1,000,000 messages). Like PostgreSQL's ``ts_rank`` it scores a row from the row alone; a word
(matched by its stems) weighs 1, a phrase or prefix 0.4 (``ts_rank``'s A and B).

``terms`` is what ``services.search_query.rank_terms`` writes: tab-separated terms, each ``w``
and the stems of a word, or ``p`` (a phrase) or ``*`` (a prefix) and its folded words, spaces
between.
"""

import functools
from collections.abc import Iterator, Sequence
from typing import Final

_K1: Final = 1.2
_B: Final = 0.75
_TYPICAL_WORDS: Final = 20.0
_WEIGHT_WORD: Final = 1.0
_WEIGHT_PHRASE: Final = 0.4


@functools.lru_cache(maxsize=256)
def _terms(spec: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((kind, tuple(forms)) for kind, *forms in (t.split(" ") for t in spec.split("\t")))


def phrase_starts(tokens: list[str], phrase: Sequence[str], prefix: bool) -> Iterator[int]:
    """Indexes of ``tokens`` where ``phrase`` starts (its last word as a prefix when ``prefix``);
    search highlights find phrases the same way."""
    head, last, n = list(phrase[:-1]), phrase[-1], len(phrase)
    for i in range(len(tokens) - n + 1):
        word = tokens[i + n - 1]
        if tokens[i : i + n - 1] == head and (word.startswith(last) if prefix else word == last):
            yield i


def rank(stems: str, words: str, spec: str) -> float:
    """The score of one row (its search columns) for ``spec``'s terms; higher is better."""
    stem_tokens, word_tokens = stems.split(), words.split()
    norm = _K1 * (1 - _B + _B * max(len(word_tokens), 1) / _TYPICAL_WORDS)
    score = 0.0
    for kind, forms in _terms(spec):
        if kind == "w":
            tf, weight = sum(stem_tokens.count(f) for f in forms), _WEIGHT_WORD
        else:
            tf = sum(1 for _ in phrase_starts(word_tokens, forms, kind == "*"))
            weight = _WEIGHT_PHRASE
        score += weight * tf * (_K1 + 1) / (tf + norm)
    return score


__all__ = ["phrase_starts", "rank"]
