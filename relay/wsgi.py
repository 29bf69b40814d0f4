"""WSGI entry point for gunicorn (``relay.wsgi:app``); settings come from ``RELAY_*``."""

from relay import create_app

app = create_app()
