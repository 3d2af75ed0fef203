"""core/batch_workers.py: batch-parallel CPU workers (one intra-op thread each), ordered bounded map,
even batches."""
import threading

import pytest
import torch

from edifice.core.batch_workers import cpu_batch_workers, even_batches, ordered_map


def test_workers_run_one_intraop_thread_and_the_setting_is_restored():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with cpu_batch_workers(2) as pool:
            seen = list(pool.map(lambda _: (torch.get_num_threads(), threading.current_thread().name), range(4)))
        assert {n for n, _ in seen} == {1}
        assert all(name.startswith("edifice-batch") for _, name in seen)
        assert torch.get_num_threads() == 2
        t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))   # a thread started later
        t.start()
        t.join()
        assert seen[-1] == 2
    finally:
        torch.set_num_threads(before)


def test_ordered_map_keeps_order_and_bounds_the_work_in_flight():
    lock, state = threading.Lock(), {"running": 0, "peak": 0, "submitted": 0}
    release = threading.Semaphore(0)

    def fn(i):
        with lock:
            state["running"] += 1
            state["peak"] = max(state["peak"], state["running"])
        release.acquire(timeout=5)
        with lock:
            state["running"] -= 1
        return i * i

    def items():
        for i in range(20):
            state["submitted"] += 1
            yield i

    with cpu_batch_workers(4) as pool:
        it = ordered_map(pool, fn, items(), ahead=3)
        for _ in range(20):
            release.release()
        assert list(it) == [i * i for i in range(20)]
    assert state["peak"] <= 3 and state["submitted"] == 20


def test_ordered_map_stops_on_a_failed_check_and_cancels_the_queued_work():
    done = []
    calls = {"n": 0}

    def check():
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("cancelled")

    with cpu_batch_workers(1) as pool:
        with pytest.raises(RuntimeError, match="cancelled"):
            for _ in ordered_map(pool, done.append, range(100), ahead=2, before_submit=check):
                pass
    assert len(done) <= 5


def test_ordered_map_passes_a_worker_error_on():
    def fn(i):
        if i == 3:
            raise ValueError("bad batch")
        return i

    with cpu_batch_workers(2) as pool:
        with pytest.raises(ValueError, match="bad batch"):
            list(ordered_map(pool, fn, range(10), ahead=4))


@pytest.mark.parametrize("n,bs,workers", [(1156, 64, 2), (1156, 64, 1), (10, 64, 2), (1, 64, 4), (130, 64, 3),
                                          (0, 64, 2), (7, 1, 2)])
def test_even_batches_cover_everything_once_within_the_batch_size(n, bs, workers):
    b = even_batches(n, bs, workers)
    assert [i for s, e in b for i in range(s, e)] == list(range(n))
    assert all(0 < e - s <= bs for s, e in b)
    if b:
        sizes = [e - s for s, e in b]
        assert max(sizes) - min(sizes) <= 1
        assert len(b) % workers == 0 or len(b) == n
        assert len(b) >= -(-n // bs)


def test_overlapping_pools_restore_the_setting_of_before_the_first():
    """Two runs at once (as two QGIS tasks): the second opens its pool in another thread while the first's
    is open (that thread starts with one intra-op thread) and closes last; threads started afterwards still
    get the setting of before the first run."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    opened, first_closed, seen = threading.Event(), threading.Event(), {}

    def second_task():
        with cpu_batch_workers(2) as b:
            seen["in_task"] = torch.get_num_threads()
            seen["in_worker"] = b.submit(torch.get_num_threads).result()
            opened.set()
            first_closed.wait(10)

    try:
        with cpu_batch_workers(2) as a:
            a.submit(torch.get_num_threads).result()
            t = threading.Thread(target=second_task)
            t.start()
            assert opened.wait(10)
        first_closed.set()
        t.join(10)
        assert seen == {"in_task": 1, "in_worker": 1}
        later = []
        t2 = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        t2.start()
        t2.join()
        assert later == [2]
    finally:
        torch.set_num_threads(before)
