"""Atomic file writes: a crash or an error never leaves a half-written file behind.

Every writer in the package (models, sidecars, NIfTI masks, PNGs, CSV/JSON reports, configs) goes
through `atomic_path`: write to a hidden temporary file in the target's folder, then `os.replace`
it onto the target (atomic on POSIX within one file system); on any exception the temporary file is
removed and the previous target, if any, is left untouched. An OSError (a full disk, an I/O error)
is re-raised naming the target and saying the previous file is intact.
"""

from __future__ import annotations

import errno as errno_mod
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds.

    `suffix` is kept at the end of the temporary name, for writers that choose a format from it
    (".nii.gz" makes nibabel compress, ".keras" makes Keras zip, ".png" for matplotlib).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if str(path) in str(exc):
            raise
        raise WriteError(
            exc.errno, f"{path}: could not write it ({_reason(exc)}); the previous file, if any, is unchanged"
        ) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class WriteError(OSError):
    """Writing a file failed (disk full, I/O error); the message names the file."""

    def __str__(self) -> str:  # OSError's default "[Errno 28] ..." prefix hides the file name
        return str(self.args[1]) if len(self.args) > 1 else super().__str__()


def _reason(exc: OSError) -> str:
    names = {
        errno_mod.ENOSPC: "no space left on the device",
        errno_mod.EIO: "input/output error",
        errno_mod.EDQUOT: "disk quota exceeded",
        errno_mod.EROFS: "read-only file system",
    }
    return names.get(exc.errno, exc.strerror or str(exc)) + (f": {exc}" if exc.errno not in names else "")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a UTF-8 text file atomically; returns its path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
