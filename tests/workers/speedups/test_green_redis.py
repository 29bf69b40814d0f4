"""Under gevent, redis-py's idle-connection check uses the OS's poll and still works."""

from __future__ import annotations

import subprocess
import sys

from redis._parsers import hiredis

from workers.speedups.green_redis import use_os_poll_for_idle_checks

GEVENT_CHECK = """
from gevent import monkey; monkey.patch_all()
import select, socket, sys, time
import gevent, gevent.select, redis
from redis._parsers import hiredis
from workers.speedups.green_redis import use_os_poll_for_idle_checks

assert use_os_poll_for_idle_checks()
assert use_os_poll_for_idle_checks()  # a second call changes nothing

green_polls = []
original = gevent.select.poll.poll
def counted(self, *args, **kwargs):
    green_polls.append(args)
    return original(self, *args, **kwargs)
gevent.select.poll.poll = counted

client = redis.Redis.from_url(sys.argv[1])
for i in range(50):
    client.set(f"green:{i}", i)
assert client.get("green:49") == b"49"
assert green_polls == [], green_polls  # no command went through the hub for its check

# The check still sees a reply nobody read, and nothing where there is none.
conn = client.connection_pool.get_connection()
assert not conn.can_read()
conn.send_command("PING")
time.sleep(0.1)
assert conn.can_read()
assert conn.read_response() == b"PONG" and not conn.can_read()
client.connection_pool.release(conn)
assert green_polls == [], green_polls

# A poll that may wait still goes through gevent and lets other greenlets run.
ticks = []
def ticker():
    for _ in range(5):
        ticks.append(1)
        gevent.sleep(0.02)
quiet, _other = socket.socketpair()
poller = hiredis.select.poll()
poller.register(quiet, select.POLLIN)
background = gevent.spawn(ticker)
assert poller.poll(300) == []
background.join()
assert len(ticks) == 5 and len(green_polls) == 1
print("ok")
"""


def test_under_gevent_idle_checks_skip_the_hub_and_still_catch_stray_replies(
    redis_url: str,
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", GEVENT_CHECK, redis_url], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_without_gevent_nothing_is_changed() -> None:
    module = hiredis.select
    assert use_os_poll_for_idle_checks() is False
    assert hiredis.select is module
