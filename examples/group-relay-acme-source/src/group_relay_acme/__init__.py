"""Acme Chat as a source kind of group-relay, registered as the ``acme`` entry point of
``group_relay.sources``. Nothing is imported here: the relay loads ``source`` by the
entry point, only in processes that read a config naming the kind."""
