"""The composition root: the one place that builds the database, store, ledger,
projection runner (and, from the API and the consumer, everything on top)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from ledger.domain import DEFAULT_FX_BASE, DEFAULT_FX_RATES, DEFAULT_RULES_DICT, EPOCH, ProgramRules, RuleBook
from ledger.embedded import EmbeddedPostgres
from ledger.crypto import MasterKey, MasterKeyError, development_master_key, parse_master_key
from ledger.handlers import Ledger
from ledger.members import MemberVault
from ledger.settings import Settings
from ledger.store import EventStore, connect_pool, migrate
from ledger.store.database import StartupError, ensure_database
from ledger.store.programme import ProgrammeStore
from projections.models import REPORTS
from projections.runner import ProjectionRunner

log = logging.getLogger(__name__)


GC_THRESHOLDS = (100_000, 50, 100)


def tune_gc() -> None:
    """Fewer, cheaper collections for a process that allocates many short-lived,
    acyclic objects (rows, events, dicts) per batch: the objects alive after startup
    (modules, classes, rules) move to the permanent generation so that full
    collections stop walking them; the young generation collects every 100,000
    allocations rather than every 700, and the middle one every 50 of those, since
    what survives a batch is mostly cached member states, freed by reference counting.
    Measured: collections took about a fifth of the append and rebuild time with the
    defaults, and still about a tenth of the append's with (50,000, 20, 100)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class GcPacer:
    """Keeps garbage collection out of a long-running writer's way.

    A consumer's state cache holds about a dozen tracked objects per member (1.2M for
    100,000 members), and a full collection walks all of them: measured, 0.17 s per
    20,000 members, so about a second at 100,000, which showed as the p99 of
    produce-to-queryable latency. Even collecting only what one batch left alive cost
    about 2 ms per 1,000 commands (2 µs of a batch command's 30 µs) and found nothing:
    the commands, events, states and rows of a batch form no cycles, so reference
    counting frees all of them (measured: `gc.collect(1)` after each batch found no
    garbage in 200 batches of the append path, and in 390 of the Kafka consumer's but
    one, 14 objects at start-up). So after each batch the survivors are frozen without
    a collection, and no automatic collection walks them again; cached states are
    freed by reference counting when evicted, frozen or not. What this gives up is the
    collection of any cycle a batch does make until the next full collection, every
    `full_every_s` (one pause per interval instead of one every few seconds)."""

    def __init__(self, full_every_s: float = 600.0) -> None:
        self.full_every_s = full_every_s
        self._next_full = time.monotonic() + full_every_s
        self._paused = 0  # batches under way (the consumer's lanes apply theirs at once)
        self._enabled = True  # whether the collector was on when the first of them began

    def after_batch(self) -> None:
        if time.monotonic() >= self._next_full:
            gc.unfreeze()
            gc.collect()
            self._next_full = time.monotonic() + self.full_every_s
        gc.freeze()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No automatic collection while a batch is applied (the caller freezes its
        survivors with `after_batch` afterwards). The young generation's threshold
        (`GC_THRESHOLDS`) kept most batches free of collections only while a batch
        allocated fewer objects than it: a consumer batch of 5,000 messages peaked at
        about 85,000 young objects, and the typed outcomes held to the batch's end took it
        past 100,000, so each batch paid a collection of all of them that found nothing
        (0.9 s per 100,000 messages, 9 µs of a message's 48 µs of consumer CPU; measured
        with apply_batch alone). A batch is bounded (messages, bytes, time), so the
        objects it makes meanwhile are too.

        What the batch left alive is frozen before the collector is enabled again: else
        the first allocation after it walks all of them (the young generation's count
        is far past its threshold by then), before `after_batch` would have frozen them.
        For a consumer restarted cold, whose batches load thousands of member states
        each, that walk was a fifth of its CPU (py-spy) and held up every batch.

        Batches applied at once (the consumer's lanes) pause it from the first one's start
        to the last one's end."""
        if self._paused == 0:
            self._enabled = gc.isenabled()
            gc.disable()
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1
            if self._paused == 0:
                gc.freeze()
                if self._enabled:
                    gc.enable()


def first_version(settings: Settings) -> dict[str, Any]:
    """The rule set the first start publishes (from the epoch): LEDGER_RULES_FILE, or the
    built-in travel rules, checked as a published version is and stored as it dumps."""
    from pydantic import ValidationError

    from ledger.rulesets import RuleSet

    raw = json.loads(settings.rules_file.read_text()) if settings.rules_file else DEFAULT_RULES_DICT
    try:
        return RuleSet.model_validate({**raw, "effective_from": EPOCH}).document()
    except ValidationError as exc:
        where = settings.rules_file or "the built-in rules"
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
        raise StartupError(f"the rules in {where} are not valid: {fields}: {exc}") from None


def load_rules(settings: Settings) -> ProgramRules:
    """The first version, as rules (for code that runs with no database)."""
    return ProgramRules.from_dict(first_version(settings))


async def database_url(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    """The configured URL, or an embedded server started under the data directory."""
    if settings.database_url:
        return settings.database_url, None
    server = EmbeddedPostgres(settings.data_dir / "postgres", settings.embedded_port)
    server_url = await asyncio.to_thread(server.acquire)
    await ensure_database(server_url, settings.database_name)
    log.info("embedded PostgreSQL at %s (data in %s)", server.url(settings.database_name), server.pgdata)
    return server.url(settings.database_name), server


@dataclass
class Container:
    settings: Settings
    url: str
    pool: asyncpg.Pool
    programme: ProgrammeStore
    store: EventStore
    ledger: Ledger
    runner: ProjectionRunner  # the member read models'
    reports_runner: ProjectionRunner  # the reports' and segments' (see `projections.models`)
    embedded: EmbeddedPostgres | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    extras: dict[str, object] = field(default_factory=dict)
    vault: MemberVault | None = None  # Members (M1): data keys, email index, sealed profiles

    @property
    def members(self) -> MemberVault:
        assert self.vault is not None, "built by `build`"
        return self.vault

    @property
    def book(self) -> RuleBook:
        """Every published version and rate set, as this process last loaded them."""
        return self.ledger.book

    @property
    def rules(self) -> ProgramRules:
        """The rules in force now."""
        return self.ledger.book.at(self.clock())

    def swap_book(self, book: RuleBook) -> None:
        """Make `book` the one every part of this process decides under."""
        self.ledger.book = book

    async def project(self) -> None:
        """Bring every projection group up to the head (the tests', the CLI's)."""
        await self.runner.run_until_caught_up()
        await self.reports_runner.run_until_caught_up()

    async def close(self, *, stop_embedded: bool = True) -> None:
        """Close the pool and let go of an embedded server, which stops once no other
        process of this data directory uses it."""
        await self.ledger.group.close()
        if not self.pool.is_closing():
            await self.pool.close()
        if stop_embedded and self.embedded is not None:
            embedded, self.embedded = self.embedded, None  # released once, however often closed
            if await asyncio.to_thread(embedded.release):
                log.info("embedded PostgreSQL stopped")


def _startup_faults() -> tuple[type[BaseException], ...]:
    import subprocess

    from sqlalchemy.exc import SQLAlchemyError

    # OSError: refused, unreachable, a data directory that cannot be made; RuntimeError:
    # the embedded server did not start (EmbeddedPostgres says why); SQLAlchemyError: what
    # Alembic's connection raises; asyncpg's errors include a malformed URL.
    return (OSError, RuntimeError, subprocess.SubprocessError, SQLAlchemyError, asyncpg.PostgresError,
            asyncpg.InterfaceError)


async def _open_database(settings: Settings, url: str | None,
                         run_migrations: bool) -> tuple[str, EmbeddedPostgres | None, asyncpg.Pool]:
    embedded = None
    try:
        if url is None:
            url, embedded = await database_url(settings)
        if run_migrations:
            await migrate(url)
        pool = await connect_pool(url, settings.db_pool_size_max)
    except _startup_faults() as exc:
        if embedded is not None:
            await asyncio.to_thread(embedded.release)
        where = "the embedded PostgreSQL" if settings.database_url is None else "LEDGER_DATABASE_URL"
        raise StartupError(f"cannot start on {where}: {type(exc).__name__}: {exc}") from exc
    return url, embedded, pool


def master_key(settings: Settings) -> MasterKey:
    """LEDGER_MASTER_KEY; unset, a development key kept in the data directory, and in
    production a refusal to start (a key made up there would leave every profile
    unreadable by the next process, or by any other)."""
    if settings.master_key is not None:
        return MasterKey(parse_master_key(settings.master_key.get_secret_value()))
    refuse_without_master_key(settings)
    try:
        return MasterKey(development_master_key(settings.data_dir))
    except (OSError, MasterKeyError) as exc:
        raise StartupError(f"cannot use the development master key in {settings.data_dir}: {exc}") from exc


def refuse_without_master_key(settings: Settings) -> None:
    if settings.master_key is None and settings.environment != "development":
        raise StartupError(
            "LEDGER_MASTER_KEY is required when LEDGER_ENVIRONMENT=production: 32 random bytes in base64, such as"
            " `python -c \"import os,base64;print(base64.b64encode(os.urandom(32)).decode())\"` prints; keep it"
            " in a secret store, as losing it makes every member profile unreadable")


async def build(settings: Settings, *, run_migrations: bool = True, url: str | None = None) -> Container:
    document = first_version(settings)
    refuse_without_master_key(settings)  # before the database: a refusal starts nothing
    url, embedded, pool = await _open_database(settings, url, run_migrations)
    programme = ProgrammeStore(pool)
    try:
        master = master_key(settings)  # a development key goes in the data directory the database made
        await programme.ensure_first(document, DEFAULT_FX_RATES, DEFAULT_FX_BASE)
        marker = await programme.marker()  # before the book: a publication in between is loaded again
        book = await programme.book()
    except BaseException:
        await pool.close()
        if embedded is not None:
            await asyncio.to_thread(embedded.release)
        raise
    store = EventStore(pool)
    ledger = Ledger(
        store, book, cache_members_max=settings.state_cache_members_max, attempts_max=settings.command_attempts_max,
        group_commands_max=settings.write_batch_commands_max,
    )
    runner = ProjectionRunner(
        pool, store, page_size=settings.projection_page_size, idle_ms=settings.projection_idle_ms,
        wake=ledger.appended, known_rows_max=settings.projection_known_rows_max,
    )
    reports_runner = ProjectionRunner(
        pool, store, page_size=settings.projection_reports_page_size, idle_ms=settings.projection_reports_idle_ms,
        group=REPORTS, defer_to=runner, defer_max_s=settings.projection_reports_defer_max_s,
    )
    tune_gc()
    container = Container(settings, url, pool, programme, store, ledger, runner, reports_runner, embedded,
                          vault=MemberVault(pool, master))
    container.extras["programme_marker"] = marker  # see ledger.rules_refresh
    return container
