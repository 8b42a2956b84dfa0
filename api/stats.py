"""GET /api/stats: queue depth, outcomes, throughput and live Calculators:
everyone's for admin keys (and AUTH=off), a key's own for the others."""

from __future__ import annotations

from flask import Blueprint, jsonify

from api.auth import caller
from api.db import connection
from core.database import load_query

blueprint = Blueprint("stats", __name__, url_prefix="/api")


@blueprint.get("/stats")
def queue_stats():
    with connection() as conn:
        only = caller().only_owner
        cursor = (conn.execute(load_query("queue_stats")) if only is None
                  else conn.execute(load_query("owner_stats"), {"owner": only}))
        row = cursor.fetchone()
        names = [column.name for column in cursor.description]
    stats = dict(zip(names, row))
    return jsonify({
        "queue": {
            "pending": stats["queued"] + stats["leased"] + stats["expired_leases"],
            "queued": stats["queued"],
            "leased": stats["leased"],
            "expired_leases": stats["expired_leases"],
            "oldest_pending_seconds": float(stats["oldest_pending_seconds"] or 0),
        },
        "outcomes": {"done": int(stats["done"]), "error": int(stats["errors"]),
                     "cancelled": int(stats["cancelled"])},
        "results_per_second_last_minute": round(float(stats["results_per_second"]), 3),
        "live_calculators": stats["live_calculators"],
    })
