"""Python tasks queued together on an engine travel to its worker as one batch frame; each
task keeps its own outcome, output and failure (see engine/src/python/mod.rs)."""

import os

import pytest

import ferrocluster as fc


def _warm(v):
    # The first Python task of an engine runs alone (its run time is not known yet).
    v.map_sync(lambda x: x, range(50), chunksize=1)


def test_many_one_item_tasks_keep_their_own_results_and_output(rc):
    v = rc.load_balanced_view()
    _warm(v)

    def f(x):
        if x % 7 == 3:
            print("item", x)
        if x % 50 == 13:
            raise ValueError("bad item %d" % x)
        return x * 2

    ars = [v.apply_async(f, i) for i in range(600)]
    for i, ar in enumerate(ars):
        if i % 50 == 13:
            with pytest.raises(fc.RemoteError) as e:
                ar.get(30)
            assert e.value.ename == "ValueError" and "bad item %d" % i in str(e.value)
        else:
            assert ar.get(30) == i * 2
        assert ar.stdout == ("item %d\n" % i if i % 7 == 3 else "")
    # A one-item map is the same stream of tasks.
    assert v.map_sync(lambda x: x + 1, range(3000), chunksize=1) == list(range(1, 3001))


def test_a_worker_death_in_a_stream_fails_only_the_task_that_ran(rc):
    e0 = rc.ids[0]
    v = rc.load_balanced_view(targets=[e0])
    _warm(v)

    def f(x):
        if x == 150:
            os._exit(7)
        return x

    ars = [v.apply_async(f, i) for i in range(300)]
    failed = []
    for i, ar in enumerate(ars):
        try:
            assert ar.get(30) == i
        except fc.RemoteError as e:
            assert e.ename == "WorkerDied" and "exited with status 7" in str(e)
            assert "engine %d" % e0 in str(e)
            failed.append(i)
    assert failed == [150]
    assert len(rc.ids) == 2
