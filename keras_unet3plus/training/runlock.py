"""One trainer per run folder: an advisory lock that a dead process cannot hold.

Two trainers writing the same checkpoints corrupt each other's run. The lock is ``flock`` on a
hidden file in the run folder: the kernel releases it when its process ends, however it ends
(``kill -9`` included), so a crashed run never blocks the next one. The file stays in the run
folder (deleting a lock file that another process has open can let two holders in); only a run that
fails before its first checkpoint removes it, with the rest of what it wrote.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

LOCK_NAME = ".unet3plus.lock"


class RunFolderBusy(RuntimeError):
    """Another live trainer holds the run folder."""


class RunLock:
    """``with RunLock(folder):`` or ``acquire()`` / ``release()``; refuses at once if held."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "unknown process"
            os.close(fd)
            raise RunFolderBusy(
                f"{self.folder}: another trainer is using this run folder ({holder}); wait for "
                "it to finish or choose another --out-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}, since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
