"""One settings object per process, read from QALOOP_* environment variables (or a .env file)
and overridden by CLI flags in the entry point. Nothing below the entry point reads the
environment. Every field is documented in the README's configuration table."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QALOOP_", extra="ignore", frozen=True)

    # Storage and bus
    db: str = Field("sqlite:///qaloop.db", description="Storage URL: sqlite:///path or postgresql://")
    bus: Literal["memory", "kafka"] = Field("memory", description="Message bus")
    kafka_bootstrap: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers")
    topic_prefix: str = Field("qaloop", description="Prefix of every topic name")
    kafka_partitions: int = Field(6, ge=1, description="Partitions of the hot topics")
    kafka_session_timeout_ms: int = Field(
        10000, ge=6000, description="How long a dead consumer keeps its partitions"
    )
    stale_after_s: float = Field(
        60.0, gt=0, description="Re-publish questions queued this long with no progress"
    )

    # Cache
    cache_policy: Literal["lru", "lfu", "fifo"] = Field("lru", description="Cache eviction policy")
    cache_size: int = Field(1500, ge=1, description="Cache capacity (entries)")
    cache_ttl_s: float = Field(0.0, ge=0, description="Cache TTL in seconds; 0 = never expires")

    # Quality gate
    scorer: str = Field("jaccard", description="Scorer name (qaloop calibrate lists them)")
    threshold: float = Field(0.5, ge=0, le=1, description="Validation threshold on the score")
    max_attempts: int = Field(3, ge=1, description="Generation attempts before giving up")

    # LLM
    llm: Literal["simulated", "replay", "gemini", "openai"] = Field(
        "simulated", description="LLM provider"
    )
    llm_concurrency: int = Field(64, ge=1, description="LLM calls in flight per worker")
    llm_timeout_s: float = Field(60.0, gt=0, description="Timeout of one LLM call")
    llm_api_key: SecretStr | None = Field(None, description="Provider API key (never logged)")
    llm_api_key_file: str | None = Field(None, description="File holding the API key")
    sim_seed: int = Field(42, description="Seed of the simulated LLM and backoff jitter")
    sim_latency_ms: float = Field(0.0, ge=0, description="Simulated LLM median latency (ms)")
    sim_overload_rate: float = Field(0.0, ge=0, le=1, description="Simulated 503 rate per call")
    sim_quota_rate: float = Field(0.0, ge=0, le=1, description="Simulated 429 rate per call")
    sim_quota_retry_after_s: float = Field(1.0, ge=0, description="Retry-After of simulated 429s")
    sim_permanent_rate: float = Field(0.0, ge=0, le=1, description="Simulated 400 rate per call")

    # Retry policy
    overload_tries: int = Field(4, ge=1, description="In-process tries on 503/5xx before parking")
    backoff_base_s: float = Field(0.25, ge=0, description="Backoff base (full jitter)")
    backoff_cap_s: float = Field(8.0, ge=0, description="Backoff cap; also the overload park time")
    quota_default_delay_s: float = Field(30.0, ge=0, description="Park time of a 429 without delay")
    quota_day_delay_s: float = Field(3600.0, ge=0, description="Park time of a per-day 429")
    max_parks: int = Field(6, ge=0, description="Parks allowed per question before giving up")

    # Gateway
    host: str = Field("127.0.0.1", description="Gateway bind address")
    port: int = Field(8000, ge=0, le=65535, description="Gateway port")
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="Largest accepted request body")
    max_question_chars: int = Field(4000, ge=1, description="Longest accepted question")
    max_reference_chars: int = Field(20000, ge=1, description="Longest accepted reference answer")
    max_wait_s: float = Field(30.0, ge=0, description="Longest ?wait= long-poll")

    log_level: str = Field("INFO", description="Logging level")
    log_json: bool = Field(False, description="Log one JSON object per line")

    def api_key(self) -> str | None:
        if self.llm_api_key is not None:
            return self.llm_api_key.get_secret_value()
        if self.llm_api_key_file:
            with open(self.llm_api_key_file, encoding="utf-8") as fh:
                return fh.read().strip() or None
        return None
