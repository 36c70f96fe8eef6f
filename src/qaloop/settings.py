"""One settings object per process, read from QALOOP_* environment variables (or a .env file)
and overridden by CLI flags in the entry point. Nothing below the entry point reads the
environment. Every field is documented in the README's configuration table."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from qaloop.llm.base import DEFAULT_PROMPT_TEMPLATE


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QALOOP_", extra="ignore", frozen=True)

    # Storage and bus
    db: str = Field(
        "sqlite:///qaloop.db", description="Storage URL: sqlite:///path or postgresql://"
    )
    bus: Literal["memory", "kafka"] = Field("memory", description="Message bus")
    kafka_bootstrap: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers")
    topic_prefix: str = Field("qaloop", description="Prefix of every topic name")
    kafka_partitions: int = Field(6, ge=1, description="Partitions of the hot topics")
    kafka_replication_factor: int = Field(
        1, ge=1, description="Replicas of each topic qaloop creates (3 on a 3-broker cluster)"
    )
    kafka_min_insync_replicas: int = Field(
        1,
        ge=1,
        description="min.insync.replicas of the topics qaloop creates: an acks=all write "
        "needs this many replicas (2 with replication factor 3)",
    )
    accept_durability: Literal["auto", "storage", "kafka"] = Field(
        "auto",
        description="What a new question's 202 waits for (docs/distributed.md): `storage`, "
        "the accept's database commit on disk, then the publish; `kafka`, the publish acked by "
        "min.insync.replicas >= 2 brokers (the commit does not wait for the disk: PostgreSQL "
        "synchronous_commit off for that one transaction); `auto`, kafka when "
        "kafka_min_insync_replicas >= 2, else storage. Embedded mode always waits",
    )
    kafka_session_timeout_ms: int = Field(
        10000, ge=6000, description="How long a dead consumer keeps its partitions"
    )
    kafka_producer_config: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Extra librdkafka producer settings (JSON object), over qaloop's own",
    )
    kafka_consumer_config: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Extra librdkafka consumer settings (JSON object), over qaloop's own",
    )
    stale_after_s: float = Field(
        60.0, gt=0, description="Re-publish questions queued this long with no progress"
    )

    # Cache
    cache_policy: Literal["lru", "lfu", "fifo"] = Field("lru", description="Cache eviction policy")
    cache_size: int = Field(1500, ge=1, description="Cache capacity (entries)")
    cache_ttl_s: float = Field(0.0, ge=0, description="Cache TTL in seconds; 0 = never expires")

    # Quality gate
    scorer: str = Field(
        "composite",
        description="Scorer of the plain score path; set explicitly, also the gate's relevance "
        "scorer (unset: the calibrated gate, embedding + question; docs/quality.md)",
    )
    threshold: float = Field(
        0.14,
        ge=0,
        le=1,
        description="Pass threshold on the score (>=); set explicitly, also the gate's "
        "(unset: the calibrated gate's 0.28)",
    )
    gate_unsure_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Gate: scores in [this, threshold) are UNSURE (the cascade's LLM judge "
        "decides); default: the calibrated band's lower edge, at most the threshold",
    )
    gate_max_chars: int = Field(20_000, ge=1, description="Gate: longer answers fail as malformed")
    gate_checks: str = Field(
        "language,contradiction,truncation",
        description="Gate: optional checks on (comma list of language, contradiction, "
        "truncation; empty = none)",
    )
    max_attempts: int = Field(3, ge=1, description="Generation attempts before giving up")
    judge_unsure_band: float = Field(
        0.04,
        ge=0,
        le=1,
        description="Cheap-gate scores within this distance of the threshold are UNSURE and go "
        "to the LLM judge (answers to questions without a reference always do)",
    )
    judge_llm: Literal["same", "simulated", "gemini", "openai"] = Field(
        "same",
        description="Provider of the LLM judge (same: QALOOP_LLM's; replay can't judge, so "
        "with --llm replay `same` means simulated)",
    )
    judge_model: str | None = Field(None, description="Model of the LLM judge (None: llm_model)")
    judge_quota_share: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Share of llm_rpm/tpm/rpd the LLM judge gets (its own limiter key); "
        "generation keeps the rest",
    )
    judge_concurrency: int = Field(16, ge=1, description="LLM-judge calls in flight per judge")
    feedback: bool = Field(
        True, description="Regeneration prompts say why the last attempt was rejected"
    )
    feedback_control_share: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Share of questions regenerated with the plain prompt (the control group "
        "that measures the feedback gain), by a seeded hash of the question id",
    )
    feedback_seed: int = Field(0, description="Seed of the control-group hash")
    attempt_temperatures: list[float] = Field(
        default_factory=list,
        description="Sampling temperature per attempt, e.g. [0.2, 0.7, 1.0] (JSON; the last "
        "value repeats; empty: the provider's default)",
    )
    last_attempt_model: str | None = Field(
        None,
        description="A stronger model for the last attempt (None: the same model); an alias of "
        "QALOOP_LLM_ESCALATION (the primary, then <llm>/<model> on the last attempt): set one",
    )

    # Flink judge (`qaloop flink-job`, `flink run -pym qaloop.flink.job`; docs/flink.md). The
    # gate itself (scorer, threshold, max attempts) is the plain judge's settings above.
    flink_group: str | None = Field(
        None, description="Consumer group the job commits (default <prefix>.judge, as the judge)"
    )
    flink_delivery: Literal["exactly-once", "at-least-once"] = Field(
        "exactly-once", description="Guarantee of the job's Kafka sinks"
    )
    flink_checkpoint_interval_ms: int = Field(
        200, ge=100, description="Checkpoint interval: with exactly-once, the latency floor"
    )
    flink_state_dir: str = Field(
        ".qaloop/flink", description="Checkpoints and logs: <dir>/<group>/{checkpoints,logs}"
    )
    flink_checkpoint_dir: str | None = Field(
        None, description="Override <state dir>/<group>/checkpoints (shared storage on a cluster)"
    )
    flink_resume: str = Field(
        "latest", description="latest retained checkpoint, none, or the path of one"
    )
    flink_execution_mode: Literal["thread", "process"] = Field(
        "thread", description="Where the Python judge runs: in the JVM or in a Python process"
    )
    flink_bundle_size: int = Field(100, ge=1, description="Records per Python bundle")
    flink_bundle_time_ms: int = Field(50, ge=1, description="Longest wait to fill a bundle")
    flink_parallelism: int = Field(1, ge=1, description="Parallelism of the job")
    flink_metrics_window_s: float = Field(
        60.0, ge=1, description="Tumbling window of the job's <prefix>.metrics records"
    )
    flink_partition_discovery_ms: int = Field(
        5000, ge=1, description="How soon the job reads a partition added while it runs"
    )
    flink_transaction_timeout_ms: int = Field(
        600_000,
        gt=0,
        le=900_000,
        description="Kafka transaction timeout (<= the broker's transaction.max.timeout.ms)",
    )
    flink_connector_jar: str | None = Field(
        None, description="flink-sql-connector-kafka jar (default: the `make flink-venv` cache)"
    )

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
    sim_kinds: dict[str, float] = Field(
        default_factory=lambda: {
            "good": 0.62,
            "off_topic": 0.12,
            "echo": 0.08,
            "non_answer": 0.08,
            "wrong": 0.10,
        },
        description="Simulated answer kinds and their weights (JSON)",
    )
    sim_hard_rate: float = Field(
        0.3, ge=0, le=1, description="Share of simulated questions whose bad answers repeat"
    )
    sim_feedback_effect: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Simulated effect of feedback: bad answer kinds weigh (1 - effect) with it "
        "(an input of the simulation, not a finding)",
    )
    sim_judge_error_rate: float = Field(
        0.0, ge=0, le=1, description="How often the simulated LLM judge grades wrongly"
    )
    llm_model: str | None = Field(
        None, description="Model name; default gemini-2.5-flash-lite (gemini), gpt-4o-mini (openai)"
    )
    llm_base_url: str | None = Field(
        None, description="Provider base URL (OpenAI-compatible server; Gemini endpoint override)"
    )
    llm_max_output_tokens: int = Field(1024, ge=1, description="Longest answer asked for (tokens)")
    prompt_template: str = Field(
        DEFAULT_PROMPT_TEMPLATE, description="LLM prompt; {question} is replaced by the question"
    )
    replay_file: str | None = Field(
        None, description="JSONL of recorded answers (question, llm_answer) for --llm replay"
    )
    replay_latency_ms: float = Field(0.0, ge=0, description="Latency added to each replay answer")
    llm_rpm: int = Field(0, ge=0, description="Client-side limit: requests per minute (0 = none)")
    llm_tpm: int = Field(0, ge=0, description="Client-side limit: tokens per minute (0 = none)")
    llm_rpd: int = Field(0, ge=0, description="Client-side limit: requests per day (0 = none)")
    llm_rate_burst: float = Field(
        0.0, ge=0, description="Requests allowed at once after idling (0 = 1 s worth of llm_rpm)"
    )
    llm_rate_backend: Literal["local", "postgres"] = Field(
        "local", description="Rate-limit counters: per process, or shared in PostgreSQL"
    )
    llm_rate_dsn: str | None = Field(
        None, description="PostgreSQL DSN of the shared limiter (default: db if postgresql://)"
    )
    llm_rate_key: str | None = Field(
        None, description="Name of the shared quota (default: provider:model)"
    )
    llm_max_queue_wait_s: float = Field(
        10.0, ge=0, description="Longest wait for a rate-limit slot before parking the question"
    )
    llm_max_in_flight: int = Field(
        0, ge=0, description="LLM calls in flight per process (0 = llm_concurrency)"
    )
    llm_breaker_failures: int | None = Field(
        None,
        ge=0,
        description="Consecutive failures that open the breaker (0 = off; "
        "default 5 for gemini/openai, off for simulated/replay)",
    )
    llm_breaker_cooldown_s: float = Field(
        10.0, gt=0, description="How long the breaker stays open (about the overload park time)"
    )
    llm_max_calls: int = Field(
        0, ge=0, description="LLM calls allowed per question, retries included (0 = no cap)"
    )

    # Spend (docs/spend.md)
    llm_fallbacks: str = Field(
        "",
        description="Deployments tried after the primary (provider/model[@base_url], comma "
        "separated, or a JSON list): on a daily quota, an open circuit, a model error",
    )
    llm_escalation: str = Field(
        "", description="provider/model per attempt (1, 2, ...), each the primary or a fallback"
    )
    price_table: str | None = Field(
        None, description="TOML price table (USD per 1M tokens); default: the shipped one"
    )
    price_as: str = Field(
        "gemini/gemini-2.5-flash-lite",
        description="provider/model whose prices simulated and replayed calls are charged at",
    )

    budget_usd: float = Field(
        0.0, ge=0, description="Global spend budget per period, USD (0 = none)"
    )
    budget_key_usd: float = Field(
        0.0, ge=0, description="Spend budget per API key per period, USD (0 = none)"
    )
    budget_period: Literal["hour", "day", "month"] = Field(
        "day", description="Budget period (UTC hour, day or calendar month)"
    )
    budget_soft_fraction: float = Field(
        0.8, gt=0, le=1, description="Share of a budget that logs a warning and counts a metric"
    )
    budget_action: Literal["park", "reject"] = Field(
        "park",
        description="At the hard limit: park questions (reason budget), or also answer 429 "
        "to new questions",
    )
    budget_backend: Literal["local", "postgres"] = Field(
        "local", description="Spend counters: per process, or shared in PostgreSQL"
    )
    budget_dsn: str | None = Field(
        None, description="PostgreSQL DSN of the shared spend ledger (default: db if postgresql://)"
    )

    batch_lane: bool = Field(
        False, description="Send batch-priority questions to the provider's batch API (half price)"
    )
    batch_max_size: int = Field(100, ge=1, description="Questions per batch job")
    batch_max_wait_s: float = Field(
        60.0, ge=0, description="Longest wait of a batch question before its job is submitted"
    )
    batch_poll_s: float = Field(30.0, gt=0, description="How often a batch job's status is read")
    batch_journal: str | None = Field(
        None,
        description="JSON file of this worker's submitted batch jobs, polled again after a "
        "restart (one per worker process; unset: they come back via their 25 h safety copies)",
    )

    paraphrase_cache: bool = Field(
        False, description="Serve a validated answer to a question that means the same"
    )
    paraphrase_threshold: float = Field(
        0.7, gt=0, le=1, description="Paraphrase similarity needed (calibrated: docs/spend.md)"
    )

    # Retry policy
    overload_tries: int = Field(4, ge=1, description="In-process tries on 503/5xx before parking")
    backoff_base_s: float = Field(0.25, ge=0, description="Backoff base (full jitter)")
    backoff_cap_s: float = Field(8.0, ge=0, description="Backoff cap; also the overload park time")
    quota_default_delay_s: float = Field(30.0, ge=0, description="Park time of a 429 without delay")
    quota_day_delay_s: float = Field(3600.0, ge=0, description="Park time of a per-day 429")
    max_parks: int = Field(6, ge=0, description="Parks allowed per question before giving up")
    retry_max_total_s: float = Field(
        6 * 3600.0, gt=0, description="Give up on a question this long after it was first seen"
    )

    # Gateway
    host: str = Field("127.0.0.1", description="Gateway bind address")
    port: int = Field(8000, ge=0, le=65535, description="Gateway port")
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="Largest accepted request body")
    max_question_chars: int = Field(4000, ge=1, description="Longest accepted question")
    max_reference_chars: int = Field(20000, ge=1, description="Longest accepted reference answer")
    max_wait_s: float = Field(
        30.0, ge=0, description="Longest ?wait= long-poll (a longer one is a 422)"
    )
    sse_max_s: float = Field(
        600.0, gt=0, description="Longest GET /v1/questions/{id}/events stream"
    )
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, description="Largest request head (request line + headers): 431"
    )
    header_timeout_s: float = Field(10.0, gt=0, description="Time to send a request head: 408")
    body_timeout_s: float = Field(30.0, gt=0, description="Time to send a request body: 408")
    shutdown_timeout_s: float = Field(
        20.0,
        gt=0,
        description="Bound of each step of a graceful stop (open requests, then LLM calls in "
        "flight); what is not done by then is handed back for redelivery",
    )
    failed_recheck_s: float = Field(
        10.0,
        ge=0,
        description="How long a failed answer is served from the cache before storage "
        "is read again (a reset elsewhere shows after this)",
    )
    max_backlog: int = Field(
        10000,
        ge=0,
        description="Questions accepted but not final before new ones get 429 (0 = no limit)",
    )
    auth: Literal["auto", "on", "off"] = Field(
        "auto", description="API keys: auto = on unless the gateway binds a loopback address"
    )
    api_keys_file: str | None = Field(
        None, description="File of hashed API keys (`qaloop keys add`; docs/security.md)"
    )
    api_keys_db: bool = Field(False, description="Also read hashed API keys from the database")
    metrics_auth: bool = Field(
        False, description="/metrics and the dashboard data need the admin key (auth on)"
    )
    key_rate_per_s: float = Field(
        50.0, gt=0, description="Default per-key request rate (token bucket), a key may override"
    )
    key_burst: float = Field(100.0, ge=1, description="Default per-key burst of requests")
    key_quota_per_day: int = Field(
        0, ge=0, description="Default new questions per key per day (0 = no quota)"
    )

    # Completion webhooks (callback_url; qaloop.services.webhooks)
    webhook_secret: SecretStr | None = Field(
        None, description="HMAC key that signs callbacks; unset = callback_url refused"
    )
    webhook_allow_hosts: str = Field(
        "", description="Non-loopback callback hosts allowed (comma-separated; * = any)"
    )
    webhook_tries: int = Field(6, ge=1, description="Delivery attempts per callback")
    webhook_timeout_s: float = Field(5.0, gt=0, description="Timeout of one callback POST")
    webhook_backoff_base_s: float = Field(1.0, ge=0, description="Callback retry backoff base")
    webhook_backoff_cap_s: float = Field(60.0, ge=0, description="Callback retry backoff cap")

    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Prometheus port of a worker/judge/store/retrier process (0 = none; "
        "the gateway serves /metrics on its own port)",
    )
    gateway_metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="The gateway's /metrics on this port instead of its API port (0 = the API "
        "port; docs/security.md says why that is the default)",
    )
    metrics_cache_s: float = Field(
        1.0,
        ge=0,
        description="The gateway builds /metrics and the dashboard data at most this often "
        "and reuses the bytes (0 = every request)",
    )
    metrics_targets: str = Field(
        "",
        description="host:port list (comma-separated) of the services' metrics ports that the "
        "gateway's dashboard reads in distributed mode; a name counts every address it has",
    )

    log_level: str = Field("INFO", description="Logging level")
    log_json: bool = Field(False, description="Log one JSON object per line")

    @field_validator("llm_fallbacks")
    @classmethod
    def _check_fallbacks(cls, value: str) -> str:
        from qaloop.llm.deployments import parse

        parse(value)  # DeploymentError (a ValueError): a clear message at start
        return value

    @field_validator("llm_escalation")
    @classmethod
    def _check_escalation(cls, value: str, info: ValidationInfo) -> str:
        from qaloop.llm.deployments import default_model
        from qaloop.llm.escalation import deployments

        llm = str(info.data.get("llm", "simulated"))
        deployments(  # a bad entry, or QALOOP_LAST_ATTEMPT_MODEL set too: a clear error at start
            llm=llm,
            primary_model=info.data.get("llm_model") or default_model(llm),
            escalation=value,
            last_attempt_model=info.data.get("last_attempt_model"),
            max_attempts=int(info.data.get("max_attempts", 3)),
        )
        return value

    @field_validator("attempt_temperatures")
    @classmethod
    def _check_temperatures(cls, value: list[float]) -> list[float]:
        from qaloop.llm.escalation import parse_temperatures

        return list(parse_temperatures(value))

    @model_validator(mode="after")
    def _check_replicas(self) -> Settings:
        if self.kafka_min_insync_replicas > self.kafka_replication_factor:
            raise ValueError(
                f"kafka_min_insync_replicas ({self.kafka_min_insync_replicas}) is above "
                f"kafka_replication_factor ({self.kafka_replication_factor}): no acks=all "
                "write could ever succeed"
            )
        if self.accept_durability == "kafka" and self.kafka_min_insync_replicas < 2:
            raise ValueError(
                "accept_durability=kafka needs kafka_min_insync_replicas >= 2 (got "
                f"{self.kafka_min_insync_replicas}): with fewer, an acked publish may be on "
                "one broker only, which does not fsync either"
            )
        return self

    def accept_waits_for_disk(self) -> bool:
        """Whether the accept's storage commit must reach the disk before the 202: the
        durable copy of a new question is either that commit or a replicated publish."""
        if self.bus != "kafka":  # embedded: the database is the only copy
            return True
        if self.accept_durability == "auto":
            return self.kafka_min_insync_replicas < 2
        return self.accept_durability == "storage"

    def api_key(self) -> str | None:
        if self.llm_api_key is not None:
            return self.llm_api_key.get_secret_value()
        if self.llm_api_key_file:
            with open(self.llm_api_key_file, encoding="utf-8") as fh:
                return fh.read().strip() or None
        return None
