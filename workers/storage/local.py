"""``local`` target: files into a folder (a disk, or a NAS share mounted on the worker).

A file is never visible half-written: it is written to a temporary file at the root
(``.gr-tmp-<upload id>-<random>``), flushed to disk, then linked into place with
``os.link``, which fails if the name is taken, so two workers racing for the same path
end with one file and the loser learns it (create-only). Overwriting uses
``os.replace``, atomic on POSIX. Where the file system has no hard links (some SMB
mounts), the name is claimed with ``O_EXCL`` and the complete file renamed over the
claim.

Paths arrive sanitised (``workers.storage.paths``); the store still resolves each one
and refuses anything that would land outside ``root`` (a symlink inside the share
pointing elsewhere), as a second line of defence.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import uuid
from pathlib import Path
from typing import ClassVar

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from relay.config.models import TargetConfig
from relay.errors import DeliveryError, PermanentDeliveryError, RetryableDeliveryError
from workers.storage.flow import StorageTarget
from workers.storage.options import StorageOptions
from workers.storage.paths import check_path_template
from workers.storage.spec import AlreadyExists, Source, StoredObject
from workers.storage.stream import ContentHash
from workers.targets.base import DeliveryContext

TMP_PREFIX = ".gr-tmp-"
CHUNK = 1024 * 1024
PATH_MAX = 4096  # bytes of an absolute path on Linux, the terminating NUL included
NAME_MAX = 255
# Worth another attempt: the disk may get space, the NAS may come back.
_TRANSIENT = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EIO,
    errno.ESTALE,
    errno.EAGAIN,
    errno.EBUSY,
    errno.EINTR,
    errno.ETIMEDOUT,
    errno.ENOTCONN,
    errno.EHOSTDOWN,
}
# ``os.link`` is not supported here: claim the name with O_EXCL instead.
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}


class LocalOptions(StorageOptions):
    """What a ``local`` target adds to the options every store has."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    root: Path = Field(description="An existing folder; files go below it.")
    mode: int = Field(0o640, description="Permissions of stored files (folders get x too).")
    fsync: bool = Field(True, description="Flush each file and its folder to disk.")

    @field_validator("path")
    @classmethod
    def _template(cls, value: str) -> str:
        return check_path_template(value)

    @field_validator("root", mode="before")
    @classmethod
    def _not_empty(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise ValueError("the path of an existing folder is required")
        return value

    @field_validator("root")
    @classmethod
    def _existing_folder(cls, value: Path, info: ValidationInfo) -> Path:
        """``~`` expands; relative is relative to the config file's folder; it must exist
        (a share that is not mounted must not fill the local disk instead)."""
        value = value.expanduser()
        base = info.context.get("base_dir") if isinstance(info.context, dict) else None
        if not value.is_absolute() and base is not None:
            value = Path(base) / value
        if not value.exists():
            raise ValueError(f"{value} does not exist (create it, or mount the share)")
        if not value.is_dir():
            raise ValueError(f"{value} is not a folder")
        return Path(os.path.realpath(value))

    @field_validator("mode", mode="before")
    @classmethod
    def _octal(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return int(value.strip().removeprefix("0o"), 8)
            except ValueError:
                raise ValueError("permissions in octal, such as 0640") from None
        return value

    @field_validator("mode")
    @classmethod
    def _owner_reads(cls, value: int) -> int:
        if not 0 <= value <= 0o777:
            raise ValueError("permissions in octal, such as 0640")
        if value & 0o600 != 0o600:
            raise ValueError("the owner must keep read and write (0600)")
        return value


def _os_error(exc: OSError, doing: str) -> DeliveryError:
    reason = exc.strerror or type(exc).__name__
    message = f"{doing}: {reason}"
    if exc.errno in _TRANSIENT:
        return RetryableDeliveryError(message)
    return PermanentDeliveryError(message)


class LocalStore:
    """One folder on the worker's file system."""

    needs_size = False
    max_segment = NAME_MAX
    windows_names = True  # NAS shares are often SMB

    def __init__(self, options: LocalOptions) -> None:
        self.root = options.root
        self.mode = options.mode
        self.dir_mode = options.mode | ((options.mode & 0o444) >> 2)  # r gives x
        self.fsync = options.fsync
        self.max_path = PATH_MAX - 1 - len(os.fsencode(self.root)) - 1

    # -- paths ---------------------------------------------------------------------------

    def resolve(self, path: str) -> Path:
        """The file's place under ``root``; permanent if the path (or a symlink on its
        way) leads anywhere else."""
        segments = path.split("/")
        if path.startswith("/") or any(s in ("", ".", "..") for s in segments):
            raise PermanentDeliveryError(f"{path!r} is not a relative path below root")
        target = self.root.joinpath(*segments)
        self._inside(target, path)
        return target

    def _inside(self, target: Path, path: str) -> None:
        real = os.path.realpath(target)
        root = str(self.root)
        if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
            raise PermanentDeliveryError(f"{path} leads outside root (through a symlink)")

    def _make_folders(self, folder: Path, path: str) -> None:
        """Create the missing folders one by one, each checked to stay under root and,
        with ``fsync``, recorded in its parent on disk."""
        missing: list[Path] = []
        current = folder
        while not current.exists() and current != self.root:
            missing.append(current)
            current = current.parent
        if not current.is_dir():
            raise PermanentDeliveryError(f"{path}: {current.name} is a file, not a folder")
        for created in reversed(missing):
            self._inside(created, path)
            try:
                os.mkdir(created, self.dir_mode)
            except FileExistsError:
                continue  # another worker made it first
            os.chmod(created, self.dir_mode)  # exactly, whatever the umask
            if self.fsync:
                _sync_folder(created.parent)
        self._inside(folder, path)

    # -- reading -------------------------------------------------------------------------

    def stat(self, path: str) -> StoredObject | None:
        target = self.resolve(path)
        try:
            info = target.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _os_error(exc, f"cannot read {path}") from None
        if not target.is_file():
            return StoredObject(path=path)  # a folder: taken, but not a file
        digest = hashlib.sha256()
        try:
            with open(target, "rb") as file:
                while chunk := file.read(CHUNK):
                    digest.update(chunk)
        except OSError as exc:
            raise _os_error(exc, f"cannot read {path}") from None
        return StoredObject(path=path, size=info.st_size, sha256=digest.hexdigest())

    def link(self, obj: StoredObject, lifetime: float) -> str | None:
        return None  # a folder on the worker has no address people can open

    # -- writing -------------------------------------------------------------------------

    def put(
        self,
        path: str,
        data: Source,
        *,
        size: int | None,
        mime: str | None,
        sha256: str | None = None,
        create_only: bool = True,
        upload_id: str | None = None,
    ) -> StoredObject:
        final = self.resolve(path)
        try:
            self._make_folders(final.parent, path)
        except OSError as exc:
            raise _os_error(exc, f"cannot create the folder of {path}") from None
        tmp = self.root / f"{TMP_PREFIX}{upload_id or 'put'}-{uuid.uuid4().hex}"
        try:
            written, digest = self._write(tmp, data)
            self._place(tmp, final, path, create_only)
        finally:
            _unlink(tmp)
        if self.fsync:
            _sync_folder(final.parent)
        return StoredObject(path=path, size=written, sha256=digest)

    def _write(self, tmp: Path, data: Source) -> tuple[int, str | None]:
        """The whole stream into ``tmp``, flushed to disk; its size and SHA-256."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        digest = ContentHash(data)
        written = 0
        try:
            fd = os.open(tmp, flags, self.mode)
        except OSError as exc:
            raise _os_error(exc, f"cannot write in {self.root}") from None
        try:
            os.fchmod(fd, self.mode)  # exactly ``mode``, whatever the umask
            while chunk := data.read(CHUNK):
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                written += len(chunk)
            if self.fsync:
                os.fsync(fd)
        except OSError as exc:
            raise _os_error(exc, f"cannot write in {self.root}") from None
        finally:
            os.close(fd)
        return written, digest.hexdigest()

    def _place(self, tmp: Path, final: Path, path: str, create_only: bool) -> None:
        """Give the written file its name: only if free (``create_only``), else
        replacing whatever is there."""
        self._inside(final, path)
        try:
            if not create_only:
                os.replace(tmp, final)
                return
            try:
                os.link(tmp, final, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in _NO_LINKS:
                    raise
                self._claim_and_replace(tmp, final)
        except FileExistsError:
            raise AlreadyExists(path, self.stat(path)) from None
        except IsADirectoryError:
            raise AlreadyExists(path, StoredObject(path=path)) from None
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise PermanentDeliveryError(
                    f"{path}: its folder is on another file system than root; "
                    "point root at one file system"
                ) from None
            raise _os_error(exc, f"cannot store {path}") from None

    def _claim_and_replace(self, tmp: Path, final: Path) -> None:
        """Without hard links: take the name with ``O_EXCL`` (``FileExistsError`` if
        taken), then rename the complete file over the empty claim."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        os.close(os.open(final, flags, self.mode))
        os.replace(tmp, final)

    def cleanup(self, upload_id: str, path: str | None = None) -> None:
        """Remove the temporary files an interrupted upload ``upload_id`` left at root."""
        pattern = re.compile(rf"{re.escape(TMP_PREFIX + upload_id)}-[0-9a-f]{{32}}")
        try:
            names = os.listdir(self.root)
        except OSError as exc:
            raise _os_error(exc, f"cannot list {self.root}") from None
        for name in names:
            if pattern.fullmatch(name):
                _unlink(self.root / name)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _sync_folder(folder: Path) -> None:
    """Make a folder's new entries durable (a file's name survives a power cut)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return  # some network file systems cannot open folders: nothing to flush
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise _os_error(exc, f"cannot flush {folder}") from None
    finally:
        os.close(fd)


class LocalTarget(StorageTarget):
    """A folder on the worker (a disk or a mounted NAS share) as a storage target."""

    kind: ClassVar[str] = "local"
    Options: ClassVar[type[LocalOptions]] = LocalOptions
    default_rate_limits: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: TargetConfig) -> None:
        super().__init__(config)
        options = config.options
        if not isinstance(options, LocalOptions):
            options = LocalOptions.model_validate(options or {})
        self.options: LocalOptions = options

    def store(self, context: DeliveryContext) -> LocalStore:
        return LocalStore(self.options)
