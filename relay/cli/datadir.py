"""Which redis-server wrote the embedded Redis's data folder, so another one never
silently ignores it.

Redis 7 keeps its append-only file in ``appendonlydir/`` (a manifest and several
files); Redis 6 reads only ``appendonly.aof`` in the folder. A 6 started on a 7's folder
finds no AOF and starts empty; a 7 on a 6's folder converts it once, after which the 6
starts empty. Either way the events and API keys seem gone while they are on disk. So
``relay up`` records the server's version in the folder after each start and refuses to
start a server of another major version on it, saying what to do.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from relay.errors import RelayError

RECORD = "version"  # JSON {"version": "7.0.15", "binary": "/usr/bin/redis-server"}
AOF_DIR = "appendonlydir"  # Redis >= 7
OLD_AOF = "appendonly.aof"  # Redis < 7

Version = tuple[int, int, int]


def _shown(version: Version) -> str:
    return ".".join(map(str, version))


def recorded(data_dir: Path) -> tuple[Version, str] | None:
    """The version (and binary) that last ran on ``data_dir``, if recorded and readable."""
    try:
        data = json.loads((data_dir / RECORD).read_text())
        major, minor, patch = (int(p) for p in str(data["version"]).split("."))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (major, minor, patch), str(data.get("binary", "?"))


def has_data(data_dir: Path) -> bool:
    return (data_dir / AOF_DIR).is_dir() or (data_dir / OLD_AOF).is_file()


def check(data_dir: Path, binary: str, version: Version) -> None:
    """Refuse ``binary`` (``version``) on a data folder written by another major version."""
    if not has_data(data_dir):
        return
    found = recorded(data_dir)
    if found is not None:
        (old, old_binary), old_major = found, found[0][0]
        written_by = f"redis-server {_shown(old)} ({old_binary})"
    elif version[0] < 7 and (data_dir / AOF_DIR).is_dir():
        old_major, written_by = 7, f"redis-server 7 or later (it has {AOF_DIR}/)"
    else:
        return  # no record and a layout this server reads (a 7 converts a 6's AOF)
    if old_major == version[0]:
        return
    newer = version[0] > old_major
    effect = (
        f"it would convert the data for {version[0]}.x, after which {old_major}.x cannot read it"
        if newer
        else "it cannot read that data and would start empty"
    )
    upgrade = (
        f"; to upgrade the data, back up {data_dir} and delete {data_dir / RECORD}" if newer else ""
    )
    raise RelayError(
        f"{data_dir} holds data written by {written_by}; this is redis-server "
        f"{_shown(version)} ({binary}): {effect}. Run a {old_major}.x again (set "
        f"RELAY_REDIS_SERVER to its path), or move {data_dir} aside to start empty (its "
        f"events, dead letters and API keys stay in it){upgrade}"
    )


def record(data_dir: Path, binary: str, version: Version) -> None:
    """Remember which server runs on ``data_dir`` (after it started on it)."""
    path = data_dir / RECORD
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"version": _shown(version), "binary": binary}) + "\n")
    os.replace(tmp, path)
