"""Saving objects made of several files (a map, a two-stage index) so that a crash at any
moment leaves the old object or the new one loadable, never neither.

The pattern: every data file is written under a new, unique name (nothing a reader may have
memory-mapped is ever truncated or rewritten), then one small *commit file* naming those
files is written atomically; it is the commit point. Afterwards the files the commit file no
longer names are removed (unlinking a file another process still maps is safe on POSIX: its
pages live until the mapping goes). A folder lock (``fcntl.flock``) keeps two writers apart.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
from pathlib import Path
from typing import Iterable, Optional

from pylocalize import _core

# "<name>.tmp-<pid>-<n>": the core writer's temporary files (cpp/pylocalize/util/atomic_file.h)
_TEMP = re.compile(r"^(?P<target>.+)\.tmp-\d+(-\d+)?$")


def unique_name(stem: str, suffix: str) -> str:
    """``"<stem>-<16 hex digits><suffix>"``: a file name no earlier save used."""
    return f"{stem}-{secrets.token_hex(8)}{suffix}"


def remove_unreferenced(folder: Path, pattern: "re.Pattern[str]", keep: Iterable[str],
                        legacy: Iterable[str] = ()) -> None:
    """After a commit: removes the files of ``folder`` whose names match ``pattern`` (or are
    in ``legacy``) but not in ``keep``, and stale temporary files of killed writers of such
    names (a unique name is never written again, so the core's own clean-up on the next
    write of the same target never comes for them)."""
    keep, legacy = set(keep), set(legacy)
    try:
        names = os.listdir(folder)
    except OSError:
        return
    targets = set()
    for name in names:
        temp = _TEMP.match(name)
        if temp is not None:
            if pattern.match(temp["target"]) or temp["target"] in legacy:
                targets.add(temp["target"])
        elif (pattern.match(name) or name in legacy) and name not in keep:
            try:
                os.unlink(folder / name)
            except FileNotFoundError:
                pass
    for target in targets:  # only temporary files whose writer process no longer runs
        _core.remove_stale_temp_files(os.fspath(folder / target))


class FolderLock:
    """An exclusive ``fcntl.flock`` on ``folder / name`` (created if missing), held until
    :meth:`release` or garbage collection.

    ``flock`` locks belong to the open file description, so two locks on one folder
    conflict even within one process (two objects, or two threads), and the kernel drops
    the lock when the process dies: a crashed writer never leaves the folder locked.
    """

    def __init__(self, folder, name: str, *, wait: bool, what: str = "", fix: str = ""):
        self.path = Path(folder) / name
        self._fd: Optional[int] = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as error:
            os.close(self._fd)
            self._fd = None
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RuntimeError(f"{folder}: {what or 'the folder'} is open for writing elsewhere (in this or "
                                   f"another process); {fix or 'close the other writer first'}") from None
            raise

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor of the description drops the lock
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()
