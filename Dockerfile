# One image for the three roles of the service: the API (default command),
# the Calculator (python -m worker) and the one-shot migrator
# (python -m core.migrations). See docker-compose.yml.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt requirements-otel.txt ./
# The OpenTelemetry packages too: imported only when OTEL_EXPORTER_OTLP_ENDPOINT
# is set (docs/operations.md, "Traces"), so that tracing is a setting, not a rebuild.
RUN pip install --no-cache-dir -r requirements.txt -r requirements-otel.txt

COPY core ./core
COPY api ./api
COPY worker ./worker
COPY sql ./sql

RUN useradd --system --uid 10001 --no-create-home calculator
USER calculator

EXPOSE 5000
# Exec form: the server is PID 1 and gets SIGTERM itself (gunicorn and the
# Calculator both stop gracefully on it).
CMD ["gunicorn", "-c", "api/gunicorn.conf.py"]
