"""Exact token counts for chat messages, as the memory manager stores them.

Counting uses ``bpe-openai`` (Rust bindings to GitHub's ``bpe-openai`` crate, with tiktoken's
``cl100k_base`` and ``o200k_base`` ranks inside the wheel, so nothing is downloaded) through its
tiktoken-style public API, and adds the chat-format overhead from the OpenAI cookbook. Its merge is
linear in the worst case: 100,000 characters without a word break count in milliseconds. The
library is imported and its encoders loaded on first use, then kept for the life of the process,
so importing this module costs nothing. No domain logic lives here.
"""

import functools
import re
from collections.abc import Callable, Iterable
from typing import Final

SUPPORTED_ENCODINGS: Final[tuple[str, ...]] = ("cl100k_base", "o200k_base")

# Every message is framed as <|start|>{role}<|message|>{content}<|end|>: 3 tokens besides the
# role and content themselves (OpenAI cookbook, "How to count tokens with tiktoken").
TOKENS_PER_MESSAGE: Final = 3
TOKENS_PER_NAME: Final = 1
# The request as a whole ends with <|start|>assistant<|message|>, priming the reply.
REPLY_PRIMING_TOKENS: Final = 3
# bpe-openai refuses text of 1,000,000 characters or more; longer text is counted in pieces.
MAX_PIECE_CHARS: Final = 999_999
# Ends just before the last space that follows a non-space character. Every pre-token of cl100k
# and o200k ends there: none spans a non-space then a space, and the look-aheads of their
# whitespace rules only look past whitespace. Python's ``\S`` excludes every Unicode space.
_LAST_SAFE_CUT: Final = re.compile(r".*\S(?= )", re.DOTALL)


class UnsupportedEncodingError(ValueError):
    """The encoding name is not one this service can count exactly."""


@functools.lru_cache(maxsize=len(SUPPORTED_ENCODINGS))
def _counter(encoding: str) -> Callable[[str], int]:
    # Raising before the load keeps arbitrary names out of the cache (lru_cache stores no
    # exceptions), so this small bound holds every encoder ever loaded.
    if encoding not in SUPPORTED_ENCODINGS:
        supported = ", ".join(SUPPORTED_ENCODINGS)
        raise UnsupportedEncodingError(
            f"unsupported encoding {encoding!r}; expected one of: {supported}"
        )
    # Imported here, not at module level: its extension module maps about 70 MB.
    import bpe_openai

    encode: Callable[[str], list[int]] = bpe_openai.get_encoding(encoding).encode_ordinary

    def count(text: str) -> int:
        # Ordinary encoding: text such as "<|endoftext|>" in a message is plain text to the chat
        # API, never a special token.
        try:
            return len(encode(text))
        except bpe_openai.TokenLimitError as exc:
            # Past 200,000 tokens the library returns no ids, but its error carries their
            # exact number (a field of the public TokenLimitError).
            token_count: int = exc.token_count
            return token_count

    return count


def preload_encoders(encodings: Iterable[str] = SUPPORTED_ENCODINGS) -> None:
    """Load encoders now (e.g. in the app lifespan) so no request pays the ~0.3 s load."""
    for encoding in encodings:
        _counter(encoding)


def count_tokens(text: str, encoding: str) -> int:
    """Return the exact number of tokens ``text`` encodes to in ``encoding``."""
    count = _counter(encoding)
    if len(text) <= MAX_PIECE_CHARS:
        return count(text)
    return sum(count(piece) for piece in split_for_counting(text, MAX_PIECE_CHARS))


def split_for_counting(text: str, max_chars: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``max_chars`` whose token counts add up to the whole's.

    Each cut falls before a space that follows a non-space character, where every pre-token ends,
    so the counts add up exactly. A stretch of ``max_chars`` characters with no such space (one
    unbroken word) is cut where it must be, which can put its count a few tokens off.
    """
    pieces: list[str] = []
    start = 0
    while len(text) - start > max_chars:
        end = start + max_chars
        found = _LAST_SAFE_CUT.match(text, start, end)
        cut = found.end() if found is not None else end
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def message_tokens(role: str, content: str, encoding: str, name: str | None = None) -> int:
    """Return a message's tokens including its chat-format overhead (not the reply priming)."""
    tokens = TOKENS_PER_MESSAGE + count_tokens(role, encoding) + count_tokens(content, encoding)
    if name is not None:
        # The cookbook counts the name's own tokens plus one more for the name field.
        tokens += count_tokens(name, encoding) + TOKENS_PER_NAME
    return tokens
