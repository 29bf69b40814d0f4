"""Gunicorn settings for the web process, shared by ``relay up`` and production.

``relay up`` loads this module as ``gunicorn -c python:relay.gunicorn_conf``;
``deploy/gunicorn.conf.py`` re-exports it so the Procfile's ``-c deploy/...`` works
from a checkout. Gunicorn reads its config from module names, so the environment is
read here, when gunicorn imports the module, and nowhere else.
"""

from __future__ import annotations

import os

# PORT is what platforms (Heroku, Render, ...) set; RELAY_BIND wins when both are set.
bind = [os.environ.get("RELAY_BIND") or f"0.0.0.0:{os.environ.get('PORT', '8000')}"]

# Intake does little CPU work per request and waits on Redis: a few processes with
# threads each keep latency low without a process per connection.
workers = int(os.environ.get("WEB_CONCURRENCY") or 2 * (os.cpu_count() or 1))
worker_class = "gthread"
threads = int(os.environ.get("RELAY_WEB_THREADS") or 8)

# A request that takes 30 s is stuck (intake answers in milliseconds or 503s fast).
timeout = 30
# Below relay up's 20 s grace, so a stop ends cleanly rather than by SIGKILL.
graceful_timeout = 15
keepalive = 5

# Trust X-Forwarded-* only from the proxy in front (set to its address in production).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS") or "127.0.0.1,::1"

# Access log to stdout; %(U)s is the path without the query string, which may carry
# tokens (some platforms sign or verify via query parameters).
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'

# Gunicorn >= 25.1 opens a control socket in $HOME by default; several relays on one
# host would fight over it, and nothing here uses it.
control_socket_disable = True
