"""The streaming pipeline: preprocess the next batch and post-process the previous one on threads
while the model runs the current one, so reading and resampling hide behind the model."""

from __future__ import annotations

import queue
import threading
import time
from contextlib import contextmanager
from typing import Any
from collections.abc import Callable, Iterator

__all__ = ["STAGES", "run_stages", "timed", "progress_bar"]

#: the stages whose seconds a `timings` dict accumulates
STAGES = ("read", "preprocess", "model", "postprocess", "write")

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


@contextmanager
def timed(timings: dict | None, stage: str) -> Iterator[None]:
    """Add the seconds the block takes to ``timings[stage]`` (when ``timings`` is a dict)."""
    t0 = time.perf_counter()
    yield
    if timings is not None:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0


def progress_bar(progress, total: int, unit: str):
    """``(bar or None, owned)``: a new tqdm bar for ``progress=True``, the caller's bar as is."""
    if progress is False or progress is None:
        return None, False
    if progress is True:
        from tqdm.auto import tqdm

        return tqdm(total=total, unit=unit, leave=False, dynamic_ncols=True), True
    return progress, False


def run_stages(
    n: int,
    produce: Callable[[int], Any],
    infer: Callable[[Any], Any],
    consume: Callable[[int, Any], None],
    overlap: bool,
    timings: dict | None,
    on_step: Callable[[int], None] | None = None,
) -> None:
    """Run ``consume(i, infer(produce(i)))`` for i in range(n), with produce / consume on threads.

    The model stays on the calling thread (TensorFlow and the accelerators prefer it); an error on
    any thread stops the others and is raised here.
    """

    def run(stage, f, *a):
        with timed(timings, stage):
            return f(*a)

    if not overlap or n <= 1:
        for i in range(n):
            y = run("model", infer, run("preprocess", produce, i))
            run("postprocess", consume, i, y)
            if on_step:
                on_step(i)
        return

    stop = threading.Event()
    q_in: queue.Queue = queue.Queue(maxsize=2)
    q_out: queue.Queue = queue.Queue(maxsize=2)
    errors: list[BaseException] = []

    def put(q, item):
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def producer():
        try:
            for i in range(n):
                if stop.is_set():
                    return
                if not put(q_in, (i, run("preprocess", produce, i))):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            put(q_in, _Failure(exc))
            return
        put(q_in, _DONE)

    def consumer():
        while True:
            try:
                item = q_out.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            if item is _DONE:
                return
            try:
                run("postprocess", consume, *item)
                if on_step:
                    on_step(item[0])
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                stop.set()
                return

    threads = [
        threading.Thread(target=producer, daemon=True, name="unet3plus-preprocess"),
        threading.Thread(target=consumer, daemon=True, name="unet3plus-postprocess"),
    ]
    for t in threads:
        t.start()
    try:
        while True:
            item = None
            while item is None:
                if errors:
                    raise errors[0]
                try:
                    item = q_in.get(timeout=0.1)
                except queue.Empty:
                    continue
            if item is _DONE:
                break
            if isinstance(item, _Failure):
                raise item.exc
            i, x = item
            y = run("model", infer, x)
            if not put(q_out, (i, y)):
                break
        put(q_out, _DONE)
        threads[1].join()
        if errors:
            raise errors[0]
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
