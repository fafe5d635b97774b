"""`ledger ...`: the command line."""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger import event_loop
from ledger.store.database import StartupError
from ledger.settings import Settings

if TYPE_CHECKING:
    from pydantic import ValidationError

    from ledger.bootstrap import Container
    from ledger.supervisor import Task


class SettingsError(Exception):
    """LEDGER_* variables that do not make valid settings; the message is one line per
    problem, naming the variable, for the person who set it."""


def _settings() -> Settings:
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    # The variable's value is not repeated: LEDGER_DATABASE_URL may hold a password.
    lines = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        field = "_".join(str(part) for part in error["loc"])
        lines.append(f"LEDGER_{field.upper()}: {message}" if field else message)
    return "\n".join(lines)


async def _migrate(args: argparse.Namespace) -> int:
    from ledger.bootstrap import build

    container = await build(_settings())  # migrates
    await container.close()
    print("migrations applied")
    return 0


async def _rebuild(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from ledger.bootstrap import build
    from projections.runner import rebuild

    container = await build(_settings())
    try:
        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn()) as progress:
            task = progress.add_task("replaying events", total=None)
            position = await rebuild(
                container.pool, container.store, dsn=container.url,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        print(f"read models rebuilt up to position {position}")
    finally:
        await container.close()
    return 0


def _tasks(container: Container, **tasks: Task) -> dict[str, Task]:
    """A process's background tasks, with the embedded database's watchdog when it has one,
    and the refresh that brings newly published rules and rates to it."""
    from ledger.embedded import keep_running
    from ledger.rules_refresh import run_rules_refresh

    tasks["rules-refresh"] = functools.partial(run_rules_refresh, container)
    if container.embedded is not None:
        tasks["embedded-postgres"] = functools.partial(keep_running, container.embedded)
    return tasks


async def _project(args: argparse.Namespace) -> int:
    from ledger.bootstrap import build

    import signal

    container = await build(_settings())
    try:
        if args.follow:
            # A projection process of its own, when scaling out: until SIGTERM/SIGINT.
            stop = asyncio.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                asyncio.get_running_loop().add_signal_handler(sig, stop.set)
            from ledger.supervisor import supervise_until

            runners = {"projections": container.runner.run_forever,
                       "projections-reports": container.reports_runner.run_forever}
            if args.group != "all":
                runners = {name: task for name, task in runners.items()
                           if (name == "projections-reports") == (args.group == "reports")}
            await supervise_until(stop, _tasks(container, **runners))
        else:
            await container.project()
        print(f"read models at position {container.runner.position}, reports at {container.reports_runner.position}")
    finally:
        await container.close()
    return 0


async def _expire(args: argparse.Namespace) -> int:
    from ledger.expiry import expire_due

    return await _until_none_due(expire_due, "expired {} lots")


async def _expire_holds(args: argparse.Namespace) -> int:
    from ledger.holds import expire_holds_due

    return await _until_none_due(expire_holds_due, "released {} holds past their time")


async def _review_tiers(args: argparse.Namespace) -> int:
    from ledger.tier_review import review_tiers

    # The rules in force come from the book of the ledger each pass is handed.
    return await _until_none_due(lambda ledger, pool, now: review_tiers(ledger, pool, lambda: ledger.book, now),
                                 "reviewed tiers: {} downgrades and warnings")
async def _grant_anniversaries(args: argparse.Namespace) -> int:
    from ledger.anniversaries import grant_due

    return await _until_none_due(grant_due, "granted {} anniversary bonuses")


async def _until_none_due(one_pass: Any, done: str) -> int:
    """Passes of a scheduler (`one_pass(ledger, pool, now)`) until one finds nothing due,
    the read models caught up before each."""
    from datetime import UTC, datetime

    from ledger.bootstrap import build

    container = await build(_settings())
    try:
        await container.project()
        total = 0
        while count := await one_pass(container.ledger, container.pool, datetime.now(UTC)):
            total += count
            await container.project()
        print(done.format(total))
    finally:
        await container.close()
    return 0


async def _verify(args: argparse.Namespace) -> int:
    from ledger.bootstrap import build
    from ledger.store import verify_chain

    if (args.member_id is None) == (not args.all) or (args.anchor or args.public_key) and not args.all:
        print("ledger verify: name a MEMBER, or --all [--anchor FILE [--public-key FILE]]", file=sys.stderr)
        return 2
    if args.public_key and not args.anchor:
        print("ledger verify: --public-key checks an --anchor's signature; give the anchor too", file=sys.stderr)
        return 2
    if args.all:
        return await _verify_all(args)
    container = await build(_settings())
    try:
        events = await container.store.read_stream(args.member_id)
        if not events:
            print(f"no events for member {args.member_id!r}", file=sys.stderr)
            return 1
        broken = verify_chain(events)
        if broken is None:
            print(f"{len(events)} events, hash chain intact")
            return 0
        print(f"hash chain broken at stream version {broken}", file=sys.stderr)
        return 1
    finally:
        await container.close()


async def _verify_all(args: argparse.Namespace) -> int:
    from ledger.anchor import AnchorError, read_anchor, verify_all
    from ledger.bootstrap import build

    try:
        if args.anchor is not None:
            read_anchor(args.anchor, args.public_key)  # before the database starts: a bad anchor costs nothing
    except AnchorError as exc:
        print(f"ledger verify: {exc}", file=sys.stderr)
        return 1
    container = await build(_settings())
    try:
        result = await verify_all(container.pool, args.anchor, args.public_key)
    except AnchorError as exc:
        print(f"ledger verify: {exc}", file=sys.stderr)
        return 1
    finally:
        await container.close()
    assert result.breaks is not None
    for b in result.breaks:
        where = f" at version {b.version}" if b.version is not None else ""
        print(f"{b.stream_id}{where}: {b.reason}", file=sys.stderr)
    if result.more_breaks:
        print(f"... and {result.more_breaks} more", file=sys.stderr)
    anchored = ""
    if result.anchor is not None:
        anchored = (f"; {result.anchored_streams} streams match the anchor of position {result.anchor.position}"
                    f" signed at {result.anchor.signed_at.isoformat()}")
        if args.public_key is None:
            anchored += " (signature checked with the key the anchor names: pass --public-key to check whose)"
    if result.breaks:
        print(f"{len(result.breaks) + result.more_breaks} breaks in {result.streams} streams", file=sys.stderr)
        return 1
    print(f"{result.events} events in {result.streams} streams, hash chains intact{anchored}")
    return 0


async def _anchor(args: argparse.Namespace) -> int:
    from ledger.anchor import AnchorError, load_private_key, publish, write_anchor
    from ledger.bootstrap import build

    settings = _settings()
    key_file = args.key or settings.anchor_key_file
    if key_file is None:
        print("ledger anchor: give --key FILE or set LEDGER_ANCHOR_KEY_FILE", file=sys.stderr)
        return 2
    if args.kafka_topic and not settings.kafka_bootstrap_servers:
        print("ledger anchor: --kafka-topic needs LEDGER_KAFKA_BOOTSTRAP_SERVERS", file=sys.stderr)
        return 2
    try:
        key = load_private_key(key_file)
    except AnchorError as exc:
        print(f"ledger anchor: {exc}", file=sys.stderr)
        return 2
    container = await build(settings)
    try:
        anchor = await write_anchor(container.pool, key, args.out)
        if args.kafka_topic:
            assert settings.kafka_bootstrap_servers is not None
            await publish(settings.kafka_bootstrap_servers, args.kafka_topic, anchor,
                          settings.kafka_request_timeout_ms)
    finally:
        await container.close()
    sent = f", and sent to {args.kafka_topic}" if args.kafka_topic else ""
    print(f"anchored {anchor.streams} streams at position {anchor.position} in {args.out}{sent}")
    return 0


def _anchor_key(args: argparse.Namespace) -> int:
    from ledger.anchor import AnchorError, create_key

    try:
        public = create_key(args.file)
    except (AnchorError, OSError) as exc:
        print(f"ledger anchor-key create: {exc}", file=sys.stderr)
        return 2
    print(f"wrote an Ed25519 private key to {args.file} (mode 0600): keep it off the database host's backups;"
          " give auditors its public key:")
    print(public, end="")
    return 0


async def _keys(args: argparse.Namespace) -> int:
    from ledger.bootstrap import build
    from ledger.keys import KeyNameError, Role, check_name, create_key, list_keys, revoke_key, rotate_key

    if args.action == "create":
        try:
            check_name(args.name)  # before the database starts: a typo costs nothing
        except KeyNameError as exc:
            print(f"ledger keys create: {exc}", file=sys.stderr)
            return 2
    container = await build(_settings())
    try:
        if args.action == "create":
            key, token = await create_key(container.pool, args.name, Role(args.role))
            print(f"created {key.role.value} key {key.name!r} ({key.key_id}); it is shown only once:")
            print(token)
        elif args.action == "rotate":
            old, key, token = await rotate_key(container.pool, args.name)
            print(f"revoked {old.key_id} and created {key.role.value} key {key.name!r} ({key.key_id});"
                  " it is shown only once:")
            print(token)
        elif args.action == "list":
            for key in await list_keys(container.pool):
                if key.replaced_by:
                    state = f"rotated {key.revoked_at:%Y-%m-%d} to {key.replaced_by}"
                else:
                    state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
                print(f"{key.key_id}  {key.name:<24} {key.role.value:<8} {state}")
        elif not await revoke_key(container.pool, args.name):
            raise KeyNameError(f"no active key named {args.name!r}; `ledger keys list` shows the keys")
        else:
            print(f"revoked {args.name!r}")
    except KeyNameError as exc:
        print(f"ledger keys {args.action}: {exc}", file=sys.stderr)
        return 2
    finally:
        await container.close()
    return 0


async def _consume(args: argparse.Namespace) -> int:
    import signal

    from ledger.bootstrap import build
    from ledger.ingest.consumer import consumer_task

    settings = _settings()
    if not settings.kafka_bootstrap_servers:
        print("set LEDGER_KAFKA_BOOTSTRAP_SERVERS to consume", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    container = await build(settings)
    stop_metrics = None
    try:
        if settings.consumer_metrics_port is not None:
            from ledger.ingest.metrics import serve_metrics

            try:
                stop_metrics = serve_metrics(lambda: container.extras.get("kafka_status"),  # type: ignore[arg-type,return-value]
                                             settings.host, settings.consumer_metrics_port)
            except OSError as exc:
                print(f"cannot serve consumer metrics on {settings.host}:{settings.consumer_metrics_port}"
                      f" (LEDGER_HOST, LEDGER_CONSUMER_METRICS_PORT): {exc}", file=sys.stderr)
                return 2
        from ledger.supervisor import supervise_until

        await supervise_until(stop, _tasks(container, consumer=functools.partial(consumer_task, container)))
    finally:
        if stop_metrics is not None:
            stop_metrics()
        await container.close(stop_embedded=True)
    return 0


async def _demo(args: argparse.Namespace) -> int:
    import time
    from datetime import UTC, datetime

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from ledger.bootstrap import build
    from ledger.demo import load_demo

    until = args.until or datetime.now(UTC).date()
    container = await build(_settings())
    try:
        started = time.perf_counter()
        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn()) as progress:
            task = progress.add_task("loading the demo programme", total=None)
            outcome = await load_demo(container.ledger, container.rules, members=args.members, seed=args.seed,
                                      until=until,
                                      progress=lambda done, total: progress.update(task, completed=done, total=total))
        await container.project()
        elapsed = time.perf_counter() - started
        if outcome.applied == 0 and outcome.duplicates:
            print(f"the demo programme of seed {args.seed} is loaded already ({outcome.duplicates} commands)")
            return 0
        print(f"{outcome.members} members, {outcome.commands} commands from {outcome.first_at:%Y-%m-%d}"
              f" to {outcome.last_at:%Y-%m-%d}, {sum(outcome.events.values())} events in {elapsed:.1f} s")
        print("  events: " + ", ".join(f"{name} {n}" for name, n in outcome.events.most_common()))
        print("  booking currencies: " + ", ".join(f"{c} {n}" for c, n in outcome.currencies.most_common()))
        if outcome.rejected or outcome.duplicates:
            print(f"  {outcome.duplicates} were loaded before, {outcome.rejected} refused")
        member = await container.pool.fetchval("SELECT member_id FROM balances ORDER BY available DESC LIMIT 1")
        print(f"try: ledger serve, then GET /v1/members/{member}/balance (or /tier, /history, /expiry-schedule)")
    finally:
        await container.close()
    return 0


async def _kafka_init(args: argparse.Namespace) -> int:
    from ledger.ingest.topics import ensure_topics

    settings = _settings()
    if not settings.kafka_bootstrap_servers:
        print("ledger kafka init: set LEDGER_KAFKA_BOOTSTRAP_SERVERS to the broker(s), e.g. 127.0.0.1:9092",
              file=sys.stderr)
        return 2
    try:
        topics = await ensure_topics(settings)
    except Exception as exc:  # unreachable broker, refused creation: one line, not a traceback
        print(f"ledger kafka init: could not prepare the topics on {settings.kafka_bootstrap_servers}:"
              f" {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    for topic in topics:
        print(f"{'created' if topic.created else 'exists ':<8} {topic.name} ({topic.partitions} partitions)")
    return 0


async def _rejected(args: argparse.Namespace) -> int:
    from ledger.bootstrap import build
    from ledger.ingest.rejected import list_rejected, retry_rejected

    settings = _settings()
    container = await build(settings)
    try:
        if args.action == "list":
            for row in await list_rejected(container.pool, limit=args.limit, pending_only=args.pending):
                where = f"{row.topic}[{row.partition}]@{row.offset}" if row.topic else row.source
                state = f"retried {row.retried_at:%Y-%m-%d %H:%M}" if row.retried_at else "pending"
                print(f"{row.id:>8}  {row.rejected_at:%Y-%m-%d %H:%M:%S}  {where:<40} {state:<24} {row.reason}")
            return 0
        outcome = await retry_rejected(container.ledger, container.pool, bytes_max=settings.kafka_message_bytes_max,
                                       ids=None if args.all else [args.id])
        if not args.all and outcome.applied == outcome.rejected == 0:
            print(f"ledger rejected retry: no pending rejected message has the id {args.id}"
                  " (`ledger rejected list --pending` shows them)", file=sys.stderr)
            return 2
        print(f"{outcome.applied} applied, {outcome.rejected} still rejected")
        return 0 if outcome.rejected == 0 else 1
    finally:
        await container.close()


def _serve(args: argparse.Namespace) -> int:
    from ledger.serve import serve

    return serve(_settings(), host=args.host, port=args.port, workers=args.workers,
                 projections_process=args.projections_process)


def _date(text: str):  # type: ignore[no-untyped-def]
    from datetime import date

    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ledger", description="Event-sourced travel loyalty points ledger.")
    sub = p.add_subparsers(dest="command", required=True)
    settings_help = "settings come from LEDGER_* environment variables (see the README)"
    serve = sub.add_parser("serve", help="run the HTTP API with projections, expiry and hold expiry", description=settings_help)
    serve.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="listen port (default 8000)")
    serve.add_argument("--workers", type=int, default=None, choices=range(1, 33), metavar="1..32",
                       help="processes answering HTTP on the port (default 1, LEDGER_SERVE_WORKERS); the first runs"
                            " the schedulers and restarts the others")
    serve.add_argument("--projections-process", action=argparse.BooleanOptionalAction, default=None,
                       help="run the projection groups in a process of their own (the default,"
                            " LEDGER_SERVE_PROJECTIONS_PROCESS), or on the loop that answers HTTP")
    serve.set_defaults(func=_serve, sync=True)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=_migrate)
    sub.add_parser("consume", help="consume booking events from Kafka until SIGTERM/SIGINT",
                   description=settings_help).set_defaults(func=_consume)
    demo = sub.add_parser("demo", help="load a realistic demo programme (two years of members' activity)",
                          description=settings_help)
    demo.add_argument("--members", type=int, default=500, choices=range(1, 100_001), metavar="1..100000",
                      help="how many members (default 500)")
    demo.add_argument("--seed", type=int, default=1, help="the same seed and end date give the same programme")
    demo.add_argument("--until", type=_date, default=None, help="last day of the history, YYYY-MM-DD (default today)")
    demo.set_defaults(func=_demo)
    kafka = sub.add_parser("kafka", help="Kafka set-up").add_subparsers(dest="action", required=True)
    kafka.add_parser("init", help="create the booking-events and dead-letter topics (those missing)",
                     description=settings_help).set_defaults(func=_kafka_init)
    rejected = sub.add_parser("rejected", help="messages the consumer rejected").add_subparsers(
        dest="action", required=True)
    rejected_list = rejected.add_parser("list", help="newest first")
    rejected_list.add_argument("--limit", type=int, default=50, choices=range(1, 501), metavar="1..500")
    rejected_list.add_argument("--pending", action="store_true", help="only those not yet retried successfully")
    rejected_list.set_defaults(func=_rejected)
    retry = rejected.add_parser("retry", help="re-submit rejected messages after a fix")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", type=int, help="one rejected message")
    which.add_argument("--all", action="store_true", help="every pending one, oldest first")
    retry.set_defaults(func=_rejected)
    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="create a key and print it once")
    create.add_argument("name")
    create.add_argument("--role", required=True, choices=["ingest", "app", "support", "auditor", "admin"])
    create.set_defaults(func=_keys)
    keys.add_parser("list", help="list keys (never their secrets)").set_defaults(func=_keys)
    revoke = keys.add_parser("revoke", help="revoke a key by name or id")
    revoke.add_argument("name")
    revoke.set_defaults(func=_keys)
    rotate = keys.add_parser("rotate", help="issue a new key of the same name and role, revoke the old one")
    rotate.add_argument("name")
    rotate.set_defaults(func=_keys)
    proj = sub.add_parser("projections", help="read models").add_subparsers(dest="action", required=True)
    proj.add_parser("rebuild", help="replay all events into fresh read models").set_defaults(func=_rebuild)
    run = proj.add_parser("run", help="project until caught up, then exit (or keep following)")
    run.add_argument("--follow", action="store_true", help="keep projecting new events until SIGTERM/SIGINT")
    run.add_argument("--group", choices=("all", "members", "reports"), default="all",
                     help="with --follow: which projection groups this process runs (default: both)")
    run.set_defaults(func=_project)
    sub.add_parser("expire", help="expire lots past their date, once").set_defaults(func=_expire)
    holds = sub.add_parser("holds", help="holds on points").add_subparsers(dest="action", required=True)
    holds.add_parser("expire", help="release the holds past their time, once").set_defaults(func=_expire_holds)
    tiers = sub.add_parser("tiers", help="tier policies").add_subparsers(dest="action", required=True)
    tiers.add_parser("review", help="downgrades due at evaluation dates and warnings before them, once").set_defaults(
        func=_review_tiers)
    anniversaries = sub.add_parser("anniversaries", help="anniversary bonuses").add_subparsers(dest="action",
                                                                                               required=True)
    anniversaries.add_parser("grant", help="grant the anniversary bonuses due, once").set_defaults(
        func=_grant_anniversaries)
    verify = sub.add_parser("verify", help="check a member's hash chain, or every stream's against an anchor")
    verify.add_argument("member_id", nargs="?", default=None, metavar="MEMBER")
    verify.add_argument("--all", action="store_true", help="every stream's chain")
    verify.add_argument("--anchor", type=Path, help="with --all: and the heads this anchor signed")
    verify.add_argument("--public-key", type=Path, help="the PEM public key the anchor must be signed by")
    verify.set_defaults(func=_verify)
    anchor = sub.add_parser("anchor", help="sign every stream's head and the position into an anchor file",
                            description=settings_help)
    anchor.add_argument("--key", type=Path, default=None, help="Ed25519 private key (default LEDGER_ANCHOR_KEY_FILE)")
    anchor.add_argument("--out", type=Path, required=True, help="the anchor (its heads go to OUT.heads.gz)")
    anchor.add_argument("--kafka-topic", default=None, help="also send the anchor to this topic")
    anchor.set_defaults(func=_anchor)
    anchor_key = sub.add_parser("anchor-key", help="the anchors' signing key").add_subparsers(
        dest="action", required=True)
    create_anchor_key = anchor_key.add_parser("create", help="write a new Ed25519 private key (mode 0600)")
    create_anchor_key.add_argument("file", type=Path)
    create_anchor_key.set_defaults(func=_anchor_key, sync=True)
    return p


def main(argv: list[str] | None = None) -> int:
    from ledger import logs

    logs.configure()
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    args = parser().parse_args(argv)
    try:
        if getattr(args, "sync", False):
            return int(args.func(args))
        return event_loop.run(args.func(args))
    except SettingsError as exc:
        for line in str(exc).splitlines():
            print(f"ledger {args.command}: {line}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"ledger {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # A Ctrl-C is a request, not a failure: one line, not a traceback.
        print(f"ledger {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
