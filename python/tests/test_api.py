"""The API against a real two-engine cluster."""

import concurrent.futures
import itertools
import os
import time

import pytest

import ferrocluster as fc


def test_apply_in_every_style(rc):
    v = rc.load_balanced_view()
    assert v.apply_sync(lambda x, y=1: x + y, 41) == 42
    ar = v.apply_async(pow, 2, 10)
    assert isinstance(ar, concurrent.futures.Future)
    assert ar.get(10) == 1024 and ar.result() == 1024 and ar.ready() and ar.successful()
    assert ar.engine_id in rc.ids and ar.elapsed >= 0 and ar.metadata["status"] == "ok"
    v.block = True
    try:
        assert v.apply(len, "abc") == 3
    finally:
        v.block = False
    assert isinstance(v.apply(len, "abc"), fc.AsyncResult)


def test_closures_nested_functions_and_kwargs(rc):
    v = rc.load_balanced_view()
    k = 7

    def outer(x):
        def inner(y):
            return y * k
        return inner(x) + 1

    assert v.apply_sync(outer, 3) == 22
    assert v.apply_sync(lambda *a, **kw: (a, sorted(kw)), 1, 2, b=3, a=4) == ((1, 2), ["a", "b"])


def test_map_ordered_unordered_chunked_and_several_sequences(rc):
    v = rc.load_balanced_view()
    assert v.map_sync(lambda x: x * x, range(100)) == [x * x for x in range(100)]
    assert v.map_sync(lambda x: x + 1, range(50), chunksize=7) == list(range(1, 51))
    assert v.map_sync(lambda a, b: a * b, range(10), range(10, 20)) == [
        a * b for a, b in zip(range(10), range(10, 20))]
    ar = v.map_async(lambda x: x, range(1000), ordered=False)
    assert sorted(ar) == list(range(1000))
    assert len(ar) == 1000 and ar.get() == list(range(1000))
    assert list(v.map_async(str, range(5))) == ["0", "1", "2", "3", "4"]
    assert v.map_sync(lambda x: x, []) == []


def test_imap_over_an_endless_generator_with_bounded_flight(rc):
    v = rc.load_balanced_view()

    def naturals():
        yield from itertools.count()

    got = list(itertools.islice(v.imap(lambda x: -x, naturals(), max_outstanding=4), 500))
    assert got == [-x for x in range(500)]
    unordered = sorted(v.imap(lambda x: x * 2, (i for i in range(300)), ordered=False))
    assert unordered == [i * 2 for i in range(300)]


def test_generators_as_results_are_refused_clearly_but_lists_work(rc):
    v = rc.load_balanced_view()
    assert v.apply_sync(lambda: list(x for x in range(3))) == [0, 1, 2]


def test_print_is_captured(rc):
    v = rc.load_balanced_view()
    ar = v.apply_async(lambda: print("hello from", "the engine") or 5)
    assert ar.get(10) == 5
    assert ar.stdout == "hello from the engine\n"
    dv = rc[:]
    ar = dv.execute("print('hi')")
    ar.get(10)
    assert ar.stdout == ["hi\n", "hi\n"]


def test_direct_view_namespace(rc):
    dv = rc[:]
    dv.push({"a": 5}, block=True)
    assert dv.apply_sync(lambda: a) == [5, 5]  # noqa: F821 (lives on the engines)
    dv["b"] = [1, 2]
    assert dv["b"] == [[1, 2], [1, 2]]
    dv.execute("c = a * 2", block=True)
    assert dv.pull("c", block=True) == [10, 10]
    assert dv.pull(["a", "c"], block=True) == [[5, 10], [5, 10]]
    e0 = rc[0]
    assert e0["a"] == 5
    assert e0.apply_sync(lambda: a + 1) == 6  # noqa: F821
    dv.scatter("part", list(range(10)), block=True)
    assert sorted(len(p) for p in dv.pull("part", block=True)) == [5, 5]
    assert dv.gather("part", block=True) == list(range(10))
    with pytest.raises(fc.RemoteError) as e:
        dv.pull("nothing_here", block=True)
    assert "nothing_here" in str(e.value)


def test_sync_imports(rc):
    dv = rc[:]
    with dv.sync_imports(quiet=True):
        import colorsys  # noqa: F401
    assert dv.apply_sync(lambda: colorsys.__name__) == ["colorsys", "colorsys"]


def test_every_engine_and_slices(rc):
    ids = rc.ids
    assert len(ids) == 2
    assert sorted(rc[:].apply_sync(os.getpid)) == sorted(set(rc[:].apply_sync(os.getpid)))
    assert rc[::2].targets == ids[::2]
    assert isinstance(rc[0].apply_sync(os.getpid), int)


def test_remote_exceptions_carry_type_message_traceback_and_output(rc):
    v = rc.load_balanced_view()

    def fails(x):
        print("about to fail")
        return {}[x]

    ar = v.apply_async(fails, "missing")
    with pytest.raises(fc.RemoteError) as info:
        ar.get(10)
    e = info.value
    assert e.ename == "KeyError" and "missing" in e.evalue
    assert e.engine_id in rc.ids
    assert "fails" in e.traceback and "Traceback" in e.traceback
    assert e.stdout == "about to fail\n"
    assert ar.successful() is False
    assert isinstance(ar.exception(), fc.RemoteError)
    with pytest.raises(fc.RemoteError):
        v.map_sync(lambda x: 1 / x, [1, 0, 2])
    with pytest.raises(fc.CompositeError) as c:
        rc[:].apply_sync(lambda: 1 / 0)
    assert len(c.value.elist) == 2


def test_rust_functions_and_commands_by_name(rc):
    v = rc.load_balanced_view()
    assert v.apply_sync("nth_prime", 10) == 31
    assert v.map_sync("nth_prime", range(5)) == [2, 3, 5, 7, 11]
    out = v.command(["sh", "-c", "echo out; echo err >&2; exit 3"], block=True)
    assert (out.returncode, out.stdout, out.stderr) == (3, b"out\n", b"err\n")
    outs = rc[:].command("echo hi", block=True)
    assert [o.stdout for o in outs] == [b"hi\n", b"hi\n"]
    with pytest.raises(fc.UnknownFunctionError):
        v.apply_sync("no_such_function", 1)


def test_timeouts_name_the_task(rc):
    v = rc.load_balanced_view()
    ar = v.apply_async(time.sleep, 1.0)
    with pytest.raises(fc.TimeoutError) as e:
        ar.get(0.05)
    assert ar.msg_id in str(e.value) and isinstance(e.value, TimeoutError)
    ar.get(10)
    with v.temp_flags(timeout=0.5):
        slow = v.apply_async(time.sleep, 5)
    assert v.timeout is None
    with pytest.raises(fc.TaskTimeout):
        slow.get(10)
    # The engine's next Python task gets a fresh worker.
    assert v.apply_sync(lambda: 1) == 1


def test_decorators(rc):
    v = rc.load_balanced_view()

    @v.remote(block=True)
    def square(x):
        return x * x

    assert square(9) == 81

    @v.parallel(block=True)
    def doubled(xs):
        return [x * 2 for x in xs]

    assert doubled(range(10)) == [x * 2 for x in range(10)]

    @v.parallel(block=True)
    def sq(x):
        return x * x

    assert sq.map(range(5)) == [0, 1, 4, 9, 16]
    assert rc[:].parallel(block=True)(lambda xs: [sum(xs)])(range(10)) == [10, 35]


def test_executor_is_a_concurrent_futures_executor(rc):
    ex = rc.executor()
    futures = [ex.submit(pow, 2, i) for i in range(20)]
    done, not_done = concurrent.futures.wait(futures, timeout=20)
    assert not not_done
    assert sorted(f.result() for f in concurrent.futures.as_completed(futures)) == sorted(
        2 ** i for i in range(20))
    assert list(ex.map(abs, [-1, -2, 3])) == [1, 2, 3]
    called = []
    f = ex.submit(lambda: 7)
    f.add_done_callback(lambda fut: called.append(fut.result()))
    assert f.result(10) == 7
    assert eventually_true(lambda: called == [7])
    # Cancel a task queued behind long ones.
    view = rc.load_balanced_view()
    blockers = [view.apply_async(time.sleep, 1.0) for _ in range(4)]
    queued = view.apply_async(time.sleep, 0)
    assert queued.cancel() is True and queued.cancelled()
    with pytest.raises(concurrent.futures.CancelledError):
        queued.result()
    for b in blockers:
        b.get(10)
    ex.shutdown()
    with pytest.raises(fc.ShutdownError):
        ex.submit(abs, 1)
    with rc.load_balanced_view().executor as ex2:
        assert ex2.submit(abs, -3).result() == 3


def eventually_true(cond, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_ten_megabyte_arguments_and_results(rc):
    v = rc.load_balanced_view()
    blob = os.urandom(10 * 1024 * 1024)
    assert v.apply_sync(len, blob) == len(blob)
    back = v.apply_sync(lambda n: b"x" * n, 10 * 1024 * 1024)
    assert len(back) == 10 * 1024 * 1024
    assert rc[:].apply_sync(lambda b: len(b), blob) == [len(blob)] * 2


def test_queue_status_abort_and_purge(rc):
    q = rc.queue_status()
    assert set(rc.ids) <= set(q) and "unassigned" in q
    v = rc.load_balanced_view()
    busy = [v.apply_async(time.sleep, 0.5) for _ in range(2)]
    queued = v.apply_async(time.sleep, 0)
    report = rc.abort(queued)
    assert queued.msg_id in report["aborted"] + report["running"] + report["finished"], report
    for b in busy:
        b.get(10)
    rc.purge_results("all")
    rc.purge_results([busy[0]])


def test_flags_and_targets(rc):
    v = rc.load_balanced_view(targets=[rc.ids[0]])
    assert {v.apply_sync(os.getpid) for _ in range(5)} == {rc[0].apply_sync(os.getpid)}
    with pytest.raises(KeyError):
        v.set_flags(nonsense=1)
    first = v.apply_async(os.getpid)
    with v.temp_flags(follow=first, targets=None):
        assert v.apply_sync(os.getpid) == first.get()
    with v.temp_flags(after=[first]):
        assert v.apply_sync(lambda: 3) == 3


def test_a_busy_python_task_does_not_get_its_engine_declared_dead(rc):
    # Heartbeats declare an engine dead after 3 s of silence; this task is busy for 5.
    v = rc.load_balanced_view()
    seconds = float(os.environ.get("FERROCLUSTER_BUSY_SECONDS", "5"))

    def busy(s):
        import time
        end = time.time() + s
        while time.time() < end:
            pass
        return "alive"

    assert v.apply_sync(busy, seconds) == "alive"
    assert len(rc.ids) == 2


def test_wait_interactive_shows_progress_with_and_without_tqdm(rc, monkeypatch):
    import io
    import sys
    v = rc.load_balanced_view()
    ar = v.map_async(lambda x: (__import__("time").sleep(0.002), x)[1], range(300),
                     chunksize=3)
    out = io.StringIO()
    monkeypatch.setitem(sys.modules, "tqdm", None)  # not installed
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    ar.wait_interactive(interval=0.02, file=out)
    assert ar.get() == list(range(300))
    last = out.getvalue().split("\r")[-1]
    assert last.startswith("100/100 tasks (300/300 items) finished after"), out.getvalue()
    monkeypatch.undo()
    pytest.importorskip("tqdm")
    ar = v.map_async(lambda x: x, range(50), chunksize=5)
    out = io.StringIO()
    ar.wait_interactive(interval=0.02, file=out)
    assert "50/50" in out.getvalue(), out.getvalue()


def test_direct_view_map_splits_evenly_in_engine_order_like_scatter(rc):
    dv = rc[:]
    e0, e1 = rc.ids[:2]
    pids = {rc[e].apply_sync(os.getpid): e for e in (e0, e1)}
    got = dv.map_sync(lambda x: (x * 2, os.getpid()), range(11))
    assert [v for v, _ in got] == [x * 2 for x in range(11)]
    engines = [pids[p] for _, p in got]
    assert engines == [e0] * 6 + [e1] * 5, engines
    # scatter splits the same way.
    dv.scatter("part", range(11), block=True)
    assert dv.apply_sync(lambda: part) == [list(range(6)), list(range(6, 11))]
    assert dv.gather("part", block=True) == list(range(11))
    # Several sequences, fewer items than engines, nothing at all, and a Rust function.
    assert dv.map_sync(lambda a, b: a + b, [1, 2], [10, 20]) == [11, 22]
    assert dv.map_sync(lambda x: x, [7]) == [7]
    assert dv.map_sync(lambda x: x, []) == []
    assert rc[[e1]].map_sync(lambda x: os.getpid(), range(3)) == [
        p for p, e in pids.items() if e == e1] * 3
    assert dv.map_sync("nth_prime", [0, 1, 2]) == [2, 3, 5]


def test_ipyparallel_names_get_dict_wait_outstanding_and_view_requests(rc):
    dv = rc[:]
    d = dv.apply_async(os.getpid).get_dict(10)
    assert sorted(d) == rc.ids and all(isinstance(p, int) for p in d.values())
    v = rc.load_balanced_view()
    ars = [v.apply_async(time.sleep, 0.2) for _ in range(3)]
    assert ars[0].sent and ars[0].wait_for_send()
    assert set(ars[0].msg_ids) <= rc.outstanding
    assert rc.wait(ars, timeout=10) and v.wait(timeout=10)
    assert not (set(ars[0].msg_ids) & rc.outstanding)
    assert rc.wait(timeout=0)
    with pytest.raises(ValueError):
        v.map_async(lambda x: x, range(8), chunksize=1).get_dict(10)
    assert set(dv.queue_status()) >= set(rc.ids)
    assert dv.abort([]) == {"aborted": [], "running": [], "finished": [], "unknown": []}
    dv.use_cloudpickle()
    dv.use_pickle()
    dv.purge_results([ars[0]])


def test_cluster_async_names():
    import asyncio

    async def main():
        async with fc.Cluster(n=1) as rc:
            return rc.load_balanced_view().apply_sync(lambda: "async")

    assert asyncio.run(main()) == "async"
