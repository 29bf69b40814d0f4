"""Scripts run together in one round trip, and survive a server that forgot them."""

from __future__ import annotations

import pytest
import redis

from relay.state.lua import ScriptCall, run_together

SET_AND_ECHO = "redis.call('SET', KEYS[1], ARGV[1]) return ARGV[1]"
FAIL = "return redis.error_reply('ERR refused')"


def test_results_in_order(redis_client: redis.Redis) -> None:
    script = redis_client.register_script(SET_AND_ECHO)
    calls = [ScriptCall(script, ["a"], ["1"]), ScriptCall(script, ["b"], ["2"])]
    assert run_together(redis_client, calls) == [b"1", b"2"]
    assert redis_client.mget("a", "b") == [b"1", b"2"]


def test_forgotten_scripts_are_loaded_and_run_once(redis_client: redis.Redis) -> None:
    script = redis_client.register_script(SET_AND_ECHO)
    counter = redis_client.register_script("return redis.call('INCR', KEYS[1])")
    run_together(redis_client, [ScriptCall(script, ["a"], ["1"]), ScriptCall(counter, ["n"], [])])
    redis_client.script_flush()  # what a restarted Redis looks like
    answers = run_together(
        redis_client, [ScriptCall(script, ["a"], ["x"]), ScriptCall(counter, ["n"], [])]
    )
    assert answers == [b"x", 2]  # each ran exactly once more
    assert redis_client.get("a") == b"x"


def test_an_error_is_raised_after_the_others_ran(redis_client: redis.Redis) -> None:
    failing = redis_client.register_script(FAIL)
    script = redis_client.register_script(SET_AND_ECHO)
    with pytest.raises(redis.ResponseError, match="refused"):
        run_together(
            redis_client, [ScriptCall(failing, [], []), ScriptCall(script, ["after"], ["ok"])]
        )
    assert redis_client.get("after") == b"ok"
