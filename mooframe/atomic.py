"""What mooframe writes, and how: owned artifacts, checked before work, locked, replaced atomically, durable.

Every folder mooframe writes (a run, a checkpoint, a directory of checkpoints, a report, an export, the demo's
report) is an *artifact* of one `Kind`: it holds a JSON marker file whose "format" key reads
"mooframe-<kind>/<version>". A writer replaces only an empty folder or an artifact of its own kind (never a
newer version of it); anything else is refused with an `ArtifactError` (a ValueError) naming the path and what is
there, before any work starts (`check_output`).

Replacement (`staged_directory`) writes a hidden sibling `.NAME.<hex>.partial`, fsyncs it, and swaps it with the
old artifact in one `renameat2(RENAME_EXCHANGE)` (Linux), so the path always holds the old or the new artifact;
where the exchange is unsupported, the old one is renamed to `.NAME.old` first and the new one renamed into place
(a crash between the two renames leaves `.NAME.old`, which the next writer or reader renames back). Writers of a
path hold an exclusive `flock` on `.NAME.lock` beside it for the whole write: a second writer gets an
ArtifactError at once instead of a mixed result. Leftovers of a killed writer (`.NAME.*.partial`, `.NAME.old`,
`.NAME.lock`) are cleaned by the next writer and reader of NAME. Locks are per process (re-entrant within one).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; writes stay atomic, concurrency unchecked
    fcntl = None


@dataclass(frozen=True)
class Kind:
    """A kind of artifact: its name, the JSON file that marks it, and the format version this mooframe writes."""

    name: str
    marker: str
    version: int
    label: str  # how messages name it, with its article

    @property
    def format(self) -> str:
        return f"mooframe-{self.name}/{self.version}"


RUN = Kind("run", "config.json", 2, "a run")
CHECKPOINT = Kind("checkpoint", "state.json", 2, "a checkpoint")
CHECKPOINTS = Kind("checkpoints", "checkpoints.json", 1, "a checkpoint directory")
EXPORT = Kind("export", "mooframe_card.json", 1, "an export")
REPORT = Kind("report", "report.json", 1, "a report")
DEMO = Kind("demo", "demo.json", 1, "a demo report")
REPRODUCTION = Kind("reproduction", "reproduction.json", 1, "a reproduction folder")
DECODED = Kind("decoded", "meta.json", 1, "a decoded-image cache entry")  # mooframe.data's decoded cache
LM_DEFAULT = Kind("lmdigits", "manifest.json", 1, "a language-model default build")  # problems.lm_default's cache
KINDS = (RUN, CHECKPOINT, CHECKPOINTS, EXPORT, REPORT, DEMO, REPRODUCTION, DECODED, LM_DEFAULT)
_FORMAT = re.compile(r"mooframe-(?P<name>[a-z]+)/(?P<version>\d+)")
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?:[0-9a-f]{8}\.partial|old|lock)")


class ArtifactError(ValueError):
    """An output path mooframe must not or cannot write (foreign content, a file, inside an input, locked)."""


def artifact_kind(path: str | Path) -> tuple[Kind, int] | None:
    """The kind and format version of the mooframe artifact at `path`, or None if it is not one."""
    path = Path(path)
    for kind in KINDS:
        marker = path / kind.marker
        try:
            data = json.loads(marker.read_text()) if marker.is_file() else None
        except (OSError, ValueError):
            continue
        match = _FORMAT.fullmatch(str(data.get("format"))) if isinstance(data, dict) else None
        if match and match["name"] == kind.name:
            return kind, int(match["version"])
    entries = list(path.iterdir()) if path.is_dir() else []
    steps = [p for p in entries if not _LEFTOVER.fullmatch(p.name)]
    if steps and all(re.fullmatch(r"step-\d+", p.name) and _kind_of(p) == CHECKPOINT for p in steps):
        return CHECKPOINTS, 1  # a checkpoint directory written before directories were marked
    return None


def _kind_of(path: Path) -> Kind | None:
    found = artifact_kind(path)
    return None if found is None else found[0]


def marker(kind: Kind, **fields: object) -> str:
    """The JSON text of `kind`'s marker file with `fields` after the format key."""
    return json.dumps({"format": kind.format, **fields}, indent=2)


def check_output(path: str | Path, kind: Kind, inputs: Iterable[str | Path] = (), replace: bool = True) -> Path:
    """`path` as a Path if mooframe may write a `kind` artifact there; else an ArtifactError saying why.

    Allowed: a path that does not exist in a writable folder, an empty folder, or a `kind` artifact of this or
    an older format (only with `replace`). Refused: the empty path, the current folder or one above it, a file,
    a symbolic link, a folder mooframe did not write or wrote as another kind, and any path inside, equal to
    or containing one of `inputs` (the artifacts being read).
    """
    if not str(path).strip():
        raise ArtifactError(f"the output path for {kind.label} is empty; pass a folder name such as runs/x")
    path = Path(path)
    resolved = path.resolve()
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
        raise ArtifactError(f"{path} is the current folder or one above it; pass a new folder for {kind.label}")
    for source in inputs:
        source = Path(source).resolve()
        if resolved == source or source in resolved.parents or resolved in source.parents:
            raise ArtifactError(
                f"{path} would overwrite or sit inside {source}, which this command reads or writes; write "
                f"{kind.label} elsewhere"
            )
    if path.is_symlink():
        raise ArtifactError(f"{path} is a symbolic link; pass the folder it points to, or a new path")
    if path.exists():
        if not path.is_dir():
            raise ArtifactError(
                f"{path} is a file, not a folder; mooframe writes {kind.label} only to a new or empty folder or "
                "one of its own: choose another path"
            )
        _check_replaceable(path, kind, replace)
    else:
        _check_creatable(path, kind)
    return path


def _check_replaceable(path: Path, kind: Kind, replace: bool) -> None:
    # a killed claim's: the marker's staging file and the lock its writer held
    staged_marker = re.compile(rf"\.{re.escape(kind.marker)}\.(?:[0-9a-f]{{8}}\.partial|lock)")
    entries = sorted(
        p.name + ("/" if p.is_dir() else "") for p in path.iterdir() if not staged_marker.fullmatch(p.name)
    )
    if not entries:
        return
    found = artifact_kind(path)
    if found is None:
        shown = ", ".join(entries[:5]) + (f", ... ({len(entries)} entries)" if len(entries) > 5 else "")
        raise ArtifactError(
            f"{path} is a folder mooframe did not write (it holds {shown}); mooframe never replaces it: "
            f"choose a new or empty folder for {kind.label}"
        )
    found_kind, version = found
    if found_kind != kind:
        raise ArtifactError(
            f"{path} holds {found_kind.label} of mooframe's, not {kind.label}; choose another folder for {kind.label}"
        )
    if version > kind.version:
        raise ArtifactError(
            f"{path} holds {kind.label} of a newer format ({kind.name}/{version}) than this mooframe writes "
            f"({kind.format}); upgrade mooframe or choose another folder"
        )
    if not replace:
        raise ArtifactError(f"{path} already exists; pass force=True (--force) to replace it, or choose another path")


def _check_creatable(path: Path, kind: Kind) -> None:
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ArtifactError(f"cannot write {kind.label} at {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ArtifactError(f"cannot write {kind.label} at {path}: no permission to write in {ancestor}")


def file_sha256(path: Path) -> str:
    """The SHA-256 of the file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


_held: dict[Path, int] = {}  # lock files this process holds -> how many times
os.register_at_fork(after_in_child=_held.clear)  # a forked child holds none of its parent's locks


@contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold the exclusive lock of `path` (an flock on `.NAME.lock` beside it); ArtifactError if another has it.

    The lock file is removed on release; the inode check after locking makes sure the lock taken is on the file
    now at that name (another process may have removed the one it opened).
    """
    path = Path(path).absolute()
    lock_path = path.parent / f".{path.name}.lock"
    if fcntl is None or lock_path in _held:
        _held[lock_path] = _held.get(lock_path, 0) + 1
        try:
            yield
        finally:
            _held[lock_path] -= 1
            if not _held[lock_path]:
                del _held[lock_path]
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = _acquire(lock_path, path)
    _held[lock_path] = 1
    try:
        yield
    finally:
        del _held[lock_path]
        lock_path.unlink(missing_ok=True)
        os.close(descriptor)


def _acquire(lock_path: Path, path: Path) -> int:
    while True:
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise ArtifactError(
                f"{path} is being written by another process (it holds {lock_path}); wait for it or choose another path"
            ) from None
        try:
            if os.stat(lock_path).st_ino == os.fstat(descriptor).st_ino:
                return descriptor
        except FileNotFoundError:
            pass
        os.close(descriptor)


def recover(path: str | Path) -> None:
    """Undo or clean what a killed writer of `path` left: restore `.NAME.old` if `path` is gone, else remove it,
    and remove `.NAME.*.partial` staging folders. Call with the lock of `path` held."""
    path = Path(path)
    backup = path.with_name(f".{path.name}.old")
    if backup.is_dir() and not path.is_symlink():
        if path.exists():
            shutil.rmtree(backup)
        else:
            os.rename(backup, path)
            _fsync_directory(path.parent)
    for staging in path.parent.glob(f".{_glob_escape(path.name)}.*.partial"):
        if re.fullmatch(r"[0-9a-f]{8}", staging.name[len(path.name) + 2 : -len(".partial")]):
            if staging.is_dir():
                shutil.rmtree(staging)
            else:
                staging.unlink()


def recover_for_reading(path: str | Path) -> None:
    """`recover` before reading `path`, unless a writer holds its lock (then it is mid-write; leave it be) or its
    folder cannot be written (a read-only copy: read it as it is). Creates no folder."""
    if not Path(path).absolute().parent.is_dir():
        return
    try:
        with locked(path):
            recover(path)
    except (ArtifactError, OSError):
        pass


def clean_leftovers(directory: str | Path) -> None:
    """`recover` every artifact of `directory` that left staging folders, backups or lock files behind."""
    directory = Path(directory)
    names = {m["name"] for p in directory.iterdir() if (m := _LEFTOVER.fullmatch(p.name))} if directory.is_dir() else ()
    for name in sorted(names):
        recover_for_reading(directory / name)


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


@contextmanager
def staged_directory(
    path: str | Path, kind: Kind, inputs: Iterable[str | Path] = (), replace: bool = True
) -> Iterator[Path]:
    """Yield a fresh hidden sibling folder of `path` to write the `kind` artifact into; when the block completes
    (its marker file written there), it replaces `path` atomically and durably.

    `path` is checked first (`check_output`), and again under its lock. On any exception (Ctrl-C included) the
    staging folder is removed and `path` is left as it was. Folders are made with `mkdir` (the umask's modes).
    """
    inputs = list(inputs)
    path = check_output(path, kind, inputs, replace)
    with locked(path):
        recover(path)
        check_output(path, kind, inputs, replace)
        staging = _staging_name(path)
        staging.mkdir()
        try:
            yield staging
            found = artifact_kind(staging)
            if found != (kind, kind.version):
                raise RuntimeError(f"the writer of {kind.label} did not write its marker {kind.marker} in {staging}")
            _fsync_tree(staging)
            _swap_into_place(staging, path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def _staging_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")


def remove_artifact(path: str | Path) -> None:
    """Remove the artifact at `path` all at once: renamed to a staging name first (which `recover` cleans), so
    a crash mid-removal never leaves a half-deleted folder at `path`. Call with the lock of `path` held."""
    path = Path(path)
    doomed = _staging_name(path)
    os.rename(path, doomed)
    _fsync_directory(path.parent)
    shutil.rmtree(doomed)


def write_file_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a flushed staging file renamed over it: `path` holds old or new text.

    The lock of `path` is held meanwhile, so that a reader's `clean_leftovers` leaves the staging file alone."""
    with locked(path):
        staging = _staging_name(path)
        with open(staging, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, path)
        _fsync_directory(path.parent)


def _swap_into_place(staging: Path, path: Path) -> None:
    if not path.exists():
        os.rename(staging, path)
    elif exchange(staging, path):
        shutil.rmtree(staging)  # now the old artifact; a crash here leaves a .partial for `recover`
    else:
        backup = path.with_name(f".{path.name}.old")
        os.rename(path, backup)
        os.rename(staging, path)
        _fsync_directory(path.parent)
        shutil.rmtree(backup)
    _fsync_directory(path.parent)


def _renameat2() -> object | None:
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    except OSError:  # pragma: no cover - no C library to load
        return None


_RENAMEAT2 = _renameat2()
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic rename (Linux renameat2); False where the system cannot."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # not supported by this kernel or file system
        return False
    raise OSError(code, os.strerror(code), str(second))


def _fsync_tree(directory: Path) -> None:
    """Flush every file under `directory`, then the folders, to disk: a renamed artifact survives a power cut."""
    for root, _, files in os.walk(directory):
        for name in files:
            descriptor = os.open(Path(root) / name, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        _fsync_directory(Path(root))


def _fsync_directory(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - systems that cannot open folders
        return
    try:
        os.fsync(descriptor)
    except OSError:  # pragma: no cover - file systems without directory fsync
        pass
    finally:
        os.close(descriptor)


@contextmanager
def claimed_directory(path: str | Path, kind: Kind, inputs: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Hold the lock of `path`, a folder that collects artifacts (e.g. checkpoints) and is marked as `kind`.

    `path` must be new, empty or a `kind` folder already; its marker is written when missing and its leftovers
    are cleaned.
    """
    path = check_output(path, kind, inputs)
    with locked(path):
        check_output(path, kind, inputs)
        path.mkdir(parents=True, exist_ok=True)
        clean_leftovers(path)
        if artifact_kind(path) is None:
            write_file_atomically(path / kind.marker, marker(kind) + "\n")
        yield path
