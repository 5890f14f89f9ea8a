"""Sentiment: VADER for English and unknown languages, AFINN-es for Spanish, rolling score."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conversation_service.analysis.sentiment import (
    AFINN_ES_MODEL,
    ROLLING_WINDOW,
    analyze_sentiment,
    label_for,
    load_spanish_lexicon,
    normalize_valence,
    rolling_sentiment,
)


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("The support was great, thank you so much!", "positive"),
        ("I love how fast this was resolved.", "positive"),
        ("This is terrible, I hate waiting for hours.", "negative"),
        ("I do not like this at all.", "negative"),
        ("I don’t like it", "negative"),
        ("The meeting is at 10 am on Tuesday.", "neutral"),
        ("The package contains two cables.", "neutral"),
    ],
)
def test_english_sentiment_label(text: str, label: str) -> None:
    result = analyze_sentiment(text, "en")
    assert result.label == label
    assert result.model.startswith("nltk-vader-sentiment-")


def test_english_positive_and_negative_scores_have_their_sign() -> None:
    assert analyze_sentiment("Excellent, this is perfect!", "en").score > 0.5
    assert analyze_sentiment("Awful. The worst service ever.", "en").score < -0.5


@pytest.mark.parametrize("language", [None, "fr", "ja", ""])
def test_unknown_or_other_language_is_scored_with_vader(language: str | None) -> None:
    result = analyze_sentiment("This is wonderful!", language)
    assert result.label == "positive"
    assert result.model.startswith("nltk-vader-sentiment-")


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("me encanta", "positive"),
        ("¡Me encanta este servicio, gracias!", "positive"),
        ("La atención fue muy buena", "positive"),
        ("no me gusta nada", "negative"),
        ("El servicio es pésimo", "negative"),
        ("El envío fue pesimo", "negative"),
        ("Estoy harto de esperar", "negative"),
        ("El servicio no es bueno", "negative"),
        ("nunca me ha gustado este servicio", "negative"),
        ("Mi número de pedido es 12345.", "neutral"),
        ("Quiero cambiar la dirección de envío", "neutral"),
        ("Solo quiero saber el tiempo de entrega", "neutral"),
    ],
)
def test_spanish_sentiment_label(text: str, label: str) -> None:
    result = analyze_sentiment(text, "es")
    assert result.label == label
    assert result.model == AFINN_ES_MODEL


def test_spanish_negation_flips_the_negated_word() -> None:
    assert analyze_sentiment("es malo", "es").label == "negative"
    assert analyze_sentiment("no es malo", "es").label == "positive"
    assert analyze_sentiment("ni bueno ni malo", "es").label == "neutral"


def test_negated_word_weighs_less_than_the_plain_opposite() -> None:
    assert (
        0 < analyze_sentiment("no es malo", "es").score < analyze_sentiment("es bueno", "es").score
    )


def test_spanish_negation_stops_at_a_clause_break() -> None:
    assert analyze_sentiment("No, es excelente", "es").label == "positive"


def test_spanish_negation_reaches_only_the_next_words() -> None:
    assert analyze_sentiment("no lo sé, pero el producto es excelente", "es").label == "positive"


def test_regional_spanish_tag_uses_the_spanish_lexicon() -> None:
    assert analyze_sentiment("me encanta", "es-MX").model == AFINN_ES_MODEL
    assert analyze_sentiment("me encanta", "es_AR").model == AFINN_ES_MODEL


def test_spanish_lexicon_is_the_vendored_afinn_list() -> None:
    lexicon = load_spanish_lexicon()
    assert len(lexicon.words) > 2500
    assert lexicon.word_valence("excelente") == 3
    assert lexicon.words["molesto"] == -4  # upstream's last-wins over "Molesto"
    assert lexicon.phrases[("no", "me", "gusta")] == -2


@pytest.mark.parametrize("language", ["en", "es", None])
def test_empty_text_is_neutral(language: str | None) -> None:
    result = analyze_sentiment("   ", language)
    assert (result.label, result.score) == ("neutral", 0.0)


@given(text=st.text(max_size=300), language=st.sampled_from(["en", "es", None]))
def test_score_is_bounded_and_matches_its_label(text: str, language: str | None) -> None:
    result = analyze_sentiment(text, language)
    assert -1.0 <= result.score <= 1.0
    assert result.label == label_for(result.score)


def test_label_thresholds_are_vaders() -> None:
    assert label_for(0.05) == "positive"
    assert label_for(0.0499) == "neutral"
    assert label_for(-0.0499) == "neutral"
    assert label_for(-0.05) == "negative"


def test_valence_normalisation_is_bounded_and_odd() -> None:
    assert normalize_valence(0) == 0.0
    assert normalize_valence(1000) < 1.0
    assert normalize_valence(-3) == -normalize_valence(3)
    assert normalize_valence(3) == pytest.approx(3 / (9 + 15) ** 0.5)


def test_rolling_sentiment_starts_at_the_first_score() -> None:
    assert rolling_sentiment(None, 0, 0.6) == 0.6
    assert rolling_sentiment(0.3, 0, -0.2) == -0.2


def test_rolling_sentiment_is_the_mean_while_the_conversation_is_short() -> None:
    scores = [0.8, -0.4, 0.2, 0.6, -1.0]
    rolling: float | None = None
    for count, score in enumerate(scores):
        rolling = rolling_sentiment(rolling, count, score)
    assert rolling == pytest.approx(sum(scores) / len(scores), abs=1e-3)


def test_rolling_sentiment_follows_a_late_change_in_a_long_conversation() -> None:
    rolling = 0.8
    count = 500
    for _ in range(ROLLING_WINDOW):
        rolling = rolling_sentiment(rolling, count, -0.8)
        count += 1
    # A plain mean would still be about +0.74; the capped mean has turned negative.
    assert rolling < 0


def test_rolling_sentiment_stays_in_range() -> None:
    assert rolling_sentiment(1.0, 3, 5.0) == 1.0
    assert rolling_sentiment(-1.0, 3, -5.0) == -1.0
