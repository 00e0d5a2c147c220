"""Futures for the Tinker-style API: calls queue on one worker thread and run in submission order.

A failure that nobody looked at is not lost: the next call on the same client raises it, so a
refused ``optim_step`` (budget) can never be silently skipped by a loop that ignores futures.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .errors import StateError

__all__ = ["TinkerFuture", "OrderedWorker"]

T = TypeVar("T")


class TinkerFuture(Generic[T]):
    """Result of a queued call. ``.result()`` waits and returns the value or raises the call's error."""

    def __init__(self, inner: cf.Future, worker: "OrderedWorker", op: str) -> None:
        self._inner = inner
        self._worker = worker
        self.op = op

    def result(self, timeout: float | None = None) -> T:
        self._worker.observed(self)
        try:
            return self._inner.result(timeout)
        except KeyboardInterrupt:
            self._worker.on_interrupt(self.op)
            raise

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._worker.observed(self)
        return self._inner.exception(timeout)

    def done(self) -> bool:
        return self._inner.done()

    def __repr__(self) -> str:
        state = "done" if self._inner.done() else "pending"
        return f"TinkerFuture({self.op}, {state})"


class OrderedWorker:
    """A single worker thread: submission order is execution order."""

    def __init__(self, name: str, *, on_interrupt: Callable[[str], None] | None = None) -> None:
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._unobserved: list[TinkerFuture] = []
        self._on_interrupt = on_interrupt
        self._poison: tuple[str, BaseException] | None = None  # first failure nobody has looked at yet
        self.closed = False

    def submit(self, op: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> TinkerFuture:
        if self.closed:
            raise StateError("this training client is closed; create a new one.")
        self._raise_unobserved()

        def run() -> Any:
            if self._poison is not None:
                failed_op, exc = self._poison
                raise StateError(f"{op} was skipped because an earlier {failed_op} failed "
                                 f"({type(exc).__name__}: {exc}); nothing was changed.") from exc
            try:
                return fn(*args, **kwargs)
            except BaseException as exc:
                with self._lock:
                    if self._poison is None:
                        self._poison = (op, exc)
                raise

        fut = TinkerFuture(self._pool.submit(run), self, op)
        with self._lock:
            self._unobserved.append(fut)
        return fut

    def call(self, op: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Queue behind pending work and wait for the result (synchronous API).

        An earlier unobserved failure is raised instead (the call does not run).
        """
        fut = self.submit(op, fn, *args, **kwargs)
        try:
            return fut.result()
        except StateError as exc:
            if isinstance(exc.__cause__, BaseException) and "was skipped because" in str(exc):
                with self._lock:
                    self._poison = None
                    self._unobserved.clear()
                raise exc.__cause__ from None
            raise

    def observed(self, fut: TinkerFuture) -> None:
        with self._lock:
            if fut in self._unobserved:
                self._unobserved.remove(fut)
            if fut.done() and self._poison is not None and fut._inner.exception() is self._poison[1]:
                self._poison = None

    def _raise_unobserved(self) -> None:
        """Raise the first failure nobody looked at (and forget the ops skipped because of it)."""
        with self._lock:
            done = [f for f in self._unobserved if f.done()]
            for f in done:
                self._unobserved.remove(f)
            poison, self._poison = self._poison, None
        if poison is not None:
            raise poison[1]
        for f in done:
            exc = f._inner.exception()
            if exc is not None:
                raise exc

    def on_interrupt(self, op: str) -> None:
        if self._on_interrupt:
            self._on_interrupt(op)

    def drain(self) -> None:
        """Wait for everything queued so far (errors stay with their futures)."""
        self._pool.submit(lambda: None).result()

    def shutdown(self) -> None:
        self.closed = True
        self._pool.shutdown(wait=True)
