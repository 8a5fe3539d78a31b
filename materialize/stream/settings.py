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
    batch_size: int = Field(default=5000, ge=1, description="Entries read per XREADGROUP.")
    block_ms: int = Field(default=20, ge=1, description="Wait for new entries, milliseconds.")
    allowed_lateness_s: float = Field(
        default=300.0,
        ge=0,
        description="An event older than the user's newest by more is counted, logged, dropped.",
    )
    flush_interval_s: float = Field(
        default=2.0,
        gt=0,
        description="Offline Parquet parts are written (and entries acknowledged) this often.",
    )
    claim_idle_ms: int = Field(
        default=30_000,
        ge=0,
        description="Entries another consumer left unacknowledged this long are taken over.",
    )
    metrics_port: int = Field(
        default=0, ge=0, description="Port of the worker's Prometheus /metrics (0: none)."
    )
