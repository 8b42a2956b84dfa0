"""gunicorn settings for the API (read with `gunicorn -c api/gunicorn.conf.py`).

Threads rather than processes alone: requests spend their time waiting on
PostgreSQL, and each process holds one connection pool shared by its threads.
"""

import os

wsgi_app = "api.wsgi:app"
bind = os.environ.get("BIND", f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '5000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
# A SIGTERM lets requests in flight finish for this long, then exits.
graceful_timeout = 5
keepalive = 5
accesslog = os.environ.get("ACCESS_LOG") or None
errorlog = "-"
# GET /api/results?ids=... carries the ids in the request line (the most
# gunicorn allows: about 1,000 short ids).
limit_request_line = 8190
