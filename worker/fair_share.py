"""Each tenant's share of the evaluation time: virtual time, charged in CPU seconds.

A tenant is an API key, or None: the rows without an owner (psql,
AUTH=off), one tenant more. Among the tenants with work, each should get a
share of the evaluation time in proportion to its weight (api_keys.weight;
1 for rows without an owner), as processor sharing would give it. The rule
here is start-time fair queueing by virtual time:

- a tenant's virtual time advances by the CPU seconds its tasks used,
  divided by its weight (a task that timed out charges its full timeout);
  a task still running counts its seconds so far;
- the system's virtual time is the least virtual time among the active
  tenants: those with tasks here (queued or running), or charged here or
  by another Calculator, within the last ACTIVE_SECONDS (a tenant with a
  backlog leaves this Calculator now and then, between one claim's tasks
  and the next); a running task's seconds so far do not count there (as
  start-time fair queueing takes the start tag of the task in service: a
  tenant that comes while another's long task runs starts where that task
  started, and its quick tasks go before that tenant's next);
- a tenant that comes (back) with work after ACTIVE_SECONDS without any
  starts at the system's virtual time, not below: no credit for the time it
  had nothing to do;
- a tenant that used QUANTUM_SECONDS of CPU time more than its share (more
  than QUANTUM_SECONDS over its weight ahead of the system's virtual time)
  is *ahead*: the claims skip its tasks (sql/queries/claim_tasks.sql)
  while the others' wait, and the local queue starts the least virtual
  time first.

Every Calculator charges what its own children use, and shares it through
its row in calculators (tenant_usage, written once a second while it has
work: no row is written per task or per tenant); each reads the others'
rows in the same statement and charges their new seconds to its own view.
The views of two Calculators differ by at most a second's charges.
"""

from __future__ import annotations

import math
from collections import deque

import psycopg
from psycopg.types.json import Jsonb

from core.database import load_query

QUANTUM_SECONDS = 0.5   # how far ahead of the others a tenant may be before its tasks are skipped
ACTIVE_SECONDS = 3.0    # a tenant seen or charged this recently is active
REFRESH_SECONDS = 1.0   # how often the charges are shared
WINDOW_SECONDS = 60.0   # the "last minute" of the published figures
NONE = "none"           # rows without an owner, in tenant_usage
FORGET_CALCULATOR_SECONDS = 3600.0  # a Calculator not seen this long is gone (heartbeat.sql sweeps it)


def label(tenant) -> str:
    return NONE if tenant is None else str(tenant)


def tenant_of(label_: str):
    return None if label_ == NONE else int(label_)


class FairShare:
    def __init__(self) -> None:
        self.virtual: dict = {}    # tenant -> virtual seconds
        self.weights: dict = {}    # owner -> weight, for keys whose weight is not 1
        self.charged: dict = {}    # tenant -> CPU seconds charged here since start (published)
        self._recent: dict = {}    # tenant -> deque of (monotonic second, CPU seconds)
        self._others: dict | None = None  # calculator id -> {label: seconds} at its last look
        self._seen_others: dict = {}  # calculator id -> when it was last seen live
        self.other_caps: dict = {}  # calculator id -> its MAX_RUNNING_PER_KEY, at the last look
        self.active: dict = {}     # tenant -> when it was last seen here or charged anywhere
        self.floor = 0.0           # the system's virtual time, never going back
        self.next_refresh = 0.0
        self._dirty = False        # charged since the last refresh
        self.busy_others = 0       # other Calculators that charged anything at the last look
        self._elsewhere_rate: dict = {}  # tenant -> CPU seconds a second the others charged it lately
        self._looked_at = 0.0      # when the others were last looked at

    # --- charging ---------------------------------------------------------

    def weight(self, tenant) -> float:
        return self.weights.get(tenant, 1.0)

    def charge(self, tenant, seconds: float, now: float) -> None:
        """A task of tenant's used seconds of CPU time here."""
        seconds = max(0.0, seconds)
        self.active[tenant] = now
        self.charged[tenant] = self.charged.get(tenant, 0.0) + seconds
        self.virtual[tenant] = self.virtual.get(tenant, self.floor) + seconds / self.weight(tenant)
        recent = self._recent.setdefault(tenant, deque())
        second = math.floor(now)
        if recent and recent[-1][0] == second:
            recent[-1] = (second, recent[-1][1] + seconds)
        else:
            recent.append((second, seconds))
        self._dirty = True

    def _charge_elsewhere(self, tenant, seconds: float, now: float) -> None:
        if seconds > 0:
            self.active[tenant] = now
            self.virtual[tenant] = self.virtual.get(tenant, self.floor) + seconds / self.weight(tenant)

    # --- the order --------------------------------------------------------

    def seen(self, tenants, now: float) -> None:
        """These tenants have tasks here now."""
        for tenant in tenants:
            self.active[tenant] = now

    def arrived(self, tenant, now: float) -> None:
        """Tasks of tenant came to this Calculator: after ACTIVE_SECONDS
        without any (here or anywhere), it starts at the system's virtual
        time, not below (no credit for its pause)."""
        if now - self.active.get(tenant, -math.inf) > ACTIVE_SECONDS:
            start = self.system_time(now)
            if self.virtual.get(tenant, start) < start:
                self.virtual[tenant] = start
        self.active[tenant] = now

    def effective(self, tenant, running_seconds: float = 0.0, now: float | None = None) -> float:
        """Tenant's virtual time, counting the seconds its running tasks used
        so far, and (given now) what the other Calculators have probably
        charged it since the last look, at the rate they charged it before
        (without that guess, three Calculators each ran a key for up to two
        seconds the others had not heard of yet, and two keys of weights 1
        and 3 took turns of 2 s and 7 s instead of sharing)."""
        guess = 0.0
        if now is not None and tenant in self._elsewhere_rate:
            guess = self._elsewhere_rate[tenant] * min(max(0.0, now - self._looked_at), 2 * REFRESH_SECONDS)
        return self.virtual.get(tenant, self.floor) + (running_seconds + guess) / self.weight(tenant)

    def system_time(self, now: float) -> float:
        """The least virtual time of the active tenants (running tasks not
        counted); it never goes back."""
        since = now - ACTIVE_SECONDS
        times = [self.virtual.get(t, self.floor) for t, at in self.active.items() if at >= since]
        if times:
            self.floor = max(self.floor, min(times))
        return self.floor

    def ahead(self, present: dict, now: float) -> set:
        """The tenants whose claims wait: more than QUANTUM_SECONDS ahead of
        the system's virtual time (present: the tenants with tasks here, each
        with its effective virtual time)."""
        self.seen(present, now)
        system = self.system_time(now)
        ahead = {t for t, v in present.items() if v > self._limit(t, system)}
        ahead.update(t for t, v in self.virtual.items() if t not in present and v > self._limit(t, system))
        return ahead

    def room(self, tenant, effective: float, now: float) -> float:
        """The CPU seconds the tenant may still use before it is ahead (its
        effective virtual time given): what one chunk of its tasks may take
        (worker/fair_queue.py), so that a chunk of many tasks does not carry
        it far past its share before the Calculator decides again."""
        return (self._limit(tenant, self.system_time(now)) - effective) * self.weight(tenant)

    def _limit(self, tenant, system: float) -> float:
        # QUANTUM_SECONDS of the tenant's own CPU time past its share: over
        # its weight in virtual time (a key of weight 1,000 whose runaway
        # moves its virtual time by 2.5 ms is ahead once that runaway ran
        # half a second, not after 200 of them).
        # Each busy Calculator lets a tenant get that far ahead in its own
        # view before the others hear of it (a second later): the quantum is
        # shared among them, so that together they keep about one quantum.
        return system + QUANTUM_SECONDS / self.weight(tenant) / (1 + self.busy_others)

    # --- sharing ----------------------------------------------------------

    def usage(self, now: float, running: dict) -> dict:
        """What this Calculator publishes: per tenant, [CPU seconds since it
        started, CPU seconds over the last minute, tasks running now]."""
        since = math.floor(now) - WINDOW_SECONDS
        figures = {}
        for tenant in set(self.charged) | set(running):
            recent = self._recent.get(tenant)
            while recent and recent[0][0] <= since:
                recent.popleft()
            last_minute = sum(s for _, s in recent) if recent else 0.0
            count = running.get(tenant, 0)
            if last_minute or count or self.charged.get(tenant, 0.0):
                figures[label(tenant)] = [round(self.charged.get(tenant, 0.0), 6), round(last_minute, 6), count]
        # Forget tenants quiet for a minute: only their totals stay published.
        for tenant in [t for t, r in self._recent.items() if not r]:
            del self._recent[tenant]
        return figures

    def refresh_due(self, now: float, active: bool) -> bool:
        """Time to share: with work here, or charges not yet shared, or a
        last minute's figures still to bring down to nothing (an idle
        Calculator keeps publishing until its last minute is empty), or
        never looked yet (a Calculator started beside others with another
        MAX_RUNNING_PER_KEY says so at once)."""
        return now >= self.next_refresh and (active or self._dirty or bool(self._recent)
                                             or self._others is None)  # once at the start, too

    def refresh(self, conn: psycopg.Connection, calculator_id, now: float, running: dict) -> None:
        """Publish this Calculator's charges and take in the others' (and
        the keys' weights), in one statement."""
        rows = conn.execute(load_query("share_tenant_usage"),
                            {"id": calculator_id, "usage": Jsonb(self.usage(now, running))},
                            prepare=True).fetchall()
        weights, others = {}, {}
        self.other_caps = {}
        for kind, name, value, cap in rows:
            if kind == "weight":
                weights[int(name)] = float(value)
            else:
                self.other_caps[name] = cap
                others[name] = {k: v[0] for k, v in (value or {}).items()
                                if isinstance(v, list) and v and isinstance(v[0], (int, float))}
        self.weights = weights
        busy, elsewhere = set(), {}
        if self._others is not None:  # the first look is only where the others stand
            for calculator, totals in others.items():
                before = self._others.get(calculator, {})
                for name, total in totals.items():
                    try:
                        tenant = tenant_of(name)
                    except ValueError:
                        continue
                    seconds = total - before.get(name, 0.0)
                    if seconds > 0:
                        busy.add(calculator)
                        elsewhere[tenant] = elsewhere.get(tenant, 0.0) + seconds
                    self._charge_elsewhere(tenant, seconds, now)
        self.busy_others = len(busy)
        interval = now - self._looked_at
        self._elsewhere_rate = {t: s / interval for t, s in elsewhere.items()} \
            if self._others is not None and 0 < interval <= 3 * REFRESH_SECONDS else {}
        self._looked_at = now
        # A Calculator missing from this look (its heartbeat late) keeps its
        # last totals: when it comes back, only what it charged since counts.
        self._others = {**(self._others or {}), **others}
        self._seen_others.update((c, now) for c in others)
        for calculator in [c for c, at in self._seen_others.items() if now - at > FORGET_CALCULATOR_SECONDS]:
            del self._seen_others[calculator]
            self._others.pop(calculator, None)
        # Forget the tenants quiet for a while and no further on than the
        # system's virtual time: they would start there anyway.
        since = now - 10 * ACTIVE_SECONDS
        for tenant in [t for t, at in self.active.items() if at < since]:
            del self.active[tenant]
            if self.virtual.get(tenant, math.inf) <= self.floor:
                del self.virtual[tenant]
        self._dirty = False
        self.next_refresh = now + REFRESH_SECONDS

