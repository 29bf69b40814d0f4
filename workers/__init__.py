"""Celery workers: fan-out of events into deliveries, and delivery through target adapters."""
