"""TensorFlow's native start-up lines kept out of a command's output.

Loading TensorFlow's libraries prints lines from C++ before its logging is set up, so no setting
reaches them (``TF_CPP_MIN_LOG_LEVEL`` only governs what comes later): "oneDNN custom operations
are on", "Could not find cuda drivers", "This TensorFlow binary is optimized ...", and on a machine
without a GPU an *error* line, "failed call to cuInit", about a GPU nobody asked for. A user reads
them as problems. :func:`filter_native_startup_lines` routes file descriptor 2 through a thread that
drops exactly those lines and passes everything else at once (partial lines too, so progress bars
keep moving). ``--debug`` (the CLI) leaves stderr untouched.
"""
from __future__ import annotations

import atexit
import os
import re
import sys
import threading

#: One line each: the absl banner, INFO lines of the native libraries (``I1207 ...] text``), the CUDA
#: probe's error on GPU-less machines, and the CPU-feature hint's second line.
NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|I\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] .*"
    rb"|E\d{4} [\d:.]+ +\d+ cuda_\w+\.cc:\d+\] failed call to cuInit.*"
    rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.)\r?$")
#: Beginnings that may still become a noise line: held back until their line is complete.
_MAYBE = (b"W", b"I", b"E", b"T")

_installed = False


def _filtered(chunk: bytes, pending: bytes) -> tuple[bytes, bytes]:
    """(what to pass on, what to hold) for ``pending + chunk``."""
    data = pending + chunk
    out = []
    lines = data.split(b"\n")
    for line in lines[:-1]:
        if not NOISE.match(line):
            out.append(line + b"\n")
    tail = lines[-1]
    if tail and not tail.startswith(_MAYBE):
        out.append(tail)
        tail = b""
    return b"".join(out), tail


def filter_native_startup_lines() -> None:
    """Drop TensorFlow's native start-up lines from this process's stderr (fd 2), for good.

    Safe to call twice; does nothing when stderr is not a real file descriptor (pytest capture).
    """
    global _installed
    if _installed:
        return
    try:
        sys.stderr.flush()
        real = os.dup(2)
    except (OSError, ValueError, AttributeError):
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    _installed = True

    def pump() -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(read_end, 65536)
            except OSError:
                break
            if not chunk:
                break
            out, pending = _filtered(chunk, pending)
            if out:
                os.write(real, out)
        if pending and not NOISE.match(pending):
            os.write(real, pending)

    thread = threading.Thread(target=pump, name="unet3plus-stderr", daemon=True)
    thread.start()

    def restore() -> None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(real, 2)      # the pipe's last writer in this process is gone: the pump sees EOF
        thread.join(timeout=2.0)

    atexit.register(restore)
