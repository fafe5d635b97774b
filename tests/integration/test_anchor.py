"""Anchored hash chains on a real PostgreSQL: a rewrite by the database superuser that
re-hashes the chain passes `verify_chain`, and is caught by the anchor; a tampered
anchor is refused. Through the command line, as an auditor runs it."""

from __future__ import annotations

import asyncio
import gzip
import stat
from datetime import timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest

from ledger.anchor import create_key, heads_path
from ledger.bootstrap import Container
from ledger.cli import main
from ledger.store.events import GENESIS_HASH, canonical_bytes, chain_hash

from .helpers import T0, earn, redeem


@pytest.fixture
def cli(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """`ledger ARGS...` on the test's database: (exit code, stdout, stderr)."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", db_url)
    monkeypatch.setenv("LEDGER_DATA_DIR", str(tmp_path / "data"))

    async def run(*args: str | Path) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(main, [str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


async def _ledger(container: Container) -> None:
    for m in range(5):
        for b in range(3):
            await container.ledger.handle(earn(f"M-{m}", f"B{b}", f"{100 + 10 * b}.00", at=T0 + timedelta(days=b)))
    await container.ledger.handle(redeem("M-2", 100, "r1", at=T0 + timedelta(days=5)))


async def _rewrite_as_superuser(url: str, stream_id: str, version: int) -> None:
    """What someone with the superuser's password can do: lift the trigger, give the
    member 100,000 more points on one event, and re-hash the stream from there on."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
            rows = await conn.fetch("SELECT stream_version, type, schema_version, data, hash FROM events"
                                    " WHERE stream_id = $1 ORDER BY stream_version", stream_id)
            prev = GENESIS_HASH
            for v, type_name, schema_version, data, hash_ in rows:
                body = orjson.loads(data)
                if v == version:
                    body["points"] += 100_000
                if v >= version:
                    new_hash = chain_hash(prev, stream_id, v, type_name, schema_version, canonical_bytes(body))
                    await conn.execute("UPDATE events SET data = $3::jsonb, hash = $4 WHERE stream_id = $1"
                                       " AND stream_version = $2", stream_id, v, canonical_bytes(body).decode(),
                                       new_hash)
                    hash_ = new_hash
                prev = bytes(hash_)
            await conn.execute("ALTER TABLE events ENABLE TRIGGER events_no_update_delete")
    finally:
        await conn.close()


async def test_a_superuser_rewrite_passes_the_chain_and_fails_the_anchor(
    container: Container, db_url: str, tmp_path: Path, cli
) -> None:
    await _ledger(container)
    key, public = tmp_path / "keys" / "anchor.pem", tmp_path / "anchor.pub.pem"
    key.parent.mkdir()
    code, out, _ = await cli("anchor-key", "create", key)
    assert code == 0 and stat.S_IMODE(key.stat().st_mode) == 0o600
    public.write_text(out[out.index("-----BEGIN PUBLIC KEY-----"):])
    assert (await cli("anchor-key", "create", key))[0] == 2  # never over an existing key

    anchor = tmp_path / "anchors" / "a1.json"
    anchor.parent.mkdir()
    code, out, err = await cli("anchor", "--key", key, "--out", anchor)
    assert code == 0, err
    assert "anchored 5 streams at position 16" in out
    with gzip.open(heads_path(anchor)) as f:
        assert [orjson.loads(line)[:2] for line in f] == [["M-0", 3], ["M-1", 3], ["M-2", 4], ["M-3", 3], ["M-4", 3]]

    # Events added since the anchor, to an anchored stream and a new one, change nothing.
    await container.ledger.handle(earn("M-1", "B9", at=T0 + timedelta(days=9)))
    await container.ledger.handle(earn("M-new", "B1", at=T0 + timedelta(days=9)))
    code, out, err = await cli("verify", "--all", "--anchor", anchor, "--public-key", public)
    assert code == 0, err
    assert "18 events in 6 streams, hash chains intact; 5 streams match the anchor of position 16" in out

    await _rewrite_as_superuser(db_url, "M-3", 2)
    code, out, _ = await cli("verify", "M-3")  # the chain alone does not see it
    assert code == 0 and "hash chain intact" in out
    code, out, err = await cli("verify", "--all", "--anchor", anchor, "--public-key", public)
    assert code == 1
    assert "M-3 at version 3: not the anchored hash: the stream was rewritten" in err
    assert "1 breaks in 6 streams" in err and "M-0" not in err and "M-1" not in err

    # The chains of other streams, broken the plain way (no re-hash), are named too.
    conn = await asyncpg.connect(db_url)
    await conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
    await conn.execute("UPDATE events SET data = jsonb_set(data, '{points}', '1') WHERE stream_id = 'M-new'")
    await conn.execute("ALTER TABLE events ENABLE TRIGGER events_no_update_delete")
    await conn.close()
    code, _, err = await cli("verify", "--all")
    assert code == 1 and "M-new at version 1: hash chain broken" in err and "M-3" not in err


async def test_a_tampered_anchor_or_the_wrong_key_is_refused(container: Container, tmp_path: Path, cli) -> None:
    await _ledger(container)
    key, other = tmp_path / "anchor.pem", tmp_path / "other.pem"
    create_key(key)
    other_public = tmp_path / "other.pub.pem"
    other_public.write_text(create_key(other))
    anchor = tmp_path / "a.json"
    assert (await cli("anchor", "--out", anchor, "--key", key))[0] == 0
    assert (await cli("verify", "--all", "--anchor", anchor))[0] == 0
    assert (await cli("verify", "--all", "--anchor", anchor, "--public-key", other_public))[0] == 1

    signed = anchor.read_bytes()
    body = orjson.loads(signed)
    anchor.write_bytes(orjson.dumps({**body, "position": body["position"] - 1}))  # an earlier moment
    code, _, err = await cli("verify", "--all", "--anchor", anchor)
    assert code == 1 and "signature that does not verify" in err

    anchor.write_bytes(signed)
    heads = heads_path(anchor)
    lines = gzip.decompress(heads.read_bytes()).splitlines(keepends=True)
    forged = orjson.loads(lines[0])
    heads.write_bytes(gzip.compress(b"".join([orjson.dumps([forged[0], forged[1], "00" * 32]) + b"\n", *lines[1:]])))
    code, _, err = await cli("verify", "--all", "--anchor", anchor)
    assert code == 1 and "not the ones the anchor signed" in err

    key.chmod(0o644)
    code, _, err = await cli("anchor", "--out", tmp_path / "b.json", "--key", key)
    assert code == 2 and "chmod 600" in err
    assert (await cli("verify", "M-0", "--all"))[0] == 2
    assert (await cli("verify", "M-0", "--anchor", anchor))[0] == 2


@pytest.mark.kafka
async def test_an_anchor_sent_to_kafka_is_the_signed_file(
    container: Container, tmp_path: Path, cli, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    await _ledger(container)
    topic = f"anchors-{tmp_path.name}"[:200]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    key, anchor = tmp_path / "anchor.pem", tmp_path / "a.json"
    create_key(key)
    assert (await cli("anchor", "--key", key, "--out", anchor, "--kafka-topic", topic))[0] == 2  # no broker set
    monkeypatch.setenv("LEDGER_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    code, out, err = await cli("anchor", "--key", key, "--out", anchor, "--kafka-topic", topic)
    assert code == 0 and f"sent to {topic}" in out, err
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, request_timeout_ms=10_000)
    await consumer.start()
    try:
        async with asyncio.timeout(15):
            message = await consumer.getone()
    finally:
        await consumer.stop()
    assert message.key == b"anchor" and message.value == anchor.read_bytes()
