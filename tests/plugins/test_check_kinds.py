"""``relay check`` names the plugin kinds installed beside the relay and their versions,
and refuses an installation it cannot run reliably (a kind declared twice, a plugin that
fails to import or lacks what the relay calls), naming the kind and its package."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.plugins.support import EXAMPLE_VERSION, fake_dist, plugin_env, relay_cli

SECRET = "acme-check-secret-0123456789"


def acme_config() -> dict[str, Any]:
    return {
        "sources": [{"id": "acme-ops", "kind": "acme", "signing_secrets": ["${ACME_SECRET}"]}],
        "targets": [{"id": "outbox", "kind": "file", "path": "outbox"}],
        "routes": [{"source": "acme-ops", "targets": ["outbox"]}],
    }


def test_check_lists_the_installed_plugin_with_its_version(
    acme_site: Path, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    path = write_config(acme_config())
    env = plugin_env(acme_site, ACME_SECRET=SECRET)

    plain = relay_cli("check", str(path), env=env, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines() == [
        f"{path}: ok (1 sources, 1 targets, 1 routes)",
        f"plugin: source kind 'acme' from group-relay-acme-source {EXAMPLE_VERSION}",
    ]

    every = relay_cli("check", str(path), "--kinds", env=env, cwd=tmp_path)
    assert every.returncode == 0, every.stderr
    lines = every.stdout.splitlines()
    assert lines[1].split() == ["KIND", "GROUP", "PACKAGE", "VERSION", "ORIGIN"]
    rows = {tuple(line.split(None, 4)) for line in lines[2:]}
    assert ("acme", "source", "group-relay-acme-source", EXAMPLE_VERSION, "plugin") in rows
    builtin = [r for r in rows if r[4] == "built in"]
    assert {r[2] for r in builtin} == {"group-relay"}
    assert ("standard_webhooks", "source") in {r[:2] for r in builtin}
    assert ("webhook", "target") in {r[:2] for r in builtin}
    assert len(rows) == len(lines) - 2, "one row per kind"
    assert SECRET not in plain.stdout + plain.stderr + every.stdout + every.stderr


def test_without_the_plugin_the_kind_is_unknown(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """The listing above comes from the installed package, not from this checkout."""
    path = write_config(acme_config())
    result = relay_cli("check", str(path), env=plugin_env(ACME_SECRET=SECRET), cwd=tmp_path)
    assert result.returncode == 1
    assert "sources[0].kind: unknown kind 'acme'" in result.stderr
    assert "plugin:" not in result.stdout


def test_a_kind_declared_by_two_packages_is_refused(
    acme_site: Path, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    clone = fake_dist(
        tmp_path / "clone",
        "acme-clone",
        "1.2",
        "[group_relay.sources]\nacme = group_relay_acme.source:AcmeSource\n",
    )
    path = write_config(acme_config())
    result = relay_cli(
        "check", str(path), env=plugin_env(acme_site, clone, ACME_SECRET=SECRET), cwd=tmp_path
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        f"source kind 'acme' is declared by acme-clone 1.2 and group-relay-acme-source "
        f"{EXAMPLE_VERSION}; uninstall one of them (which one loads depends on the order "
        "of sys.path)"
    )
    assert "plugin: source kind 'acme' from acme-clone 1.2" in result.stdout.splitlines()


HALF_TARGET = '''
class HalfTarget:
    """A target written against an older idea of the protocol."""

    family = "sms"
    default_rate_limits = ("often",)

    def send(self, event):
        return None
'''

NOT_A_CLASS = """
def make_source(config):
    return None
"""


def test_a_plugin_that_cannot_run_is_named_with_what_it_lacks(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    site = tmp_path / "plugins"
    fake_dist(
        site,
        "half-target",
        "0.0.1",
        "[group_relay.targets]\nhalf = half_target:HalfTarget\n",
        {"half_target": HALF_TARGET},
    )
    fake_dist(
        site,
        "odd-source",
        "2.0",
        "[group_relay.sources]\nodd = odd_source:make_source\n",
        {"odd_source": NOT_A_CLASS},
    )
    path = write_config({"sources": [], "targets": [], "routes": []})
    result = relay_cli("check", str(path), env=plugin_env(site), cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    problems = result.stderr.splitlines()
    assert problems == [
        "source kind 'odd' (odd_source:make_source) does not implement the Source "
        "protocol: the entry point names 'function', not a class",
        "target kind 'half' (half_target:HalfTarget) does not implement the Target "
        "protocol: Options is not a pydantic model of its options; family is 'sms', "
        "not one of notify, pm, storage, webhook; no deliver(); default_rate_limits is "
        "not a list of rates such as '20/min'",
        f"{path}: 2 problems",
    ]
    assert "Traceback" not in result.stderr


def test_a_plugin_that_fails_to_import_is_still_listed_and_named(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    site = fake_dist(
        tmp_path / "plugins",
        "ghost-source",
        "0.3",
        "[group_relay.sources]\nghost = ghost_source_missing:GhostSource\n",
    )
    path = write_config({"sources": [], "targets": [], "routes": []})
    result = relay_cli("check", str(path), "--kinds", env=plugin_env(site), cwd=tmp_path)
    assert result.returncode == 1
    assert re.search(
        r"^source kind 'ghost' \(ghost_source_missing:GhostSource\) failed to load: "
        r"No module named 'ghost_source_missing'$",
        result.stderr,
        re.MULTILINE,
    ), result.stderr
    rows = [line.split(None, 4) for line in result.stdout.splitlines()]
    assert ["ghost", "source", "ghost-source", "0.3", "plugin"] in rows
    assert "Traceback" not in result.stderr
