"""Shared objects (queues, namespaces, locks, semaphores, events) against real clusters."""

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import ferrocluster as fc
from conftest import alive, eventually, pids_of

_names = iter(range(10**9))


def fresh_name(prefix):
    """A name no other test uses (the suite shares one cluster)."""
    return "%s-%d-%d" % (prefix, os.getpid(), next(_names))


def other_client(rc):
    """A second connection to the same cluster (another client id, as another process
    would have)."""
    return fc.Client(connection_file=rc._file)


def in_thread(fn, *args):
    out = {}

    def run():
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # reported to the test
            out["error"] = e
        out["at"] = time.monotonic()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def python_child(rc, code):
    """A Python process connected to ``rc``'s cluster running ``code`` (``rc2`` is its
    client); its stdout is a pipe."""
    prelude = "import sys, time, queue\nimport ferrocluster as fc\nrc2 = fc.Client(connection_file=%r)\n" % rc._file
    return subprocess.Popen([sys.executable, "-c", prelude + textwrap.dedent(code)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# -- queues ------------------------------------------------------------------------------

def test_a_queue_is_fifo_and_counts_its_items(rc):
    q = rc.Queue(fresh_name("fifo"))
    assert q.empty() and q.qsize() == 0 and not q.full()
    for i in range(10):
        q.put(i)
    assert q.qsize() == 10 and len(q) == 10 and not q.empty()
    assert [q.get() for _ in range(10)] == list(range(10))
    assert q.empty()


def test_put_many_sends_items_in_order_at_once(rc):
    q = rc.Queue(fresh_name("many"))
    q.put_many(range(1000))
    q.put_many([])
    assert q.qsize() == 1000
    assert [q.get_nowait() for _ in range(1000)] == list(range(1000))
    bounded = rc.Queue(fresh_name("many-bounded"), maxsize=3)
    with pytest.raises(queue.Full):
        bounded.put_many(range(5), timeout=0.2)
    assert [bounded.get_nowait() for _ in range(3)] == [0, 1, 2]


def test_the_same_name_is_the_same_queue_for_every_client(rc):
    name = fresh_name("shared")
    with other_client(rc) as rc2:
        rc.Queue(name).put("from one")
        assert rc2.Queue(name).get(timeout=5) == "from one"


def test_values_of_every_kind_travel(rc):
    q = rc.Queue(fresh_name("values"))

    class Local:
        def __init__(self, x):
            self.x = x

    values = [None, True, 7, 2**80, -1.5, 1j, "text é", b"\x00bytes", [1, [2]], (3, 4),
              {"a": {1, 2}}, bytes(1 << 20)]
    for v in values:
        q.put(v)
    for v in values:
        assert q.get(timeout=5) == v
    q.put(lambda x: x + 1)
    assert q.get(timeout=5)(1) == 2
    q.put(Local(5))
    assert q.get(timeout=5).x == 5


def test_msgpack_items_come_back_as_python_values_and_bytes_items_as_bytes(rc):
    from ferrocluster import _native
    q = rc.Queue(fresh_name("formats"))
    packed = _native.json_to_msgpack('{"a": [1, 2.5, null, true, "s", -5, 18446744073709551615]}')
    q._native.put(_native.ITEM_MSGPACK, packed, None)
    q._native.put(_native.ITEM_BYTES, b"\x00raw", None)
    for raw in (b"\xc4\x03abc", b"\x81\x92\x01\x02\xa1x", b"\xc1"):
        q._native.put(_native.ITEM_MSGPACK, raw, None)
    assert q.get() == {"a": [1, 2.5, None, True, "s", -5, 2**64 - 1]}
    assert q.get() == b"\x00raw"
    assert q.get() == b"abc"                    # msgpack binary
    assert q.get() == {(1, 2): "x"}             # an array as a key becomes a tuple
    with pytest.raises(fc.ObjectError) as e:    # not msgpack: a clear error, item gone
        q.get()
    assert "msgpack" in str(e.value)
    assert q.empty()
    ns = rc.Namespace(fresh_name("formats"))
    ns._native.set("m", _native.ITEM_MSGPACK, packed)
    assert ns.m["a"][0] == 1
    assert ns.compare_and_set("m", ns.m, "replaced") and ns.m == "replaced"


def test_nowait_and_timeouts_raise_queue_empty_and_full(rc):
    q = rc.Queue(fresh_name("bounded"), maxsize=2)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(block=False)
    t = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.3)
    assert 0.25 <= time.monotonic() - t < 3
    q.put(1)
    q.put_nowait(2)
    assert q.full() and q.qsize() == 2
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.put(3, block=False)
    t = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.3)
    assert 0.25 <= time.monotonic() - t < 3
    assert q.get_nowait() == 1 and q.get() == 2
    with pytest.raises(ValueError):
        q.get(timeout=-1)
    with pytest.raises(ValueError):
        rc.Queue(fresh_name("bad"), maxsize=-1)


def test_a_waiting_get_wakes_when_an_item_comes_and_a_waiting_put_when_room_comes(rc):
    q = rc.Queue(fresh_name("wake"), maxsize=1)
    with other_client(rc) as rc2:
        t, out = in_thread(rc2.Queue(q.name, maxsize=1).get)
        time.sleep(0.3)
        assert "value" not in out
        put_at = time.monotonic()
        q.put("x")
        t.join(5)
        assert out.get("value") == "x", out
        assert out["at"] - put_at < 0.5
        q.put("full")
        t, out = in_thread(rc2.Queue(q.name, maxsize=1).put, "second")
        time.sleep(0.3)
        assert "at" not in out
        assert q.get() == "full"
        t.join(5)
        assert "error" not in out and "at" in out, out
        assert q.get(timeout=5) == "second"


def test_several_consumers_get_items_in_order_and_waiters_first_come_first_served(rc):
    name = fresh_name("consumers")
    clients = [other_client(rc) for _ in range(3)]
    try:
        # Waiters queued one after another are served in that order.
        waiters = []
        for c in clients:
            waiters.append(in_thread(c.Queue(name).get, True, 10))
            time.sleep(0.2)
        q = rc.Queue(name)
        for i in range(3):
            q.put(i)
        for t, _ in waiters:
            t.join(10)
        assert [out.get("value") for _, out in waiters] == [0, 1, 2]

        # Three consumers draining 600 items: each sees them in queue order, none is lost
        # or taken twice.
        for i in range(600):
            q.put(i)
        for _ in clients:
            q.put(None)

        def drain(c):
            got = []
            qq = c.Queue(name)
            while True:
                item = qq.get(timeout=30)
                if item is None:
                    return got
                got.append(item)

        runs = [in_thread(drain, c) for c in clients]
        for t, _ in runs:
            t.join(60)
        parts = [out["value"] for _, out in runs]
        for part in parts:
            assert part == sorted(part)
        assert sorted(x for part in parts for x in part) == list(range(600))
    finally:
        for c in clients:
            c.close()


def test_tasks_on_the_engines_use_the_queue_handed_to_them_and_their_own_client(rc):
    jobs = rc.Queue(fresh_name("jobs"))
    results = rc.Queue(fresh_name("results"))
    for i in range(40):
        jobs.put(i)

    def work(jobs, results):
        import queue as q
        n = 0
        while True:
            try:
                x = jobs.get_nowait()
            except q.Empty:
                return n
            results.put(x * x)
            n += 1

    counts = rc[:].apply_sync(work, jobs, results)
    assert sum(counts) == 40
    assert sorted(results.get(timeout=5) for _ in range(40)) == [i * i for i in range(40)]

    def by_name(name):
        import ferrocluster
        tc = ferrocluster.task_client()
        assert tc is ferrocluster.task_client(), "one client per worker"
        ferrocluster.Client().close()  # Client() with no arguments reaches the cluster too
        tc.Queue(name).put(tc.ids)
        return os.environ["CLUSTER_TASK_ENGINE"]

    name = fresh_name("by-name")
    engines = rc[:].apply_sync(by_name, name)
    assert sorted(int(e) for e in engines) == rc.ids
    assert rc.Queue(name).get(timeout=5) == rc.ids


def test_a_blocked_get_in_the_main_thread_stops_on_ctrl_c(rc):
    child = python_child(rc, """
        q = rc2.Queue(%r)
        print("waiting", flush=True)
        try:
            q.get()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
    """ % fresh_name("ctrl-c"))
    try:
        assert child.stdout.readline().strip() == "waiting"
        time.sleep(0.5)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=10)
        assert "interrupted" in out, err
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


# -- namespaces --------------------------------------------------------------------------

def test_a_namespace_has_attribute_access_like_a_managers(rc):
    ns = rc.Namespace()
    key = fresh_name("spam").replace("-", "_")
    setattr(ns, key, 123)
    ns.eggs_for_test = [4, 5, 6]
    with other_client(rc) as rc2:
        other = rc2.Namespace()
        assert getattr(other, key) == 123
        assert other.eggs_for_test == [4, 5, 6]
        assert key in other.keys() and key in other
        assert other[key] == 123
        delattr(other, key)
    with pytest.raises(AttributeError):
        getattr(ns, key)
    with pytest.raises(AttributeError):
        delattr(ns, key)
    with pytest.raises(KeyError):
        ns[key]
    ns._local = 1  # underscore names stay on the handle
    assert "_local" not in ns.keys()
    named = rc.Namespace(fresh_name("ns"))
    assert named.keys() == []
    named.a = 1
    assert named.keys() == ["a"] and named.to_dict() == {"a": 1}
    del named.a
    assert named.keys() == []


def test_compare_and_set(rc):
    ns = rc.Namespace(fresh_name("cas"))
    missing = fc.Namespace.MISSING
    assert ns.compare_and_set("n", missing, 0)
    assert not ns.compare_and_set("n", missing, 1)
    assert not ns.compare_and_set("n", 5, 1)
    assert ns.compare_and_set("n", 0, 1) and ns.n == 1
    assert ns.compare_and_set("n", 1, missing) and "n" not in ns

    # A counter incremented by 4 threads of 2 clients, 25 times each: no increment lost.
    ns.count = 0
    with other_client(rc) as rc2:
        def bump(c):
            n2 = c.Namespace(ns.name)
            for _ in range(25):
                while True:
                    v = n2.count
                    if n2.compare_and_set("count", v, v + 1):
                        break

        runs = [in_thread(bump, c) for c in (rc, rc2, rc, rc2)]
        for t, _ in runs:
            t.join(60)
    assert ns.count == 100


# -- locks, semaphores, events -----------------------------------------------------------

def test_a_lock_excludes_other_clients_and_works_as_a_context_manager(rc):
    name = fresh_name("lock")
    lock = rc.Lock(name)
    with other_client(rc) as rc2:
        other = rc2.Lock(name)
        assert lock.acquire()
        assert lock.locked()
        assert not other.acquire(blocking=False)
        t = time.monotonic()
        assert not other.acquire(timeout=0.3)
        assert 0.25 <= time.monotonic() - t < 3
        th, out = in_thread(other.acquire)
        time.sleep(0.2)
        lock.release()
        th.join(5)
        assert out.get("value") is True
        assert not lock.acquire(blocking=False)
        other.release()
        with lock:
            assert not other.acquire(blocking=False)
        assert other.acquire(timeout=5)
        other.release()
    with pytest.raises(RuntimeError):
        lock.release()
    with pytest.raises(ValueError):
        lock.acquire(blocking=False, timeout=1)


def test_a_closed_clients_lock_is_free_at_once(rc):
    name = fresh_name("lock-close")
    rc2 = other_client(rc)
    assert rc2.Lock(name).acquire()
    assert not rc.Lock(name).acquire(blocking=False)
    rc2.close()
    t = time.monotonic()
    assert rc.Lock(name).acquire(timeout=5)
    assert time.monotonic() - t < 1.0


def test_a_lock_holder_killed_with_sigkill_releases_it_within_its_lease(rc):
    name = fresh_name("lock-kill")
    child = python_child(rc, """
        lock = rc2.Lock(%r)
        lock.acquire()
        print("held", flush=True)
        time.sleep(600)
    """ % name)
    try:
        assert child.stdout.readline().strip() == "held", child.stderr.read()
        lock = rc.Lock(name)
        assert not lock.acquire(blocking=False)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        t = time.monotonic()
        assert lock.acquire(timeout=fc._objects.LEASE_S + 10)
        waited = time.monotonic() - t
        assert waited <= fc._objects.LEASE_S + 2, waited
        lock.release()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_semaphore_admits_its_permits(rc):
    name = fresh_name("sem")
    s = rc.Semaphore(name, 2)
    with other_client(rc) as rc2:
        other = rc2.Semaphore(name, 2)
        assert s.acquire() and other.acquire()
        assert not s.acquire(blocking=False)
        assert not other.acquire(timeout=0.2)
        th, out = in_thread(other.acquire, True, 5)
        time.sleep(0.2)
        s.release()
        th.join(5)
        assert out.get("value") is True
        other.release()
        other.release()
        with s:
            assert s.held() == 1
    with pytest.raises(RuntimeError):
        s.release()
    with pytest.raises(ValueError):
        rc.Semaphore(fresh_name("sem"), 0)
    with pytest.raises(fc.ObjectKindError) as e:
        rc.Semaphore(name, 3).acquire(timeout=1)
    assert "2 permits" in str(e.value)


def test_an_event_wakes_its_waiters(rc):
    name = fresh_name("event")
    e = rc.Event(name)
    assert not e.is_set()
    t = time.monotonic()
    assert e.wait(0.3) is False
    assert 0.25 <= time.monotonic() - t < 3
    with other_client(rc) as rc2:
        waiters = [in_thread(rc2.Event(name).wait, 10) for _ in range(2)]
        time.sleep(0.2)
        set_at = time.monotonic()
        e.set()
        for th, out in waiters:
            th.join(5)
            assert out.get("value") is True
            assert out["at"] - set_at < 0.5
    assert e.is_set() and e.wait(0) is True
    e.clear()
    assert not e.is_set()


# -- listing, names, errors --------------------------------------------------------------

def test_objects_are_listed(rc):
    name = fresh_name("listed")
    rc.Queue(name).put(1)
    found = [o for o in rc.objects() if o.get("name") == name]
    assert found, rc.objects()


def test_bad_names_and_wrong_kinds_are_clear_errors(rc):
    for bad in ["", "x" * 10_000]:
        with pytest.raises(fc.ObjectNameError):
            rc.Queue(bad).put(1)
    name = fresh_name("kind")
    rc.Lock(name).acquire()
    with pytest.raises(fc.ObjectKindError) as e:
        rc.Queue(name).put(1)
    assert name in str(e.value)
    with pytest.raises(TypeError):
        rc.Namespace()[1] = 2
    with pytest.raises(fc.ObjectNameError):
        rc.Lock("a\nb").acquire()


def test_a_closed_client_says_so(rc):
    rc2 = other_client(rc)
    q = rc2.Queue(fresh_name("closed"))
    rc2.close()
    with pytest.raises(fc.ConnectionLostError):
        q.put(1)
    with pytest.raises(fc.ClusterError) as e:
        rc2.Queue("x")
    assert "closed" in str(e.value)


def test_a_full_limit_is_a_clear_error_and_changes_nothing(fresh, monkeypatch):
    monkeypatch.setenv("CLUSTER_OBJECT_MAX_BYTES", "100000")
    c, rc = fresh(0)
    with open(os.path.join(c.profile_dir, "cluster.toml")) as fh:
        if "object_max_bytes" not in fh.read():
            pytest.skip("this controller has no object_max_bytes setting yet")
    q = rc.Queue("limited")
    q.put(bytes(60_000))
    with pytest.raises(fc.ObjectLimitError) as e:
        q.put(bytes(60_000))
    assert "limited" in str(e.value)
    assert q.qsize() == 1
    assert len(q.get(timeout=5)) == 60_000
    q.put(bytes(60_000))  # room again
    ns = rc.Namespace()
    with pytest.raises(fc.ObjectLimitError):
        ns.big = bytes(200_000)
    assert "big" not in ns


# -- across languages and restarts -------------------------------------------------------

def cli(c, *args, **kw):
    return subprocess.run([sys.executable, "-m", "ferrocluster", *args], env=c._env(),
                          capture_output=True, text=True, timeout=60, **kw)


def test_items_put_by_the_cli_in_msgpack_come_back_as_python_values(cluster):
    c, rc = cluster
    if cli(c, "queue", "--help").returncode != 0:
        pytest.skip("this `cluster` has no queue command yet")
    name = fresh_name("cli")
    done = cli(c, "queue", "put", name, "0..5")
    assert done.returncode == 0, done.stderr
    done = cli(c, "queue", "put", name, "text", "2.5")
    assert done.returncode == 0, done.stderr
    q = rc.Queue(name)
    got = [q.get(timeout=5) for _ in range(q.qsize())]
    assert got[:5] == [0, 1, 2, 3, 4], got
    assert got[5:] in (["text", 2.5], ["text", "2.5"]), got
    assert all(type(x) is int for x in got[:5])
    done = cli(c, "ns", "set", "from_cli", "41")
    assert done.returncode == 0, done.stderr
    assert rc.Namespace().from_cli == 41


def test_objects_survive_a_controller_restart(fresh):
    c, rc = fresh(0)
    q = rc.Queue("kept")
    for i in range(5):
        q.put({"i": i})
    rc.Namespace().kept = "value"
    time.sleep(0.5)  # past the store's commit interval
    controller = pids_of(c)["controller"]
    os.kill(controller, signal.SIGKILL)
    assert eventually(lambda: not alive(controller), 5)
    proc = subprocess.Popen([sys.executable, "-m", "ferrocluster", "controller", "--reuse"],
                            env=c._env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        # The same client goes on with the new controller.
        assert [q.get(timeout=30) for _ in range(5)] == [{"i": i} for i in range(5)]
        assert rc.Namespace().kept == "value"
    finally:
        rc.shutdown(hub=True)
        proc.wait(10)
