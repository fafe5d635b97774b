"""The Kafka topics the ledger reads and writes: created by `ledger kafka init`, or by
`ledger serve` and `ledger consume` at start when LEDGER_KAFKA_CREATE_TOPICS allows.

A broker run as production brokers are (and as scripts/kafka.sh runs one) does not
create topics on first use, and a consumer subscribed to a topic that does not exist
waits without a word. So the consumer makes sure of its topics before it joins the
group: it creates them, or it says once, as an error, which topic is missing and
which command creates it, and waits for it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

from ledger.settings import Settings

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36  # Kafka's error code: another process created it first
ADMIN_TIMEOUT_MS = 10_000
LEADERS_WAIT_S_MAX = 30.0
MISSING_POLL_S = 5.0
RETRY_S_MAX = 5.0  # as the consumer's own back-off: a broker that comes back is found within 5 s
INIT_COMMAND = "ledger kafka init"


@dataclass(frozen=True, slots=True)
class TopicState:
    name: str
    partitions: int
    created: bool  # by this call; False: it existed already


def topic_names(settings: Settings) -> list[str]:
    return [settings.kafka_topic, settings.kafka_dlq_topic]


def _admin(settings: Settings) -> AIOKafkaAdminClient:
    assert settings.kafka_bootstrap_servers, "needs LEDGER_KAFKA_BOOTSTRAP_SERVERS"
    return AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, client_id="ledger-admin",
                               request_timeout_ms=ADMIN_TIMEOUT_MS)


async def missing_topics(settings: Settings) -> list[str]:
    admin = _admin(settings)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    return [name for name in topic_names(settings) if name not in existing]


async def ensure_topics(settings: Settings) -> list[TopicState]:
    """Create the inbound and dead-letter topics that do not exist yet, with
    LEDGER_KAFKA_TOPIC_PARTITIONS partitions and LEDGER_KAFKA_REPLICATION_FACTOR
    replicas, and return once every partition of both has a leader (so that a first
    produce does not race the broker loading them). Topics that exist are left as
    they are, whatever their partitions: idempotent."""
    names = topic_names(settings)
    admin = _admin(settings)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        new = [NewTopic(name, settings.kafka_topic_partitions, settings.kafka_replication_factor)
               for name in names if name not in existing]
        created: set[str] = set()
        if new:
            response = await admin.create_topics(new, timeout_ms=ADMIN_TIMEOUT_MS)
            for error in response.topic_errors:
                name, code = error[0], error[1]
                if code == 0:
                    created.add(name)
                elif code != TOPIC_ALREADY_EXISTS:
                    message = error[2] if len(error) > 2 and error[2] else ""
                    raise for_code(code)(f"creating topic {name}: {message}".rstrip(": "))
        deadline = time.monotonic() + LEADERS_WAIT_S_MAX
        while True:
            described = {meta["topic"]: meta for meta in await admin.describe_topics(names)}
            if all(described.get(n, {}).get("error_code") == 0 and described[n]["partitions"]
                   and all(p["leader"] >= 0 for p in described[n]["partitions"]) for n in names):
                return [TopicState(n, len(described[n]["partitions"]), n in created) for n in names]
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {names} have no leader for every partition after {LEADERS_WAIT_S_MAX:.0f} s")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def wait_for_topics(settings: Settings, stop: asyncio.Event) -> bool:
    """Before the consumer joins its group: create the topics (when allowed), or wait
    until they exist, saying once which are missing and how to create them. Retries
    while the broker is away. Returns False if `stop` came first."""
    delay, complained = 0.5, False
    while not stop.is_set():
        try:
            if settings.kafka_create_topics:
                for topic in await ensure_topics(settings):
                    if topic.created:
                        log.info("created Kafka topic %s with %d partitions", topic.name, topic.partitions)
                return True
            missing = await missing_topics(settings)
            if not missing:
                return True
            if not complained:
                log.error("Kafka topic%s %s missing on %s and LEDGER_KAFKA_CREATE_TOPICS is off: run `%s`"
                          " (or set LEDGER_KAFKA_CREATE_TOPICS=true); the consumer starts once %s",
                          "s" if len(missing) > 1 else "", " and ".join(missing), settings.kafka_bootstrap_servers,
                          INIT_COMMAND, "they exist" if len(missing) > 1 else "it exists")
                complained = True
            await _sleep_or_stop(stop, MISSING_POLL_S)
        except Exception as exc:  # the broker is unreachable or refuses: try again
            log.warning("preparing Kafka topics on %s failed (%s: %s); retrying in %.0f s",
                        settings.kafka_bootstrap_servers, type(exc).__name__, exc, delay)
            await _sleep_or_stop(stop, delay)
            delay = min(delay * 2, RETRY_S_MAX)
    return False
