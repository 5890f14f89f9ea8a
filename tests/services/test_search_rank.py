"""SQLite's search score (``db.search_rank``): from the row alone, higher is better."""

from conversation_service.db.search_rank import rank
from conversation_service.services.search_query import parse, rank_terms
from conversation_service.services.search_text import index_values


def _score(content: str, q: str) -> float:
    columns = index_values(content, "en")
    return rank(columns["search_stems"], columns["search_words"], rank_terms(parse(q)))


def test_a_row_without_the_terms_scores_nothing() -> None:
    assert _score("the weather in Oslo", "lisbon") == 0


def test_more_occurrences_score_higher_and_saturate() -> None:
    once, twice, often = (_score(" ".join(["lisbon"] * n), "lisbon") for n in (1, 2, 9))
    assert 0 < once < twice < often
    assert often - twice < twice - once  # each further occurrence adds less


def test_words_match_by_stem_and_phrases_and_prefixes_as_written() -> None:
    assert _score("we were running late", "run") > 0
    assert _score("book a cheap flight", '"cheap flight"') > 0
    assert _score("a flight that is cheap", '"cheap flight"') == 0
    assert _score("find the station", "stat*") > 0


def test_a_longer_row_scores_lower_for_the_same_occurrences() -> None:
    short = _score("lisbon trip", "lisbon")
    long = _score("lisbon " + " ".join(f"filler{i}" for i in range(40)), "lisbon")
    assert short > long > 0


def test_words_weigh_more_than_a_phrase_of_them() -> None:
    assert _score("cheap flight", "cheap flight") > _score("cheap flight", '"cheap flight"') > 0


def test_every_positive_term_adds_to_the_score() -> None:
    assert _score("cheap flight to lisbon", "lisbon flight") > _score(
        "cheap flight to lisbon", "lisbon"
    )
