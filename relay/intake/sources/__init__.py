"""Source kinds, one module per platform, each registered as a ``group_relay.sources``
entry point (``pyproject.toml``): a new platform is one file, its payload mapper and
its tests. ``<platform>.py`` verifies and answers the platform; ``<platform>_payloads.py``
maps its verified JSON to ``GroupEvent``.
"""
