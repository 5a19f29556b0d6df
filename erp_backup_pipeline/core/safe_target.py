"""Where a restore may write, and how it creates what it writes: never through a link.

A local user can plant files and symlinks in shared directories and race file creation (THREATS.md). So:

- ``check_target(target, force, inside)`` looks at the target and every existing directory above it without
  following links (lstat). A symlink among them is refused in one line unless ``force`` (the operator then
  means that path: the parents are followed, and a target that is itself a link is kept aside like any
  existing target, never written through). The directory the restore creates its files in (the target's
  parent, or with ``inside`` the target directory itself when it exists) must belong to the user running the
  restore or to root, and must not be writable by others without the sticky bit: whoever controls that
  directory can swap what the restore writes. Refused unless ``force``.
- ``create_file(path)``: a new file, 0600, ``O_CREAT|O_EXCL|O_NOFOLLOW``: a planted file or link of that name
  makes it fail, it is never followed or truncated.
- ``private_dir(parent, prefix)``: a fresh 0700 directory (mkdtemp) in which a restore builds its result
  before moving it into place.
- ``put_in_place(src, target)``: a finished file given its final name without replacing anything that
  appeared there meanwhile (link(2) fails on an existing name); the temporary name goes.
- ``restore_os_error(exc, target)``: an OSError met while writing a restore target, as one RestoreError line
  (permission denied, read-only file system, no space left, not a directory).
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from erp_backup_pipeline.errors import RestoreError

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _existing_parents(path: Path) -> list[Path]:
    """Every existing directory entry from / down to (not including) path, in that order."""
    return [p for p in reversed(path.parents) if os.path.lexists(p)]


def check_target(target: str | os.PathLike[str], force: bool, inside: bool = False) -> Path:
    """The absolute target path (not resolved); RestoreError when a link or another user's directory is on it."""
    t = Path(os.path.abspath(target))
    hint = "give the real path, or --force to restore there anyway"
    for parent in _existing_parents(t):
        st = os.lstat(parent)
        if stat.S_ISLNK(st.st_mode) and not force:
            raise RestoreError(f"restore target {t}: {parent} is a symlink (to {os.readlink(parent)}); a restore never "
                               f"writes through a link: {hint}")
        if not stat.S_ISLNK(st.st_mode) and not stat.S_ISDIR(st.st_mode):
            raise RestoreError(f"restore target {t}: {parent} is not a directory")
    if os.path.islink(t) and not force:
        raise RestoreError(f"restore target {t} is a symlink (to {os.readlink(t)}); a restore never writes through a "
                           "link: give the real path, or --force to keep the link aside and restore in its place")
    parents = _existing_parents(t)
    holder = t if inside and os.path.isdir(t) and not os.path.islink(t) else (parents[-1] if parents else Path("/"))
    if not force:
        _check_holder(t, holder)
    return t


def require_kind(target: str | os.PathLike[str], kind: str, example: str = "") -> None:
    """RestoreError, whatever --force says, when the target is of the other kind: a directory (or a path written
    with a trailing slash) where the restore writes one file, or an existing file where it builds a directory.
    --force keeps an existing target aside; it never turns a directory into a database file."""
    text = os.fspath(target)
    shown = os.path.abspath(text)
    if kind == "file" and (text.endswith(("/", os.sep)) or (os.path.isdir(text) and not os.path.islink(text))):
        what = "is a directory" if os.path.isdir(text) else "names a directory (it ends with /)"
        raise RestoreError(f"restore target {shown} {what}: this restore writes one file; give its path, e.g. "
                           f"{os.path.join(shown, example)}")
    if kind == "dir" and os.path.lexists(text) and not os.path.islink(text) and not os.path.isdir(text):
        raise RestoreError(f"restore target {shown} is a file: this restore builds a directory; give a new directory, "
                           f"e.g. {shown}.d")


def _check_holder(t: Path, holder: Path) -> None:
    st = os.stat(holder)
    me = os.geteuid()
    if st.st_uid not in (me, 0):
        raise RestoreError(f"restore target {t}: directory {holder} belongs to {_user(st.st_uid)}, who could swap what "
                           "the restore writes there; restore into a directory you own, or --force")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        raise RestoreError(f"restore target {t}: directory {holder} is writable by other users (mode "
                           f"{stat.S_IMODE(st.st_mode):04o}, no sticky bit); restore into a directory you own, or --force")


def make_parents(t: Path) -> None:
    """Create the missing directories above a checked target, 0700."""
    t.parent.mkdir(parents=True, exist_ok=True, mode=0o700)


def create_file(path: str | os.PathLike[str], mode: int = 0o600) -> IO[bytes]:
    """A new file opened for writing; FileExistsError (never a write through it) when the name is taken."""
    return os.fdopen(os.open(path, _CREATE, mode), "wb")


@contextlib.contextmanager
def private_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A fresh 0700 directory in ``parent``, removed afterwards with whatever is still in it."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def put_in_place(src: Path, target: Path) -> None:
    """Give the finished file ``src`` the name ``target`` without replacing anything there; remove ``src``."""
    try:
        os.link(src, target, follow_symlinks=False)
    except FileExistsError:
        raise RestoreError(f"restore target {target} appeared while the restore ran; nothing was replaced, run the "
                           "restore again") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        os.rename(src, target)  # a file system without hard links: rename replaces a name, it never follows a link
        return
    os.unlink(src)


def restore_os_error(exc: OSError, target: str) -> RestoreError:
    """One line for an OSError while a restore wrote ``target``."""
    if exc.errno == errno.EEXIST:
        return RestoreError(f"restore target {target}: {exc.filename or target} appeared while the restore ran "
                            "(a planted file or link?); nothing was written through it")
    reason = (exc.strerror or type(exc).__name__).lower()
    return RestoreError(f"restore into {target} failed: {reason}")
