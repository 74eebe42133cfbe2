"""gunicorn settings for production: `gunicorn -c deploy/gunicorn.conf.py`.

Every value can be changed through the environment named next to it; gunicorn itself also
reads WEB_CONCURRENCY (workers) and FORWARDED_ALLOW_IPS.
"""

import os
import shutil
import tempfile

wsgi_app = "registry_browser.wsgi:application"
bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads let one worker serve other pages while a request waits on the database.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
# Recycle workers now and then so a slow leak never grows without bound.
max_requests = 2000
max_requests_jitter = 200
# The dashboard logs one structured line per request itself (dashboard.logging).
accesslog = None
errorlog = "-"
# Heartbeat files on tmpfs: a container's overlay filesystem can stall them.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# Each worker counts its own requests; prometheus_client adds them up from files in this
# directory, which must be empty when the server starts (hence a fresh one by default, removed
# again when gunicorn exits). It must be set before prometheus_client is first imported, so that
# import waits until here. A reload (SIGHUP) runs this file again while the workers keep
# writing to the first directory, so what we made is remembered in the environment.
OWN_METRICS_DIR = "REGISTRY_BROWSER_OWN_METRICS_DIR"
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ[OWN_METRICS_DIR] = tempfile.mkdtemp(
        prefix="registry-browser-metrics-"
    )


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    # After a binary upgrade (SIGUSR2) the new master, still running, uses the directory too.
    if server.reexec_pid == 0 and OWN_METRICS_DIR in os.environ:
        shutil.rmtree(os.environ[OWN_METRICS_DIR], ignore_errors=True)
