"""Command handling: load member state, decide, append; retried against fresh state.

This is the one path every write takes: the HTTP API, the Kafka consumer and the
expiry scheduler hand commands to `Ledger.handle` or `Ledger.handle_batch`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Literal

import asyncpg
import orjson

from ledger.domain import (
    SNAPSHOT_FORMAT,
    Command,
    ConcurrencyConflict,
    DuplicateEvent,
    InvalidCommand,
    LedgerError,
    MemberState,
    ProgramRules,
    decide,
    evolve,
    fold,
    from_snapshot,
    to_data,
    to_snapshot,
)
from ledger.group_commit import GroupCommit
from ledger.store.events import GENESIS_HASH, AppendRequest, EventStore

log = logging.getLogger(__name__)

BATCH_COMMANDS_MAX = 10_000

# Runs inside the batch's transaction, just before commit, with the commands the ledger
# refused (index in the batch -> why): the Kafka consumer writes its offsets and its
# rejected messages there, so they commit or roll back with the events.
BatchHook = Callable[[asyncpg.Connection, dict[int, LedgerError]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CommandRequest:
    command: Command
    idempotency_key: str | None = None
    request_hash: str = ""  # fingerprint of the source request: same key, other body is refused
    metadata: dict[str, Any] = field(default_factory=dict)


class CommandResult:
    """What became of one command. `result` ({"member_id", "events": [...], "position",
    "available_after", "pending_after"}) is built on first use: the Kafka consumer and
    the benchmarks never look at it, and building it costs as much as hashing the event."""

    __slots__ = ("status", "error", "_result", "_append")

    def __init__(
        self,
        status: Literal["applied", "duplicate", "rejected"],
        result: dict[str, Any] | None = None,
        error: LedgerError | None = None,
        *,
        append: AppendRequest | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self._result = result
        self._append = append

    @property
    def result(self) -> dict[str, Any] | None:
        if self._result is None and self._append is not None:
            self._result = _result_of(self._append)
        return self._result

    def __repr__(self) -> str:
        return f"CommandResult({self.status!r}, {self.result!r}, {self.error!r})"


def _result_of(req: AppendRequest) -> dict[str, Any]:
    return {
        "member_id": req.stream_id,
        "events": [
            {"position": pos, "stream_version": req.expected_version + i + 1, "type": ev.type, "data": to_data(ev)}
            for i, (pos, ev) in enumerate(zip(req.positions, req.events, strict=True))
        ],
        "position": req.positions[-1] if req.positions else None,
        **req.summary,
    }


class StateCache:
    """Member states this process has seen, with the hash of their last event; bounded
    LRU. Only ever updated after a commit, so a state here may be behind the store
    (another process appended since) but never ahead of it."""

    def __init__(self, members_max: int) -> None:
        self._members_max = members_max
        self._items: OrderedDict[str, tuple[MemberState, bytes]] = OrderedDict()
        # Members whose state moved since their snapshot was last saved (at most the cached ones).
        self._unsaved: set[str] = set()

    def get(self, member_id: str) -> tuple[MemberState, bytes] | None:
        item = self._items.get(member_id)
        if item is not None:
            self._items.move_to_end(member_id)
        return item

    def put(self, state: MemberState, last_hash: bytes, *, saved: bool = False) -> None:
        """Keep `state` unless a later one is kept; `saved`: it is the member's snapshot."""
        if self._members_max == 0:
            return
        current = self._items.get(state.member_id)
        if current is None or current[0].version < state.version:
            self._items[state.member_id] = (state, last_hash)
            self._items.move_to_end(state.member_id)
            if saved:
                self._unsaved.discard(state.member_id)
            else:
                self._unsaved.add(state.member_id)
            while len(self._items) > self._members_max:
                self._unsaved.discard(self._items.popitem(last=False)[0])

    def take_unsaved(self, members_max: int | None = None) -> list[tuple[MemberState, bytes]]:
        """Up to `members_max` (default all) states changed since they were last taken
        here; the caller puts back (`mark_unsaved`) those it failed to save."""
        taken: list[tuple[MemberState, bytes]] = []
        while self._unsaved and (members_max is None or len(taken) < members_max):
            item = self._items.get(self._unsaved.pop())
            if item is not None:
                taken.append(item)
        return taken

    def unsaved(self) -> int:
        return len(self._unsaved)

    def mark_unsaved(self, member_ids: Sequence[str]) -> None:
        self._unsaved.update(m for m in member_ids if m in self._items)

    def forget(self, member_ids: Sequence[str]) -> None:
        for member_id in member_ids:
            self._items.pop(member_id, None)
            self._unsaved.discard(member_id)


class Ledger:
    def __init__(
        self, store: EventStore, rules: ProgramRules, *, cache_members_max: int = 100_000, attempts_max: int = 100,
        group_commands_max: int = 500,
    ) -> None:
        self.store = store
        self.rules = rules
        self.cache = StateCache(cache_members_max)
        self.attempts_max = attempts_max
        self.appended = asyncio.Event()  # set after each append, to wake in-process readers
        self.conflicts = 0  # attempts that lost a race and were decided again (a metric)
        self.group = GroupCommit(self.handle_batch, batch_max=group_commands_max)

    async def load(self, member_ids: Sequence[str]) -> dict[str, tuple[MemberState, bytes]]:
        """Fresh state of each member: the cached fold topped up with newer events."""
        return (await self._load(member_ids, trust_cache=False))[0]

    async def _load(
        self, member_ids: Sequence[str], *, trust_cache: bool
    ) -> tuple[dict[str, tuple[MemberState, bytes]], set[str]]:
        """The state of each member, and which of them were taken from the cache as they
        were (`trust_cache`) rather than topped up from the store.

        A cached state that is behind the store is harmless for a command that appends:
        its event takes a stream version that already exists, the unique index refuses
        it, and the command is retried against fresh state. Only a refusal (or a command
        with nothing to do) decided on such a state could be wrong, so `_attempt` checks
        those members before it trusts the outcome. One process owning its members (a
        Kafka partition's consumer) thus skips a read per member per batch."""
        states: dict[str, tuple[MemberState, bytes]] = {}
        trusted: set[str] = set()
        versions: dict[str, int] = {}
        cold: list[str] = []
        for m in dict.fromkeys(member_ids):
            item = self.cache.get(m)
            if item is None:
                item = (MemberState(m), GENESIS_HASH)
                cold.append(m)
            elif trust_cache:
                trusted.add(m)
                states[m] = item
                continue
            states[m] = item
            versions[m] = item[0].version
        snapshotted: dict[str, int] = {}
        if cold:
            # A member new to this process starts from its snapshot, if one was saved.
            for m, (version, last_hash, data) in (await self.store.read_snapshots(cold, SNAPSHOT_FORMAT)).items():
                states[m] = (from_snapshot(m, version, data), last_hash)
                versions[m] = snapshotted[m] = version
        newer = await self.store.read_streams_after(versions) if versions else []
        # In stream order: one fold per member (a member new to this process folds its
        # whole history here).
        for member_id, group in itertools.groupby(newer, key=attrgetter("stream_id")):
            stored = list(group)
            states[member_id] = (fold(member_id, [s.event for s in stored], states[member_id][0]), stored[-1].hash)
        for m in versions:
            state, last_hash = states[m]
            self.cache.put(state, last_hash, saved=snapshotted.get(m) == state.version)
        return states, trusted

    async def save_snapshots(self, members_max: int | None = None) -> int:
        """Save the member states this process holds that changed since they were last
        saved (at most `members_max` of them), for the next process to start from; a
        graceful shutdown saves all of them, and the Kafka consumer saves some now and
        then, so that a process that was killed restarts warm too. Returns how many."""
        items = self.cache.take_unsaved(members_max)
        try:
            snapshots = [(state.member_id, state.version, last_hash, orjson.dumps(to_snapshot(state)).decode())
                         for state, last_hash in items if state.version > 0]
            await self.store.write_snapshots(snapshots, SNAPSHOT_FORMAT)
        except BaseException:
            self.cache.mark_unsaved([state.member_id for state, _ in items])
            raise
        return len(snapshots)

    async def member_state(self, member_id: str) -> MemberState:
        return (await self.load([member_id]))[member_id][0]

    async def handle(self, request: CommandRequest) -> CommandResult:
        """One command, committed together with the others submitted meanwhile (group
        commit); a domain refusal is raised, not returned."""
        result: CommandResult = await self.group.submit(request)  # type: ignore[assignment]
        if result.error is not None:
            raise result.error
        return result

    async def handle_batch(
        self, requests: Sequence[CommandRequest], before_commit: BatchHook | None = None
    ) -> list[CommandResult]:
        """Decide every command against current state and append all of the resulting
        events in one transaction. A command the domain refuses is returned as
        `rejected` and does not stop the others."""
        assert len(requests) <= BATCH_COMMANDS_MAX
        for attempt in range(1, self.attempts_max + 1):
            try:
                # A retry reads every member's newer events: the cache was behind.
                return await self._attempt(requests, before_commit, trust_cache=attempt == 1)
            except ConcurrencyConflict:
                self.conflicts += 1
                if attempt == self.attempts_max:
                    raise
                # Spread the retries of colliding writers so one of them wins each round.
                await asyncio.sleep(random.uniform(0, 0.002 * min(attempt, 10)))
        raise AssertionError("unreachable")

    async def _expand(self, recorded: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, tuple[str, dict[str, Any]]]:
        """Idempotency records turned back into full results, reading the events of
        all of them in one query."""
        positions = [p for _, record in recorded.values() for p in record["positions"]]
        events = await self.store.read_positions(positions)
        return {key: (request_hash, _expanded(record, events)) for key, (request_hash, record) in recorded.items()}

    async def _attempt(
        self, requests: Sequence[CommandRequest], before_commit: BatchHook | None, *, trust_cache: bool
    ) -> list[CommandResult]:
        # State first, idempotency records second: they commit together, so any command
        # whose events the state already shows is sure to be found as recorded.
        states, trusted = await self._load([r.command.member_id for r in requests], trust_cache=trust_cache)
        loaded_versions = {m: states[m][0].version for m in trusted}
        doubtful: set[str] = set()  # trusted members with an outcome that appends nothing
        # The first attempt does not look its keys up: a command that appends puts its key
        # on its first event, whose unique index refuses a key already used, and the
        # batch is decided again with the records (an IdempotencyRace). Only a keyed
        # command that appends nothing (a refusal, or nothing to do) could take a
        # recorded key unnoticed: those keys are looked up below, before the outcome
        # stands. A redelivered batch (all duplicates) is then decided twice; a fresh
        # one skips a query that cost PostgreSQL about 1.5 µs per command. Keys in the
        # legacy `commands` table have no unique index on the events behind them.
        optimistic = trust_cache and not await self.store.has_legacy_commands()
        recorded: dict[str, tuple[str, dict[str, Any]]] = {}
        if not optimistic:
            recorded = await self.store.find_commands([r.idempotency_key for r in requests if r.idempotency_key])
            if recorded:
                recorded = await self._expand(recorded)
        results: list[CommandResult | None] = [None] * len(requests)
        appends: list[AppendRequest] = []
        owner: dict[int, AppendRequest] = {}
        in_batch: dict[str, int] = {}
        for i, req in enumerate(requests):
            key = req.idempotency_key
            if key is not None and key in recorded:
                request_hash, result = recorded[key]
                results[i] = _duplicate(key, request_hash, req, result)
                continue
            if key is not None and key in in_batch:
                if requests[in_batch[key]].request_hash != req.request_hash:
                    results[i] = CommandResult("rejected", error=_key_reused(key))
                continue  # else a duplicate of the first, filled in once its result is known
            try:
                state, last_hash = states[req.command.member_id]
                events = decide(state, req.command, self.rules)
                # `fold` for many events (an expiry run): it copies the member's lots once,
                # where `evolve` copies them per event.
                new_state = evolve(state, events[0]) if len(events) == 1 else fold(state.member_id, events, state)
            except LedgerError as error:
                results[i] = CommandResult("rejected", error=error)
                doubtful.add(req.command.member_id)
                continue
            except (ValueError, ArithmeticError) as exc:
                # Input the validation let through and the rules cannot compute with: refuse
                # this one command (a Kafka message goes to the dead-letter topic) rather
                # than fail the batch and block everything behind it.
                log.warning("command %r could not be decided: %s", req.command, exc)
                results[i] = CommandResult("rejected", error=InvalidCommand(f"The command cannot be applied: {exc}."))
                doubtful.add(req.command.member_id)
                continue
            if key is not None:
                in_batch[key] = i
            if not events:
                doubtful.add(state.member_id)
                available, pending = state.available_and_pending(req.command.occurred_at)
                results[i] = CommandResult("applied", {
                    "member_id": state.member_id, "events": [], "position": None,
                    "available_after": available, "pending_after": pending,
                })
                continue
            available, pending = new_state.available_and_pending(req.command.occurred_at)
            # In field order (stream id, expected version, previous hash, events, metadata,
            # key, request hash, summary): keyword arguments cost a third more per command.
            append = AppendRequest(state.member_id, state.version, last_hash, events, req.metadata, key,
                                   req.request_hash, {"available_after": available, "pending_after": pending})
            appends.append(append)
            owner[i] = append
            states[state.member_id] = (new_state, b"")  # hash filled in by the store
        doubtful &= trusted
        if doubtful and await self.store.read_streams_after({m: loaded_versions[m] for m in doubtful}):
            raise ConcurrencyConflict("A member's cached state was behind the store; deciding again on fresh state.")
        if optimistic:
            unsure = [req.idempotency_key for req, result in zip(requests, results, strict=True)
                      if req.idempotency_key is not None and result is not None]  # refused, or appends nothing
            if unsure and await self.store.find_commands(unsure):
                raise ConcurrencyConflict("A command of the batch was recorded before; deciding again with its record.")
        if appends or before_commit is not None:
            hook = None
            if before_commit is not None:
                refusals = {i: r.error for i, r in enumerate(results) if r is not None and r.error is not None}

                async def hook(conn: asyncpg.Connection) -> None:
                    await before_commit(conn, refusals)

            await self.store.append(appends, hook)
        for append in appends:
            state = states[append.stream_id][0]
            if state.version == append.expected_version + len(append.events):
                self.cache.put(state, append.hashes[-1])
        if appends:
            self.appended.set()
            self.appended.clear()
        for i, append in owner.items():
            results[i] = CommandResult("applied", append=append)
        for i, req in enumerate(requests):
            if results[i] is None:  # a repeat of a key earlier in this batch, same body
                first = results[in_batch[req.idempotency_key]]  # type: ignore[index]
                assert first is not None and first.status == "applied"
                results[i] = CommandResult("duplicate", first.result)
        return results  # type: ignore[return-value]


def _expanded(record: dict[str, Any], events: dict[int, tuple[int, str, dict[str, Any]]]) -> dict[str, Any]:
    """The full result of an applied command from its idempotency record: the same
    shape `_result_of` gave the first caller."""
    positions = record["positions"]
    summary = {k: v for k, v in record.items() if k not in ("member_id", "positions")}
    return {
        "member_id": record["member_id"],
        "events": [
            {"position": pos, "stream_version": events[pos][0], "type": events[pos][1], "data": events[pos][2]}
            for pos in positions
        ],
        "position": positions[-1] if positions else None,
        **summary,
    }


def _key_reused(key: str) -> DuplicateEvent:
    return DuplicateEvent(f"Idempotency key {key!r} was already used for a different request.", idempotency_key=key)


def _duplicate(key: str, request_hash: str, req: CommandRequest, result: dict[str, Any]) -> CommandResult:
    if request_hash != req.request_hash:
        return CommandResult("rejected", error=_key_reused(key))
    return CommandResult("duplicate", result)
