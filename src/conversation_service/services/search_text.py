"""The text analysis of search: words, folding and per-language stems, shared by the index and
the query so both sides agree token for token (use case: ``services.search``).

A message is indexed twice, in two columns of its row: ``search_words`` holds its words folded
(case and accents removed), for phrases and prefixes; ``search_stems`` holds each word's Snowball
stem in the message's detected language, or the folded word when the language is unknown or has
no stemmer (the language-neutral fallback). A query word is matched against its stems in every
language the service detects, so "corriendo" finds "correr" in a Spanish message and "running"
finds "run" in an English one without knowing the query's language. PyStemmer ships its
algorithms compiled in: nothing is downloaded.
"""

import re
import unicodedata
from collections.abc import Iterator
from functools import cache
from typing import Final

import Stemmer

from conversation_service.analysis.language import SUPPORTED_LANGUAGES

# ISO 639-1 code → Snowball algorithm, for every language ``detect_language`` answers with.
STEMMERS: Final[dict[str, str]] = {
    "en": "english",
    "es": "spanish",
    "fr": "french",
    "de": "german",
    "pt": "portuguese",
    "it": "italian",
}
assert set(STEMMERS) >= SUPPORTED_LANGUAGES

# A word is a run of letters and digits; both index engines split on everything else, so the
# tokens written here are exactly the tokens they index.
WORD: Final = re.compile(r"[^\W_]+")


@cache
def _stemmer(language: str) -> Stemmer.Stemmer:
    return Stemmer.Stemmer(STEMMERS[language])


def fold(word: str) -> str:
    """Lower case without accents: the form every token is compared in."""
    if word.isascii():
        return word.lower()
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def words(text: str) -> Iterator[re.Match[str]]:
    """The words of ``text`` with their spans."""
    return WORD.finditer(text)


def stem(word: str, language: str | None) -> str:
    """The folded stem of ``word`` in ``language``; the folded word when there is no stemmer."""
    if language not in STEMMERS:
        return fold(word)
    # Snowball expects accented input ("corrí"), so fold after stemming, never before.
    return fold(_stemmer(language).stemWord(word.casefold()))


def stems_everywhere(word: str) -> frozenset[str]:
    """Every form a query word may take in the index: folded, and stemmed in each language."""
    return frozenset({fold(word), *(stem(word, language) for language in STEMMERS)})


def index_values(content: str, language: str | None) -> dict[str, str]:
    """The two search columns of a message with ``content`` in ``language``."""
    found = [m.group() for m in words(content)]
    if language in STEMMERS:
        stemmer = _stemmer(language)
        stems = [fold(s) for s in stemmer.stemWords([w.casefold() for w in found])]
    else:
        stems = [fold(w) for w in found]
    return {"search_stems": " ".join(stems), "search_words": " ".join(fold(w) for w in found)}


SEARCH_COLUMNS: Final = ("search_stems", "search_words")
EMPTY_INDEX: Final[dict[str, str]] = dict.fromkeys(SEARCH_COLUMNS, "")
