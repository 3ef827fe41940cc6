"""The lock that keeps two processes from interleaving one search checkpoint path.

:class:`CheckpointLock` is the file ``path + ".lock"`` holding the process id, created
exclusively; a lock whose process no longer runs is stale and taken over. Used by
:class:`nasviz.search.checkpoint.SearchCheckpoint` for the whole of a search. Example::

    with CheckpointLock("search.pt"):
        ...   # no other process runs a search on search.pt meanwhile
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from nasviz.errors import SearchError

__all__ = ["CheckpointLock"]

PathLike = str | os.PathLike[str]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class CheckpointLock:
    """An exclusive lock on a checkpoint path: the file ``path + ".lock"`` holding the pid.

    The lock file is made complete under a temp name and linked into place (``os.link`` fails
    if it exists), so a lock file is never seen half written. A lock whose process no longer
    runs is stale and removed. Use as a context manager, or :meth:`acquire` / :meth:`release`.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(str(path) + ".lock")
        self.target = Path(path)
        self.held = False

    def _holder(self) -> int | None:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else -1

    def acquire(self) -> None:
        """Take the lock, or raise SearchError naming the process that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}-{secrets.token_hex(4)}")
        tmp.write_text(str(os.getpid()))
        try:
            for _ in range(3):
                try:
                    os.link(tmp, self.path)
                    self.held = True
                    return
                except FileExistsError:
                    pid = self._holder()
                    if pid is not None and pid > 0 and _alive(pid):
                        msg = (
                            f"search checkpoint {str(self.target)!r} is in use by process {pid} "
                            f"(lock file {str(self.path)!r}); wait for that search to finish, "
                            "or pass another config['checkpoint'] path"
                        )
                        raise SearchError(msg) from None
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
        finally:
            tmp.unlink(missing_ok=True)
        msg = f"could not lock {str(self.path)!r}: another process keeps taking it"
        raise SearchError(msg)

    def release(self) -> None:
        """Remove the lock file if this object holds it."""
        if self.held and self._holder() == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> CheckpointLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
