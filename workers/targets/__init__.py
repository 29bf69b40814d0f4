"""Target adapters, one module per kind, registered as ``group_relay.targets`` entry points."""
