"""A persistent sorted sequence of tuple keys, kept in chunks.

A member state holds two of them (its open lots by expiry date, its tier-qualifying
points by date) and `evolve` must return a new state without changing the old one (a
state in the handler's cache must stay as it was if the transaction fails). A plain
sorted tuple would be copied whole on every event; here the keys sit in chunks of at
most `CHUNK_KEYS_MAX`, so a change copies one chunk and the tuple of chunks (about
n / 64 references), and leaves every other chunk shared with the state before.

Changes go through a `SortedKeysEditor` (mutable; every chunk it changes is a new
tuple), which gives back a new `SortedKeys` when finished, or for a single key through
`SortedKeys.insert` and `remove`. Equality compares the keys alone, whatever the chunks.

With `weighted`, each chunk also keeps the sum of its keys' last element (an int), so a
sum over a range of keys adds whole chunks' sums and walks at most two chunks.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator
from itertools import chain
from operator import itemgetter
from typing import Any

CHUNK_KEYS_MAX = 128  # a chunk splits in two halves past this many keys

_first = itemgetter(0)
_last = itemgetter(-1)


class SortedKeys:
    __slots__ = ("chunks", "maxes", "sums", "size")

    def __init__(self, chunks: tuple[tuple[Any, ...], ...] = (), maxes: tuple[Any, ...] = (),
                 sums: tuple[int, ...] | None = None, size: int = 0) -> None:
        self.chunks = chunks  # each a sorted, non-empty tuple of keys
        self.maxes = maxes  # the last key of each chunk
        self.sums = sums  # None, or each chunk's sum of key[-1]
        self.size = size

    @classmethod
    def of(cls, keys: Iterable[Any], *, weighted: bool = False) -> SortedKeys:
        """The keys (in any order) sorted, in chunks of half the maximum: how a state
        loaded from a snapshot gets its orders without one insert per key."""
        ordered = sorted(keys)
        half = CHUNK_KEYS_MAX // 2
        chunks = tuple([tuple(ordered[i:i + half]) for i in range(0, len(ordered), half)])
        sums = tuple([sum(map(_last, chunk)) for chunk in chunks]) if weighted else None
        return cls(chunks, tuple([chunk[-1] for chunk in chunks]), sums, len(ordered))

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[Any]:
        return chain.from_iterable(self.chunks)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SortedKeys):
            return NotImplemented
        return (self.size == other.size and (self.sums is None) == (other.sums is None)
                and (self.chunks == other.chunks or list(self) == list(other)))

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"SortedKeys({list(self)!r})"

    def edit(self) -> SortedKeysEditor:
        return SortedKeysEditor(self)

    # A single change without an editor: `evolve`'s fast paths add one lot per event.

    def insert(self, key: Any) -> SortedKeys:
        """A new `SortedKeys` with `key` too. Past every key (the usual case: lots and
        tier entries are mostly dated after the ones before) it copies the last chunk
        and the tuples of chunks only."""
        chunks, sums = self.chunks, self.sums
        if not chunks:
            return SortedKeys(((key,),), (key,), None if sums is None else (key[-1],), 1)
        last = chunks[-1]
        if key >= last[-1] and len(last) < CHUNK_KEYS_MAX:
            if len(chunks) == 1:  # a short history: one chunk, nothing to slice
                return SortedKeys((last + (key,),), (key,), None if sums is None else (sums[0] + key[-1],),
                                  self.size + 1)
            return SortedKeys(chunks[:-1] + (last + (key,),), self.maxes[:-1] + (key,),
                              None if sums is None else sums[:-1] + (sums[-1] + key[-1],), self.size + 1)
        return SortedKeysEditor(self).insert(key).finish()

    def remove(self, key: Any) -> SortedKeys:
        return SortedKeysEditor(self).remove(key).finish()

    def weight_between(self, low: Any, high: Any) -> int:
        """The sum of key[-1] over the keys with low < key[0] <= high (weighted only). A
        window that holds every key (a short history) or ends past the last one (a
        command of today) is answered from the chunks' sums without a walk."""
        if not self.size or high <= low:
            return 0
        upper = sum(self.sums) if self.maxes[-1][0] <= high else self.weight_through(high)  # type: ignore[arg-type]
        return upper - (0 if self.chunks[0][0][0] > low else self.weight_through(low))

    def weight_through(self, first: Any) -> int:
        """The sum of key[-1] over the keys whose key[0] <= `first` (weighted only)."""
        assert self.sums is not None
        i = bisect_right(self.maxes, first, key=_first)  # chunks [0, i) lie wholly at or below
        total = sum(self.sums[:i])
        if i < len(self.chunks):
            chunk = self.chunks[i]
            total += sum(map(_last, chunk[:bisect_right(chunk, first, key=_first)]))
        return total


class SortedKeysEditor:
    """Changes to a `SortedKeys`; the one it was made from is never changed. The list of
    chunks is copied on the first change; a change then replaces the one chunk it
    touches with a new tuple (at most `CHUNK_KEYS_MAX` references copied), so that
    `finish` has nothing to convert."""

    __slots__ = ("_base", "_chunks", "_maxes", "_sums", "_size")

    def __init__(self, base: SortedKeys) -> None:
        self._base = base
        self._chunks: list[tuple[Any, ...]] | None = None  # copied from the base on the first change
        self._maxes: list[Any] = []
        self._sums: list[int] | None = None
        self._size = base.size

    def _own(self) -> list[tuple[Any, ...]]:
        base = self._base
        self._chunks = list(base.chunks)
        self._maxes = list(base.maxes)
        self._sums = None if base.sums is None else list(base.sums)
        return self._chunks

    def insert(self, key: Any) -> SortedKeysEditor:
        chunks = self._chunks if self._chunks is not None else self._own()
        maxes, sums = self._maxes, self._sums
        self._size += 1
        if not chunks:
            chunks.append((key,))
            maxes.append(key)
            if sums is not None:
                sums.append(key[-1])
            return self
        i = bisect_left(maxes, key)
        if i == len(maxes):
            i -= 1  # past every key: at the end of the last chunk
            chunk = chunks[i] + (key,)
        else:
            chunk = chunks[i]
            j = bisect_right(chunk, key)
            chunk = chunk[:j] + (key,) + chunk[j:]
        if sums is not None:
            sums[i] += key[-1]
        if len(chunk) <= CHUNK_KEYS_MAX:
            chunks[i] = chunk
            maxes[i] = chunk[-1]
            return self
        half = len(chunk) // 2
        low, high = chunk[:half], chunk[half:]
        chunks[i:i + 1] = [low, high]
        maxes[i:i + 1] = [low[-1], high[-1]]
        if sums is not None:
            low_sum = sum(map(_last, low))
            sums[i:i + 1] = [low_sum, sums[i] - low_sum]
        return self

    def remove(self, key: Any) -> SortedKeysEditor:
        """Take out `key`, which must be there."""
        chunks = self._chunks if self._chunks is not None else self._own()
        maxes, sums = self._maxes, self._sums
        i = bisect_left(maxes, key)
        chunk = chunks[i] if i < len(chunks) else ()
        j = bisect_left(chunk, key)
        assert j < len(chunk) and chunk[j] == key, (key, "not in the sorted keys")
        self._size -= 1
        if len(chunk) == 1:
            del chunks[i], maxes[i]
            if sums is not None:
                del sums[i]
            return self
        chunk = chunks[i] = chunk[:j] + chunk[j + 1:]
        maxes[i] = chunk[-1]
        if sums is not None:
            sums[i] -= key[-1]
        return self

    def finish(self) -> SortedKeys:
        if self._chunks is None:
            return self._base  # nothing changed
        sums = None if self._sums is None else tuple(self._sums)
        return SortedKeys(tuple(self._chunks), tuple(self._maxes), sums, self._size)
