"""One writer per run folder: an OS file lock (``fcntl.flock``) on ``FOLDER/.lock``.

The kernel drops a flock when its holder's file descriptor closes, which includes every way a process can
exit (SIGKILL too), so a lock file left behind by a dead process never blocks the next run: only a live
holder does. The file records the holder's pid and host, for the message that refuses a second writer.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType

from hope.errors import HopeError

LOCK_NAME = ".lock"


class RunLock:
    """``with RunLock(folder): ...`` holds ``folder/.lock`` (creating the folder) or raises a one-line
    ``HopeError`` naming the process that holds it."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 256, 0).decode(errors="replace").split()
            os.close(fd)
            who = f"process {owner[0]} on host {owner[1]}" if len(owner) == 2 else "another process"
            raise HopeError(f"{self.folder} is in use by {who}; wait for it to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Unlock and close; the file stays (it is harmless unlocked, and deleting it would race a new holder)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()
