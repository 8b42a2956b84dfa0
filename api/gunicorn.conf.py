"""gunicorn settings for the API (read with `gunicorn -c api/gunicorn.conf.py`).

gevent workers (chosen by measurement, see BENCHMARKS.md "Choosing the HTTP
server"): a request is a greenlet, not a thread, so a client waiting on
?wait= or trickling its headers costs a few KiB and no thread. psycopg
(>= 3.1.14) sees gevent's monkey-patching and waits cooperatively.
API_WORKER_CLASS=gthread gives the thread-per-request worker for comparison.
"""

import os

wsgi_app = "api.wsgi:app"
bind = os.environ.get("BIND", f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '5000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# API_WORKER_CLASS: gevent (default: api.gunicorn_worker.ApiWorker, gevent with
# fair turns and JSON errors), or gthread / plain gevent for comparison.
_WORKERS = {"gevent": "api.gunicorn_worker.ApiWorker", "gevent-plain": "gevent", "gthread": "gthread"}
worker_class = _WORKERS[os.environ.get("API_WORKER_CLASS", "gevent")]
# gevent: connections one worker holds at once (waiting clients included).
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "2000"))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))  # gthread only
# A SIGTERM lets requests in flight finish for this long, then exits.
graceful_timeout = 5
keepalive = 5
accesslog = os.environ.get("ACCESS_LOG") or None
errorlog = "-"
# GET /api/results?ids=... carries the ids in the request line (the most
# gunicorn allows: about 1,000 short ids).
limit_request_line = 8190
# gunicorn's control socket (~/.gunicorn/gunicorn.ctl) is one path shared by
# every gunicorn of the user on the machine: off.
control_socket_disable = True


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
