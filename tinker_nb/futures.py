"""Futures for the Tinker-style API: calls queue on one worker thread and run in submission order.

Rules (tests/test_futures.py pins them):

* **Backpressure.** At most ``max_in_flight`` operations wait or run at once; ``submit`` blocks (in
  small, interruptible waits) until there is room. A training loop therefore runs at most a step or
  two ahead of the engine, and Ctrl-C / the notebook's stop button lands in the loop itself.
* **Interrupt.** A ``KeyboardInterrupt`` while waiting cancels every queued operation that has not
  started (they never run: a queued draw is never sampled nor charged), lets the running one finish,
  reports what ran and what was cancelled, and leaves the client usable.
* **An interrupt is never lost in a finalizer.** CPython drops a ``KeyboardInterrupt`` that lands while
  the main thread runs a finalizer (the garbage collector closing an abandoned generator, a ``__del__``):
  it prints "Exception ignored in …" and carries on, so the stop button would do nothing. The first
  worker chains ``sys.unraisablehook`` (once per process) to note such a loss; the main thread's waits
  here raise it again within ``_POLL_S``.
* **A failure reaches the caller once, with its type.** After an operation fails, the operations queued
  behind it are skipped (nothing changes) and fail with an error of the same class. The first failure
  nobody has looked at is raised by the next call (so a refused step cannot be silently skipped by a
  loop that ignores futures); once raised or observed through ``.result()``, the client runs normally.
"""

from __future__ import annotations

import concurrent.futures as cf
import sys
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .errors import StateError, TinkerError

__all__ = ["OperationCancelled", "OrderedWorker", "TinkerFuture"]

T = TypeVar("T")
_POLL_S = 0.05


_lost_interrupt = threading.Event()
_hook_lock = threading.Lock()
_hook_installed = False


def _install_lost_interrupt_hook() -> None:
    """Chain ``sys.unraisablehook`` once: a KeyboardInterrupt swallowed in a main-thread finalizer is noted."""
    global _hook_installed
    with _hook_lock:
        if _hook_installed:
            return
        previous = sys.unraisablehook

        def hook(unraisable: Any) -> None:
            if isinstance(unraisable.exc_value, KeyboardInterrupt) and threading.current_thread() is threading.main_thread():
                _lost_interrupt.set()
            previous(unraisable)

        sys.unraisablehook = hook
        _hook_installed = True


def _raise_lost_interrupt() -> None:
    """In the main thread: raise the KeyboardInterrupt a finalizer swallowed, once."""
    if _lost_interrupt.is_set() and threading.current_thread() is threading.main_thread():
        _lost_interrupt.clear()
        raise KeyboardInterrupt


class OperationCancelled(StateError):
    """The operation was queued but cancelled before it ran (an interrupt, or the client closed)."""


def _same_kind(exc: BaseException, op: str, failed_op: str) -> BaseException:
    """An error for an operation skipped because ``failed_op`` failed with ``exc``: same class when possible."""
    msg = (f"{op} was skipped because an earlier {failed_op} failed ({type(exc).__name__}: {exc}); "
           "nothing was changed by it.")
    if isinstance(exc, TinkerError):
        try:
            new = type(exc)(msg)
            new.__cause__ = exc
            return new
        except Exception:  # noqa: BLE001 - an exotic constructor: fall back to StateError
            pass
    new_state = StateError(msg)
    new_state.__cause__ = exc
    return new_state


class TinkerFuture(Generic[T]):
    """Result of a queued call. ``.result()`` waits and returns the value or raises the call's error."""

    def __init__(self, inner: cf.Future, worker: OrderedWorker, op: str) -> None:
        self._inner = inner
        self._worker = worker
        self.op = op

    def result(self, timeout: float | None = None) -> T:
        try:
            self._worker.wait(self._inner, timeout)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(self._worker.interrupted(self.op)) from None
        self._worker.observed(self)
        if self._inner.cancelled():
            raise OperationCancelled(f"{self.op} was cancelled before it ran (interrupt or close); nothing changed.")
        return self._inner.result()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._worker.wait(self._inner, timeout)
        self._worker.observed(self)
        if self._inner.cancelled():
            return OperationCancelled(f"{self.op} was cancelled before it ran.")
        return self._inner.exception()

    def done(self) -> bool:
        return self._inner.done()

    def cancelled(self) -> bool:
        return self._inner.cancelled()

    def __repr__(self) -> str:
        state = ("cancelled" if self._inner.cancelled() else "done" if self._inner.done()
                 else "running" if self._inner.running() else "pending")
        return f"TinkerFuture({self.op}, {state})"


class OrderedWorker:
    """A single worker thread: submission order is execution order, with bounded queueing."""

    def __init__(self, name: str, *, on_interrupt: Callable[[dict[str, Any]], None] | None = None,
                 max_in_flight: int = 4) -> None:
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._in_flight: list[tuple[str, cf.Future]] = []
        self._unobserved: list[TinkerFuture] = []
        self._on_interrupt = on_interrupt
        self._poison: tuple[str, BaseException] | None = None  # first failure nobody has looked at yet
        self.max_in_flight = max(1, int(max_in_flight))
        self.closed = False
        self.completed = 0
        _install_lost_interrupt_hook()

    # -- waiting -------------------------------------------------------------------------------
    @staticmethod
    def wait(inner: cf.Future, timeout: float | None = None) -> None:
        """Wait in short slices so that KeyboardInterrupt reaches the waiting (main) thread promptly."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while not inner.done():
            _raise_lost_interrupt()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise cf.TimeoutError()
            try:
                inner.result(timeout=_POLL_S if left is None else min(_POLL_S, left))
            except cf.TimeoutError:
                continue
            except cf.CancelledError:
                return
            except Exception:  # noqa: BLE001 - the error is the future's; callers read it
                return

    def _wait_for_room(self) -> None:
        with self._room:
            while len(self._in_flight) >= self.max_in_flight:
                _raise_lost_interrupt()
                self._room.wait(_POLL_S)
        _raise_lost_interrupt()

    # -- submitting ------------------------------------------------------------------------------
    def submit(self, op: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> TinkerFuture:
        if self.closed:
            raise StateError("this training client is closed; create a new one with "
                             "service.create_training_client().")
        self._raise_unobserved()
        try:
            self._wait_for_room()
        except KeyboardInterrupt:
            raise KeyboardInterrupt(self.interrupted(op)) from None
        self._raise_unobserved()

        def run() -> Any:
            with self._lock:
                poison = self._poison
            if poison is not None:
                raise _same_kind(poison[1], op, poison[0])
            try:
                return fn(*args, **kwargs)
            except BaseException as exc:
                with self._lock:
                    if self._poison is None:
                        self._poison = (op, exc)
                raise

        inner = self._pool.submit(run)
        fut: TinkerFuture[Any] = TinkerFuture(inner, self, op)
        with self._lock:
            self._in_flight.append((op, inner))
            self._unobserved.append(fut)

        def done(f: cf.Future) -> None:
            with self._room:
                self._in_flight = [(o, x) for o, x in self._in_flight if x is not f]
                if not f.cancelled():
                    self.completed += 1
                self._room.notify_all()

        inner.add_done_callback(done)
        return fut

    def call(self, op: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Queue behind pending work and wait for the result (synchronous API)."""
        return self.submit(op, fn, *args, **kwargs).result()

    # -- failures --------------------------------------------------------------------------------
    def observed(self, fut: TinkerFuture) -> None:
        """The caller looked at ``fut`` (after it finished): its failure has reached them."""
        with self._lock:
            if fut in self._unobserved:
                self._unobserved.remove(fut)
            inner = fut._inner
            if inner.done() and not inner.cancelled() and self._poison is not None:
                exc = inner.exception()
                if exc is self._poison[1] or (exc is not None and exc.__cause__ is self._poison[1]):
                    self._forget_failure()

    def _forget_failure(self) -> None:
        """Clear the failure and the futures skipped because of it (caller holds the lock)."""
        self._poison = None
        self._unobserved = [f for f in self._unobserved if not (f.done() and f._inner.exception() is not None)]

    def _raise_unobserved(self) -> None:
        """Raise the first failure nobody looked at (once), and forget the operations skipped because of it."""
        with self._lock:
            poison = self._poison
            pending = [x for _, x in self._in_flight] if poison is not None else []
        for x in pending:  # the operations queued behind the failure are being skipped: let them finish
            self.wait(x)
        with self._lock:
            done = [f for f in self._unobserved if f.done()]
            for f in done:
                self._unobserved.remove(f)
            poison = self._poison
            if poison is not None:
                self._forget_failure()
        if poison is not None:
            raise poison[1]
        for f in done:
            if f.cancelled():
                continue
            exc = f._inner.exception()
            if exc is not None:
                raise exc

    # -- interrupts ------------------------------------------------------------------------------
    def cancel_pending(self) -> list[str]:
        """Cancel every queued operation that has not started; returns their names."""
        with self._lock:
            queued = list(self._in_flight)
        cancelled = [op for op, f in queued if f.cancel()]
        with self._lock:
            self._unobserved = [f for f in self._unobserved if not f.cancelled()]
        return cancelled

    def interrupted(self, op: str) -> str:
        """Cancel the queued operations, report them; returns what the re-raised KeyboardInterrupt says."""
        cancelled = self.cancel_pending()
        running = [o for o, f in self._in_flight if f.running()]
        info = {"operation": op, "cancelled": cancelled, "running": running}
        if self._on_interrupt:
            self._on_interrupt(info)
        return (f"interrupted: {len(cancelled)} queued operations were cancelled and never ran (queued training "
                f"steps are not charged){'; the running ' + running[0] + ' finishes first' if running else ''}. "
                "get_dp_metrics() says what ran; the client stays usable.")

    def run_after(self, fn: Callable[[], Any]) -> cf.Future:
        """Queue a maintenance function behind everything queued (no backpressure, never skipped)."""
        return self._pool.submit(fn)

    # -- lifecycle ---------------------------------------------------------------------------------
    def drain(self) -> None:
        """Wait for everything queued so far (errors stay with their futures)."""
        if self.closed:
            raise StateError("this training client is closed; create a new one with "
                             "service.create_training_client().")
        try:
            self.wait(self._pool.submit(lambda: None))
        except KeyboardInterrupt:
            raise KeyboardInterrupt(self.interrupted("drain")) from None

    def shutdown(self) -> None:
        self.closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
