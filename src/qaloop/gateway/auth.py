"""Optional API keys: who may call the gateway, how fast, and how many new questions.

A key is a random token (`qk_` + 32 random bytes, url-safe) shown once when created; only its
SHA-256 is stored (a token of 256 random bits needs no slow hash: nobody can brute-force it,
and the hot path hashes every request). Keys live in a file (`QALOOP_API_KEYS_FILE`, one key
per line, re-read when it changes) and/or in the database (`QALOOP_API_KEYS_DB`, table
`api_keys`, re-read every few seconds): a revocation takes effect within seconds, no restart.

    # name  role   hash                      options
    alice   user   sha256:<64 hex>           rate=20 burst=40 quota=1000
    ops     admin  sha256:<64 hex>
    bob     user   sha256:<64 hex>           revoked

A request carries its key as `Authorization: Bearer <key>` or `X-API-Key: <key>`. Unknown or
revoked keys get 401; a user key on an admin route 403; a key over its request rate 429 with
`Retry-After` (a token bucket per key, so one key's flood never spends another's share); a key
over its quota of new questions per day 429 (an admission check: known answers are still
served).

Where the counters live: the quota of new questions is counted where storage is — in
PostgreSQL, shared by every gateway on the database (qaloop.gateway.quota_pg), or in this
process (`LocalQuota`) for SQLite, where one gateway holds the database (its lock). The
request rate is a token bucket in each process: with N gateways behind a balancer a key may
send up to N times its rate in sum (docs/security.md says why that is the choice).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from prometheus_client import CollectorRegistry, Counter

from qaloop.gateway.admission import DAY_S, Ask, Rejection

log = logging.getLogger(__name__)

Role = Literal["user", "admin"]
ROLES: tuple[Role, ...] = ("user", "admin")
KEY_PREFIX = "qk_"


class KeyFileError(ValueError):
    """A keys file or row that can't be read (names the line and the problem)."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    key_hash: str  # sha256 hex of the token
    role: Role = "user"
    rate_per_s: float | None = None  # None: the settings' default
    burst: float | None = None
    quota_per_day: int | None = None  # None: the default; 0: no quota
    revoked: bool = False


def new_token() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def format_key(key: ApiKey) -> str:
    parts = [key.name, key.role, f"sha256:{key.key_hash}"]
    if key.rate_per_s is not None:
        parts.append(f"rate={key.rate_per_s:g}")
    if key.burst is not None:
        parts.append(f"burst={key.burst:g}")
    if key.quota_per_day is not None:
        parts.append(f"quota={key.quota_per_day}")
    if key.revoked:
        parts.append("revoked")
    return "  ".join(parts)


def parse_keys(text: str, source: str = "keys file") -> list[ApiKey]:
    keys: list[ApiKey] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source} line {number}"
        fields = line.split()
        if len(fields) < 3:
            raise KeyFileError(f"{where}: expected 'name role sha256:<hex> [options]'")
        name, role, digest, *options = fields
        if role not in ROLES:
            raise KeyFileError(f"{where}: role must be user or admin, got {role!r}")
        if not digest.startswith("sha256:") or len(digest) != 71:
            raise KeyFileError(f"{where}: the hash must be sha256:<64 hex digits>")
        key = ApiKey(name, digest.removeprefix("sha256:").lower(), role)  # type: ignore[arg-type]
        for option in options:
            name_, _, value = option.partition("=")
            try:
                if option == "revoked":
                    key = replace(key, revoked=True)
                elif name_ == "rate":
                    key = replace(key, rate_per_s=_positive(float(value)))
                elif name_ == "burst":
                    key = replace(key, burst=_positive(float(value)))
                elif name_ == "quota":
                    key = replace(key, quota_per_day=int(value))
                else:
                    raise KeyFileError(f"{where}: unknown option {option!r}")
            except ValueError as exc:
                raise KeyFileError(f"{where}: bad option {option!r} ({exc})") from None
        keys.append(key)
    return keys


def _positive(value: float) -> float:
    if not value > 0 or math.isinf(value):
        raise ValueError("must be a positive number")
    return value


class KeySource(Protocol):
    def load(self) -> list[ApiKey] | None:
        """The keys, or None when nothing changed since the last load."""
        ...


class FileKeys:
    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[float, int] | None = None

    def load(self) -> list[ApiKey] | None:
        st = os.stat(self.path)
        stamp = (st.st_mtime, st.st_size)
        if stamp == self._stamp:
            return None
        with open(self.path, encoding="utf-8") as fh:
            keys = parse_keys(fh.read(), self.path)
        self._stamp = stamp
        return keys


# The keys table: the same DDL on SQLite and PostgreSQL.
KEYS_DDL = (
    "CREATE TABLE IF NOT EXISTS api_keys (name TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, "
    "role TEXT NOT NULL, rate_per_s REAL, burst REAL, quota_per_day INTEGER, "
    "revoked INTEGER NOT NULL DEFAULT 0)"
)


def connect_keys_db(url: str) -> Any:
    """A DB-API connection to the database in `url` (sqlite:///path or postgresql://)."""
    if url.startswith(("postgresql://", "postgres://")):
        import psycopg  # optional dependency (the postgres extra)

        return psycopg.connect(url, autocommit=True)
    path = url.removeprefix("sqlite:///").removeprefix("sqlite://") or ":memory:"
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


def _marks(conn: Any, n: int) -> str:
    mark = "?" if isinstance(conn, sqlite3.Connection) else "%s"
    return ", ".join([mark] * n)


class DbKeys:
    """Keys in the `api_keys` table of the storage database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._last: list[ApiKey] | None = None

    def load(self) -> list[ApiKey] | None:
        conn = connect_keys_db(self.url)
        try:
            conn.execute(KEYS_DDL)
            rows = conn.execute(
                "SELECT name, key_hash, role, rate_per_s, burst, quota_per_day, revoked "
                "FROM api_keys ORDER BY name"
            ).fetchall()
        finally:
            conn.close()
        keys = [
            ApiKey(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows if r[2] in ROLES
        ]
        if keys == self._last:
            return None
        self._last = keys
        return keys


def db_add_key(url: str, key: ApiKey) -> None:
    conn = connect_keys_db(url)
    try:
        conn.execute(KEYS_DDL)
        conn.execute(
            "INSERT INTO api_keys (name, key_hash, role, rate_per_s, burst, quota_per_day, "
            f"revoked) VALUES ({_marks(conn, 7)})",
            (key.name, key.key_hash, key.role, key.rate_per_s, key.burst, key.quota_per_day, 0),
        )
    finally:
        conn.close()


def db_revoke_key(url: str, name: str) -> bool:
    conn = connect_keys_db(url)
    try:
        conn.execute(KEYS_DDL)
        cur = conn.execute(
            f"UPDATE api_keys SET revoked = 1 WHERE name = {_marks(conn, 1)}", (name,)
        )
        return bool(cur.rowcount)
    finally:
        conn.close()


@dataclass(slots=True)
class TokenBucket:
    rate: float
    burst: float
    tokens: float
    at: float

    def take(self, now: float) -> float:
        """0 when a token was taken, else the seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass(frozen=True, slots=True)
class Denied:
    status: int  # 401, 403 or 429
    code: str
    message: str
    retry_after_s: float | None = None


class QuotaCounter(Protocol):
    """New questions per key and UTC day. `reserve` takes a slot if one is left (atomic);
    `release` gives back a slot a request did not use."""

    async def reserve(self, name: str, day: int, quota: int) -> bool: ...

    async def release(self, name: str, day: int) -> None: ...


class LocalQuota:
    """The quota counted in this process (one gateway per database: SQLite)."""

    def __init__(self) -> None:
        self._used: dict[tuple[str, int], int] = {}

    async def reserve(self, name: str, day: int, quota: int) -> bool:
        used = self._used.get((name, day), 0)
        if used >= quota:
            return False
        # Yesterday's counts are never read again.
        if not used:
            self._used = {k: n for k, n in self._used.items() if k[1] >= day}
        self._used[(name, day)] = used + 1
        return True

    async def release(self, name: str, day: int) -> None:
        used = self._used.get((name, day), 0)
        if used > 0:
            self._used[(name, day)] = used - 1


@dataclass
class AuthConfig:
    rate_per_s: float = 50.0
    burst: float = 100.0
    quota_per_day: int = 0
    metrics_need_admin: bool = False
    reload_every_s: float = 2.0
    open_paths: frozenset[str] = field(default_factory=lambda: frozenset({"/healthz", "/readyz"}))


class Authenticator:
    """Checks a request's key, role and rate; also the per-key quota (an admission check)."""

    name = "quota"

    def __init__(
        self,
        sources: Sequence[KeySource],
        config: AuthConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        registry: CollectorRegistry | None = None,
        quota: QuotaCounter | None = None,
    ) -> None:
        self.sources = list(sources)
        self.quota: QuotaCounter = quota if quota is not None else LocalQuota()
        self.config = config
        self.clock = clock
        self.wall = wall
        self._loaded: list[list[ApiKey]] = [[] for _ in self.sources]
        self.by_hash: dict[str, ApiKey] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._next_reload = 0.0
        self.denied = Counter(
            "qaloop_gateway_auth_denied",
            "Requests refused by API-key checks, by reason",
            ["reason"],
            registry=registry,
        )
        self.reload(force=True)

    # ------------------------------------------------------------------ keys

    def reload(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now < self._next_reload:
            return
        self._next_reload = now + self.config.reload_every_s
        changed = False
        for i, source in enumerate(self.sources):
            try:
                keys = source.load()
            except Exception as exc:
                if force:
                    raise
                # Keep serving with the keys we have; say why (never the keys themselves).
                log.error("could not reload API keys: %s", exc)
                continue
            if keys is not None:
                self._loaded[i] = keys
                changed = True
        if changed:
            self.by_hash = {k.key_hash: k for keys in self._loaded for k in keys}
            log.info(
                "API keys loaded: %d active, %d revoked",
                sum(not k.revoked for k in self.by_hash.values()),
                sum(k.revoked for k in self.by_hash.values()),
            )

    # ------------------------------------------------------------------ requests

    def check(self, path: str, headers: Sequence[tuple[bytes, bytes]]) -> ApiKey | Denied | None:
        """None for an open path; else the caller's key, or why it is refused."""
        if path in self.config.open_paths:
            return None
        if not self.config.metrics_need_admin and path.startswith(METRICS_PATHS):
            return None  # /metrics and the dashboard stay open unless QALOOP_METRICS_AUTH
        self.reload()
        token = _token(headers)
        if token is None:
            return self._deny(
                401,
                "missing_key",
                "this gateway needs an API key (Authorization: Bearer <key> or X-API-Key)",
            )
        key = self.by_hash.get(hash_token(token))
        if key is None:
            return self._deny(401, "unknown_key", "the API key is not known")
        if key.revoked:
            return self._deny(401, "revoked_key", f"the API key {key.name!r} has been revoked")
        if _needs_admin(path, self.config.metrics_need_admin) and key.role != "admin":
            return self._deny(403, "admin_only", f"{path} needs an admin key")
        wait = self._bucket(key).take(self.clock())
        if wait > 0:
            return self._deny(
                429, "rate_limited", f"key {key.name!r} is over its request rate", wait
            )
        return key

    def _deny(
        self, status: int, code: str, message: str, retry_after_s: float | None = None
    ) -> Denied:
        self.denied.labels(code).inc()
        return Denied(status, code, message, retry_after_s)

    def _bucket(self, key: ApiKey) -> TokenBucket:
        bucket = self._buckets.get(key.name)
        rate = key.rate_per_s or self.config.rate_per_s
        burst = key.burst or self.config.burst
        if bucket is None or bucket.rate != rate or bucket.burst != burst:
            bucket = TokenBucket(rate, burst, burst, self.clock())
            self._buckets[key.name] = bucket
        return bucket

    # ------------------------------------------------------------------ quota (admission)

    def _quota(self, name: str) -> int:
        for key in self.by_hash.values():
            if key.name == name:
                return (
                    key.quota_per_day
                    if key.quota_per_day is not None
                    else (self.config.quota_per_day)
                )
        return self.config.quota_per_day

    async def check_ask(self, ask: Ask) -> Rejection | None:
        """Take one of the caller's slots for today, or refuse; `released` gives it back if
        the question turns out not to be new."""
        if ask.caller is None:
            return None
        quota = self._quota(ask.caller)
        if not quota:
            return None
        now = self.wall()
        day = int(now // DAY_S)
        if await self.quota.reserve(ask.caller, day, quota):
            return None
        return Rejection(
            "quota",
            f"key {ask.caller!r} has used its {quota} new questions for today",
            max(1.0, (day + 1) * DAY_S - now),
        )

    async def aclose(self) -> None:
        close = getattr(self.quota, "aclose", None)  # a shared counter's connection
        if close is not None:
            await close()

    async def released(self, ask: Ask) -> None:
        if ask.caller is not None and self._quota(ask.caller):
            # Today's: a reservation and its release are milliseconds apart.
            await self.quota.release(ask.caller, int(self.wall() // DAY_S))


class QuotaCheck:
    """The Authenticator's quota as an AdmissionCheck."""

    name = "quota"

    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth

    async def check(self, ask: Ask) -> Rejection | None:
        return await self.auth.check_ask(ask)

    def admitted(self, ask: Ask) -> None:
        return None  # counted when reserved (check)

    async def released(self, ask: Ask) -> None:
        await self.auth.released(ask)


ADMIN_PREFIXES = ("/v1/admin/",)
METRICS_PATHS = ("/metrics", "/v1/dashboard-data", "/dashboard")


def _needs_admin(path: str, metrics_need_admin: bool) -> bool:
    if path.startswith(ADMIN_PREFIXES):
        return True
    return metrics_need_admin and path.startswith(METRICS_PATHS)


def _token(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip().decode("latin-1")
        elif name == b"x-api-key" and value.strip():
            return value.strip().decode("latin-1")
    return None
