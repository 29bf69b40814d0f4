"""Deliveries that share a task message run at once, and none is abandoned."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from workers.concurrency import run_side_by_side


def test_results_in_order_and_calls_overlap() -> None:
    started = threading.Barrier(3, timeout=5)  # fails unless all three run at once

    def call(n: int) -> int:
        started.wait()
        return n * 10

    assert run_side_by_side(call, [1, 2, 3]) == [10, 20, 30]


def test_first_error_is_raised_after_every_call_finished() -> None:
    finished: list[int] = []

    def call(n: int) -> int:
        if n == 1:
            raise ValueError("boom")
        time.sleep(0.2)
        finished.append(n)
        return n

    with pytest.raises(ValueError, match="boom"):
        run_side_by_side(call, [1, 2, 3])
    assert sorted(finished) == [2, 3]


def test_single_item_runs_inline() -> None:
    assert run_side_by_side(lambda _: threading.current_thread().name, ["x"]) == [
        threading.current_thread().name
    ]


GEVENT_CHECK = """
from gevent import monkey; monkey.patch_all()
import time
from workers.concurrency import run_side_by_side
began = time.monotonic()
def call(n):
    time.sleep(0.3)  # patched: yields to the other greenlets
    if n == 2:
        raise KeyError(n)
    return n
try:
    run_side_by_side(call, [1, 2, 3])
except KeyError as exc:
    assert exc.args == (2,), exc.args
else:
    raise AssertionError("the error of call 2 was not raised")
assert run_side_by_side(lambda n: (time.sleep(0.3), n)[1], [1, 2, 3]) == [1, 2, 3]
print(round(time.monotonic() - began, 2))
"""


def test_under_gevent_calls_run_as_greenlets() -> None:
    out = subprocess.run(
        [sys.executable, "-c", GEVENT_CHECK], capture_output=True, text=True, check=True
    )
    assert float(out.stdout) < 1.0  # two rounds of three 0.3 s calls: 0.6 s side by side
