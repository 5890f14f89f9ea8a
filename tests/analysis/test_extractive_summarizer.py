"""The offline extractive (TextRank) summarizer and its sentence splitter."""

import pytest

from conversation_service.analysis.summarize import (
    ExtractiveSummarizer,
    SummaryInput,
    meaningful_word_count,
    split_sentences,
)

SUPPORT_CHAT = [
    SummaryInput("user", "Hi there!", 1),
    SummaryInput("assistant", "Hello! How can I help you today?", 2),
    SummaryInput(
        "user",
        "My order 4411 arrived with a broken screen. "
        "I want a refund for the broken laptop, not a replacement.",
        3,
    ),
    SummaryInput(
        "assistant",
        "I'm sorry to hear that. I can start a refund for order 4411. "
        "The refund goes back to your original card within five business days.",
        4,
    ),
    SummaryInput("user", "Great, thanks. Also, the laptop charger was missing from the box.", 5),
    SummaryInput(
        "assistant", "Noted: the charger was missing from the order 4411 box, I added it.", 6
    ),
]


def _user(text: str, seq: int) -> SummaryInput:
    return SummaryInput("user", text, seq)


def _assistant(text: str, seq: int) -> SummaryInput:
    return SummaryInput("assistant", text, seq)


async def test_summary_keeps_the_salient_sentences_and_drops_greetings() -> None:
    summary = await ExtractiveSummarizer().summarize(None, SUPPORT_CHAT, "en")
    assert summary is not None
    assert "refund for the broken laptop" in summary
    assert "charger was missing" in summary
    assert "Hi there" not in summary
    assert "How can I help" not in summary
    assert "sorry to hear" not in summary


async def test_summary_prefixes_each_speakers_run_with_its_role() -> None:
    summary = await ExtractiveSummarizer().summarize(None, SUPPORT_CHAT, "en")
    assert summary is not None
    lines = summary.splitlines()
    assert all(line.startswith(("User: ", "Assistant: ")) for line in lines)
    assert lines[0].startswith("User: ")


async def test_summary_keeps_at_most_max_sentences_in_conversation_order() -> None:
    summary = await ExtractiveSummarizer(max_sentences=2).summarize(None, SUPPORT_CHAT, "en")
    assert summary is not None
    assert len(split_sentences(summary)) == 2
    chosen = [
        s.removeprefix("User: ").removeprefix("Assistant: ") for s in split_sentences(summary)
    ]
    positions = [
        next(m.seq for m in SUPPORT_CHAT if sentence.rstrip(".") in m.content)
        for sentence in chosen
    ]
    assert positions == sorted(positions)


async def test_summary_is_bounded_in_length() -> None:
    long_chat = [
        _user(
            f"Ticket {i}: the invoice for account {i} shows a duplicated payment charge "
            f"of {i * 10} euros on the credit card, please investigate the billing error.",
            i,
        )
        for i in range(60)
    ]
    summary = await ExtractiveSummarizer(max_chars=400).summarize(None, long_chat, "en")
    assert summary is not None
    assert 0 < len(summary) <= 400


async def test_summary_is_deterministic() -> None:
    first = await ExtractiveSummarizer().summarize(None, SUPPORT_CHAT, "en")
    second = await ExtractiveSummarizer().summarize(None, list(reversed(SUPPORT_CHAT)), "en")
    assert first is not None
    assert first == second


async def test_small_talk_has_nothing_to_say() -> None:
    chat = [
        _user("Hi! How are you?", 1),
        _assistant("Hello! I'm fine, thanks. How can I help you today?", 2),
        _user("ok thanks, bye!", 3),
    ]
    assert await ExtractiveSummarizer().summarize(None, chat, "en") is None
    assert await ExtractiveSummarizer().summarize("User: I want a refund.", chat, "en") is None


async def test_spanish_small_talk_has_nothing_to_say() -> None:
    chat = [_user("¡Hola! Buenos días", 1), _assistant("¡Hola! ¿En qué puedo ayudarte hoy?", 2)]
    assert await ExtractiveSummarizer().summarize(None, chat, "es") is None


async def test_no_messages_have_nothing_to_say() -> None:
    assert await ExtractiveSummarizer().summarize("User: I want a refund.", [], "en") is None


async def test_incremental_summary_keeps_previous_content_and_adds_the_new_topic() -> None:
    summarizer = ExtractiveSummarizer()
    first = await summarizer.summarize(None, SUPPORT_CHAT, "en")
    assert first is not None
    later = [
        _user("Can you also change my shipping address to 12 Baker Street? I moved.", 7),
        _assistant("Done, your shipping address is now 12 Baker Street for future orders.", 8),
    ]
    second = await summarizer.summarize(first, later, "en")
    assert second is not None
    assert "refund for the broken laptop" in second
    assert "charger was missing" in second
    assert "12 Baker Street" in second
    assert all(line.startswith(("User: ", "Assistant: ")) for line in second.splitlines())


async def test_incremental_summary_without_new_salient_content_keeps_the_previous() -> None:
    summarizer = ExtractiveSummarizer()
    first = await summarizer.summarize(None, SUPPORT_CHAT, "en")
    assert await summarizer.summarize(first, [_user("thanks a lot, bye", 9)], "en") is None


async def test_previous_summary_from_another_summarizer_is_accepted() -> None:
    previous = "The customer reported a broken laptop screen on order 4411 and asked for a refund."
    summary = await ExtractiveSummarizer().summarize(
        previous, [_user("The refund for order 4411 has not reached my card yet.", 10)], "en"
    )
    assert summary is not None
    assert summary.startswith("The customer reported a broken laptop screen")
    assert "User: The refund for order 4411 has not reached my card yet." in summary


async def test_spanish_conversation_is_summarized_with_spanish_role_labels() -> None:
    chat = [
        _user("¡Hola! ¿Me pueden ayudar? Mi pedido 5521 llegó con la pantalla rota.", 1),
        _assistant(
            "Lo siento mucho. Puedo tramitar el reembolso del pedido 5521. "
            "El reembolso llegará a su tarjeta en cinco días hábiles.",
            2,
        ),
        _user("Perfecto, gracias. Además, el cargador no venía en la caja del pedido.", 3),
    ]
    summary = await ExtractiveSummarizer().summarize(None, chat, "es")
    assert summary is not None
    assert "Usuario: Mi pedido 5521 llegó con la pantalla rota." in summary
    assert "reembolso del pedido 5521" in summary
    assert "¡Hola!" not in summary
    assert all(line.startswith(("Usuario: ", "Asistente: ")) for line in summary.splitlines())


async def test_tool_and_system_messages_are_left_out_by_default() -> None:
    chat = [
        SummaryInput("system", "You are a helpful billing assistant for ACME invoices.", 1),
        SummaryInput("tool", '{"invoice": 991, "status": "overdue", "amount": 120}', 2),
        _user("Why is invoice 991 marked overdue? I paid the invoice last week.", 3),
    ]
    summary = await ExtractiveSummarizer().summarize(None, chat, "en")
    assert summary == "User: Why is invoice 991 marked overdue? I paid the invoice last week."


async def test_long_span_is_summarized_within_bounds() -> None:
    topics = ["invoice", "refund", "password", "delivery", "courier", "warranty", "account"]
    chat = [
        _user(
            f"Message {i} is about the {topics[i % 7]} and the {topics[(i * 3) % 7]} problem. "
            f"The {topics[(i + 2) % 7]} team should look at case {i}.",
            i,
        )
        for i in range(400)
    ]
    summary = ExtractiveSummarizer(max_sentences=5).summarize_sync(None, chat, "en")
    assert summary is not None
    assert len(split_sentences(summary)) <= 5


def test_splitter_handles_spanish_inverted_marks() -> None:
    assert split_sentences("¡Hola! ¿Cómo estás? Todo bien.") == [
        "¡Hola!",
        "¿Cómo estás?",
        "Todo bien.",
    ]


def test_splitter_does_not_split_after_abbreviations_initials_or_decimals() -> None:
    text = (
        "Hablé con el Dr. García y la Sra. Pérez. Mr. J. Smith paid 3.50 dollars, e.g. cash. Done!"
    )
    assert split_sentences(text) == [
        "Hablé con el Dr. García y la Sra. Pérez.",
        "Mr. J. Smith paid 3.50 dollars, e.g. cash.",
        "Done!",
    ]


def test_splitter_treats_lines_and_list_items_as_sentences() -> None:
    text = "Steps:\n- restart the router\n2. check the cable\n\nIt works now"
    assert split_sentences(text) == [
        "Steps:",
        "restart the router",
        "check the cable",
        "It works now",
    ]


def test_meaningful_words_exclude_function_words_and_small_talk() -> None:
    assert meaningful_word_count("Hi! Thanks, ok, bye.") == 0
    assert meaningful_word_count("I want to cancel my subscription", "en") == 2
    assert meaningful_word_count("Hola, quiero cancelar mi suscripción", "es") == 2


async def test_overlong_sentence_is_shortened_to_fit() -> None:
    words = " ".join(f"refund{i} invoice{i}" for i in range(80))
    summary = await ExtractiveSummarizer(max_chars=200).summarize(
        None, [_user(f"The disputed items are {words}.", 1)], "en"
    )
    assert summary is not None
    assert len(summary) <= 200
    assert summary.startswith("User: The disputed items are refund0 invoice0")
    assert summary.endswith("…")


def test_unusable_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_sentences"):
        ExtractiveSummarizer(max_sentences=0)
