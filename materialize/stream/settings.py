"""Settings of the stream worker (prefix ``CHURN_STREAM_``)."""

from __future__ import annotations

import os
import socket

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class StreamSettings(BaseSettings):
    """The activity stream and how ``churn stream`` consumes it (prefix ``CHURN_STREAM_``).

    The stream lives on the online store's Redis (``CHURN_REDIS_URL``).
    """

    model_config = SettingsConfigDict(env_prefix="CHURN_STREAM_", extra="ignore")

    key: str = Field(default="churn:events", description="Redis Stream of activity events.")
    dead_letter_key: str = Field(
        default="churn:events:dead",
        description="Stream receiving malformed events, each with its reason.",
    )
    group: str = Field(default="churn-stream", description="Consumer group of the workers.")
    consumer: str = Field(
        default_factory=_default_consumer,
        description="This worker's name in the group (default host-pid). Give a restarted "
        "worker its old name to take over its unacknowledged entries at once.",
    )
    push_source: str = Field(
        default="user_activity_push", description="Feast push source the worker writes."
    )
    batch_size: int = Field(
        default=5000, ge=1, description="Entries read (at most) per XREADGROUP: one batch."
    )
    block_ms: int = Field(default=20, ge=1, description="Wait for new entries, milliseconds.")
    allowed_lateness_s: float = Field(
        default=300.0,
        ge=0,
        description="An event older than the user's newest by more is counted, logged, dropped.",
    )
    flush_interval_s: float = Field(
        default=2.0,
        gt=0,
        description="The outbox is written as an offline Parquet part this often (seconds).",
    )
    flush_rows: int = Field(
        default=100_000,
        ge=1,
        description="... or as soon as this many offline rows wait in the outbox.",
    )
    state_cache_users: int = Field(
        default=200_000,
        ge=0,
        description="Users whose state the worker keeps in memory between batches (about "
        "2 KB each): their next batch reads nothing. Another writer of a user is detected "
        "at commit, and the batch recomputed from Redis.",
    )
    claim_idle_ms: int = Field(
        default=30_000,
        ge=0,
        description="Entries another consumer left unacknowledged this long are taken over.",
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        description="Port of the worker's Prometheus /metrics, with the histogram "
        "churn_stream_freshness_seconds (0: none).",
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="Interface the worker's /metrics listens on."
    )
