"""Context-window selection: budgets, strategies, tool-call groups and always-included messages."""

from collections.abc import Hashable
from dataclasses import dataclass, replace
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conversation_service.utils.memory_utils import REPLY_PRIMING_TOKENS
from conversation_service.utils.memory_window import (
    WindowBudgetError,
    WindowCandidate,
    WindowSelection,
    WindowStrategy,
    select_window,
)

P = REPLY_PRIMING_TOKENS


def msg(
    seq: int,
    role: str = "user",
    tokens: int = 10,
    *,
    pinned: bool = False,
    calls: tuple[str, ...] = (),
    answers: str | None = None,
) -> WindowCandidate:
    return WindowCandidate(
        seq=seq,
        role=role,
        tokens=tokens,
        pinned=pinned,
        tool_call_ids=calls,
        tool_call_id=answers,
    )


def plain(*seqs: int, tokens: int = 10) -> list[WindowCandidate]:
    return [msg(seq, tokens=tokens) for seq in seqs]


# A user question, an assistant calling two tools, both results, and the assistant's answer.
TOOL_EXCHANGE = [
    msg(1),
    msg(2, "assistant", calls=("call_a", "call_b")),
    msg(3, "tool", answers="call_a"),
    msg(4, "tool", answers="call_b"),
    msg(5, "assistant"),
]


# --- token_budget -------------------------------------------------------------------------------


def test_token_budget_keeps_the_newest_messages_that_fit() -> None:
    selection = select_window(plain(1, 2, 3, 4, 5), strategy="token_budget", max_tokens=P + 30)
    assert selection == WindowSelection(seqs=(3, 4, 5), tokens=P + 30, truncated=True, cut_seq=2)


def test_token_budget_one_token_short_leaves_out_one_more_message() -> None:
    selection = select_window(plain(1, 2, 3, 4, 5), strategy="token_budget", max_tokens=P + 29)
    assert selection == WindowSelection(seqs=(4, 5), tokens=P + 20, truncated=True, cut_seq=3)


def test_whole_history_that_fits_is_not_truncated() -> None:
    selection = select_window(plain(1, 2, 3), strategy="token_budget", max_tokens=1_000)
    assert selection == WindowSelection(
        seqs=(1, 2, 3), tokens=P + 30, truncated=False, cut_seq=None
    )


def test_selection_stops_at_the_first_message_that_does_not_fit() -> None:
    # Seq 1 alone would still fit, but taking it would leave a hole where seq 2 was.
    candidates = [msg(1, tokens=5), msg(2, tokens=50), msg(3, tokens=5)]
    selection = select_window(candidates, strategy="token_budget", max_tokens=P + 20)
    assert selection == WindowSelection(seqs=(3,), tokens=P + 5, truncated=True, cut_seq=2)


def test_empty_history_costs_only_the_reply_priming() -> None:
    selection = select_window([], strategy="token_budget", max_tokens=P)
    assert selection == WindowSelection(seqs=(), tokens=P, truncated=False, cut_seq=None)


def test_zero_token_messages_fill_an_exhausted_budget() -> None:
    selection = select_window(plain(1, 2, tokens=0), strategy="token_budget", max_tokens=P)
    assert selection.seqs == (1, 2)
    assert not selection.truncated


# --- last_n ------------------------------------------------------------------------------------


def test_last_n_keeps_the_newest_n_messages() -> None:
    selection = select_window(plain(1, 2, 3, 4, 5), strategy="last_n", last_n=2, max_tokens=1_000)
    assert selection == WindowSelection(seqs=(4, 5), tokens=P + 20, truncated=True, cut_seq=3)


def test_last_n_still_respects_the_token_budget() -> None:
    selection = select_window(plain(1, 2, 3, 4, 5), strategy="last_n", last_n=4, max_tokens=P + 20)
    assert selection.seqs == (4, 5)
    assert selection.cut_seq == 3


def test_last_n_does_not_count_always_included_messages() -> None:
    system = msg(1, "system")
    selection = select_window(
        [system, *plain(2, 3, 4, 5)],
        strategy="last_n",
        last_n=2,
        max_tokens=1_000,
        always_included=[system],
    )
    assert selection.seqs == (1, 4, 5)
    assert selection.cut_seq == 3


def test_last_n_of_zero_sends_only_the_always_included_messages() -> None:
    system = msg(1, "system")
    selection = select_window(
        [system, *plain(2, 3)],
        strategy="last_n",
        last_n=0,
        max_tokens=1_000,
        always_included=[system],
    )
    assert selection == WindowSelection(seqs=(1,), tokens=P + 10, truncated=True, cut_seq=3)


def test_last_n_does_not_split_a_tool_group_to_reach_n() -> None:
    selection = select_window(TOOL_EXCHANGE, strategy="last_n", last_n=3, max_tokens=1_000)
    assert selection == WindowSelection(seqs=(5,), tokens=P + 10, truncated=True, cut_seq=4)


# --- summary_buffer -----------------------------------------------------------------------------


def test_summary_buffer_sends_only_history_after_the_summary() -> None:
    selection = select_window(
        plain(1, 2, 3, 4, 5, 6),
        strategy="summary_buffer",
        max_tokens=1_000,
        summary_tokens=20,
        summary_covers_until_seq=3,
    )
    assert selection == WindowSelection(
        seqs=(4, 5, 6), tokens=P + 20 + 30, truncated=False, cut_seq=None
    )


def test_summary_buffer_counts_the_summary_against_the_budget() -> None:
    selection = select_window(
        plain(1, 2, 3, 4, 5, 6),
        strategy="summary_buffer",
        max_tokens=P + 20 + 20,
        summary_tokens=20,
        summary_covers_until_seq=3,
    )
    assert selection == WindowSelection(seqs=(5, 6), tokens=P + 20 + 20, truncated=True, cut_seq=4)


def test_summary_buffer_without_a_summary_yet_behaves_like_token_budget() -> None:
    selection = select_window(plain(1, 2, 3), strategy="summary_buffer", max_tokens=P + 20)
    assert selection == WindowSelection(seqs=(2, 3), tokens=P + 20, truncated=True, cut_seq=1)


def test_summary_buffer_drops_a_tool_result_whose_call_was_summarised() -> None:
    candidates = [
        msg(3, "assistant", calls=("call_a",)),
        msg(4, "tool", answers="call_a"),
        msg(5),
    ]
    selection = select_window(
        candidates, strategy="summary_buffer", max_tokens=1_000, summary_covers_until_seq=3
    )
    assert selection == WindowSelection(seqs=(5,), tokens=P + 10, truncated=False, cut_seq=None)


# --- tool-call groups --------------------------------------------------------------------------


def test_tool_call_and_its_results_are_included_together() -> None:
    selection = select_window(TOOL_EXCHANGE, strategy="token_budget", max_tokens=P + 40)
    assert selection == WindowSelection(seqs=(2, 3, 4, 5), tokens=P + 40, truncated=True, cut_seq=1)


def test_tool_group_that_does_not_fit_is_left_out_whole() -> None:
    # Room for the answer and two of the three group members: the group goes, not a part of it.
    selection = select_window(TOOL_EXCHANGE, strategy="token_budget", max_tokens=P + 39)
    assert selection == WindowSelection(seqs=(5,), tokens=P + 10, truncated=True, cut_seq=4)


def test_message_between_a_call_and_its_result_comes_along_with_the_group() -> None:
    candidates = [
        msg(1),
        msg(2, "assistant", calls=("call_a",)),
        msg(3, "user"),
        msg(4, "tool", answers="call_a"),
    ]
    fits_group = select_window(candidates, strategy="token_budget", max_tokens=P + 30)
    too_small = select_window(candidates, strategy="token_budget", max_tokens=P + 29)
    assert fits_group.seqs == (2, 3, 4)
    assert too_small.seqs == ()
    assert too_small.cut_seq == 4


def test_tool_result_whose_call_was_not_loaded_is_dropped_without_truncation() -> None:
    candidates = [msg(3, "tool", answers="call_a"), msg(4), msg(5, "assistant")]
    selection = select_window(candidates, strategy="token_budget", max_tokens=1_000)
    assert selection == WindowSelection(seqs=(4, 5), tokens=P + 20, truncated=False, cut_seq=None)


def test_tool_message_without_a_call_id_is_dropped() -> None:
    selection = select_window([msg(1), msg(2, "tool")], strategy="token_budget", max_tokens=1_000)
    assert selection.seqs == (1,)


def test_tool_call_still_waiting_for_its_results_is_kept() -> None:
    candidates = [msg(1), msg(2, "assistant", calls=("call_a",))]
    selection = select_window(candidates, strategy="token_budget", max_tokens=1_000)
    assert selection.seqs == (1, 2)


def test_pinned_tool_result_brings_its_call_and_sibling_results() -> None:
    pinned_result = msg(3, "tool", answers="call_a", pinned=True)
    candidates = [*TOOL_EXCHANGE[:2], pinned_result, *TOOL_EXCHANGE[3:]]
    selection = select_window(
        candidates,
        strategy="token_budget",
        max_tokens=P + 30 + 10,
        always_included=[pinned_result],
    )
    assert selection == WindowSelection(seqs=(2, 3, 4, 5), tokens=P + 40, truncated=True, cut_seq=1)


# --- always-included messages --------------------------------------------------------------------


def test_always_included_messages_older_than_the_candidates_are_sent_and_counted() -> None:
    system = msg(1, "system", tokens=7)
    pinned = msg(3, tokens=4, pinned=True)
    selection = select_window(
        plain(10, 11, 12),
        strategy="token_budget",
        max_tokens=1_000,
        always_included=[pinned, system],
    )
    assert selection == WindowSelection(
        seqs=(1, 3, 10, 11, 12), tokens=P + 7 + 4 + 30, truncated=False, cut_seq=None
    )


def test_always_included_message_among_the_candidates_is_counted_once() -> None:
    pinned = msg(2, pinned=True)
    selection = select_window(
        [msg(1), pinned, msg(3)],
        strategy="token_budget",
        max_tokens=P + 20,
        always_included=[pinned],
    )
    assert selection == WindowSelection(seqs=(2, 3), tokens=P + 20, truncated=True, cut_seq=1)


def test_always_included_messages_are_sent_even_when_the_summary_covers_them() -> None:
    system = msg(1, "system")
    selection = select_window(
        [system, *plain(2, 3)],
        strategy="summary_buffer",
        max_tokens=1_000,
        summary_tokens=5,
        summary_covers_until_seq=2,
        always_included=[system],
    )
    assert selection == WindowSelection(
        seqs=(1, 3), tokens=P + 5 + 20, truncated=False, cut_seq=None
    )


def test_budget_error_when_always_included_messages_alone_exceed_max_tokens() -> None:
    system = msg(1, "system", tokens=100)
    with pytest.raises(WindowBudgetError, match="max_tokens=50") as caught:
        select_window(plain(2), strategy="token_budget", max_tokens=50, always_included=[system])
    assert caught.value.required_tokens == 100 + P
    assert caught.value.max_tokens == 50


def test_budget_error_counts_the_summary_and_the_reply_priming() -> None:
    with pytest.raises(WindowBudgetError):
        select_window(plain(5), strategy="summary_buffer", max_tokens=50, summary_tokens=48)


def test_budget_error_is_a_value_error() -> None:
    assert issubclass(WindowBudgetError, ValueError)


# --- argument checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "candidates",
    [[msg(2), msg(1)], [msg(1), msg(1)]],
    ids=["descending", "duplicate"],
)
def test_candidates_out_of_ascending_order_are_refused(
    candidates: list[WindowCandidate],
) -> None:
    with pytest.raises(ValueError, match="ascending"):
        select_window(candidates, strategy="token_budget", max_tokens=1_000)


@pytest.mark.parametrize("last_n", [None, -1])
def test_last_n_strategy_needs_a_non_negative_last_n(last_n: int | None) -> None:
    with pytest.raises(ValueError, match="last_n"):
        select_window(plain(1), strategy="last_n", last_n=last_n, max_tokens=1_000)


def test_last_n_with_another_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="last_n"):
        select_window(plain(1), strategy="token_budget", last_n=3, max_tokens=1_000)


@pytest.mark.parametrize("strategy", ["token_budget", "last_n"])
def test_summary_with_another_strategy_is_refused(strategy: WindowStrategy) -> None:
    with pytest.raises(ValueError, match="summary"):
        select_window(
            plain(1),
            strategy=strategy,
            last_n=1 if strategy == "last_n" else None,
            max_tokens=1_000,
            summary_tokens=10,
            summary_covers_until_seq=1,
        )


def test_negative_summary_tokens_are_refused() -> None:
    with pytest.raises(ValueError, match="summary_tokens"):
        select_window(plain(1), strategy="summary_buffer", max_tokens=1_000, summary_tokens=-1)


def test_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="strategy"):
        select_window(plain(1), strategy="newest", max_tokens=1_000)  # type: ignore[arg-type]


def test_negative_token_count_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        msg(1, tokens=-1)


# --- properties --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    candidates: list[WindowCandidate]
    always_included: list[WindowCandidate]
    strategy: WindowStrategy
    max_tokens: int
    last_n: int | None
    summary_tokens: int
    summary_covers_until_seq: int

    def select(self) -> WindowSelection:
        return select_window(
            self.candidates,
            strategy=self.strategy,
            max_tokens=self.max_tokens,
            last_n=self.last_n,
            summary_tokens=self.summary_tokens,
            summary_covers_until_seq=self.summary_covers_until_seq,
            always_included=self.always_included,
        )

    @property
    def inputs(self) -> dict[int, WindowCandidate]:
        return {m.seq: m for m in [*self.candidates, *self.always_included]}

    def group_key(self, message: WindowCandidate) -> Hashable:
        """A tool call and its results share a key (call ids are unique in these scenarios)."""
        if message.tool_call_ids:
            return message.tool_call_ids
        if message.role == "tool":
            for other in self.inputs.values():
                if message.tool_call_id in other.tool_call_ids:
                    return other.tool_call_ids
        return message.seq

    @property
    def fixed(self) -> set[int]:
        """Always-included seqs plus their tool-call partners among the inputs."""
        forced = {self.group_key(m) for m in self.always_included}
        return {seq for seq, m in self.inputs.items() if self.group_key(m) in forced}

    @property
    def fixed_cost(self) -> int:
        inputs = self.inputs
        return sum(inputs[s].tokens for s in self.fixed) + self.summary_tokens + P

    @property
    def eligible(self) -> list[WindowCandidate]:
        if self.strategy != "summary_buffer":
            return list(self.candidates)
        return [c for c in self.candidates if c.seq > self.summary_covers_until_seq]

    def is_orphan(self, message: WindowCandidate) -> bool:
        """A history tool result whose call is not eligible, so it can never be sent."""
        return (
            message.role == "tool"
            and message.seq not in self.fixed
            and not any(message.tool_call_id in e.tool_call_ids for e in self.eligible)
        )


@st.composite
def conversations(draw: st.DrawFn) -> list[WindowCandidate]:
    # System messages are rare in real histories, and each one is always sent.
    kinds = ["system", *["user", "assistant"] * 3, *["tool_call"] * 3]
    tokens = st.integers(0, 30)
    pinned = st.integers(0, 7).map(lambda roll: roll == 0)
    messages: list[WindowCandidate] = []
    seq = 0
    for turn in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(kinds))
        seq += draw(st.integers(1, 2))  # gaps stand for deleted messages
        if kind != "tool_call":
            is_pinned = kind != "system" and draw(pinned)
            messages.append(WindowCandidate(seq, kind, draw(tokens), pinned=is_pinned))
            continue
        ids = tuple(f"call_{turn}_{i}" for i in range(draw(st.integers(1, 3))))
        call = WindowCandidate(seq, "assistant", draw(tokens), draw(pinned), tool_call_ids=ids)
        # A deleted call leaves its results behind as orphans anywhere in the history.
        if draw(st.integers(0, 3)) > 0:
            messages.append(call)
        # Some calls are still waiting for results, some results arrive out of call order.
        for call_id in draw(st.lists(st.sampled_from(ids), unique=True)):
            seq += draw(st.integers(1, 2))
            messages.append(
                WindowCandidate(seq, "tool", draw(tokens), draw(pinned), tool_call_id=call_id)
            )
    return messages


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    conversation = draw(conversations())
    # The loader fetched only the newest messages, which can leave a tool result without its call.
    candidates = conversation[draw(st.integers(0, 3)) :]
    strategy: WindowStrategy = draw(st.sampled_from(get_args(WindowStrategy)))
    summary_tokens = covers = 0
    if strategy == "summary_buffer":
        summary_tokens = draw(st.integers(0, 40))
        # Covering up to a tool call (not its results) must orphan those results.
        covers = draw(st.sampled_from([0, *(m.seq for m in conversation)]))
    scenario = Scenario(
        candidates=candidates,
        always_included=draw(
            st.permutations([m for m in conversation if m.role == "system" or m.pinned])
        ),
        strategy=strategy,
        max_tokens=0,
        last_n=draw(st.integers(0, 8)) if strategy == "last_n" else None,
        summary_tokens=summary_tokens,
        summary_covers_until_seq=covers,
    )
    # Budgets exactly on the cost of a suffix of the history (off-by-one mistakes only show on
    # that boundary), with some room to spare, with room for every candidate (so anything
    # wrongly eligible would get in), and too small for the fixed part alone.
    history = [
        c for c in scenario.eligible if c.seq not in scenario.fixed and not scenario.is_orphan(c)
    ]
    suffix_costs = [sum(c.tokens for c in history[i:]) for i in range(len(history) + 1)]
    budget = draw(st.sampled_from(["exact", "exact", "spare", "ample", "too_small"]))
    if budget == "exact":
        room = draw(st.sampled_from(suffix_costs))
    elif budget == "spare":
        room = draw(st.integers(0, suffix_costs[0] + 30))
    elif budget == "ample":
        room = sum(c.tokens for c in candidates)
    else:
        room = draw(st.integers(-scenario.fixed_cost, -1))
    return replace(scenario, max_tokens=scenario.fixed_cost + room)


def select_or_none(scenario: Scenario) -> WindowSelection | None:
    try:
        return scenario.select()
    except WindowBudgetError:
        return None


@given(scenarios())
def test_budget_error_exactly_when_always_sent_messages_exceed_the_budget(s: Scenario) -> None:
    assert (select_or_none(s) is None) == (s.fixed_cost > s.max_tokens)


@given(scenarios())
def test_window_never_exceeds_the_budget_and_reports_its_cost(s: Scenario) -> None:
    selection = select_or_none(s)
    if selection is None:
        return
    inputs = s.inputs
    assert selection.tokens <= s.max_tokens
    assert selection.tokens == sum(inputs[seq].tokens for seq in selection.seqs) + (
        s.summary_tokens + P
    )


@given(scenarios())
def test_window_is_in_strictly_ascending_seq_order(s: Scenario) -> None:
    selection = select_or_none(s)
    if selection is None:
        return
    assert list(selection.seqs) == sorted(set(selection.seqs))


@given(scenarios())
def test_window_always_includes_the_always_included_messages(s: Scenario) -> None:
    selection = select_or_none(s)
    if selection is None:
        return
    assert {m.seq for m in s.always_included} <= set(selection.seqs)


@given(scenarios())
def test_window_keeps_tool_calls_and_their_results_together(s: Scenario) -> None:
    selection = select_or_none(s)
    if selection is None:
        return
    inputs = s.inputs
    chosen = [inputs[seq] for seq in selection.seqs]
    chosen_keys = {s.group_key(m) for m in chosen}
    # Nothing from a group is left behind once any member is in the window ...
    assert all(seq in selection.seqs for seq, m in inputs.items() if s.group_key(m) in chosen_keys)
    # ... and a result is only ever sent after its call (unless pinned by the caller).
    called = {call_id for m in chosen for call_id in m.tool_call_ids}
    always = {m.seq for m in s.always_included}
    for m in chosen:
        if m.role == "tool":
            assert m.tool_call_id in called or m.seq in always


@given(scenarios())
def test_window_history_is_a_contiguous_suffix_of_the_eligible_candidates(s: Scenario) -> None:
    selection = select_or_none(s)
    if selection is None:
        return
    chosen, fixed = set(selection.seqs), s.fixed
    eligible = {c.seq for c in s.eligible}
    assert chosen <= fixed | eligible
    history = [c for c in s.eligible if c.seq not in fixed and not s.is_orphan(c)]
    assert not any(s.is_orphan(c) and c.seq in chosen for c in s.eligible)
    left_out = [c.seq for c in history if c.seq not in chosen]
    # No hole: everything newer than the newest left-out message is in the window.
    assert selection.truncated == bool(left_out)
    assert selection.cut_seq == (max(left_out) if left_out else None)
    if s.strategy == "last_n":
        assert s.last_n is not None
        assert len(chosen - fixed) <= s.last_n


@given(scenarios())
def test_window_is_the_longest_fitting_suffix_that_splits_no_tool_group(s: Scenario) -> None:
    selection = select_or_none(s)
    if selection is None:
        return
    history = [c for c in s.eligible if c.seq not in s.fixed and not s.is_orphan(c)]

    def splits_a_group(start: int) -> bool:
        kept = {s.group_key(c) for c in history[start:]}
        return any(s.group_key(c) in kept for c in history[:start])

    def fits(start: int) -> bool:
        within_count = s.last_n is None or len(history) - start <= s.last_n
        cost = s.fixed_cost + sum(c.tokens for c in history[start:])
        return within_count and cost <= s.max_tokens

    # Brute force over every cut; the empty suffix always qualifies once the fixed part fits.
    best = min(i for i in range(len(history) + 1) if fits(i) and not splits_a_group(i))
    expected = s.fixed | {c.seq for c in history[best:]}
    assert selection.seqs == tuple(sorted(expected))
