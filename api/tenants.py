"""Each tenant's share of the Calculators' time, as the Calculators report it.

A tenant is an API key, or the rows without an owner (psql, AUTH=off) as
one tenant more. Each live Calculator writes, once a second, the CPU seconds
it spent on each tenant and the tasks it runs for it (calculators.tenant_usage,
sql/017_fair_share_of_time.sql); sql/queries/tenant_usage.sql sums them.
Two readers:

- the page's fairness panel (api/dashboard.py): each active tenant's share
  of the evaluation time over the last minute against its entitlement, its
  weight over the weights of the active tenants (fair_shares);
- GET /metrics (api/metrics.py): per key, running tasks and CPU seconds,
  the TOP_KEYS most active keys by name and the rest summed (usage_by_label).
"""

from __future__ import annotations

from dataclasses import dataclass

from api.db import connection
from core.database import load_query

NO_OWNER = "(no owner)"  # the page's name for the rows without an owner


@dataclass(frozen=True)
class Tenant:
    key_id: int | None          # None: the rows without an owner
    name: str | None            # the key's name (None: no owner)
    revoked: bool
    weight: float
    cpu_seconds: float          # since each live Calculator started, summed
    cpu_seconds_last_minute: float
    running: int
    pending: int

    @property
    def label(self) -> str:
        """The name the page shows."""
        if self.key_id is None:
            return NO_OWNER
        name = self.name if self.name is not None else f"#{self.key_id}"
        return f"{name} (revoked)" if self.revoked else name

    @property
    def active(self) -> bool:
        """Work waiting, or evaluation time over the last minute."""
        return self.cpu_seconds_last_minute > 0 or self.pending > 0


def tenants(with_pending: bool) -> list[Tenant]:
    with connection() as conn:
        rows = conn.execute(load_query("tenant_usage"), {"with_pending": with_pending}).fetchall()
    return [Tenant(key_id, name, revoked, float(weight), float(cpu), float(minute), int(running), int(pending))
            for _, key_id, name, revoked, weight, cpu, minute, running, pending in rows]


@dataclass(frozen=True)
class Share:
    tenant: Tenant
    share: float | None   # of the evaluation time over the last minute (None: nobody had any)
    entitlement: float    # its weight / the active tenants' weights


def fair_shares(rows: list[Tenant]) -> list[Share]:
    """The active tenants, each with its share of the last minute's
    evaluation time and its entitlement; the largest share first."""
    active = [t for t in rows if t.active]
    total_time = sum(t.cpu_seconds_last_minute for t in active)
    total_weight = sum(t.weight for t in active)
    shares = [Share(t, t.cpu_seconds_last_minute / total_time if total_time > 0 else None,
                    t.weight / total_weight) for t in active]
    return sorted(shares, key=lambda s: (-(s.share or 0), -s.entitlement, s.tenant.label))


OTHER_KEYS, NONE = "(other keys)", "(none)"  # as calculator_key_pending_tasks labels them


def usage_by_label(rows: list[Tenant], top: int) -> dict[str, tuple[float, int]]:
    """{label: (CPU seconds, running tasks)} for /metrics: the `top` keys
    most active (CPU seconds over the last minute, then running tasks, then
    CPU seconds) by name, the other keys summed as "(other keys)", the rows
    without an owner as "(none)": at most top + 2 labels. A revoked key and
    a live one of the same name share a label (their figures are summed)."""
    keys = sorted((t for t in rows if t.key_id is not None),
                  key=lambda t: (-t.cpu_seconds_last_minute, -t.running, -t.cpu_seconds, t.key_id))
    figures: dict[str, tuple[float, int]] = {}

    def add(label: str, tenant: Tenant) -> None:
        seconds, running = figures.get(label, (0.0, 0))
        figures[label] = (seconds + tenant.cpu_seconds, running + tenant.running)

    for place, tenant in enumerate(keys):
        add((tenant.name or f"#{tenant.key_id}") if place < top else OTHER_KEYS, tenant)
    for tenant in rows:
        if tenant.key_id is None:
            add(NONE, tenant)
    return figures
