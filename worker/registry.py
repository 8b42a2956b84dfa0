"""This Calculator's row in the calculators table (see sql/003_calculators.sql)."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import asdict

import psycopg
from psycopg.types.json import Jsonb

from core.database import load_query
from core.settings import CalculatorSettings
from worker.metrics import METRICS

# The readers (sql/queries/queue_stats.sql) count a Calculator as gone after
# three missed heartbeats (15 s).
HEARTBEAT_SECONDS = 5.0


class Registration:
    def __init__(self, settings: CalculatorSettings):
        self.id = uuid.uuid4()
        self.params = {
            "id": self.id,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "settings": Jsonb({k: v for k, v in asdict(settings).items() if k != "limits"}),
        }

    def heartbeat(self, conn: psycopg.Connection) -> None:
        conn.execute(load_query("heartbeat"), {**self.params, "metrics": Jsonb(METRICS.snapshot())})

    def deregister(self, conn: psycopg.Connection) -> None:
        conn.execute("DELETE FROM calculators WHERE id = %s", (self.id,))
