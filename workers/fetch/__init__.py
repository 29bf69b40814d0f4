"""Fetchers: a file reference in an event becomes a byte stream, at delivery time.

Download URLs expire and some embed the bot token, so events keep only a ``ref`` (or
a plain URL for generic sources) and the URL lives only inside the attempt.
``fetcher_for(source_kind)`` picks the module for a source kind.
"""
