"""Command handling: load member states, decide, commit one unit of work; decided again
on fresh state when the store or the cache says the state was behind.

This is the one path every write takes: the HTTP API, the Kafka consumer and the
expiry scheduler hand commands to `Ledger.handle` or `Ledger.handle_batch`. One attempt
at a batch, in the order its concerns come (`_attempt`):

1. load the states of every member the commands read (`_load`), trusting this
   process's cache on a first attempt;
2. look up the idempotency records of the keyed commands (`_recorded`), except on an
   optimistic first attempt (see there);
3. decide every command on the states the commands before it left (`_decide_batch`);
4. check that no outcome rests on a cached state the store has moved past
   (`_check_trust`): if one does, the attempt answers `Retry`;
5. build the unit of work (`_unit_of_work`): the appends of every stream with the
   version each expects and the idempotency records, the consumer's offset fence, and
   the rejected messages, as data;
6. commit it (`EventStore.commit`): a stream that moved or a key taken meanwhile is a
   returned failure, which the attempt answers as `Retry`;
7. update the cache and build each command's typed outcome once (`_settle`).

`handle_batch` runs attempts until one is not a `Retry` (bounded, with back-off), and
raises ConcurrencyConflict (a retryable 503 over HTTP) when the attempts run out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import orjson

from ledger.domain import (
    SNAPSHOT_FORMAT,
    Command,
    ConcurrencyConflict,
    DuplicateEvent,
    Event,
    InvalidCommand,
    LedgerError,
    MemberMerged,
    MemberState,
    MergeMembers,
    ProgramRules,
    RuleBook,
    as_book,
    decide,
    decide_streams,
    evolve_all,
    fold,
    from_snapshot,
    net_earned,
    to_snapshot,
)
from ledger.domain.members import REDIRECTED
from ledger.group_commit import GroupCommit
from ledger.outcomes import (
    AppendedEvent,
    Applied,
    BatchOutcomes,
    CommandRequest,
    Duplicate,
    KafkaSource,
    Outcome,
    Rejected,
    Summary,
    refusal_reason,
    summary_of,
)
from ledger.store.database import DATABASE_ERRORS
from ledger.store.events import GENESIS_HASH, EventStore, StoredEvent
from ledger.store.unit_of_work import (
    Fenced,
    OffsetFence,
    OffsetsFenced,
    RejectedMessage,
    StreamAppend,
    UnitOfWork,
)

log = logging.getLogger(__name__)

__all__ = ["BATCH_COMMANDS_MAX", "Applied", "BatchOutcomes", "CommandRequest", "Duplicate", "KafkaSource", "Ledger",
           "Outcome", "Rejected", "Retry", "StateCache", "Summary"]

BATCH_COMMANDS_MAX = 10_000
# Merged members whose redirect a process keeps (merges are rare; one forgotten costs a
# decision again, see `Ledger._redirected`), and the longest chain of merges followed.
REDIRECTS_MAX = 100_000
REDIRECT_HOPS_MAX = 100
# A load that folds at least this many events of one member saves that member's snapshot
# at once, so that the next process to load it (after a restart or a deploy) starts
# from there. `ledger serve` saves no snapshots otherwise (the Kafka consumer saves them
# as it goes and when it stops): a member with 10,000 events took 380 ms to fold from
# its events on its first write after a restart, most of it reading and decoding them.
SNAPSHOT_FOLD_EVENTS_MIN = 1_000

# decide_streams's signature: the states of the members a command reads -> events by stream.
Decider = Callable[[Mapping[str, MemberState], Command, ProgramRules], dict[str, list[Event]]]
States = dict[str, tuple[MemberState, bytes]]  # member -> (state, hash of its last event)


@dataclass(frozen=True, slots=True)
class Retry:
    """An attempt that must be decided again on fresh state: `reason`, and the members
    known to be behind (empty: any of them may be)."""

    reason: str
    members: tuple[str, ...] = ()


@dataclass(slots=True)
class _Draft:
    """One attempt's decisions, before they are committed."""

    outcomes: list[Outcome | None]  # None: appends (built after the commit), or repeats a command of the batch
    appends: list[StreamAppend] = field(default_factory=list)
    # command -> (first append, appends, available after, pending after): its `Applied`, once committed
    owner: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)
    in_batch: dict[str, int] = field(default_factory=dict)  # key -> the command of the batch that applies it
    doubtful: set[str] = field(default_factory=set)  # members read by an outcome that appends nothing to them
    # Members (M2): (duplicate, survivor, at) of the merges decided; and the redirects
    # learnt from booking commands sent to a merged member, to be decided again.
    merges: list[tuple[str, str, Any]] = field(default_factory=list)
    learnt: dict[str, str] = field(default_factory=dict)


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
        self, store: EventStore, rules: ProgramRules | RuleBook, *, cache_members_max: int = 100_000, attempts_max: int = 100,
        group_commands_max: int = 500, decider: Decider = decide_streams,
    ) -> None:
        self.store = store
        # Swapped whole by the rules refresh (`ledger.rules_refresh`) when a version or a
        # rate set is published; each command is decided under `book.at(its occurred_at)`.
        self.book = as_book(rules)
        self.decider = decider
        self.cache = StateCache(cache_members_max)
        self.attempts_max = attempts_max
        # Set after each append, to wake the projection runner, which clears it before
        # each page it reads: an append while it reads a page is not missed.
        self.appended = asyncio.Event()
        # Called after each append too: `ledger serve --projections-process` tells the
        # projection process through it (see `ledger.serve`).
        self.on_appended: Callable[[], None] | None = None
        self.conflicts = 0  # attempts that lost a race and were decided again (a metric)
        self.group = GroupCommit(self.handle_batch, batch_max=group_commands_max)
        # Members (M2): merged member -> the member it was merged into, as far as this
        # process knows (see `_redirected`).
        self.redirects: OrderedDict[str, str] = OrderedDict()

    @property
    def rules(self) -> ProgramRules:
        """The version that starts last (commands are decided under the one in force at their time)."""
        return self.book.latest.rules

    @rules.setter
    def rules(self, rules: ProgramRules) -> None:
        self.book = RuleBook.single(rules)

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
        long_folds: list[str] = []
        for member_id, group in itertools.groupby(newer, key=attrgetter("stream_id")):
            stored = list(group)
            states[member_id] = (fold(member_id, [s.event for s in stored], states[member_id][0]), stored[-1].hash)
            if len(stored) >= SNAPSHOT_FOLD_EVENTS_MIN:
                long_folds.append(member_id)
        if long_folds and await self._save_long_folds([states[m] for m in long_folds]):
            snapshotted.update((m, states[m][0].version) for m in long_folds)
        for m in versions:
            state, last_hash = states[m]
            self.cache.put(state, last_hash, saved=snapshotted.get(m) == state.version)
        return states, trusted

    async def _save_long_folds(self, items: list[tuple[MemberState, bytes]]) -> bool:
        """Save the snapshots of members whose load folded many events. Best effort: a
        write that fails only leaves the next load as slow as this one."""
        try:
            await self.store.write_snapshots(
                [(state.member_id, state.version, last_hash, orjson.dumps(to_snapshot(state)).decode())
                 for state, last_hash in items], SNAPSHOT_FORMAT)
        except DATABASE_ERRORS as exc:
            log.warning("snapshots of %d long-history members not saved: %s", len(items), exc)
            return False
        return True

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

    async def handle(self, request: CommandRequest) -> Applied | Duplicate:
        """One command, committed together with the others submitted meanwhile (group
        commit); a domain refusal is raised, not returned."""
        outcome: Outcome = await self.group.submit(request)  # type: ignore[assignment]
        if isinstance(outcome, Rejected):
            raise outcome.error
        return outcome

    async def handle_batch(
        self, requests: Sequence[CommandRequest], *, offset_fence: OffsetFence | None = None,
        rejections: Sequence[RejectedMessage] = (),
    ) -> BatchOutcomes:
        """Decide every command against current state and commit all of the resulting
        events in one transaction, with `offset_fence` and `rejections` (messages that
        never became commands) if given. A command the domain refuses is returned as
        `Rejected` and does not stop the others. Raises Fenced when the fence refused
        the unit of work (nothing was written)."""
        assert len(requests) <= BATCH_COMMANDS_MAX
        retry = Retry("no attempt was made")
        for attempt in range(1, self.attempts_max + 1):
            # A retry reads every member's newer events: the cache was behind.
            outcome = await self._attempt(requests, offset_fence, rejections, trust_cache=attempt == 1)
            if not isinstance(outcome, Retry):
                return outcome
            retry = outcome
            self.conflicts += 1
            if attempt < self.attempts_max:
                # Spread the retries of colliding writers so one of them wins each round.
                await asyncio.sleep(random.uniform(0, 0.002 * min(attempt, 10)))
        raise ConcurrencyConflict(retry.reason)

    async def _attempt(
        self, requests: Sequence[CommandRequest], offset_fence: OffsetFence | None,
        rejections: Sequence[RejectedMessage], *, trust_cache: bool,
    ) -> BatchOutcomes | Retry:
        requests = self._redirected(requests)
        # State first, idempotency records second: they commit together, so any command
        # whose events the state already shows is sure to be found as recorded.
        states, trusted = await self._load([m for r in requests for m in r.command.member_ids], trust_cache=trust_cache)
        loaded_versions = {m: states[m][0].version for m in trusted}
        # The first attempt does not look its keys up: a command that appends puts its key
        # on its first event, whose unique index refuses a key already used, and the
        # batch is decided again with the records (an IdempotencyRace). Only a keyed
        # command that appends nothing (a refusal, or nothing to do) could take a
        # recorded key unnoticed: those keys are looked up in `_check_trust`, before the
        # outcome stands. A redelivered batch (all duplicates) is then decided twice; a
        # fresh one skips a query that cost PostgreSQL about 1.5 µs per command. Keys in
        # the legacy `commands` table have no unique index on the events behind them.
        optimistic = trust_cache and not await self.store.has_legacy_commands()
        recorded = {} if optimistic else await self._recorded(requests)
        draft = self._decide_batch(requests, states, recorded)
        if draft.learnt:
            self._learn(draft.learnt)
            return Retry("A booking of a merged member goes to the member it was merged into.",
                         tuple(draft.learnt.values()))
        retry = await self._check_trust(requests, draft, trusted, loaded_versions, optimistic=optimistic)
        if retry is not None:
            return retry
        uow = _unit_of_work(requests, draft, offset_fence, rejections)
        if uow:
            failure = await self.store.commit(uow)
            if isinstance(failure, OffsetsFenced):
                raise Fenced(failure.message)
            if failure is not None:
                return Retry(failure.message)
        return self._settle(requests, draft, states)

    def _redirected(self, requests: Sequence[CommandRequest]) -> Sequence[CommandRequest]:
        """The requests with each booking command of a merged member sent to the member
        it was merged into (following a chain of merges).

        This process learns a redirect when it commits the merge, and when a booking
        command of a merged member is decided on its state, which says whom it went to
        (the attempt is then decided again, see `_attempt`). A redirect not known yet
        is therefore harmless: the merge appended to the duplicate's stream, so a
        booking decided on its state from before the merge fails its expected version,
        and the state read again refuses it with the survivor's id. The same holds for
        other processes, and `member_redirects` (written in the merge's transaction)
        answers the reads."""
        if not self.redirects:
            return requests
        out: list[CommandRequest] | None = None
        for i, req in enumerate(requests):
            command = req.command
            if not isinstance(command, REDIRECTED) or command.member_id not in self.redirects:
                continue
            survivor = self.resolve(command.member_id)
            if out is None:
                out = list(requests)
            out[i] = dataclasses.replace(req, command=dataclasses.replace(command, member_id=survivor))
        return requests if out is None else out

    def resolve(self, member_id: str) -> str:
        """The member that has `member_id`'s points now, as far as this process knows."""
        for _ in range(REDIRECT_HOPS_MAX):
            survivor = self.redirects.get(member_id)
            if survivor is None:
                return member_id
            member_id = survivor
        raise AssertionError(f"a chain of more than {REDIRECT_HOPS_MAX} merges from {member_id!r}")

    def _learn(self, redirects: Mapping[str, str]) -> None:
        for duplicate, survivor in redirects.items():
            self.redirects[duplicate] = survivor
            self.redirects.move_to_end(duplicate)
        while len(self.redirects) > REDIRECTS_MAX:
            self.redirects.popitem(last=False)

    async def _recorded(self, requests: Sequence[CommandRequest]) -> dict[str, tuple[str, Applied]]:
        """The idempotency records of the batch's keys that were used before: key ->
        (request hash, the outcome that applied it), reading all their events in one query."""
        found = await self.store.find_commands([r.idempotency_key for r in requests if r.idempotency_key])
        if not found:
            return {}
        stored = await self.store.read_positions([p for _, record in found.values() for p in record["positions"]])
        return {key: (request_hash, _original(record, stored)) for key, (request_hash, record) in found.items()}

    def _decide_batch(self, requests: Sequence[CommandRequest], states: States,
                      recorded: dict[str, tuple[str, Applied]]) -> _Draft:
        """Each command decided on the states the ones before it in the batch left."""
        draft = _Draft([None] * len(requests))
        for i, req in enumerate(requests):
            key = req.idempotency_key
            if key is not None and key in recorded:
                request_hash, original = recorded[key]
                draft.outcomes[i] = Duplicate(original) if request_hash == req.request_hash else Rejected(_key_reused(key))
                continue
            if key is not None and key in draft.in_batch:
                if requests[draft.in_batch[key]].request_hash != req.request_hash:
                    draft.outcomes[i] = Rejected(_key_reused(key))
                continue  # else a repeat of the earlier one: its outcome once that is known
            member_ids = req.command.member_ids
            decided = self._decide(req.command, member_ids, states)
            if (isinstance(decided, Rejected) and isinstance(decided.error, MemberMerged)
                    and isinstance(req.command, REDIRECTED)):
                draft.learnt[decided.error.member_id] = decided.error.merged_into
                continue
            if isinstance(decided, Rejected):
                draft.outcomes[i] = decided
                draft.doubtful.update(member_ids)
                continue
            if key is not None:
                draft.in_batch[key] = i
            _stage(draft, i, req, member_ids, decided, states)
        return draft

    def _decide(self, command: Command, member_ids: tuple[str, ...],
                states: States) -> dict[str, tuple[MemberState, list[Event]]] | Rejected:
        """stream -> (its state after, the events) of the streams the command appends to."""
        rules = self.book.at(command.occurred_at)
        try:
            if len(member_ids) == 1 and self.decider is decide_streams:
                # What decide_streams does for one member, without building its two dicts
                # (a tenth of the ledger's own cost per command on the batch path).
                state = states[member_ids[0]][0]
                events = decide(state, command, rules)
                if not events:
                    return {}
                return {state.member_id: (evolve_all(state, events), events)}
            read = {m: states[m][0] for m in member_ids}
            staged: dict[str, tuple[MemberState, list[Event]]] = {}
            for stream_id, events in self.decider(read, command, rules).items():
                if events:
                    state = read[stream_id]  # a stream is only written after it was read
                    staged[stream_id] = (evolve_all(state, events), events)
            return staged
        except LedgerError as error:
            return Rejected(error)
        except (ValueError, ArithmeticError) as exc:
            # Input the validation let through and the rules cannot compute with: refuse
            # this one command (a Kafka message goes to the dead-letter topic) rather
            # than fail the batch and block everything behind it.
            log.warning("command %r could not be decided: %s", command, exc)
            return Rejected(InvalidCommand(f"The command cannot be applied: {exc}."))

    async def _check_trust(self, requests: Sequence[CommandRequest], draft: _Draft, trusted: set[str],
                           loaded_versions: dict[str, int], *, optimistic: bool) -> Retry | None:
        """A Retry when an outcome that appends nothing rests on something the store has
        moved past: a cached state (a refusal the newer events would have turned into a
        success), or an unlooked-up key that was recorded before."""
        doubtful = draft.doubtful & trusted
        if doubtful and await self.store.read_streams_after({m: loaded_versions[m] for m in doubtful}):
            return Retry("A member's cached state was behind the store; deciding again on fresh state.",
                         tuple(sorted(doubtful)))
        if optimistic:
            unsure = [req.idempotency_key for req, outcome in zip(requests, draft.outcomes, strict=True)
                      if req.idempotency_key is not None and outcome is not None]  # refused, or appends nothing
            if unsure and await self.store.find_commands(unsure):
                return Retry("A command of the batch was recorded before; deciding again with its record.")
        return None

    def _settle(self, requests: Sequence[CommandRequest], draft: _Draft, states: States) -> BatchOutcomes:
        """After the commit: the cache takes the new states, and every command its outcome
        (those that appended as they are read: see `BatchOutcomes`)."""
        appends = draft.appends
        for append in appends:
            state = states[append.stream_id][0]
            if state.version == append.expected_version + len(append.events):
                self.cache.put(state, append.hashes[-1])
        if appends:
            self.appended.set()
            if self.on_appended is not None:
                self.on_appended()
        if draft.merges:
            self._learn({duplicate: survivor for duplicate, survivor, _ in draft.merges})
        # A partial of a module function, not a closure over the outcomes: no reference
        # cycle, which the consumer's paused collector would keep until its next full pass.
        return BatchOutcomes(draft.outcomes, functools.partial(_committed_outcome, requests, draft), len(draft.owner))


def _stage(draft: _Draft, i: int, req: CommandRequest, member_ids: tuple[str, ...],
           decided: dict[str, tuple[MemberState, list[Event]]], states: States) -> None:
    """The appends of one decided command, and the summary its outcome will carry."""
    command = req.command
    member_id = command.member_id
    own = decided.get(member_id)
    available, pending = (own[0] if own else states[member_id][0]).available_and_pending(command.occurred_at)
    if len(decided) < len(member_ids):
        draft.doubtful.update(m for m in member_ids if m not in decided)
    if not decided:
        draft.outcomes[i] = Applied(member_id, (), None, Summary(available, pending, 0))
        return
    if isinstance(command, MergeMembers):
        draft.merges.append((command.duplicate_id, member_id, command.occurred_at))
    key = req.idempotency_key
    record = None if key is None else {  # see StreamAppend
        "request_hash": req.request_hash,
        "events": len(own[1]) if own and len(decided) == 1 else sum(len(e) for _, e in decided.values()),
        "available_after": available, "pending_after": pending,
    }
    # The command's own stream first: its idempotency record goes on that stream's first
    # event, where a duplicate finds the member it answers for.
    streams = decided.items() if len(decided) == 1 else sorted(decided.items(), key=lambda s: s[0] != member_id)
    appends = draft.appends
    draft.owner[i] = (len(appends), len(decided), available, pending)
    for stream_id, (new_state, events) in streams:
        state, last_hash = states[stream_id]
        # In field order (stream id, expected version, previous hash, events, metadata,
        # key, record): keyword arguments cost a third more per command.
        appends.append(StreamAppend(stream_id, state.version, last_hash, events, req.metadata, key, record))
        key = record = None
        states[stream_id] = (new_state, b"")  # hash filled in by the store


def _committed_outcome(requests: Sequence[CommandRequest], draft: _Draft, outcomes: BatchOutcomes, i: int) -> Outcome:
    """The outcome of the i-th command of a committed batch that had none before the
    commit: `Applied` with its appended events, or the `Duplicate` of an earlier command
    of the batch with the same key and body."""
    owned = draft.owner.get(i)
    if owned is None:  # a repeat of a key earlier in this batch, same body
        first_outcome = outcomes[draft.in_batch[requests[i].idempotency_key]]  # type: ignore[index]
        assert isinstance(first_outcome, Applied)
        return Duplicate(first_outcome)
    first, count, available, pending = owned
    member_id = requests[i].command.member_id
    appends = draft.appends
    append = appends[first]
    if count == 1 and len(append.events) == 1:  # most commands: a third of the cost of the general form
        events: tuple[AppendedEvent, ...] = (
            AppendedEvent(append.positions[0], append.stream_id, append.expected_version + 1, append.events[0]),)
    else:
        events = tuple(itertools.chain.from_iterable(_appended(a) for a in appends[first:first + count]))
    # The command's own stream's append comes first, when it appended to its own stream.
    earned = net_earned(append.events) if append.stream_id == member_id else 0
    return Applied(member_id, events, events[-1].position, Summary(available, pending, earned))


def _unit_of_work(requests: Sequence[CommandRequest], draft: _Draft, offset_fence: OffsetFence | None,
                  rejections: Sequence[RejectedMessage]) -> UnitOfWork:
    """What one transaction writes: the appends, the fence, the rejected messages (those
    given, and the Kafka-sourced commands the ledger refused), and the rejected messages
    whose retry applied."""
    refused = list(rejections)
    retried: list[int] = []
    for req, outcome in zip(requests, draft.outcomes, strict=True):
        source = req.source
        if source is None:
            continue
        if source.rejection_id is None:
            if isinstance(outcome, Rejected):
                refused.append(RejectedMessage(source.topic, source.partition, source.offset, source.key, source.value,
                                               refusal_reason(outcome.error)))
        elif not isinstance(outcome, Rejected):  # applied now, or before: either way no longer pending
            retried.append(source.rejection_id)
    return UnitOfWork(draft.appends, offset_fence, refused, retried, draft.merges)


def _appended(append: StreamAppend) -> tuple[AppendedEvent, ...]:
    version, stream_id = append.expected_version, append.stream_id
    return tuple(AppendedEvent(position, stream_id, version + n, event)
                 for n, (position, event) in enumerate(zip(append.positions, append.events, strict=True), 1))


def _original(record: dict[str, Any], stored: dict[int, StoredEvent]) -> Applied:
    """The outcome of an applied command, from its idempotency record: what the first
    caller was given."""
    events = tuple(AppendedEvent(p, stored[p].stream_id, stored[p].stream_version, stored[p].event)
                   for p in record["positions"])
    summary = summary_of(record.get("available_after", 0), record.get("pending_after", 0), events)
    return Applied(record["member_id"], events, events[-1].position if events else None, summary)


def _key_reused(key: str) -> DuplicateEvent:
    return DuplicateEvent(f"Idempotency key {key!r} was already used for a different request.", idempotency_key=key)
