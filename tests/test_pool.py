"""The daemon's worker pool: bounded threads, order, shutdown."""

from __future__ import annotations

import threading

import pytest

from poller.executors.pool import WorkerPool


def test_calls_run_on_at_most_max_workers_threads() -> None:
    pool = WorkerPool(3, thread_name_prefix="t")
    release, names, lock = threading.Event(), set(), threading.Lock()
    started = threading.Semaphore(0)

    def call() -> None:
        with lock:
            names.add(threading.current_thread().name)
        started.release()
        release.wait(10)

    for _ in range(5):
        pool.submit(call)
    for _ in range(3):
        assert started.acquire(timeout=5)
    assert not started.acquire(timeout=0.2)  # two wait for a free thread
    release.set()
    for _ in range(2):
        assert started.acquire(timeout=5)
    assert names == {"t_0", "t_1", "t_2"}
    pool.shutdown()


def test_a_failing_call_does_not_end_its_worker(caplog: pytest.LogCaptureFixture) -> None:
    pool = WorkerPool(1, thread_name_prefix="t")
    done = threading.Event()
    pool.submit(lambda: 1 / 0)
    pool.submit(done.set)
    assert done.wait(5)
    assert "a call on the worker pool failed" in caplog.text
    pool.shutdown()


def test_shutdown_drops_queued_calls_and_refuses_new_ones() -> None:
    pool = WorkerPool(1, thread_name_prefix="t")
    started, release, ran = threading.Event(), threading.Event(), []

    def block() -> None:
        started.set()
        release.wait(10)

    pool.submit(block)
    assert started.wait(5)
    for i in range(3):
        pool.submit(ran.append, i)
    assert pool.shutdown() == 3
    release.set()
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(ran.append, 9)
    assert ran == []


def test_a_burst_gets_every_thread() -> None:
    pool = WorkerPool(8, thread_name_prefix="t")
    release, started = threading.Event(), threading.Semaphore(0)

    def call() -> None:
        started.release()
        release.wait(10)

    for _ in range(16):
        pool.submit(call)
    for _ in range(8):
        assert started.acquire(timeout=5)  # 8 at once, not one thread after another
    release.set()
    pool.shutdown()
