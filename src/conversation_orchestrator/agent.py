"""A small rule-based, bilingual (English/Spanish) demo agent that uses its context window.

It stands where a real orchestrator calls a model, and it exists to show that the context the
service hands over is enough to hold a conversation: it greets, learns the user's name (and
stores it in the tracked context), answers "what's my name?", refers to an earlier turn, quotes
the conversation summary when one exists, and answers in the language of the user's message.
``demo-assistant`` hands the conversation over to ``support-agent`` when the user asks for
support (``Reply.handoff_to``), and ``support-agent`` greets the user by the name it finds in the
context it reads (``greet_after_handoff``). Everything is deterministic, so tests can assert on
what it says.
"""

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from conversation_orchestrator.phrases import PHRASES
from conversation_service.analysis.language import detect_language

LANGUAGES: Final = frozenset({"en", "es"})
MODEL_NAME: Final = "demo-agent/1"
SUPPORT_AGENT: Final = "support-agent"


@dataclass(frozen=True, slots=True)
class AgentCard:
    """What the orchestrator's Agent Management knows about an agent."""

    id: str
    names: Mapping[str, str]
    description: str
    usable: bool = True
    reason: str | None = None
    style: str = "assistant"

    def name(self, language: str) -> str:
        """The agent's display name in ``language`` (English when it has none)."""
        return self.names.get(language) or self.names["en"]

    def as_json(self) -> dict[str, Any]:
        """The ``GET /agents/{id}`` body."""
        return {
            "id": self.id,
            "name": self.names["en"],
            "names": dict(self.names),
            "description": self.description,
            "usable": self.usable,
            "reason": self.reason,
            "languages": sorted(LANGUAGES),
            "model": MODEL_NAME,
        }


DEMO_AGENTS: Final[Mapping[str, AgentCard]] = {
    card.id: card
    for card in (
        AgentCard(
            id="demo-assistant",
            names={"en": "Demo Assistant", "es": "Asistente de demostración"},
            description="A friendly bilingual assistant that remembers the conversation.",
        ),
        AgentCard(
            id="support-agent",
            names={"en": "Support Agent", "es": "Agente de soporte"},
            description="A help-desk persona: same memory, a more formal tone.",
            style="support",
        ),
        AgentCard(
            id="retired-agent",
            names={"en": "Retired Agent", "es": "Agente retirado"},
            description="An agent that still exists but may no longer take conversations.",
            usable=False,
            reason="this agent was retired; use demo-assistant",
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Turn:
    """What the agent knows when it answers: the new message and the context window."""

    text: str
    earlier: tuple[str, ...] = ()  # earlier user messages in the window, oldest first
    summary: str | None = None
    known_name: str | None = None  # tracked context: entities.user_name
    language_hints: tuple[str, ...] = ()  # newest first: earlier messages, session locale


@dataclass(frozen=True, slots=True)
class Reply:
    """The agent's answer, its language, and a name it learnt in this turn (to remember)."""

    text: str
    language: str
    learned_name: str | None = None
    used: tuple[str, ...] = field(default=())  # which parts of the context it used
    handoff_to: str | None = None  # the agent to hand the conversation to after this reply


# -- reading the context ----------------------------------------------------------------------

_NAME_ANY_CASE = re.compile(r"\b(?i:my name is|me llamo|mi nombre es)\s+([^\W\d_][\w'-]{0,40})")
_NAME_CAPITALISED = re.compile(r"\b(?i:i am|i'm|i’m|soy)\s+([A-ZÁÉÍÓÚÑ][^\W\d_]{1,40})")
_NOT_NAMES = frozenset(
    {"a", "an", "the", "not", "so", "very", "here", "un", "una", "el", "la", "muy", "de"}
)
_NAME_QUESTION = re.compile(
    r"(?i)\bwhat(?:'s|’s| is) my name\b|\bdo you (?:know|remember) my name\b"
    r"|\bc[oó]mo me llamo\b|\bcu[aá]l es mi nombre\b|\b(?:sabes|recuerdas) mi nombre\b"
)
_RECALL_QUESTION = re.compile(
    r"(?i)\bwhat did i (?:say|tell you|mention|ask)\b|\bdo you remember\b"
    r"|\bqu[eé] te (?:dije|cont[eé]|pregunt[eé])\b|\b(?:te acuerdas|recuerdas)\b"
)
_WORD = re.compile(r"[^\W\d_]+")
_SUPPORT_REQUEST = re.compile(
    r"(?i)\b(?:support|help ?desk|customer service|soporte|atenci[oó]n al cliente)\b"
)


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


_SPANISH_MARKS = re.compile(r"[¿¡ñÑáéíóúÁÉÍÓÚ]")
_SPANISH_WORDS = _word_set(
    """
    hola gracias que qué como cómo por favor quiero necesito tengo estoy es el la los las una un
    de del para con mi me te y pero muy bien buenos buenas días sí también
    """
)
_ENGLISH_WORDS = _word_set(
    """
    hello hi thanks thank please what how want need have i am is the a an of for with my me you
    and but very good morning yes also
    """
)
_STOPWORDS = _word_set(
    """
    about also been could does doing from have hello here just know like make more much name
    need please really remember said should thanks than that their them then there they thing
    think this want were what when where which will with would your you're tell again earlier
    today mention mentioned something anything nothing best better
    algo ahora ayuda ayudar bien buenas buenos como cómo cual cuál cuando dije donde dónde desde
    entre esta este esto estoy favor gracias hacer hasta hola llamo mucho muy nada necesito
    nombre para pero porque puedes puedo quiero recuerdas sabes sobre también tengo tiene
    tienes todo todos unas unos días tardes noches antes hace está están
    """
)


def wants_support(text: str) -> bool:
    """Whether the user asks for support ("I need support", "quiero hablar con soporte")."""
    return _SUPPORT_REQUEST.search(text) is not None


def find_name(text: str) -> str | None:
    """A name the user gives for themselves in ``text`` ("my name is Ana", "soy Ana")."""
    for pattern in (_NAME_ANY_CASE, _NAME_CAPITALISED):
        match = pattern.search(text)
        if match and match.group(1).lower() not in _NOT_NAMES:
            name = match.group(1).strip("'-")
            return name[:1].upper() + name[1:]
    return None


def keywords(text: str, limit: int = 3) -> list[str]:
    """Up to ``limit`` content words of ``text``, in order of appearance."""
    seen: list[str] = []
    lowered: set[str] = set()
    for word in _WORD.findall(text):
        lower = word.lower()
        if len(word) >= 4 and lower not in _STOPWORDS and lower not in lowered:
            seen.append(word)
            lowered.add(lower)
            if len(seen) == limit:
                break
    return seen


def _heuristic_language(text: str) -> str | None:
    if _SPANISH_MARKS.search(text):
        return "es"
    words = _WORD.findall(text.lower())
    spanish = sum(word in _SPANISH_WORDS for word in words)
    english = sum(word in _ENGLISH_WORDS for word in words)
    if spanish != english:
        return "es" if spanish > english else "en"
    return None


def choose_language(text: str, hints: Iterable[str] = ()) -> str:
    """English or Spanish: the detector, then telltale words, then the hints, then English."""
    code = detect_language(text, languages=LANGUAGES).code
    if code in LANGUAGES:
        return code
    code = _heuristic_language(text)
    if code is not None:
        return code
    for hint in hints:
        prefix = hint.split("-")[0].lower()
        if prefix in LANGUAGES:
            return prefix
    return "en"


def build_turn(context: Mapping[str, Any], message: Mapping[str, Any]) -> Turn:
    """A ``Turn`` from the native context window (``GET …/context``) and the new message."""
    current_seq = int(message.get("seq") or 0)
    earlier: list[str] = []
    languages: list[str] = []
    for item in context.get("messages") or ():
        if item.get("role") != "user" or item.get("id") == message.get("id"):
            continue
        if current_seq and int(item.get("seq") or 0) > current_seq:
            continue
        content = str(item.get("content") or "").strip()
        if content:
            earlier.append(content)
            if item.get("language"):
                languages.append(str(item["language"]))
    summary = context.get("summary") or {}
    tracked = context.get("tracked_context") or {}
    entities = tracked.get("entities") if isinstance(tracked, Mapping) else None
    known_name = entities.get("user_name") if isinstance(entities, Mapping) else None
    session = context.get("session_context") or {}
    locale = session.get("locale") if isinstance(session, Mapping) else None
    hints = [*reversed(languages), *([str(locale)] if locale else [])]
    return Turn(
        text=str(message.get("content") or ""),
        earlier=tuple(earlier),
        summary=str(summary.get("text")) if summary.get("text") else None,
        known_name=str(known_name) if known_name else None,
        language_hints=tuple(hints),
    )


# -- answering ---------------------------------------------------------------------------------


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(",.;:")
    return cut + "…"


def _join(words: Sequence[str], conjunction: str) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + f" {conjunction} " + words[-1]


def _quote(text: str, language: str) -> str:
    text = text.rstrip(".!;:, ")
    return f"«{text}»" if language == "es" else f"“{text}”"


def _remembered_name(turn: Turn) -> str | None:
    """The user's name as the context holds it: tracked context, earlier turns, the summary."""
    remembered = turn.known_name or next(
        (name for name in map(find_name, reversed(turn.earlier)) if name), None
    )
    if remembered is None and turn.summary:
        remembered = find_name(turn.summary)
    return remembered


def compose_reply(turn: Turn, agent: AgentCard) -> Reply:
    """The agent's answer to ``turn``, in the language of the user's message."""
    language = choose_language(turn.text, turn.language_hints)
    say = PHRASES[language]
    learned = find_name(turn.text)
    remembered = _remembered_name(turn)
    if agent.style != "support" and wants_support(turn.text):
        # Only the support agent answers support questions: say so, then hand over.
        support = DEMO_AGENTS[SUPPORT_AGENT].name(language)
        salutation = f", {learned or remembered}" if learned or remembered else ""
        text = " ".join((say["ack1"].format(name=salutation), say["handoff"].format(agent=support)))
        return Reply(text=text, language=language, learned_name=learned, handoff_to=SUPPORT_AGENT)
    name = learned or remembered
    used: list[str] = []
    parts: list[str] = []
    salutation = f", {name}" if name else ""
    first_turn = not turn.earlier and not turn.summary
    if first_turn:
        greeting = say["hello_support"] if agent.style == "support" else say["hello"]
        parts.append(greeting.format(name=f" {name}" if name else "", agent=agent.name(language)))
    else:
        parts.append(say[f"ack{len(turn.earlier) % 3}"].format(name=salutation))
    if learned and learned != remembered:
        parts.append(say["learned"].format(name=learned))
    if _NAME_QUESTION.search(turn.text):
        if remembered:
            parts.append(say["your_name"].format(name=remembered))
            used.append("name")
        else:
            parts.append(say["no_name"])
    elif _RECALL_QUESTION.search(turn.text) and turn.earlier:
        quotes = [_quote(_shorten(text, 60), language) for text in turn.earlier[-3:]]
        parts.append(say["recall"].format(quotes=_join(quotes, say["and"])))
        used.append("earlier")
    else:
        topics = keywords(turn.text)
        if topics and not learned:
            key = "asking" if turn.text.rstrip().endswith("?") else "telling"
            parts.append(say[key].format(topics=_join(topics, say["and"])))
        if turn.earlier:
            previous = turn.earlier[-1]
            before = {word.lower() for word in keywords(previous, 8)}
            shared = [word for word in keywords(turn.text, 8) if word.lower() in before]
            quote = _quote(_shorten(previous, 70), language)
            if shared:
                parts.append(say["earlier_again"].format(quote=quote, word=shared[0]))
            else:
                parts.append(say["earlier"].format(quote=quote))
            used.append("earlier")
    if turn.summary:
        first = re.split(r"(?<=[.!?])\s", turn.summary.strip(), maxsplit=1)[0]
        parts.append(say["summary"].format(quote=_quote(_shorten(first, 140), language)))
        used.append("summary")
    if first_turn:
        parts.append(say["intro"])
    elif turn.text.rstrip().endswith("?") and "name" not in used and "earlier" not in used:
        parts.append(say["question_close"])
    else:
        parts.append(say["close"])
    if name and name == remembered and "name" not in used:
        used.append("name")
    return Reply(text=" ".join(parts), language=language, learned_name=learned, used=tuple(used))


def greet_after_handoff(turn: Turn, agent: AgentCard, previous: AgentCard) -> Reply:
    """What ``agent`` says on taking the conversation over from ``previous``: it greets the
    user by the name the context holds and says it has read the conversation."""
    language = choose_language(turn.text, turn.language_hints)
    name = _remembered_name(turn) or find_name(turn.text)
    text = PHRASES[language]["taking_over"].format(
        name=f" {name}" if name else "",
        agent=agent.name(language),
        previous=previous.name(language),
    )
    return Reply(text=text, language=language, used=("name",) if name else ())


_TOKEN = re.compile(r"\s*\S+")


def tokens(text: str) -> list[str]:
    """The reply as the chunks it is streamed in (words with their leading space)."""
    return _TOKEN.findall(text)
