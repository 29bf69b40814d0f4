"""Reading the config file: YAML that refuses duplicate keys, ``${NAME}`` references, and
validation of the whole into a ``RelayConfig``.

Loading collects *every* problem, each named by its path in the file
(``routes[2].targets[0]: unknown target 'jria'``), and raises one ``ConfigError``.
Kind-specific options of sources and targets are validated by the kind's own
``Options`` model from the registry.

``resolve_secrets=False`` is for commands that only look at the relay or act on its
queues (``relay dlq``, ``relay events``, ``relay keys``...): a ``${NAME}`` that is not
set inside a source's or target's kind options (where its secrets, tokens and webhook
URLs live) does not stop them; that item's options become ``UnresolvedOptions``, which
name the variables and hold no value. Everything else, including a missing variable in
an id, a route or a retry policy, is still an error; ``relay check``, ``relay up``, the
web process and the workers resolve everything.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from relay.config.models import (
    DRY_RUN_KINDS,
    RelayConfig,
    RouteConfig,
    RouteMode,
    SourceConfig,
    TargetConfig,
    UnresolvedOptions,
)
from relay.config.paths import path_of, split_path
from relay.config.people import Person
from relay.errors import ConfigError

_ENV_REF = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)\}")


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


_COMMON_SOURCE_KEYS = set(SourceConfig.model_fields) - {"options"}
_COMMON_TARGET_KEYS = set(TargetConfig.model_fields) - {"options"}


_TOP_KEYS = ("sources", "targets", "routes", "people")


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (``RetryPolicy``, ``list[X] | None``...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _keys_at(model: type[BaseModel] | None, loc: list[Any], known: Iterable[str]) -> set[str]:
    """The keys allowed where ``loc`` points inside ``model`` (``known`` adds to the
    top level: a target's common keys beside its kind's options)."""
    if model is None:
        return set(known) if not loc else set()
    models = [model]
    for part in loc:
        if isinstance(part, int):
            continue
        models = [
            m
            for mdl in models
            for f in [mdl.model_fields.get(str(part))]
            if f
            for m in _models_in(f.annotation)
        ]
    found = {name for m in models for name in m.model_fields}
    return found | set(known) if not loc else found


def validation_problems(
    exc: ValidationError,
    prefix: str = "",
    model: type[BaseModel] | None = None,
    known: Iterable[str] = (),
) -> list[str]:
    """Each error of ``exc`` as ``path: message``; an unknown key gets the closest key
    ``model`` allows there (``retires`` → ``retry``), ``known`` adding top-level keys."""
    problems = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if p not in ("function-after", "function-before")]
        where = path_of([*(split_path(prefix)), *loc]) if prefix else path_of(loc)
        if err["type"] == "extra_forbidden":
            allowed = _keys_at(model, loc[:-1], known) - {"options"}
            message = "unknown key" + _did_you_mean(str(loc[-1]) if loc else "", allowed)
        elif err["type"] == "missing":
            message = "required key is missing"
        else:
            message = err["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return problems


def parse_config(
    data: Any,
    *,
    env: Mapping[str, str] | None = None,
    source_options: Mapping[str, type[BaseModel]] | None = None,
    target_options: Mapping[str, type[BaseModel]] | None = None,
    base_dir: Path | None = None,
    resolve_secrets: bool = True,
) -> RelayConfig:
    """Validate already-loaded YAML data. Kinds missing from the option maps are unknown.

    ``resolve_secrets=False`` keeps the options of an item whose ``${NAME}`` is unset
    as ``UnresolvedOptions`` instead of failing (see the module's docstring).

    ``base_dir`` (the config file's folder) is handed to option models as validation
    context, so relative paths mean the same whichever directory a process runs in.

    ``target_options=None`` skips target kinds entirely (the web process does not
    load target adapters); the CLI and workers pass the full registry.
    """
    if source_options is None:
        from relay.config.kinds import source_option_models

        source_options = source_option_models()
    problems: list[str] = []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(["the config must be a mapping with sources, targets and routes"])
    found: set[str] = set()
    unset: list[str] = []
    data = substitute_env(data, os.environ if env is None else env, "", unset, found)
    deferred: dict[tuple[Any, Any], list[str]] = {}
    for problem in unset:
        item = None if resolve_secrets else _options_item(problem)
        if item is None:
            problems.append(problem)
        else:
            deferred.setdefault(item, []).append(problem)
    for key in data:
        if key not in _TOP_KEYS:
            problems.append(
                f"{key}: unknown key"
                + (_did_you_mean(str(key), _TOP_KEYS) or f" (expected {', '.join(_TOP_KEYS)})")
            )
    people = _parse_people(data.get("people") or {}, problems)

    declared: set[str] = set()  # ids written in the file, valid or not
    sources = _parse_items(
        data.get("sources") or [],
        "sources",
        SourceConfig,
        _COMMON_SOURCE_KEYS,
        source_options,
        problems,
        declared,
        base_dir,
        {i: tuple(p) for (section, i), p in deferred.items() if section == "sources"},
    )
    targets = _parse_items(
        data.get("targets") or [],
        "targets",
        TargetConfig,
        _COMMON_TARGET_KEYS,
        target_options,
        problems,
        declared,
        base_dir,
        {i: tuple(p) for (section, i), p in deferred.items() if section == "targets"},
    )
    routes: list[RouteConfig] = []
    raw_routes = data.get("routes") or []
    if not isinstance(raw_routes, list):
        problems.append("routes: must be a list")
        raw_routes = []
    for i, raw in enumerate(raw_routes):
        try:
            route = RouteConfig.model_validate(raw)
        except ValidationError as exc:
            problems.extend(validation_problems(exc, f"routes[{i}]", RouteConfig))
            continue
        if route.source not in sources and f"sources:{route.source}" not in declared:
            problems.append(
                f"routes[{i}].source: unknown source {route.source!r}"
                + _did_you_mean(route.source, sources)
            )
        for key in ("targets", "test_targets"):
            for j, target in enumerate(getattr(route, key) or []):
                if target not in targets and f"targets:{target}" not in declared:
                    problems.append(
                        f"routes[{i}].{key}[{j}]: unknown target {target!r}"
                        + _did_you_mean(target, targets)
                    )
        if route.mode is RouteMode.SHADOW and target_options is not None:
            problems += _shadow_problems(i, route, targets)
        routes.append(route)
    problems += _chain_problems(targets, declared)
    if problems:
        raise ConfigError(_root_causes(problems))
    return RelayConfig(sources, targets, routes, frozenset(s for s in found if len(s) >= 4), people)


def _shadow_problems(
    index: int, route: RouteConfig, targets: Mapping[str, TargetConfig]
) -> list[str]:
    """A shadow route may only name targets whose kind sends through the dry run: any
    other would act for real (see ``DRY_RUN_KINDS``)."""
    from relay.config.kinds import target_kinds

    problems = []
    for j, target_id in enumerate(route.targets):
        target = targets.get(target_id)
        if target is None:
            continue
        adapter = target_kinds().get(target.kind)
        if target.kind in DRY_RUN_KINDS or getattr(adapter, "dry_run", False) is True:
            continue
        problems.append(
            f"routes[{index}].mode: shadow cannot use targets[{j}] {target_id!r}: a "
            f"{target.kind} target acts outside the dry run, so it would send for real; "
            f"shadow works with {', '.join(sorted(DRY_RUN_KINDS))} targets (or use mode "
            "test with test_targets)"
        )
    return problems


def _chain_problems(targets: Mapping[str, TargetConfig], declared: set[str]) -> list[str]:
    """A target that posts confirmations or links (``confirm.target``, ``notify.target``)
    must name a configured target other than itself."""
    problems = []
    for target_id, target in targets.items():
        chained = getattr(target.options, "chained_targets", None)
        for name in chained() if callable(chained) else []:
            field = "confirm" if hasattr(target.options, "confirm") else "notify"
            where = f"targets.{target_id}.{field}.target"
            if name == target_id:
                problems.append(f"{where}: a target cannot confirm through itself")
            elif name not in targets and f"targets:{name}" not in declared:
                problems.append(f"{where}: unknown target {name!r}" + _did_you_mean(name, targets))
    return problems


def _options_item(problem: str) -> tuple[str, int] | None:
    """``("targets", 2)`` when an unset-variable problem lies in that item's kind options
    (not in a key every item has, such as ``id`` or ``retry``), else ``None``."""
    parts = split_path(problem.split(": ", 1)[0])
    if len(parts) < 3 or parts[0] not in ("sources", "targets") or not isinstance(parts[1], int):
        return None
    common = _COMMON_SOURCE_KEYS if parts[0] == "sources" else _COMMON_TARGET_KEYS
    return None if parts[2] in common else (str(parts[0]), parts[1])


def _parse_people(raw: Any, problems: list[str]) -> dict[str, Person]:
    if not isinstance(raw, dict):
        problems.append("people: must be a mapping of name to ids")
        return {}
    people = {}
    for name, ids in raw.items():
        try:
            people[str(name)] = Person.model_validate(ids)
        except ValidationError as exc:
            problems.extend(validation_problems(exc, f"people.{name}", Person))
    return people


def _parse_items(
    items: Any,
    section: str,
    model: type[SourceConfig] | type[TargetConfig],
    common_keys: set[str],
    option_models: Mapping[str, type[BaseModel]] | None,
    problems: list[str],
    declared: set[str],
    base_dir: Path | None,
    unresolved: Mapping[int, tuple[str, ...]],
) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    if not isinstance(items, list):
        problems.append(f"{section}: must be a list")
        return parsed
    for i, raw in enumerate(items):
        where = f"{section}[{i}]"
        if not isinstance(raw, dict):
            problems.append(f"{where}: must be a mapping")
            continue
        if isinstance(raw.get("id"), str):
            declared.add(f"{section}:{raw['id']}")
        common = {k: v for k, v in raw.items() if k in common_keys}
        extra = {k: v for k, v in raw.items() if k not in common_keys}
        item = None
        try:
            item = model.model_validate(common)
        except ValidationError as exc:
            problems.extend(validation_problems(exc, where, model))
        options: Any = extra
        kind = raw.get("kind")
        if i in unresolved:
            options = UnresolvedOptions(unresolved[i])
        elif option_models is not None and isinstance(kind, str):
            options_model = option_models.get(kind)
            if options_model is None:
                problems.append(
                    f"{where}.kind: unknown kind {kind!r}; one of "
                    + ", ".join(sorted(option_models))
                )
                continue
            try:
                context = {"allow_private": raw.get("allow_private") is True, "base_dir": base_dir}
                options = options_model.model_validate(extra, context=context)
            except ValidationError as exc:
                problems.extend(validation_problems(exc, where, options_model, common_keys))
                continue
        if item is None:
            continue
        if item.id in parsed:
            problems.append(f"{where}.id: {item.id!r} is used twice")
            continue
        parsed[item.id] = item.model_copy(update={"options": options})
    return parsed


def _root_causes(problems: list[str]) -> list[str]:
    """Drop follow-on complaints about a value whose environment variable is missing
    (at its path, or at a list or mapping holding it: ``secrets: secrets[0] is empty``)."""
    unset = [p.split(": ", 1)[0] for p in problems if ": environment variable " in p]

    def follows(where: str) -> bool:
        return any(u == where or u.startswith((where + "[", where + ".")) for u in unset)

    return [
        p for p in problems if ": environment variable " in p or not follows(p.split(": ", 1)[0])
    ]


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def load_config(
    path: Path,
    *,
    with_targets: bool = True,
    env: Mapping[str, str] | None = None,
    resolve_secrets: bool = True,
) -> RelayConfig:
    """Read and validate the config file; ``with_targets`` also checks target options,
    ``resolve_secrets=False`` lets unset variables in kind options wait (module docstring)."""
    target_options = None
    if with_targets:
        from relay.config.kinds import target_option_models

        target_options = target_option_models()
    return parse_config(
        read_yaml(path),
        env=env,
        target_options=target_options,
        base_dir=path.resolve().parent,
        resolve_secrets=resolve_secrets,
    )
