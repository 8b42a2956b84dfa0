"""Settings of the API and the Calculator, read from the environment.

Each setting is declared once here with its default and its meaning; the
configuration table of docs/configuration.md is this list (tests/test_docs.py
checks that every setting read here has its row there).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from typing import Mapping


class SettingsError(ValueError):
    """A setting in the environment has a value we cannot use."""


def _number(environ: Mapping[str, str], name: str, default, kind=int, minimum=None, maximum=None):
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
        if not math.isfinite(value):   # float("inf"), float("nan") parse
            raise ValueError(raw)
    except ValueError:
        article = "an integer" if kind is int else "a number"
        raise SettingsError(f"{name} must be {article}, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {raw!r}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{name} must be at most {maximum:g}, got {raw!r}")
    return value


def _choice(environ: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = environ.get(name, "").strip().lower() or default
    if raw not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {raw!r}")
    return raw


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(environ: Mapping[str, str], name: str, default: float) -> float:
    """Seconds, from "90", "90s", "15m", "12h" or "7d"."""
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip().lower()
    unit = _DURATION_UNITS.get(text[-1:], None)
    number = text[:-1] if unit else text
    try:
        value = float(number) * (unit or 1)
    except ValueError:
        value = -1.0
    if not (value >= 0 and value != float("inf")):  # also refuses nan
        raise SettingsError(f"{name} must be a duration such as 3600, 90s, 15m, 12h or 7d "
                            f"(0 for none), got {raw!r}")
    return value


@dataclass(frozen=True)
class ExpressionLimits:
    """What the API accepts, and what the Calculator accepts from psql."""

    max_expression_length: int = 10_000
    max_variables: int = 100

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "ExpressionLimits":
        return cls(
            max_expression_length=_number(environ, "MAX_EXPRESSION_LENGTH", cls.max_expression_length, minimum=1),
            max_variables=_number(environ, "MAX_VARIABLES", cls.max_variables, minimum=0),
        )


# CALCULATION_WALL_TIMEOUT's default, as a multiple of CALCULATION_TIMEOUT:
# a task that needs all its CPU time still finishes with a tenth of a core.
WALL_TIMEOUT_FACTOR = 10.0


@dataclass(frozen=True)
class CalculatorSettings:
    task_num: int = 100                # tasks claimed by one statement
    num_processes: int = 2             # evaluation child processes
    queue_wait_time: float = 5.0       # fallback poll interval, seconds
    calculation_timeout: float = 10.0  # per expression, seconds of the evaluation process's CPU time
    # The wall-clock ceiling per expression, which ends a process that does
    # not get to use its CPU time (stopped, starved, throttled); 0 means
    # WALL_TIMEOUT_FACTOR x calculation_timeout (the property wall_timeout).
    calculation_wall_timeout: float = 0.0
    lease_seconds: float = 30.0        # a claim is extended while held; another may take it after this
    max_attempts: int = 5              # claims before a task that keeps killing its process gets an error
    # At most this many of one key's tasks evaluating at once, across every
    # Calculator (0: no cap); every Calculator must run with the same value.
    max_running_per_key: int = 0
    memory_limit_mb: int = 512         # address-space cap of each evaluation process
    # Durability of claims and stored outcomes (PostgreSQL's synchronous_commit
    # for the Calculator's own session). "off" saves a WAL flush wait on every
    # claim and store; a database crash may then lose the last fraction of a
    # second of them, and those tasks are simply calculated again (outcomes
    # are deterministic). "on" for strict durability.
    synchronous_commit: str = "off"
    # Bounds on the Calculator's database sessions (seconds; 0 turns one off):
    # no statement, lock wait or forgotten transaction holds the loop for
    # long, and a silently dropped network path is noticed within about
    # twice tcp_keepalive instead of libpq's hours.
    statement_timeout: float = 10.0
    lock_timeout: float = 2.0
    idle_in_transaction_timeout: float = 60.0
    tcp_keepalive: float = 10.0
    # Finished tasks older than this many seconds are deleted (0: kept forever).
    result_retention: float = 7 * 86400.0
    limits: ExpressionLimits = ExpressionLimits()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "CalculatorSettings":
        settings = cls(
            task_num=_number(environ, "TASK_NUM", cls.task_num, minimum=1),
            num_processes=_number(environ, "NUM_PROCESSES", cls.num_processes, minimum=1),
            queue_wait_time=_number(environ, "QUEUE_WAIT_TIME", cls.queue_wait_time, float, minimum=0.01),
            calculation_timeout=_number(environ, "CALCULATION_TIMEOUT", cls.calculation_timeout, float, minimum=0.01),
            calculation_wall_timeout=_number(environ, "CALCULATION_WALL_TIMEOUT", cls.calculation_wall_timeout,
                                             float, minimum=0),
            lease_seconds=_number(environ, "LEASE_SECONDS", cls.lease_seconds, float, minimum=0.1),
            max_attempts=_number(environ, "MAX_ATTEMPTS", cls.max_attempts, minimum=1),
            max_running_per_key=_number(environ, "MAX_RUNNING_PER_KEY", cls.max_running_per_key,
                                        minimum=0, maximum=10_000),
            memory_limit_mb=_number(environ, "MEMORY_LIMIT_MB", cls.memory_limit_mb, minimum=0),
            synchronous_commit=_choice(environ, "SYNCHRONOUS_COMMIT", cls.synchronous_commit,
                                       ("on", "off", "local", "remote_write", "remote_apply")),
            statement_timeout=_number(environ, "STATEMENT_TIMEOUT", cls.statement_timeout, float, minimum=0),
            lock_timeout=_number(environ, "LOCK_TIMEOUT", cls.lock_timeout, float, minimum=0),
            idle_in_transaction_timeout=_number(environ, "IDLE_IN_TRANSACTION_TIMEOUT",
                                                cls.idle_in_transaction_timeout, float, minimum=0),
            tcp_keepalive=_number(environ, "TCP_KEEPALIVE", cls.tcp_keepalive, float, minimum=0),
            result_retention=_duration(environ, "RESULT_RETENTION", cls.result_retention),
            limits=ExpressionLimits.from_env(environ),
        )
        if settings.calculation_wall_timeout and \
                settings.calculation_wall_timeout < settings.calculation_timeout:
            raise SettingsError(f"CALCULATION_WALL_TIMEOUT must be at least CALCULATION_TIMEOUT "
                                f"({settings.calculation_timeout:g}), or 0 for "
                                f"{WALL_TIMEOUT_FACTOR:g} x CALCULATION_TIMEOUT; "
                                f"got {environ['CALCULATION_WALL_TIMEOUT']!r}")
        return settings

    @property
    def wall_timeout(self) -> float:
        """Seconds of wall-clock time one expression may take (CALCULATION_WALL_TIMEOUT)."""
        return self.calculation_wall_timeout or WALL_TIMEOUT_FACTOR * self.calculation_timeout

    def session_settings(self) -> dict[str, str]:
        """PostgreSQL settings of the Calculator's work session."""
        keepalives = self.keepalive_parameters()
        return {
            "synchronous_commit": self.synchronous_commit,
            "statement_timeout": _milliseconds(self.statement_timeout),
            "lock_timeout": _milliseconds(self.lock_timeout),
            "idle_in_transaction_session_timeout": _milliseconds(self.idle_in_transaction_timeout),
            # The server's end of the same keepalives (0: the system's
            # defaults): a backend whose Calculator vanished is ended too.
            "tcp_keepalives_idle": str(keepalives.get("keepalives_idle", 0)),
            "tcp_keepalives_interval": str(keepalives.get("keepalives_interval", 0)),
            "tcp_keepalives_count": str(keepalives.get("keepalives_count", 0)),
            "tcp_user_timeout": str(keepalives.get("tcp_user_timeout", 0)),
            # The claim's plan must not depend on statistics: walk the index
            # of the queue in fair order and stop after LIMIT rows. With
            # statistics that believe in few pending rows (a fresh table, or
            # before autovacuum's ANALYZE of a burst) the planner otherwise
            # prefers a bitmap scan and a sort of every pending row: 7-15 ms
            # a claim at 20,000 pending instead of ~1 ms (sql/queries/
            # claim_tasks.sql, BENCHMARKS.md "Fair claiming"). The other
            # statements of this session find rows by id or by an ordered
            # index, where an index scan is as good.
            "enable_bitmapscan": "off",
        }

    def keepalive_parameters(self) -> dict[str, int]:
        """libpq connection parameters: TCP keepalives and a bound on unacknowledged data."""
        if self.tcp_keepalive <= 0:
            return {}
        idle = max(1, round(self.tcp_keepalive))
        return {"keepalives": 1, "keepalives_idle": idle, "keepalives_interval": max(1, idle // 3),
                "keepalives_count": 3, "tcp_user_timeout": 2 * idle * 1000}

    def describe(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "limits"}
        shown["calculation_wall_timeout"] = self.wall_timeout  # the one in force, not 0
        return " ".join(f"{name}={value}" for name, value in shown.items())


@dataclass(frozen=True)
class KeyLimits:
    """What one API key may submit (docs/api.md, "Limits per key"). 0 is no limit.

    With AUTH=required the defaults apply; with AUTH=off there is no limit
    unless one is set, and a limit that is set applies to all requests
    together (they are one client: nobody's)."""

    max_pending: int = 10_000        # unfinished tasks of a key
    requests_per_second: float = 100.0
    items_per_second: float = 2_000.0
    burst_seconds: float = 2.0       # a bucket holds this many seconds of its rate

    @property
    def any(self) -> bool:
        return bool(self.max_pending or self.requests_per_second or self.items_per_second)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], auth: str, max_batch: int) -> "KeyLimits":
        defaults = cls() if auth == "required" else cls(0, 0.0, 0.0)
        limits = cls(
            max_pending=_number(environ, "MAX_PENDING_PER_KEY", defaults.max_pending, minimum=0, maximum=1e9),
            requests_per_second=_number(environ, "RATE_LIMIT_REQUESTS", defaults.requests_per_second,
                                        float, minimum=0, maximum=1e9),
            items_per_second=_number(environ, "RATE_LIMIT_ITEMS", defaults.items_per_second, float,
                                     minimum=0, maximum=1e9),
            burst_seconds=_number(environ, "RATE_LIMIT_BURST", defaults.burst_seconds, float,
                                  minimum=0.001, maximum=1e6),
        )
        if limits.requests_per_second and limits.request_burst < 1:
            raise SettingsError("RATE_LIMIT_REQUESTS x RATE_LIMIT_BURST must be at least 1 "
                                "(a key could never send a request)")
        if limits.items_per_second and limits.item_burst < max_batch:
            raise SettingsError(f"RATE_LIMIT_ITEMS x RATE_LIMIT_BURST must be at least MAX_BATCH "
                                f"({max_batch}): a full bulk submission must fit in the bucket")
        return limits

    @property
    def request_burst(self) -> float:
        return self.requests_per_second * self.burst_seconds

    @property
    def item_burst(self) -> float:
        return self.items_per_second * self.burst_seconds


@dataclass(frozen=True)
class ApiSettings:
    max_content_length: int = 1_000_000   # bytes of request body
    pool_min_size: int = 1
    pool_max_size: int = 10
    db_timeout: float = 5.0               # seconds to wait for a connection or a statement
    max_wait: float = 30.0                # longest ?wait= a client may ask for, seconds
    max_batch: int = 1000                 # items in one bulk submit or bulk read
    limits: ExpressionLimits = ExpressionLimits()
    auth: str = "off"                     # "required": every /api/* request needs a key
    key_limits: KeyLimits = KeyLimits(0, 0.0, 0.0)
    # DATABASE_URL leads to a pooler in transaction mode (PgBouncer): every
    # round trip ends its transaction at one Sync (PgBouncer 1.18 mixed up
    # the results of pipelines with several), and prepared statements are
    # off unless PREPARED_STATEMENTS=on (PgBouncer >= 1.21 with
    # max_prepared_statements). docs/operations.md, "Many API processes behind PgBouncer".
    pooler: str = "none"
    # Concurrent submissions of one process share a transaction (api/group_commit.py);
    # "off" only to compare (make bench-http).
    group_commit: bool = True
    prepared_statements: bool = True
    # Host names this API answers to (the Host header; "*": any). Any other
    # name is refused with 400 on every route: a DNS-rebinding page that
    # points its own name at this server cannot use it. Default: the names
    # `make run` serves on.
    allowed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "ApiSettings":
        if "AUTH" in environ and not environ["AUTH"].strip():
            # Fail closed: an empty AUTH= is more likely a lost value than a wish for no keys.
            raise SettingsError("AUTH is set but empty: set AUTH=required (API keys) or AUTH=off (none)")
        auth = _choice(environ, "AUTH", cls.auth, ("off", "required"))
        max_batch = _number(environ, "MAX_BATCH", cls.max_batch, minimum=1)
        return cls(
            auth=auth,
            allowed_hosts=_host_names(environ, "ALLOWED_HOSTS", cls.allowed_hosts),
            key_limits=KeyLimits.from_env(environ, auth, max_batch),
            max_wait=_number(environ, "RESULT_MAX_WAIT", cls.max_wait, float, minimum=0),
            max_batch=_number(environ, "MAX_BATCH", cls.max_batch, minimum=1),
            max_content_length=_number(environ, "MAX_CONTENT_LENGTH", cls.max_content_length, minimum=1),
            pool_min_size=_number(environ, "POOL_MIN_SIZE", cls.pool_min_size, minimum=0),
            pool_max_size=_number(environ, "POOL_MAX_SIZE", cls.pool_max_size, minimum=1),
            db_timeout=_number(environ, "DB_TIMEOUT", cls.db_timeout, float, minimum=0.1),
            limits=ExpressionLimits.from_env(environ),
            group_commit=_choice(environ, "GROUP_COMMIT", "on", ("on", "off")) == "on",
            pooler=(pooler := _choice(environ, "DATABASE_POOLER", cls.pooler, ("none", "transaction"))),
            prepared_statements=_choice(environ, "PREPARED_STATEMENTS", "on" if pooler == "none" else "off",
                                        ("on", "off")) == "on",
        )


def _host_names(environ: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """Comma-separated host names (IPv6 addresses with or without brackets), or "*"."""
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    names = tuple(part.strip().lower().removeprefix("[").removesuffix("]")
                  for part in raw.split(",") if part.strip())
    for host in names:
        if host != "*" and ("/" in host or " " in host or (":" in host and host.count(":") < 2)):
            raise SettingsError(f"{name} is a comma-separated list of host names without ports "
                                f"(or *), got {raw!r}")
    return names


def _milliseconds(seconds: float) -> str:
    return str(max(0, round(seconds * 1000)))


def database_url(environ: Mapping[str, str] = os.environ) -> str:
    """DATABASE_URL, or "" so that libpq reads the PG* variables."""
    return environ.get("DATABASE_URL", "")


def listen_database_url(environ: Mapping[str, str] = os.environ) -> str:
    """LISTEN_DATABASE_URL: where the API's LISTEN connection (?wait=, the
    keys' cache) goes; a direct connection to PostgreSQL when DATABASE_URL
    goes through a pooler in transaction mode. Unset: DATABASE_URL."""
    return environ.get("LISTEN_DATABASE_URL") or database_url(environ)
