"""Reading the config file: YAML that refuses duplicate keys, and ``${NAME}`` references.

Paths in messages use the file's own notation (``routes[2].targets[0]``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from relay.errors import ConfigError

_ENV_REF = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)\}")


def path_of(loc: Iterable[object]) -> str:
    """``("routes", 2, "targets", 0)`` → ``routes[2].targets[0]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def split_path(prefix: str) -> list[object]:
    parts: list[object] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", prefix):
        parts.append(int(index) if index else name)
    return parts


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping instead of keeping the last."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is written twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def substitute_env(
    value: Any, env: Mapping[str, str], path: str, problems: list[str], found: set[str]
) -> Any:
    """Replace ``${NAME}`` in every string; a missing variable is a problem at ``path``."""
    if isinstance(value, dict):
        return {
            k: substitute_env(v, env, path_of([*split_path(path), k]), problems, found)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            substitute_env(v, env, f"{path}[{i}]", problems, found) for i, v in enumerate(value)
        ]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            return "${" + match.group(2) + "}"
        name = match.group(2)
        if name not in env:
            problems.append(f"{path}: environment variable {name} is not set")
            return ""
        found.add(env[name])
        return env[name]

    return _ENV_REF.sub(replace, value)


def read_yaml(path: Path) -> Any:
    """Load the YAML file; an unreadable or malformed file is a ``ConfigError``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file (run `relay init` to write one)"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot be read: {exc.strerror}"]) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}: invalid YAML: {problem}"]) from None
