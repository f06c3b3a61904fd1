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
    stages = _Stages(n, produce, infer, consume, timings, on_step)
    if not overlap or n <= 1:
        stages.serial()
    else:
        stages.overlapped()


class _Stages:
    """One call of :func:`run_stages`: its stage functions, and the queues, stop flag and errors the
    three threads share, held together so that each thread's loop is a method of its own."""

    def __init__(
        self,
        n: int,
        produce: Callable[[int], Any],
        infer: Callable[[Any], Any],
        consume: Callable[[int, Any], None],
        timings: dict | None,
        on_step: Callable[[int], None] | None,
    ):
        self.n, self.produce, self.infer, self.consume = n, produce, infer, consume
        self.timings, self.on_step = timings, on_step
        self.stop = threading.Event()
        self.q_in: queue.Queue = queue.Queue(maxsize=2)
        self.q_out: queue.Queue = queue.Queue(maxsize=2)
        self.errors: list[BaseException] = []

    def run(self, stage: str, f: Callable, *a):
        """``f(*a)``, its seconds added to the stage's in ``timings``."""
        with timed(self.timings, stage):
            return f(*a)

    def serial(self) -> None:
        """All three stages on the calling thread, one batch after the other (no overlap, or one batch)."""
        for i in range(self.n):
            y = self.run("model", self.infer, self.run("preprocess", self.produce, i))
            self.run("postprocess", self.consume, i, y)
            if self.on_step:
                self.on_step(i)

    def put(self, q: queue.Queue, item) -> bool:
        """Put ``item`` on ``q`` unless the run stops first (a full queue must not hang a stopped thread)."""
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def producer(self) -> None:
        """The preprocessing thread: every batch in order, then the end mark (or the failure)."""
        try:
            for i in range(self.n):
                if self.stop.is_set():
                    return
                if not self.put(self.q_in, (i, self.run("preprocess", self.produce, i))):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.put(self.q_in, _Failure(exc))
            return
        self.put(self.q_in, _DONE)

    def consumer(self) -> None:
        """The post-processing thread: each model output as it comes, until the end mark or an error."""
        while True:
            try:
                item = self.q_out.get(timeout=0.1)
            except queue.Empty:
                if self.stop.is_set():
                    return
                continue
            if item is _DONE:
                return
            try:
                self.run("postprocess", self.consume, *item)
                if self.on_step:
                    self.on_step(item[0])
            except BaseException as exc:  # noqa: BLE001
                self.errors.append(exc)
                self.stop.set()
                return

    def next_input(self):
        """The producer's next item, waiting for it; a consumer's error is raised here meanwhile."""
        while True:
            if self.errors:
                raise self.errors[0]
            try:
                return self.q_in.get(timeout=0.1)
            except queue.Empty:
                continue

    def overlapped(self) -> None:
        """Produce and consume on threads while the model runs each batch here; all stopped on the way out."""
        threads = [
            threading.Thread(target=self.producer, daemon=True, name="unet3plus-preprocess"),
            threading.Thread(target=self.consumer, daemon=True, name="unet3plus-postprocess"),
        ]
        for t in threads:
            t.start()
        try:
            while True:
                item = self.next_input()
                if item is _DONE:
                    break
                if isinstance(item, _Failure):
                    raise item.exc
                i, x = item
                y = self.run("model", self.infer, x)
                if not self.put(self.q_out, (i, y)):
                    break
            self.put(self.q_out, _DONE)
            threads[1].join()
            if self.errors:
                raise self.errors[0]
        finally:
            self.stop.set()
            for t in threads:
                t.join(timeout=5)
