"""All settings, in one class, read from LEDGER_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from platformdirs import user_data_dir
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEDGER_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    database_url: str | None = Field(
        None, description="PostgreSQL 14+ URL; unset starts an embedded PostgreSQL under data_dir."
    )
    data_dir: Path = Field(Path(user_data_dir("travel-points-ledger")), description="Embedded PostgreSQL home.")
    embedded_port: int = Field(0, ge=0, le=65535, description="Embedded PostgreSQL port; 0 picks a free one once.")
    database_name: str = Field("ledger", description="Database created on the embedded server.")
    db_pool_size_max: int = Field(10, ge=2, le=100)
    rules_file: Path | None = Field(
        None, description="Programme rules JSON published as the first version on first start; unset: the built-in"
                          " travel rules. Later versions are published through the API.")
    rules_refresh_s: float = Field(
        2.0, gt=0, le=5, description="How often every process looks for newly published rules versions and exchange"
                                     " rates: the longest a process decides under the previous ones.")

    master_key: SecretStr | None = Field(
        None, description="32 random bytes in base64: wraps each member's data key and keys the email index. Unset:"
                          " in development, a key generated on first start and kept in data_dir/master.key (mode"
                          " 0600); in production, start-up is refused. Losing it makes every profile unreadable.")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    request_body_bytes_max: int = Field(65_536, ge=1024, le=10_485_760)
    serve_workers: int = Field(
        1, ge=1, le=32,
        description="Processes `ledger serve` answers HTTP from, on one listening socket (`--workers`); the first"
                    " also runs the schedulers, starts the others and restarts any that exits.")
    serve_projections_process: bool = Field(
        True, description="`ledger serve` runs the projection groups in a process of their own, which it starts and"
                          " restarts (`--projections-process`), rather than in the process that answers HTTP"
                          " (`--no-projections-process`): their pages then take nothing from the HTTP loop, and"
                          " they have the second core.")
    read_wait_s_max: float = Field(5.0, gt=0, le=30, description="How long a read with min_position waits.")

    projection_page_size: int = Field(2_000, ge=1, le=50_000)
    projection_idle_ms: int = Field(50, ge=1, le=10_000)
    projection_known_rows_max: int = Field(
        100_000, ge=0, le=10_000_000,
        description="Rows per read model whose stored values the projection runner remembers, to write nothing for a"
                    " change that would leave them as they are (a member's anniversary start, its first event).")
    projection_reports_page_size: int = Field(
        2_000, ge=1, le=50_000, description="Events per page of the reports' and segments' projection runner.")
    projection_reports_idle_ms: int = Field(
        500, ge=1, le=60_000, description="How long the reports' runner waits, once caught up, before it looks again.")
    projection_reports_defer_max_s: float = Field(
        10.0, ge=0, le=3_600,
        description="While the member read models have a backlog, the reports' runner waits until it has been"
                    " behind this long, then catches up (0: never waits); under a steady load it takes each full"
                    " page as it comes.")
    expiry_interval_s: float = Field(60.0, gt=0, le=86_400)
    expiry_batch_members_max: int = Field(500, ge=1, le=10_000)
    hold_expiry_interval_s: float = Field(
        30.0, gt=0, le=86_400,
        description="How often holds past their time are released (their points come back to available); a hold is"
                    " over at its time whatever this is, so it only bounds how late its points come back.")
    tier_review_interval_s: float = Field(
        3_600.0, gt=0, le=86_400,
        description="How often the tier scheduler reviews every member above the lowest tier (downgrades at"
                    " evaluation dates, warnings before them); a downgrade is at most this late.")
    anniversary_interval_s: float = Field(
        3_600.0, gt=0, le=86_400,
        description="How often the anniversary bonuses due are granted (each dated at its anniversary instant, so"
                    " this only bounds how late one is credited).")
    simulations_running_max: int = Field(
        1, ge=1, le=8,
        description="What-if simulations running at once over every process; the others wait, queued, in the order"
                    " they were asked for.")
    simulations_queued_max: int = Field(
        100, ge=1, le=10_000,
        description="Simulations waiting to run; one more is refused (429) until one has started.")
    simulation_page_events: int = Field(
        5_000, ge=10, le=50_000,
        description="Positions of the event log a simulation reads at a time: what it holds in memory, and how long it"
                    " has the event loop between two yields.")
    simulation_poll_s: float = Field(
        2.0, gt=0, le=3_600,
        description="How often a process looks for queued simulations (one asked for in the same process starts at"
                    " once) and for running ones whose process is gone.")
    segments_top_cache_s: float = Field(
        60.0, ge=0, le=3_600,
        description="How long `GET /v1/members/{id}/segment` keeps the top share's edge (finding it sums every"
                    " member's spend); 0: found for each read.")
    state_cache_members_max: int = Field(200_000, ge=0, le=10_000_000)
    command_attempts_max: int = Field(100, ge=1, le=1_000)
    write_batch_commands_max: int = Field(
        500, ge=1, le=10_000,
        description="Single writes (HTTP) that arrive while a transaction is in flight share the next one, up to"
                    " this many.")

    anchor_key_file: Path | None = Field(
        None, description="Ed25519 private key (PEM, mode 0600, kept outside the database: `ledger anchor-key create`)"
                          " that signs the anchors of the hash chains; unset: `ledger serve` anchors nothing.")
    anchor_interval_s: float = Field(
        3_600.0, ge=1, le=604_800, description="How often `ledger serve` anchors the chains (when events were added).")
    anchor_dir: Path | None = Field(None, description="Where `ledger serve` writes anchors; unset: data_dir/anchors.")
    anchor_files_max: int = Field(168, ge=1, le=100_000,
                                  description="Anchors `ledger serve` keeps in anchor_dir, the oldest removed first.")
    anchor_kafka_topic: str | None = Field(
        None, min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$",
        description="Also send each anchor `ledger serve` writes to this Kafka topic.")

    kafka_bootstrap_servers: str | None = Field(None, description="Set to consume booking events from Kafka.")
    kafka_topic: str = "travel.booking-events"
    kafka_dlq_topic: str = "travel.booking-events.dlq"
    kafka_group_id: str = "travel-points-ledger"
    kafka_topic_partitions: int = Field(
        4, ge=1, le=1_000,
        description="Partitions of the topics `ledger kafka init` creates; consumer processes beyond this stay idle.")
    kafka_replication_factor: int = Field(1, ge=1, le=16, description="Replicas of the topics it creates.")
    kafka_create_topics: bool | None = Field(
        None, description="Whether `ledger serve` and `ledger consume` create missing topics at start; unset: yes in"
                          " development, no in production (where `ledger kafka init` or the platform creates them).")
    kafka_batch_messages_max: int = Field(500, ge=1, le=10_000)
    kafka_batch_ms_max: int = Field(100, ge=1, le=10_000)
    kafka_apply_lanes: int = Field(
        2, ge=1, le=16,
        description="A batch's partitions are applied in this many transactions at once (partition modulo lanes):"
                    " one decides while another's transaction is in the database.")
    kafka_message_bytes_max: int = Field(65_536, ge=1024, le=1_048_576)
    kafka_batch_bytes_max: int = Field(8_388_608, ge=1_048_576, le=268_435_456,
                                       description="Bytes of message values held in one batch.")
    kafka_fetch_bytes_max: int = Field(8_388_608, ge=1_048_576, le=268_435_456,
                                       description="Bytes one fetch from the broker may return (all partitions).")
    kafka_session_timeout_ms: int = Field(10_000, ge=6_000, le=300_000,
                                          description="A consumer silent this long leaves the group.")
    kafka_max_poll_interval_ms: int = Field(60_000, ge=10_000, le=3_600_000,
                                            description="Longest pause between polls before the group moves on.")
    kafka_request_timeout_ms: int = Field(30_000, ge=1_000, le=300_000)
    kafka_lag_log_interval_s: float = Field(30.0, gt=0, le=3_600, description="How often consumer lag is logged.")
    kafka_snapshot_interval_s: float = Field(
        300.0, gt=0, le=86_400,
        description="How often the consumer saves the member states changed since, so that a consumer that was"
                    " killed restarts from them rather than from each member's whole history.")
    consumer_metrics_port: int | None = Field(
        None, ge=1, le=65535,
        description="`ledger consume` serves Prometheus metrics (lag per partition, messages by outcome) on"
                    " LEDGER_HOST at this port; unset: not served (`ledger serve` has them on /metrics).")

    @field_validator("master_key")
    @classmethod
    def _master_key_is_32_bytes(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            from ledger.crypto import parse_master_key

            parse_master_key(value.get_secret_value())  # a MasterKeyError (a ValueError) names what is wrong
        return value

    @model_validator(mode="after")
    def _topic_creation_by_environment(self) -> Settings:
        if self.kafka_create_topics is None:
            self.kafka_create_topics = self.environment == "development"
        return self

    @model_validator(mode="after")
    def _anchor_topic_needs_kafka(self) -> Settings:
        if self.anchor_kafka_topic and not self.kafka_bootstrap_servers:
            raise ValueError("LEDGER_ANCHOR_KAFKA_TOPIC needs LEDGER_KAFKA_BOOTSTRAP_SERVERS")
        return self

    @model_validator(mode="after")
    def _production_needs_a_real_database(self) -> Settings:
        if self.environment == "production" and not self.database_url:
            raise ValueError("LEDGER_DATABASE_URL is required when LEDGER_ENVIRONMENT=production")
        return self
