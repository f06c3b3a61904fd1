"""TensorFlow's native start-up lines kept out of a command's output.

Loading TensorFlow's libraries prints lines from C++ before its logging is set up, so no setting
reaches them (``TF_CPP_MIN_LOG_LEVEL`` only governs what comes later): "oneDNN custom operations
are on", "Could not find cuda drivers", "This TensorFlow binary is optimized ...", and on a machine
without a GPU an *error* line, "failed call to cuInit", about a GPU nobody asked for. A user reads
them as problems. :func:`filter_native_startup_lines` routes file descriptor 2 through a thread that
drops exactly those lines and passes everything else at once (partial lines too, so progress bars
keep moving). ``--debug`` (the CLI), ``UNET3PLUS_DEBUG=1`` or the user's own
``TF_CPP_MIN_LOG_LEVEL=0`` leave stderr untouched (:func:`quiet_start`).

What matters is still said, once, in one line (:func:`warn_once`): a GPU this process could use
(``/dev/nvidia<N>``) that TensorFlow cannot use, whether its CUDA probe failed (the dropped cuInit
line becomes the warning) or it quietly registered no GPU (:func:`warn_if_gpu_unusable`, below
``TF_CPP_MIN_LOG_LEVEL``'s reach). Any line the filter does not know passes.
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
    rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.)\r?$"
)
#: Beginnings that may still become a noise line: held back until their line is complete.
_MAYBE = (b"W", b"I", b"E", b"T")
#: A dropped line that means "no GPU for TensorFlow": noise on a machine without one, news on one with.
_GPU_PROBE_FAILED = re.compile(rb"(failed call to cuInit: .*|Could not find cuda drivers on your machine.*)")

_installed = False
_warned: set[str] = set()
_warn_lock = threading.Lock()


def debug_asked(argv: list[str] | None = None) -> bool:
    """``--debug`` on the command line or ``UNET3PLUS_DEBUG=1``: show everything, tracebacks too."""
    args = sys.argv[1:] if argv is None else argv
    return "--debug" in args or os.environ.get("UNET3PLUS_DEBUG", "") not in ("", "0")


def quiet_start(argv: list[str] | None = None) -> None:
    """What a command (the CLI, a recipe) does before TensorFlow loads: its later C++ logging at
    warnings and above, its pre-logging lines dropped, unless debugging or the user's own
    ``TF_CPP_MIN_LOG_LEVEL=0`` asks for them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not debug_asked(argv) and os.environ["TF_CPP_MIN_LOG_LEVEL"].strip() != "0":
        filter_native_startup_lines()


def _first_time(key: str) -> bool:
    with _warn_lock:
        if key in _warned:
            return False
        _warned.add(key)
        return True


def warning_line(message: str) -> str:
    """``warning: <message>`` on one line (newlines and runs of spaces folded)."""
    return "warning: " + " ".join(message.split()) + "\n"


def warn_once(key: str, message: str) -> bool:
    """Write :func:`warning_line` on stderr the first time ``key`` is warned about in this
    process; True when written."""
    if not _first_time(key):
        return False
    sys.stderr.write(warning_line(message))
    sys.stderr.flush()
    return True


def nvidia_device() -> str | None:
    """The first NVIDIA device node this process could open (``/dev/nvidia0``), None without one
    or when ``CUDA_VISIBLE_DEVICES`` hides every GPU on purpose."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return None
    try:
        nodes = sorted(n for n in os.listdir("/dev") if re.fullmatch(r"nvidia\d+", n))
    except OSError:
        return None
    return f"/dev/{nodes[0]}" if nodes else None


def _gpu_message(reason: str) -> str | None:
    device = nvidia_device()
    if device is None:
        return None
    return (
        f"{device} is an NVIDIA GPU, but TensorFlow cannot use it ({reason}); running on the CPU "
        f"(--debug shows TensorFlow's own lines)"
    )


def warn_if_gpu_unusable() -> None:
    """One line when this process has an NVIDIA GPU and TensorFlow registered none: a build without
    CUDA, CUDA libraries missing (TensorFlow says so below ``TF_CPP_MIN_LOG_LEVEL=2``) or a driver
    that fails. Loads TensorFlow only on a machine with a GPU device node."""
    if nvidia_device() is None:
        return
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return
    message = _gpu_message(
        "this TensorFlow is built without CUDA"
        if not tf.test.is_built_with_cuda()
        else "CUDA libraries missing or the driver failing; pip install 'tensorflow[and-cuda]' brings the libraries"
    )
    if message:
        warn_once("gpu", message)


def _on_drop(line: bytes) -> bytes:
    """What replaces a dropped line: the one-line GPU warning for a failed CUDA probe on a machine
    with a GPU device (the first time), else nothing."""
    found = _GPU_PROBE_FAILED.search(line)
    message = _gpu_message(found.group(1).decode("utf-8", "replace").strip()) if found else None
    return warning_line(message).encode() if message and _first_time("gpu") else b""


def _filtered(chunk: bytes, pending: bytes, on_drop=None) -> tuple[bytes, bytes]:
    """(what to pass on, what to hold) for ``pending + chunk``; a dropped line is replaced by
    ``on_drop(line)`` when given."""
    data = pending + chunk
    out = []
    lines = data.split(b"\n")
    for line in lines[:-1]:
        if not NOISE.match(line):
            out.append(line + b"\n")
        elif on_drop is not None:
            out.append(on_drop(line))
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
            out, pending = _filtered(chunk, pending, _on_drop)
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
        os.dup2(real, 2)  # the pipe's last writer in this process is gone: the pump sees EOF
        thread.join(timeout=2.0)

    atexit.register(restore)
