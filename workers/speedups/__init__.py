"""Measured CPU savings in the worker's libraries (kombu's Redis channel, redis-py's idle
checks under gevent). Each changes how a library works, never what the relay does;
``bench/README.md`` has the measurements that justify them.
"""
