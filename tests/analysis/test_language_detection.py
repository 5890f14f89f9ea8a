"""Language detection: supported languages, short or ambiguous text, the restriction set."""

import pytest

from conversation_service.analysis.language import (
    SUPPORTED_LANGUAGES,
    LanguageGuess,
    detect_language,
    load_detector,
)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("I would like to change the delivery address of my order, please.", "en"),
        ("Quisiera cambiar la dirección de entrega de mi pedido, por favor.", "es"),
        ("Je voudrais changer l'adresse de livraison de ma commande.", "fr"),
        ("Ich möchte die Lieferadresse meiner Bestellung ändern.", "de"),
        ("Gostaria de alterar o endereço de entrega do meu pedido.", "pt"),
        ("Vorrei cambiare l'indirizzo di consegna del mio ordine.", "it"),
    ],
)
def test_sentence_in_supported_language_is_detected_confidently(text: str, code: str) -> None:
    guess = detect_language(text)
    assert guess.code == code
    assert guess.confidence > 0.9


def test_spanish_question_with_inverted_marks_is_spanish() -> None:
    assert detect_language("¿Me pueden ayudar? ¡El paquete nunca llegó!").code == "es"


@pytest.mark.parametrize(
    "text", ["ok", "hola", "👍", "", "   ", "12345 !!!", "https://example.com/a/b"]
)
def test_short_or_letterless_text_has_no_language(text: str) -> None:
    assert detect_language(text).code is None


def test_ambiguous_single_word_has_no_language() -> None:
    guess = detect_language("thanks")
    assert guess.code is None
    assert guess.confidence < 0.5


def test_text_in_unsupported_language_has_no_language_by_default() -> None:
    text = "こんにちは、注文についていくつか質問があります"
    assert "ja" not in SUPPORTED_LANGUAGES
    assert detect_language(text).code is None
    assert detect_language(text, languages=None).code == "ja"


def test_restriction_set_limits_the_answer() -> None:
    text = "Quisiera cambiar la dirección de entrega de mi pedido, por favor."
    assert detect_language(text, languages={"en", "es"}).code == "es"
    assert detect_language(text, languages={"en", "de"}).code is None


def test_links_do_not_decide_the_language() -> None:
    text = "Mira este enlace https://example.com/the/english/words/here por favor, no funciona"
    assert detect_language(text).code == "es"


def test_higher_min_confidence_turns_a_weak_guess_into_none() -> None:
    text = "gracias"
    assert detect_language(text).code == "es"
    assert detect_language(text, min_confidence=0.99) == LanguageGuess(
        code=None, confidence=detect_language(text).confidence
    )


def test_detector_is_built_once_and_reused() -> None:
    assert load_detector() is load_detector()
