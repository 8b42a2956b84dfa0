"""The Calculator's local queue and claim size, in-process (the behaviour
with real Calculators: tests/test_fairness.py)."""

from __future__ import annotations

import uuid

from core.settings import CalculatorSettings
from worker.claim_size import ClaimSize, hold_seconds
from worker.fair_queue import FairQueue
from worker.task_queue import Task


def task(task_id: int, owner, fair_round: int) -> Task:
    return Task(task_id, "1", {}, uuid.uuid4(), owner, fair_round)


def no_limit(task_id: int) -> int:
    return 64


def ids(tasks) -> list[int]:
    return [t.id for t in tasks]


def test_a_chunk_starts_with_the_owner_with_fewest_running_then_lowest_round():
    queue = FairQueue()
    queue.add([task(1, "a", 1), task(2, "b", 1), task(3, "a", 2), task(4, "b", 2), task(5, None, 7)], 0)
    assert ids(queue.next_chunk(1, {}, no_limit)) == [1]                 # a: round 1, lowest id
    assert ids(queue.next_chunk(1, {"a": 1}, no_limit)) == [2]           # b has fewer running
    assert ids(queue.next_chunk(1, {"a": 1, "b": 1}, no_limit)) == [5]   # None is an owner too
    assert ids(queue.next_chunk(5, {"a": 1, "b": 1}, no_limit)) == [3, 4]
    assert not queue and len(queue) == 0


def test_a_chunk_goes_on_with_the_next_owners_but_never_a_busier_one():
    queue = FairQueue()
    queue.add([task(i, "a", i) for i in range(1, 4)], 0)
    queue.add([task(i, "b", i - 10) for i in range(11, 13)], 0)
    queue.add([task(i, "c", i - 20) for i in range(21, 23)], 0)
    # b and c have no child here (b first: rounds tie, lower id); a has one, so it waits.
    assert ids(queue.next_chunk(10, {"a": 1}, no_limit)) == [11, 12, 21, 22]
    assert ids(queue.next_chunk(10, {"a": 1}, no_limit)) == [1, 2, 3]


def test_tasks_put_back_return_to_their_place():
    queue = FairQueue()
    tasks = [task(i, "a", i) for i in range(1, 6)]
    queue.add(tasks, 0)
    chunk = queue.next_chunk(3, {}, no_limit)
    assert ids(chunk) == [1, 2, 3]
    queue.add(chunk[1:], 5)  # taken back from a child
    assert ids(queue.next_chunk(10, {}, no_limit)) == [2, 3, 4, 5]
    assert [t.queued_at for t in tasks] == [0] * 5, "they keep the time they were first queued"


def test_a_chunk_respects_each_tasks_chunk_limit():
    queue = FairQueue()
    queue.add([task(i, None, i) for i in range(1, 7)], 0)
    limits = {3: 2}
    limit_of = lambda task_id: limits.get(task_id, 64)  # noqa: E731
    assert ids(queue.next_chunk(10, {}, limit_of)) == [1, 2]  # 3 may only go in a chunk of 2
    assert ids(queue.next_chunk(10, {}, limit_of)) == [3, 4]
    assert ids(queue.next_chunk(10, {}, limit_of)) == [5, 6]


def test_a_chunk_carries_no_more_of_an_owner_than_its_allowance():
    """A child runs its chunk without the Calculator deciding again: an owner
    gets no more tasks in one chunk than its fair share's room holds (at
    least one), and the chunk does not go on to the next owner past it."""
    queue = FairQueue()
    queue.add([task(i, "a", i) for i in range(1, 11)], 0)
    queue.add([task(i, "b", i) for i in range(11, 21)], 0)
    allowance = {"a": 3, "b": 0}.get
    assert ids(queue.next_chunk(10, {}, no_limit, allowance=allowance)) == [1, 2, 3]
    assert ids(queue.next_chunk(10, {}, no_limit, used={"a": 1.0, "b": 0.0}.get,
                                allowance=allowance)) == [11], "at least one"
    assert len(queue.next_chunk(10, {}, no_limit)) == 10, "without an allowance, as many as fit"


def test_overdue_takes_out_what_waited_past_the_hold_time():
    queue = FairQueue()
    queue.add([task(1, "a", 1), task(2, "b", 1)], 10.0)
    queue.add([task(3, "a", 2)], 10.5)
    assert queue.next_overdue_at(1.0) == 11.0
    assert queue.overdue(10.9, 1.0) == []
    assert sorted(ids(queue.overdue(11.0, 1.0))) == [1, 2]
    assert ids(queue) == [3] and queue.next_overdue_at(1.0) == 11.5
    queue.remove({3})
    assert not queue and queue.next_overdue_at(1.0) is None


def test_the_claim_size_follows_the_seconds_per_task():
    settings = CalculatorSettings(task_num=100, num_processes=2, calculation_timeout=10)
    size = ClaimSize(settings)
    assert hold_seconds(settings) == 1.0
    assert hold_seconds(CalculatorSettings(calculation_timeout=1)) == 0.5
    assert size.target(2) == 100                  # nothing known: TASK_NUM
    assert size.target(0) == 2                    # every child stuck: one task each
    for _ in range(100):
        size.observe(0.0001, 0.0)
    assert size.target(2) == 100                  # quick tasks
    for _ in range(100):
        size.observe(10.0, 1.0)                   # timeouts
    assert size.target(2) == 2
    size.observe(0.0001, 1000.0)                  # long ago: the runaways are forgotten
    assert size.target(2) == 100


def test_tasks_added_in_any_order_come_out_in_fair_order():
    import random
    rng = random.Random(13)
    queue = FairQueue()
    tasks = [task(i, i % 3, rng.randrange(50)) for i in range(1, 301)]
    for start in range(0, 300, 37):  # batches in a shuffled order
        batch = tasks[start:start + 37]
        rng.shuffle(batch)
        queue.add(batch, 0)
    out = []
    while queue:
        out.extend(queue.next_chunk(7, {}, no_limit))
    for owner in range(3):
        mine = [(t.fair_round, t.id) for t in out if t.owner == owner]
        assert mine == sorted(mine)
    assert sorted(t.id for t in out) == list(range(1, 301))
