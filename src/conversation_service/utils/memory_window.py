"""Context-window selection: which stored messages go into the next prompt.

Pure and database-free. The caller loads the newest messages and the always-included ones
(system and pinned) with their stored token counts; ``select_window`` returns the always-included
messages plus the longest suffix of the eligible history that fits the budget. The suffix grows
newest to oldest one block at a time and stops at the first block that does not fit, so the
history sent has no holes. A block never splits an assistant tool call from its tool results,
because the chat API rejects a prompt holding either half alone.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal, TypeAlias, get_args

from conversation_service.utils.memory_utils import REPLY_PRIMING_TOKENS

WindowStrategy: TypeAlias = Literal["last_n", "token_budget", "summary_buffer"]
_STRATEGIES: tuple[str, ...] = get_args(WindowStrategy)


@dataclass(slots=True)
class WindowCandidate:
    """One stored message as the window sees it: position, cost and tool-call links.

    Treated as immutable but not ``frozen``: one is built per row on the hottest read, and a
    frozen dataclass sets each field through ``object.__setattr__`` (1.6 µs a candidate, not 0.4).
    """

    seq: int
    role: str  # "user" | "assistant" | "system" | "tool"
    tokens: int  # per-message tokens incl. chat overhead (stored once per message)
    pinned: bool = False  # metadata {"pinned": true}
    tool_call_ids: tuple[str, ...] = ()  # ids an assistant message calls (metadata.tool_calls)
    tool_call_id: str | None = None  # for role "tool": the call it answers (ignored otherwise)

    def __post_init__(self) -> None:
        if self.tokens < 0:
            raise ValueError(f"message {self.seq} has a negative token count ({self.tokens})")


@dataclass(frozen=True, slots=True)
class WindowSelection:
    """The chosen window and whether eligible history had to be left out."""

    seqs: tuple[int, ...]  # chosen messages, ascending seq
    tokens: int  # chosen messages + summary + REPLY_PRIMING_TOKENS
    truncated: bool  # some eligible history was left out
    cut_seq: int | None  # highest seq of eligible history left out (None when not truncated)


class WindowBudgetError(ValueError):
    """The messages that must always be sent, with summary and priming, exceed ``max_tokens``."""

    def __init__(
        self, *, required_tokens: int, max_tokens: int, fixed_messages: int, summary_tokens: int
    ) -> None:
        self.required_tokens = required_tokens
        self.max_tokens = max_tokens
        super().__init__(
            f"max_tokens={max_tokens} is too small: the {fixed_messages} always-included "
            f"message(s) (system, pinned and their tool-call partners), the summary "
            f"({summary_tokens} tokens) and the reply priming ({REPLY_PRIMING_TOKENS} tokens) "
            f"alone need {required_tokens} tokens"
        )


def select_window(
    candidates: Sequence[WindowCandidate],
    *,
    strategy: WindowStrategy,
    max_tokens: int,
    last_n: int | None = None,
    summary_tokens: int = 0,
    summary_covers_until_seq: int = 0,
    always_included: Sequence[WindowCandidate] = (),
) -> WindowSelection:
    """Choose the always-included messages plus the newest history that fits the budget.

    ``candidates`` are the newest non-deleted messages in ascending ``seq``; ``always_included``
    (system and pinned messages) may be older and may repeat candidates. An always-included
    message brings its whole tool-call group with it (those partners it can see), and a tool
    result whose call is not eligible is dropped as an orphan without counting as truncation.
    ``last_n`` counts history messages only, not always-included ones. ``summary_tokens`` should
    include the summary message's own chat overhead.

    Raises ``WindowBudgetError`` when the always-included messages, summary and priming exceed
    ``max_tokens``, and ``ValueError`` for arguments that do not match the strategy.
    """
    _check_arguments(candidates, strategy, last_n, summary_tokens, summary_covers_until_seq)

    known = {c.seq: c for c in candidates}
    # The caller's always-included record wins a seq clash, so each seq is counted exactly once.
    known.update((c.seq, c) for c in always_included)
    group_of = _tool_groups(list(known.values()))

    forced_groups = {group_of[c.seq] for c in always_included}
    fixed = {seq for seq in known if group_of[seq] in forced_groups}
    fixed_tokens = sum(known[seq].tokens for seq in fixed) + summary_tokens + REPLY_PRIMING_TOKENS
    if fixed_tokens > max_tokens:
        raise WindowBudgetError(
            required_tokens=fixed_tokens,
            max_tokens=max_tokens,
            fixed_messages=len(fixed),
            summary_tokens=summary_tokens,
        )

    # Older history is represented by the summary, so it is not eligible (and not "truncated").
    floor = summary_covers_until_seq if strategy == "summary_buffer" else None
    history = [c for c in candidates if c.seq not in fixed and (floor is None or c.seq > floor)]
    history = _without_orphan_results(history, group_of)

    max_count = last_n if last_n is not None else len(history)
    start = _suffix_start(
        history, group_of, token_room=max_tokens - fixed_tokens, max_count=max_count
    )
    chosen = history[start:]
    return WindowSelection(
        seqs=tuple(sorted(fixed.union(c.seq for c in chosen))),
        tokens=fixed_tokens + sum(c.tokens for c in chosen),
        truncated=start > 0,
        cut_seq=history[start - 1].seq if start > 0 else None,
    )


def _check_arguments(
    candidates: Sequence[WindowCandidate],
    strategy: str,
    last_n: int | None,
    summary_tokens: int,
    summary_covers_until_seq: int,
) -> None:
    if strategy not in _STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {_STRATEGIES}")
    if strategy == "last_n":
        if last_n is None or last_n < 0:
            raise ValueError(f"strategy 'last_n' needs last_n >= 0, got {last_n!r}")
    elif last_n is not None:
        raise ValueError(f"last_n applies only to strategy 'last_n', not {strategy!r}")
    if summary_tokens < 0:
        raise ValueError(f"summary_tokens must be >= 0, got {summary_tokens}")
    # A summary passed to another strategy would be silently miscounted either way.
    if strategy != "summary_buffer" and (summary_tokens or summary_covers_until_seq):
        raise ValueError(f"a summary applies only to strategy 'summary_buffer', not {strategy!r}")
    for older, newer in pairwise(candidates):
        if newer.seq <= older.seq:
            raise ValueError(
                f"candidates must be in strictly ascending seq: {older.seq} then {newer.seq}"
            )


def _tool_groups(messages: Sequence[WindowCandidate]) -> dict[int, int]:
    """Map each seq to a group id shared by a tool call and all of its results."""
    if not any(m.tool_call_ids or m.role == "tool" for m in messages):
        return {m.seq: m.seq for m in messages}  # the usual history: every message alone
    parent: dict[int, int] = {}

    def root(seq: int) -> int:
        while parent[seq] != seq:
            parent[seq] = parent[parent[seq]]
            seq = parent[seq]
        return seq

    def join(a: int, b: int) -> None:
        parent[root(a)] = root(b)

    caller_of: dict[str, int] = {}
    for m in messages:
        parent[m.seq] = m.seq
    for m in messages:
        for call_id in m.tool_call_ids:
            # Two messages claiming one call id are malformed; joining them keeps both safe.
            if call_id in caller_of:
                join(m.seq, caller_of[call_id])
            else:
                caller_of[call_id] = m.seq
    for m in messages:
        if m.role == "tool" and m.tool_call_id in caller_of:
            join(m.seq, caller_of[m.tool_call_id])
    return {seq: root(seq) for seq in parent}


def _without_orphan_results(
    history: list[WindowCandidate], group_of: dict[int, int]
) -> list[WindowCandidate]:
    # A tool result can only be sent after its call; with no call among the eligible history
    # (deleted, summarised, older than the candidates) it can never be sent, so it is not
    # history that was cut: it is dropped outright.
    groups_with_call = {group_of[m.seq] for m in history if m.tool_call_ids}
    return [m for m in history if m.role != "tool" or group_of[m.seq] in groups_with_call]


def _suffix_start(
    history: list[WindowCandidate], group_of: dict[int, int], *, token_room: int, max_count: int
) -> int:
    """Return the index where the longest fitting, group-respecting suffix of history starts."""
    lowest_index: dict[int, int] = {}
    for index, message in enumerate(history):
        lowest_index.setdefault(group_of[message.seq], index)

    start = len(history)
    used = 0
    while start > 0:
        # The next block reaches down to the oldest member of every group it touches, and so
        # takes along whatever lies in between: the suffix stays free of holes.
        block_start = start - 1
        if lowest_index[group_of[history[block_start].seq]] == block_start:
            block_tokens = history[block_start].tokens  # a message of its own
        else:
            index = start - 1
            while index >= block_start:
                block_start = min(block_start, lowest_index[group_of[history[index].seq]])
                index -= 1
            block_tokens = sum(m.tokens for m in history[block_start:start])
        if used + block_tokens > token_room or len(history) - block_start > max_count:
            break
        used += block_tokens
        start = block_start
    return start
