"""Atomic file writes: a crash or Ctrl-C never leaves a half-written file behind.

``mkstemp`` creates files readable by their owner only (0600); a model copied to a Pi must be
readable by the service's user, so every file gets the mode a plain ``open()`` would give it
(0666 less the umask) before it is renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_default_mode(path: str | os.PathLike) -> None:
    """Give ``path`` the mode ``open(path, "w")`` would have: 0666 & ~umask."""
    os.chmod(path, 0o666 & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temp path beside ``path`` to write to; when the block ends without an error it gets the
    normal mode and is renamed over ``path``, otherwise it is removed. ``suffix`` keeps writers
    that go by the extension (Keras' ``.keras``) happy."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as e:
        e.filename = str(path)  # not the temp name the user never asked for
        raise
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        apply_default_mode(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            moved_error(e, tmp, path)
        raise


def moved_error(err: OSError, internal: Path, user: Path) -> OSError:
    """``err`` naming ``user`` wherever it named ``internal`` (or a file under it): an error about a
    temp file or a staging folder is reported on the path the user asked for."""
    def rename(name: Any) -> Any:
        if name is None:
            return None
        p = Path(os.fsdecode(name))
        if p == internal:
            return str(user)
        if internal in p.parents:
            return str(user / p.relative_to(internal))
        return name

    err.filename, err.filename2 = rename(err.filename), rename(err.filename2)
    return err


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temp file in the same folder, then rename it over ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# -- who is writing, and can they ----------------------------------------------------------------


def current_user() -> str:
    """``name (uid N)`` of the effective user: the systemd unit's user is often not the one who copied the files."""
    uid = os.geteuid()
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def describe_os_error(err: OSError) -> str:
    """One line for an OS error: what failed, on which file, as which user."""
    where = err.filename if err.filename is not None else ""
    if err.filename2 is not None:
        where = f"{where} -> {err.filename2}"
    if isinstance(err, PermissionError):
        return (f"permission denied: {where or err} (running as user {current_user()}); "
                "check the owner and mode of the file and its folders (ls -l)")
    what = err.strerror or str(err)
    return f"{what}: {where}" if where else what


def ensure_writable(path: str | os.PathLike, what: str = "output") -> None:
    """Fail now, not after the work: ``path`` is not a folder and its (nearest existing) folder is writable."""
    from edgecls.core.errors import EdgeclsError

    path = Path(path)
    if path.is_dir():
        raise EdgeclsError(f"{what} {path} is a folder; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise EdgeclsError(f"cannot write {what} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise EdgeclsError(f"cannot write {what} {path}: folder {parent} is not writable by user {current_user()}")
    if path.exists() and not os.access(path, os.W_OK) and not os.access(parent, os.W_OK):
        raise EdgeclsError(f"cannot write {what} {path}: not writable by user {current_user()}")
