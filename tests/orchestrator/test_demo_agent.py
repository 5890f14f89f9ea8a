"""The demo agent: answers in the user's language and uses the context window it is given."""

from conversation_orchestrator.agent import (
    DEMO_AGENTS,
    Turn,
    build_turn,
    choose_language,
    compose_reply,
    find_name,
    greet_after_handoff,
    tokens,
)

AGENT = DEMO_AGENTS["demo-assistant"]


def test_first_turn_greets_in_english_and_learns_the_name() -> None:
    reply = compose_reply(Turn("Hello! My name is Ana and I plan a trip to Lisbon."), AGENT)
    assert reply.language == "en"
    assert reply.learned_name == "Ana"
    assert reply.text.startswith("Hi Ana! I'm Demo Assistant.")


def test_spanish_message_gets_a_spanish_answer_that_refers_to_an_earlier_turn() -> None:
    turn = Turn(
        "¿Qué tiempo hace en Madrid en invierno?",
        earlier=("Me llamo Lucía y quiero viajar a Madrid.",),
    )
    reply = compose_reply(turn, AGENT)
    assert reply.language == "es"
    assert "Gracias, Lucía." in reply.text or "Entendido, Lucía." in reply.text
    assert "Antes mencionaste «Me llamo Lucía y quiero viajar a Madrid»" in reply.text
    assert "Madrid" in reply.text
    assert "earlier" in reply.used


def test_the_name_is_remembered_from_tracked_context() -> None:
    reply = compose_reply(Turn("What's my name?", earlier=("hi",), known_name="Ana"), AGENT)
    assert "Your name is Ana" in reply.text
    assert "name" in reply.used


def test_the_summary_is_quoted_in_the_users_language() -> None:
    english = compose_reply(
        Turn("Any ideas for dinner?", earlier=("ok",), summary="The user loves seafood. More."),
        AGENT,
    )
    assert "From the summary of our conversation: “The user loves seafood”" in english.text
    spanish = compose_reply(
        Turn("¿Alguna idea para cenar?", earlier=("vale",), summary="Le gusta el marisco."),
        AGENT,
    )
    assert "Según el resumen de nuestra conversación: «Le gusta el marisco»" in spanish.text
    assert "summary" in spanish.used


def test_recall_question_lists_what_the_user_said() -> None:
    reply = compose_reply(
        Turn("What did I tell you?", earlier=("I love hiking", "My dog is Rex")), AGENT
    )
    assert "So far you've told me “I love hiking” and “My dog is Rex”" in reply.text


def test_language_falls_back_to_telltale_signs_and_hints() -> None:
    assert choose_language("¿y tú?") == "es"
    assert choose_language("ok", hints=["es-ES"]) == "es"
    assert choose_language("ok") == "en"


def test_names_are_not_taken_from_ordinary_words() -> None:
    assert find_name("I'm tired") is None
    assert find_name("soy feliz") is None  # lower case after "soy" is not a name
    assert find_name("Soy Ana") == "Ana"
    assert find_name("mi nombre es lucía") == "Lucía"


def test_context_window_becomes_a_turn_without_the_new_message() -> None:
    message = {"id": "m3", "seq": 3, "role": "user", "content": "And Porto?"}
    context = {
        "messages": [
            {"id": "m1", "seq": 1, "role": "user", "content": "Lisbon trip", "language": "en"},
            {"id": "m2", "seq": 2, "role": "assistant", "content": "Nice!"},
            message,
        ],
        "summary": {"text": "Trip planning."},
        "tracked_context": {"entities": {"user_name": "Ana"}},
        "session_context": {"locale": "es-ES"},
    }
    turn = build_turn(context, message)
    assert turn.earlier == ("Lisbon trip",)
    assert turn.summary == "Trip planning."
    assert turn.known_name == "Ana"
    assert turn.language_hints == ("en", "es-ES")


def test_tokens_rebuild_the_reply_exactly() -> None:
    text = compose_reply(Turn("Hola, me llamo Pedro"), AGENT).text
    chunks = tokens(text)
    assert len(chunks) > 10
    assert "".join(chunks) == text


def test_the_demo_assistant_hands_a_support_request_to_the_support_agent() -> None:
    english = compose_reply(Turn("I need support with my invoice", earlier=("hi",)), AGENT)
    assert english.handoff_to == "support-agent"
    assert "I'm handing you over to Support Agent" in english.text
    spanish = compose_reply(Turn("Quiero hablar con soporte, por favor"), AGENT)
    assert spanish.handoff_to == "support-agent"
    assert "Te paso con Agente de soporte" in spanish.text
    assert compose_reply(Turn("What's the weather in Lisbon?"), AGENT).handoff_to is None


def test_the_support_agent_answers_support_requests_itself() -> None:
    support = DEMO_AGENTS["support-agent"]
    assert compose_reply(Turn("I need support with my invoice"), support).handoff_to is None


def test_the_support_agent_greets_by_the_name_the_context_holds() -> None:
    support = DEMO_AGENTS["support-agent"]
    from_tracked = greet_after_handoff(
        Turn("I need support", earlier=("hi",), known_name="Ana"), support, AGENT
    )
    assert from_tracked.text.startswith("Hi Ana, I'm Support Agent. Demo Assistant told me")
    assert from_tracked.used == ("name",)
    from_history = greet_after_handoff(
        Turn("Necesito soporte", earlier=("Hola, me llamo Lucía",)), support, AGENT
    )
    assert from_history.text.startswith("Hola Lucía, soy Agente de soporte.")
    anonymous = greet_after_handoff(Turn("I need support"), support, AGENT)
    assert anonymous.text.startswith("Hi, I'm Support Agent.")
    assert anonymous.used == ()
