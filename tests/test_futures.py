"""Ordered futures: submission order is execution order; unobserved failures surface on the next call."""

from __future__ import annotations

import threading
import time

import pytest

from tinker_nb.errors import BudgetExceededError, StateError
from tinker_nb.futures import OrderedWorker


def test_runs_in_submission_order():
    w = OrderedWorker("t")
    seen = []
    futs = [w.submit("op", lambda i=i: (time.sleep(0.01 * (5 - i)), seen.append(i))) for i in range(5)]
    for f in futs:
        f.result()
    assert seen == [0, 1, 2, 3, 4]
    assert all(f.done() for f in futs)
    w.shutdown()


def test_unobserved_error_is_raised_by_next_call():
    w = OrderedWorker("t")

    def refuse():
        raise BudgetExceededError("over budget")

    w.submit("optim_step", refuse)
    w.drain()
    with pytest.raises(BudgetExceededError):
        w.submit("forward_backward", lambda: 1)
    # once raised, it does not repeat
    assert w.submit("forward_backward", lambda: 2).result() == 2
    w.shutdown()


def test_observed_error_is_not_raised_again():
    w = OrderedWorker("t")

    def boom():
        raise ValueError("x")

    f = w.submit("op", boom)
    with pytest.raises(ValueError):
        f.result()
    assert w.submit("op", lambda: 3).result() == 3
    w.shutdown()


def test_closed_worker_refuses():
    w = OrderedWorker("t")
    w.shutdown()
    with pytest.raises(StateError, match="closed"):
        w.submit("op", lambda: 1)


def test_interrupt_callback():
    calls = []
    w = OrderedWorker("t", on_interrupt=calls.append)
    gate = threading.Event()
    f = w.submit("forward_backward", gate.wait)

    def fake_wait(timeout=None):
        raise KeyboardInterrupt

    f._inner.result = fake_wait
    with pytest.raises(KeyboardInterrupt):
        f.result()
    assert [c["operation"] for c in calls] == ["forward_backward"]
    gate.set()
    w.shutdown()


def test_ops_queued_after_a_failure_are_skipped_and_the_failure_surfaces():
    w = OrderedWorker("t")
    gate = threading.Event()
    ran = []

    def refuse():
        gate.wait()
        raise BudgetExceededError("over budget")

    w.submit("optim_step", refuse)
    later = w.submit("forward_backward", lambda: ran.append(1))  # queued before the failure is known
    gate.set()
    # skipped, with the failure's own type (so `except BudgetExceededError` catches it wherever it surfaces)
    with pytest.raises(BudgetExceededError, match="skipped because an earlier optim_step failed"):
        later.result()
    assert ran == []
    # the failure reached the caller (through the skipped op, with its type): the next call runs normally
    assert w.call("get_dp_metrics", lambda: 5) == 5
    w.shutdown()


def test_backpressure_blocks_the_submitter_and_interrupt_cancels_queued_work():
    calls = []
    w = OrderedWorker("t", on_interrupt=calls.append, max_in_flight=2)
    gate = threading.Event()
    ran = []
    w.submit("forward_backward", gate.wait)
    w.submit("optim_step", lambda: ran.append("optim"))
    blocked = threading.Event()

    def third():
        blocked.set()
        w.submit("forward_backward", lambda: ran.append("fb2"))

    t = threading.Thread(target=third)
    t.start()
    blocked.wait(2)
    time.sleep(0.2)
    assert t.is_alive()  # the loop itself blocks: at most two operations in flight
    gate.set()
    t.join(5)
    w.drain()
    assert ran == ["optim", "fb2"]
    # an interrupt while waiting cancels queued operations; they never run
    gate2, started = threading.Event(), threading.Event()
    w.submit("forward_backward", lambda: (started.set(), gate2.wait()))
    q = w.submit("optim_step", lambda: ran.append("never"))
    assert started.wait(5)
    w.interrupted("optim_step")
    assert calls[-1]["cancelled"] == ["optim_step"]
    gate2.set()
    w.drain()
    assert "never" not in ran and q.cancelled()
    from tinker_nb.futures import OperationCancelled

    with pytest.raises(OperationCancelled):
        q.result()
    assert w.submit("op", lambda: 7).result() == 7  # the client stays usable
    w.shutdown()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_interrupt_swallowed_by_a_finalizer_still_stops_the_wait():
    """CPython drops a KeyboardInterrupt that lands in a finalizer ("Exception ignored in ..."): in a long
    session the stop button then did nothing (the full suite lost both interrupt tests this way). The
    worker notes the loss and its wait raises it again."""
    import _thread
    import gc

    w = OrderedWorker("t")
    fut = w.submit("slow", lambda: time.sleep(1.0))

    def abandoned():
        try:
            yield 1
        finally:  # runs in the main thread when the garbage collector closes the generator
            _thread.interrupt_main()  # the stop button, pressed while the finalizer runs
            sum(i for i in range(1000))  # Python code: the interrupt lands here and is swallowed

    class Cycle:
        pass

    c = Cycle()
    c.gen = abandoned()
    next(c.gen)
    c.me = c
    del c
    gc.collect()  # no KeyboardInterrupt here: CPython printed it as unraisable
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        fut.result()
    assert time.monotonic() - t0 < 0.9  # raised at the next wait slice, not after the operation
    w.shutdown()
