"""Token counting: exact counts against published tiktoken values and the chat overhead."""

import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conversation_service.utils.memory_utils import (
    MAX_PIECE_CHARS,
    REPLY_PRIMING_TOKENS,
    SUPPORTED_ENCODINGS,
    UnsupportedEncodingError,
    count_tokens,
    message_tokens,
    split_for_counting,
)

# Counts taken from tiktoken's own tests (tests/test_encoding.py) and the OpenAI cookbook
# ("How to count tokens with tiktoken"), so they check compatibility, not this code against itself.
KNOWN_COUNTS = [
    ("hello world", "cl100k_base", 2),  # [15339, 1917]
    ("hello world", "o200k_base", 2),  # [24912, 2375]
    (" \x850", "cl100k_base", 4),  # [220, 126, 227, 15]
    ("rer", "cl100k_base", 1),  # [38149]
    ("'rer", "cl100k_base", 2),  # [2351, 81]
    ("today\n ", "cl100k_base", 3),  # [31213, 198, 220]
    ("today\n \n", "cl100k_base", 2),  # [31213, 27907]
    ("today\n  \n", "cl100k_base", 2),  # [31213, 14211]
    ("👍", "cl100k_base", 3),  # [9468, 239, 235]
    ("tiktoken is great!", "cl100k_base", 6),
    ("お誕生日おめでとう", "cl100k_base", 9),
    ("お誕生日おめでとう", "o200k_base", 8),
    ("", "cl100k_base", 0),
    ("", "o200k_base", 0),
]

# The cookbook's example conversation; the OpenAI API reported 129 prompt tokens for gpt-4
# (cl100k_base) and 124 for gpt-4o (o200k_base).
COOKBOOK_MESSAGES: list[tuple[str, str | None, str]] = [
    (
        "system",
        None,
        "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    ),
    ("system", "example_user", "New synergies will help drive top-line growth."),
    ("system", "example_assistant", "Things working well together will increase revenue."),
    (
        "system",
        "example_user",
        "Let's circle back when we have more bandwidth to touch base on opportunities for "
        "increased leverage.",
    ),
    (
        "system",
        "example_assistant",
        "Let's talk later when we're less busy about how to do better.",
    ),
    (
        "user",
        None,
        "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    ),
]


@pytest.mark.parametrize(("text", "encoding", "expected"), KNOWN_COUNTS)
def test_count_tokens_matches_published_tiktoken_counts(
    text: str, encoding: str, expected: int
) -> None:
    assert count_tokens(text, encoding) == expected


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_special_token_text_is_counted_as_plain_text(encoding: str) -> None:
    # A user may type "<|endoftext|>"; the API reads it as text, so it costs several tokens.
    assert count_tokens("<|endoftext|>", encoding) > 1


def test_unknown_encoding_is_refused() -> None:
    with pytest.raises(UnsupportedEncodingError, match="p50k_base"):
        count_tokens("hello", "p50k_base")


def test_unsupported_encoding_error_is_a_value_error() -> None:
    assert issubclass(UnsupportedEncodingError, ValueError)


@pytest.mark.parametrize(("encoding", "expected"), [("cl100k_base", 129), ("o200k_base", 124)])
def test_cookbook_conversation_costs_what_the_openai_api_reported(
    encoding: str, expected: int
) -> None:
    per_message = [
        message_tokens(role, content, encoding, name=name)
        for role, name, content in COOKBOOK_MESSAGES
    ]
    assert sum(per_message) + REPLY_PRIMING_TOKENS == expected


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_message_tokens_adds_three_tokens_of_framing(encoding: str) -> None:
    # "user" and "hello world" are 1 and 2 tokens in both encodings.
    assert message_tokens("user", "hello world", encoding) == 3 + 1 + 2


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_message_tokens_counts_the_name_plus_one(encoding: str) -> None:
    unnamed = message_tokens("user", "hello world", encoding)
    named = message_tokens("user", "hello world", encoding, name="alice")
    assert named == unnamed + count_tokens("alice", encoding) + 1


def test_reply_priming_is_three_tokens() -> None:
    assert REPLY_PRIMING_TOKENS == 3


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
@settings(max_examples=50)
@given(text=st.text(max_size=200))
def test_token_count_is_between_one_and_the_utf8_length(encoding: str, text: str) -> None:
    # Every token stands for at least one byte, and any non-empty text needs a token.
    tokens = count_tokens(text, encoding)
    assert min(len(text), 1) <= tokens <= len(text.encode("utf-8"))


def test_importing_the_module_loads_no_tokenizer() -> None:
    # A fresh interpreter, because this test process has long since loaded the encoders.
    probe = (
        "import sys\n"
        "import conversation_service.utils.memory_utils\n"
        "print('bpe_openai' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_text_longer_than_the_library_accepts_is_counted_exactly(encoding: str) -> None:
    # A repeated unit costs a fixed number of tokens per copy plus a constant, so three
    # lengths the library counts in one call give the exact count of a longer text.
    unit = "Hola, ¿qué tal? I'm fine 😀 日本語\n"
    c1, c2, c3 = (count_tokens(unit * k, encoding) for k in (1_000, 2_000, 3_000))
    per_thousand = c2 - c1
    assert c3 - c2 == per_thousand
    thousands = 2 * MAX_PIECE_CHARS // len(unit) // 1_000
    expected = c1 + (thousands - 1) * per_thousand
    assert count_tokens(unit * thousands * 1_000, encoding) == expected


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_unbroken_run_longer_than_the_library_accepts_is_counted_nearly(encoding: str) -> None:
    # One word of 1.5 million letters has no exact cut; "aaaaaaaa" is one token in both.
    assert abs(count_tokens("a" * 1_500_000, encoding) - 1_500_000 // 8) <= 2


_WORD = st.text(
    st.characters(exclude_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=8
)
# Every separator starts with a space after a word, so each window of 24 characters has a cut
# where no pre-token spans; what follows exercises the whitespace rules' look-aheads.
_SEPARATOR = st.sampled_from([" ", "  ", "   ", " \n", " \n\n ", " \t", " \r\n  ", " \u00a0"])


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
@settings(max_examples=100, deadline=None)
@given(parts=st.lists(st.tuples(_WORD, _SEPARATOR), min_size=1, max_size=40))
def test_pieces_cut_between_words_add_up_to_the_whole_count(
    encoding: str, parts: list[tuple[str, str]]
) -> None:
    text = "".join(word + separator for word, separator in parts)
    pieces = split_for_counting(text, 24)
    assert "".join(pieces) == text
    assert all(len(piece) <= 24 for piece in pieces)
    assert all(piece.startswith(" ") for piece in pieces[1:])
    assert sum(count_tokens(piece, encoding) for piece in pieces) == count_tokens(text, encoding)


def test_text_that_fits_is_one_piece() -> None:
    assert split_for_counting("hello world", 11) == ["hello world"]


def test_cut_falls_before_the_last_space_after_a_word() -> None:
    assert split_for_counting("one two three four", 12) == ["one two", " three four"]


def test_space_after_whitespace_is_no_cut() -> None:
    # A space after a newline may belong to the newline's pre-token, so only the space after
    # "ab" is a cut.
    assert split_for_counting("ab \n \n cd", 8) == ["ab", " \n \n cd"]


def test_run_without_a_cut_is_split_at_the_limit() -> None:
    assert split_for_counting("x" * 50, 20) == ["x" * 20, "x" * 20, "x" * 10]
