"""Query plans read as data: EXPLAIN (FORMAT JSON), whose fields are the same
from one PostgreSQL version to the next, where the text form is not (15 prints
`rows=100 loops=1`, 18 prints `rows=100.00 loops=1`)."""

from __future__ import annotations

from typing import Any, Iterator

import psycopg


def explain(conn: psycopg.Connection, query: str, params=None, *, analyze: bool = True) -> dict[str, Any]:
    """The top plan node of query (EXPLAIN [ANALYZE] (COSTS OFF, FORMAT JSON))."""
    options = "ANALYZE, COSTS OFF, FORMAT JSON" if analyze else "COSTS OFF, FORMAT JSON"
    document = conn.execute(f"EXPLAIN ({options}) {query}", params).fetchone()[0]
    return document[0]["Plan"]


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of the plan, depth first (init plans and sub-plans included)."""
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def index_scans(plan: dict[str, Any], index: str) -> list[dict[str, Any]]:
    """The nodes that scan index (Index Scan or Index Only Scan)."""
    return [node for node in nodes(plan) if node.get("Index Name") == index]
