"""The one algorithm every storage target runs.

For each file of an event: fetch it from the source at delivery time (never earlier:
download URLs expire and some carry the bot token), check its size and its type
sniffed from the bytes, render and sanitise its path, and write it create-only while
hashing on the way through. ``on_conflict`` decides what a taken path means. Each
stored file is recorded in the delivery's ledger at once, so a retry stores only what
is missing; a retry after the store took a file but the worker died finds it by its
path (and size) instead of uploading it again.

Bytes stream from the source to the store. Stores that must know the size first,
and ``dedupe: content`` (which needs the hash before choosing the path), read from a
size-capped spool on local disk instead.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from typing import Any, ClassVar

from relay.errors import PermanentDeliveryError, RetryableDeliveryError
from relay.events import FileRef
from relay.state import keys
from relay.state.tasks import Ledger
from workers.fetch.base import Download
from workers.fetch.registry import fetcher_for
from workers.net.outcomes import Chained
from workers.storage.options import StorageOptions
from workers.storage.paths import numbered, render_path, sanitise
from workers.storage.spec import AlreadyExists, Store, StoredObject
from workers.storage.stream import HashingReader, sniff_mime, spool, type_allowed
from workers.targets.base import BaseTarget, DeliveryContext, DeliveryResult

SNIFF_BYTES = 8192
MAX_RENAMES = 50

DEFAULT_NOTIFY = """\
{% set n = files|length %}\
{{ "Saved" }} {{ n }} file{{ "" if n == 1 else "s" }}:\
{% for f in files %}
- {{ f.name }}{% if f.link %} {{ f.link }}{% else %} ({{ f.path }}){% endif %}{% endfor %}"""


class _Prefixed:
    """A reader that first returns ``head``, then the rest of ``reader``."""

    def __init__(self, head: bytes, reader: Any) -> None:
        self.head = head
        self.reader = reader

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n < 0 or n >= len(self.head):
                data, self.head = self.head, b""
                if n < 0:
                    return data + bytes(self.reader.read(-1))
                return data
            data, self.head = self.head[:n], self.head[n:]
            return data
        return bytes(self.reader.read(n))


def upload_id(delivery_id: str, index: int) -> str:
    """Stable per delivery and file: names upload sessions and temporary files."""
    return "gr" + hashlib.sha256(f"{delivery_id}|{index}".encode()).hexdigest()[:30]


class StorageTarget(BaseTarget):
    """Base of every storage target: subclasses give ``store``."""

    family: ClassVar[str] = "storage"
    Options: ClassVar[type[StorageOptions]] = StorageOptions

    def store(self, context: DeliveryContext) -> Store:
        raise NotImplementedError

    def deliver(self, context: DeliveryContext) -> DeliveryResult:
        event = context.event
        if not event.files:
            return DeliveryResult(excerpt="the event carries no files: nothing to store")
        if context.state is None:
            raise RuntimeError("storage targets need the shared Redis")
        ledger = Ledger(context.state, context.delivery_id, retention=context.retention)
        done = ledger.read()
        store = self.store(context)
        stored: list[dict[str, Any]] = []
        for index, file in enumerate(event.files):
            entry = done.get(f"file:{index}")
            if not isinstance(entry, dict):
                entry = self.store_one(context, store, ledger, done, index, file)
            stored.append(entry)
        return self.result(context, stored)

    # -- one file ----------------------------------------------------------------------

    def store_one(
        self,
        context: DeliveryContext,
        store: Store,
        ledger: Ledger,
        done: dict[str, Any],
        index: int,
        file: FileRef,
    ) -> dict[str, Any]:
        options: StorageOptions = self.options
        event = context.event
        source_id = event.source
        path = sanitise(
            render_path(options.path, event=event, file=file, index=index, source_id=source_id),
            max_segment=store.max_segment,
            max_path=store.max_path,
            windows_names=store.windows_names,
        )
        session = upload_id(context.delivery_id, index)
        begun = done.get(f"begun:{index}")
        if isinstance(begun, dict):  # an earlier attempt began: did the store take it?
            found = store.stat(str(begun.get("path") or path))
            if found is not None and _ours(found, begun):
                return self.record(context, store, ledger, index, file, found, begun)
            store.cleanup(session, path=str(begun.get("path") or path))
        obj, facts = self.upload(context, store, ledger, index, file, path, session)
        return self.record(context, store, ledger, index, file, obj, facts)

    def upload(
        self,
        context: DeliveryContext,
        store: Store,
        ledger: Ledger,
        index: int,
        file: FileRef,
        path: str,
        session: str,
    ) -> tuple[StoredObject, dict[str, Any]]:
        """Fetch and write the file; on a taken path, do what ``on_conflict`` says."""
        options: StorageOptions = self.options
        candidate = path
        for attempt in range(1, MAX_RENAMES + 1):
            if attempt > 1:
                candidate = numbered(path, attempt, max_segment=store.max_segment)
            with self.open(context, store, file) as (reader, facts):
                if options.dedupe == "content":
                    existing = self.same_content(context, facts)
                    if existing is not None:
                        return existing, {**facts, "deduplicated": True}
                ledger.record(**{f"begun:{index}": {**_begun_facts(facts), "path": candidate}})
                try:
                    obj = store.put(
                        candidate,
                        reader,
                        size=facts.get("size"),
                        mime=facts.get("mime"),
                        sha256=facts.get("sha256"),
                        create_only=options.on_conflict != "overwrite",
                        upload_id=session,
                    )
                except AlreadyExists as taken:
                    verdict = self.conflict(taken, reader, facts)
                    if verdict is not None:
                        return verdict, facts
                    continue
                facts.update(_measured(reader))
                if options.dedupe == "content" and facts.get("sha256"):
                    self.remember_content(context, facts["sha256"], obj)
                return obj, facts
        raise PermanentDeliveryError(
            f"{path}: {MAX_RENAMES} names are taken; set on_conflict or a more specific path"
        )

    def conflict(
        self, taken: AlreadyExists, reader: Any, facts: dict[str, Any]
    ) -> StoredObject | None:
        """The object to record for a taken path, or None to try the next name."""
        on_conflict = self.options.on_conflict
        if on_conflict == "fail":
            raise PermanentDeliveryError(f"{taken.path} already exists (on_conflict: fail)")
        measured = {**facts, **_measured(reader)}
        existing = taken.existing
        if on_conflict == "skip_same" and existing is not None and _same(existing, measured):
            return existing
        return None  # rename; skip_same with different bytes is renamed too

    @contextmanager
    def open(
        self, context: DeliveryContext, store: Store, file: FileRef
    ) -> Iterator[tuple[Any, dict[str, Any]]]:
        """The file's bytes as a reader ready for ``Store.put`` (hashing, size-capped,
        type-checked; spooled when the store needs the size or dedupe needs the hash),
        and what is known of it (``size``, ``mime``, ``sha256`` when spooled)."""
        options: StorageOptions = self.options
        source = context.source
        if source is None:
            raise PermanentDeliveryError("the event's source is no longer configured")
        fetcher = fetcher_for(source.kind)
        with ExitStack() as stack:
            download: Download = stack.enter_context(
                fetcher.open(file, source, timeout=context.timeout, state=context.state)
            )
            if options.max_size is not None and (download.size or 0) > options.max_size:
                raise PermanentDeliveryError(
                    f"{file.name}: {download.size} bytes is over max_size {options.max_size}"
                )
            hashing = HashingReader(
                download, max_size=options.max_size, declared_size=download.size
            )
            head = hashing.read(SNIFF_BYTES)
            mime = sniff_mime(head, file.name)
            if options.allowed_types is not None and not type_allowed(mime, options.allowed_types):
                raise PermanentDeliveryError(
                    f"{file.name}: type {mime} is not in allowed_types "
                    f"({', '.join(options.allowed_types)})"
                )
            reader: Any = _Prefixed(head, hashing)
            facts: dict[str, Any] = {"name": file.name, "mime": mime, "size": download.size}
            if store.needs_size or options.dedupe == "content":
                spooled = stack.enter_context(spool(reader))
                facts.update(size=spooled.size, sha256=spooled.sha256)
                reader = spooled
            yield reader, facts

    # -- records -----------------------------------------------------------------------

    def record(
        self,
        context: DeliveryContext,
        store: Store,
        ledger: Ledger,
        index: int,
        file: FileRef,
        obj: StoredObject,
        facts: dict[str, Any],
    ) -> dict[str, Any]:
        """Note the stored file in the ledger (a retry skips it) with its link."""
        link = None
        if self.options.notify is not None:
            link = store.link(obj, self.options.notify.link_lifetime)
        entry = {
            "name": file.name,
            "path": obj.path,
            "size": obj.size if obj.size is not None else facts.get("size"),
            "sha256": obj.sha256 or facts.get("sha256"),
            "mime": facts.get("mime"),
            "url": obj.url,
            "id": obj.id,
            "link": link,
        }
        if facts.get("deduplicated"):
            entry["deduplicated"] = True
        ledger.record(**{f"file:{index}": entry})
        return entry

    def same_content(self, context: DeliveryContext, facts: dict[str, Any]) -> StoredObject | None:
        """The object already holding these bytes (``dedupe: content``), if any."""
        assert context.state is not None
        raw = context.state.get(keys.content(self.config.id, facts["sha256"]))
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return StoredObject(**data)
        except (ValueError, TypeError):
            return None

    def remember_content(self, context: DeliveryContext, sha256: str, obj: StoredObject) -> None:
        assert context.state is not None
        context.state.set(keys.content(self.config.id, sha256), json.dumps(asdict(obj)))

    def result(self, context: DeliveryContext, stored: list[dict[str, Any]]) -> DeliveryResult:
        public = [{k: v for k, v in entry.items() if k != "link"} for entry in stored]
        chain: tuple[Chained, ...] = ()
        notify = self.options.notify
        if notify is not None:
            variables = {"files": stored, "target": self.config.id}
            chain = (Chained(notify.target, variables, notify.template or DEFAULT_NOTIFY),)
        return DeliveryResult(status=200, excerpt=json.dumps({"stored": public}), chain=chain)


def _measured(reader: Any) -> dict[str, Any]:
    """Size and SHA-256 of what went through ``reader``, when it hashed to the end."""
    inner = getattr(reader, "reader", reader)
    for candidate in (reader, inner):
        size = getattr(candidate, "size", None)
        try:
            digest = getattr(candidate, "sha256", None)
        except (RetryableDeliveryError, ValueError):
            digest = None
        if digest:
            return {"size": size, "sha256": digest}
    return {}


def _same(existing: StoredObject, facts: dict[str, Any]) -> bool:
    if existing.size is None or facts.get("size") is None or existing.size != facts["size"]:
        return False
    return existing.sha256 is None or facts.get("sha256") in (None, existing.sha256)


def _begun_facts(facts: dict[str, Any]) -> dict[str, Any]:
    return {k: facts.get(k) for k in ("size", "sha256", "mime")}


def _ours(found: StoredObject, begun: dict[str, Any]) -> bool:
    """An object at the path an earlier attempt was writing is that attempt's work when
    its size (and hash, where both are known) match what was being written."""
    size, digest = begun.get("size"), begun.get("sha256")
    if size is None and digest is None:
        return False
    if size is not None and found.size != size:
        return False
    return digest is None or found.sha256 in (None, digest)
