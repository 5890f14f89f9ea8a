"""What the demo agents say, in English and Spanish: one template per situation.

``{name}``, ``{agent}`` and the like are filled in by ``agent.compose_reply`` and
``agent.greet_after_handoff``.
"""

from collections.abc import Mapping
from typing import Final

PHRASES: Final[Mapping[str, Mapping[str, str]]] = {
    "en": {
        "hello": "Hi{name}! I'm {agent}.",
        "hello_support": "Hi{name}, thanks for contacting support. I'm {agent}.",
        "ack0": "Got it{name}.",
        "ack1": "Thanks{name}.",
        "ack2": "Understood{name}.",
        "learned": "Nice to meet you, {name} — I'll remember your name.",
        "your_name": "Your name is {name}; you told me earlier.",
        "no_name": "You haven't told me your name yet.",
        "asking": "You're asking about {topics}.",
        "telling": "You're telling me about {topics}.",
        "earlier": "Earlier you mentioned {quote}.",
        "earlier_again": "Earlier you mentioned {quote}, and {word} comes up again now.",
        "recall": "So far you've told me {quotes}.",
        "summary": "From the summary of our conversation: {quote}.",
        "intro": (
            "I'm a built-in demo agent without a language model, so my answers are simple, "
            "but I remember what you tell me. What would you like to talk about?"
        ),
        "question_close": (
            "A real agent would answer that with a model, using this same context. "
            "Anything else on your mind?"
        ),
        "close": "What else can I help you with?",
        "handoff": "I'm handing you over to {agent}, who will take it from here.",
        "taking_over": (
            "Hi{name}, I'm {agent}. {previous} told me you need support, and I've read our "
            "conversation so far. How can I help?"
        ),
        "and": "and",
    },
    "es": {
        "hello": "¡Hola{name}! Soy {agent}.",
        "hello_support": "Hola{name}, gracias por contactar con soporte. Soy {agent}.",
        "ack0": "Entendido{name}.",
        "ack1": "Gracias{name}.",
        "ack2": "De acuerdo{name}.",
        "learned": "Encantado de conocerte, {name}; recordaré tu nombre.",
        "your_name": "Te llamas {name}; me lo dijiste antes.",
        "no_name": "Todavía no me has dicho tu nombre.",
        "asking": "Me preguntas sobre {topics}.",
        "telling": "Me hablas de {topics}.",
        "earlier": "Antes mencionaste {quote}.",
        "earlier_again": "Antes mencionaste {quote}, y ahora vuelve a salir {word}.",
        "recall": "Hasta ahora me has dicho {quotes}.",
        "summary": "Según el resumen de nuestra conversación: {quote}.",
        "intro": (
            "Soy un agente de demostración sin modelo de lenguaje: mis respuestas son sencillas, "
            "pero recuerdo lo que me cuentas. ¿De qué te gustaría hablar?"
        ),
        "question_close": (
            "Un agente real lo respondería con un modelo, usando este mismo contexto. ¿Algo más?"
        ),
        "close": "¿En qué más puedo ayudarte?",
        "handoff": "Te paso con {agent}, que seguirá contigo a partir de aquí.",
        "taking_over": (
            "Hola{name}, soy {agent}. {previous} me ha dicho que necesitas soporte y he leído "
            "nuestra conversación. ¿En qué puedo ayudarte?"
        ),
        "and": "y",
    },
}
