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


# /metrics under several worker processes (prometheus-client's multiprocess
# mode, see api/metrics.py): the workers write their figures into
# PROMETHEUS_MULTIPROC_DIR (a fresh temporary directory when unset), which is
# emptied here, in the master, before any worker starts.
def on_starting(server):
    from api.metrics_dir import prepare_multiprocess_dir  # before anything imports prometheus_client
    prepare_multiprocess_dir()


def child_exit(server, worker):
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    from api.metrics_dir import remove_multiprocess_dir
    remove_multiprocess_dir()
