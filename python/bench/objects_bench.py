"""Shared objects: ferrocluster's queue and lock against the seed's own setup (a
``multiprocessing.managers.BaseManager`` server over TCP on this machine), in one run.

    pip install ./python
    python python/bench/objects_bench.py          # --quick for a short run

Figures, the same work on both systems:

* queue put -> get round trip: one client puts an item and gets it back (median);
* items/s with 1 producer and 2 consumers: three processes of their own (each connects
  itself); the producer puts N small ints and one sentinel per consumer, the consumers
  get until their sentinel; timed from the producer's first put to the last consumer done;
* lock acquire + release (median), one client, nobody else waiting.

The systems take turns for ``--rounds`` rounds and the best round of each is shown (on a
shared machine a busy moment can double a round's latencies); every round is printed too.

ferrocluster's objects live in its controller (``ferrocluster.Cluster(n=0)``: no engine is
needed); the seed's live in a ``BaseManager`` server process holding a
``multiprocessing.Queue`` and a ``threading.Lock`` (its chapter's server, with a port chosen
at run time and a lock added).
"""

import argparse
import multiprocessing
import os
import statistics
import sys
import threading
import time

AUTHKEY = b"some secret password"
SENTINEL = None


# -- the seed's setup ------------------------------------------------------------------

_queue = None
_lock = None


def _get_queue():
    return _queue


def _get_lock():
    return _lock


def _manager_class():
    from multiprocessing import managers

    class QueueManager(managers.BaseManager):
        pass

    return QueueManager


def _serve(address_pipe):
    """The seed's server process: a queue (and a lock) registered on a BaseManager."""
    global _queue, _lock
    import signal
    # A clean exit on terminate(): the queue's semaphores are released.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _queue = multiprocessing.Queue()
    _lock = threading.Lock()
    cls = _manager_class()
    cls.register("queue", callable=_get_queue)
    cls.register("lock", callable=_get_lock)
    manager = cls(address=("127.0.0.1", 0), authkey=AUTHKEY)
    server = manager.get_server()
    address_pipe.send(server.address)
    address_pipe.close()
    server.serve_forever()


class Seed:
    """The BaseManager system: a server process, and handles made in any process."""

    name = "BaseManager"

    def __init__(self):
        ctx = multiprocessing.get_context("spawn")
        here, there = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(there,), daemon=True)
        self.process.start()
        deadline = time.monotonic() + 30
        while not here.poll(0.1):
            if not self.process.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the BaseManager server did not start (exit code %s)"
                                   % self.process.exitcode)
        self.address = here.recv()

    def connect(self):
        return SeedHandle(self.address)

    def stop(self):
        self.process.terminate()
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


class SeedHandle:
    def __init__(self, address):
        cls = _manager_class()
        cls.register("queue")
        cls.register("lock")
        self.manager = cls(address=tuple(address), authkey=AUTHKEY)
        self.manager.connect()

    def queue(self, name):
        # One queue on the server; the name is ours only.
        return self.manager.queue()

    def lock(self, name):
        return self.manager.lock()

    def close(self):
        pass


# -- ferrocluster ----------------------------------------------------------------------

class Ours:
    name = "ferrocluster"

    def __init__(self):
        import ferrocluster as fc
        self.cluster = fc.Cluster(n=0)
        self.rc = self.cluster.start_and_connect_sync()
        self.address = self.rc._file

    def connect(self):
        return OursHandle(self.address)

    def stop(self):
        self.rc.close()
        self.cluster.stop_cluster_sync()


class OursHandle:
    def __init__(self, file):
        import ferrocluster as fc
        self.rc = fc.Client(connection_file=file)

    def queue(self, name):
        return self.rc.Queue(name)

    def lock(self, name):
        return self.rc.Lock(name)

    def close(self):
        self.rc.close()


def _connect(kind, address):
    if kind == "seed":
        return SeedHandle(address)
    return OursHandle(address)


# -- the work --------------------------------------------------------------------------

def round_trips(handle, name, n):
    q = handle.queue(name)
    q.put(0)
    q.get()
    samples = []
    for i in range(n):
        t = time.perf_counter()
        q.put(i)
        got = q.get()
        samples.append(time.perf_counter() - t)
        assert got == i, (got, i)
    return statistics.median(samples)


def lock_latency(handle, name, n):
    lock = handle.lock(name)
    lock.acquire()
    lock.release()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        lock.acquire()
        lock.release()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def _producer(kind, address, name, n, consumers, ready, go, done):
    h = _connect(kind, address)
    q = h.queue(name)
    ready.put("producer")
    go.wait()
    t = time.perf_counter()
    for i in range(n):
        q.put(i)
    for _ in range(consumers):
        q.put(SENTINEL)
    done.put(("producer", t, time.perf_counter(), 0, 0))
    h.close()


def _consumer(kind, address, name, ready, go, done):
    h = _connect(kind, address)
    q = h.queue(name)
    ready.put("consumer")
    go.wait()
    count = total = 0
    while True:
        item = q.get()
        if item is SENTINEL:
            break
        count += 1
        total += item
    done.put(("consumer", None, time.perf_counter(), count, total))
    h.close()


def throughput(kind, address, name, n, consumers=2):
    """Items/s through one queue with 1 producer and ``consumers`` consumers, each a
    process of its own."""
    ctx = multiprocessing.get_context("spawn")
    ready, done = ctx.Queue(), ctx.Queue()
    go = ctx.Event()
    procs = [ctx.Process(target=_producer,
                         args=(kind, address, name, n, consumers, ready, go, done))]
    procs += [ctx.Process(target=_consumer, args=(kind, address, name, ready, go, done))
              for _ in range(consumers)]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=60)
        go.set()
        reports = [done.get(timeout=600) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join()
    start = next(r[1] for r in reports if r[0] == "producer")
    end = max(r[2] for r in reports)
    got = [r for r in reports if r[0] == "consumer"]
    assert sum(r[3] for r in got) == n, "items lost: %s" % got
    assert sum(r[4] for r in got) == n * (n - 1) // 2, "items changed"
    return n / (end - start), [r[3] for r in got]


def bench(system, kind, a, round_):
    h = system.connect()
    try:
        res = {
            "rtt_us": round_trips(h, "bench-rtt-%d" % round_, a.round_trips) * 1e6,
            "lock_us": lock_latency(h, "bench-lock-%d" % round_, a.locks) * 1e6,
        }
    finally:
        h.close()
    res["items_s"], res["split"] = throughput(kind, system.address, "bench-jobs-%d" % round_,
                                              a.items)
    return res


ROWS = [
    ("queue put->get round trip (median)", "rtt_us", "us", False),
    ("1 producer -> 2 consumers", "items_s", "items/s", True),
    ("lock acquire+release (median)", "lock_us", "us", False),
]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--round-trips", type=int, default=1000)
    p.add_argument("--locks", type=int, default=1000)
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=5,
                   help="rounds, the systems taking turns; the best round of each is shown")
    p.add_argument("--quick", action="store_true", help="fewer of everything")
    p.add_argument("--only", choices=["ferrocluster", "BaseManager"],
                   help="run one system only")
    a = p.parse_args()
    if a.quick:
        a.round_trips, a.locks, a.items, a.rounds = 300, 300, 3000, 1

    kinds = [(k, m) for k, m in (("ours", Ours), ("seed", Seed))
             if not a.only or a.only == m.name]
    systems = []
    try:
        for kind, make in kinds:
            print("starting %s ..." % make.name, file=sys.stderr)
            systems.append((kind, make()))
        runs = {s.name: [] for _, s in systems}
        # The systems take turns, so that a busy moment of the machine (other builds) does
        # not fall on one of them only.
        for r in range(a.rounds):
            for kind, system in systems:
                print("round %d: %s ..." % (r + 1, system.name), file=sys.stderr)
                runs[system.name].append(bench(system, kind, a, r))
    finally:
        for _, system in systems:
            system.stop()

    def best(name, key, higher):
        values = [run[key] for run in runs[name]]
        return max(values) if higher else min(values)

    names = list(runs)
    both = len(names) == 2
    print("%-38s" % "figure" + "".join("%18s" % n for n in names)
          + ("%14s" % "ours/theirs" if both else ""))
    for label, key, unit, higher in ROWS:
        line = "%-38s" % label
        for n in names:
            line += "%18s" % ("{:,.1f} {}".format(best(n, key, higher), unit))
        if both:
            ours, theirs = best(names[0], key, higher), best(names[1], key, higher)
            line += "%13.2fx" % (ours / theirs if higher else theirs / ours)
        print(line)
    print("(best of %d rounds each, taking turns; %d round trips, %d lock pairs, %d items a "
          "round%s)" % (a.rounds, a.round_trips, a.locks, a.items,
                        "; ours/theirs: how many times better ferrocluster is" if both else ""))
    for n in names:
        print("  %s rounds: %s" % (n, "; ".join(
            "rtt %.0f us, %.0f items/s, lock %.0f us" % (r["rtt_us"], r["items_s"], r["lock_us"])
            for r in runs[n])))
    with open("/proc/loadavg") as fh:
        load = fh.read().split()[:3]
    print("machine: %d CPUs, load average %s, Python %s"
          % (os.cpu_count(), " ".join(load), sys.version.split()[0]))


if __name__ == "__main__":
    main()
