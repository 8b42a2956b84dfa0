"""python -m worker: run one Calculator with settings from the environment."""

import logging
import sys

from core.logs import setup_logging
from core.migrations import SchemaError
from core.settings import CalculatorSettings, SettingsError, database_url
from worker import tracing
from worker.calculator import Calculator


def main() -> int:
    setup_logging()
    try:
        settings = CalculatorSettings.from_env()
        tracing.start()  # only with OTEL_EXPORTER_OTLP_ENDPOINT set (docs/operations.md, "Traces")
    except SettingsError as error:
        logging.getLogger("calculator").error("bad setting: %s", error)
        return 2
    try:
        return Calculator(settings, database_url()).run()
    except SchemaError as error:
        logging.getLogger("calculator").error("%s", error)
        return 2
    finally:
        tracing.stop()  # the spans not exported yet


if __name__ == "__main__":
    sys.exit(main())
