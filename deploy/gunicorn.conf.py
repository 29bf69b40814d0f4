"""Gunicorn config of the ``web`` process (Procfile, Dockerfile, systemd).

The settings live in the package (``relay/gunicorn_conf.py``) so ``relay up`` uses the
same ones from an installed wheel; this file only re-exports them. Override any of
them here or with gunicorn's command-line options.
"""

from relay.gunicorn_conf import (  # noqa: F401 - gunicorn reads these names
    access_log_format,
    accesslog,
    bind,
    control_socket_disable,
    errorlog,
    forwarded_allow_ips,
    graceful_timeout,
    keepalive,
    logger_class,
    threads,
    timeout,
    worker_class,
    workers,
)
