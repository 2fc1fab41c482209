"""ferrocluster against IPyparallel, side by side in one run: the same Python functions on
2 local engines each.

    pip install ./python ipyparallel==9.2.0
    python python/bench/bench.py            # --quick for a short run, --no-ipp for ours only

Figures (the issue's aims in brackets): apply_sync round trip, median [<= 0.5 ms];
``view.map(f, range(10000))`` one item per task [>= 30,000 tasks/s]; an automatically
chunked map of a trivial function [>= 1,000,000 items/s]; ``Cluster(n=…)`` to ready
[<= 0.5 s]; and the seed's ``sum(range(10_000_000))`` x N speed-up next to this machine's
own ceiling (the same tasks on two local processes).
"""

import argparse
import multiprocessing
import statistics
import sys
import time


def identity(x):
    return x


def seed_task(_):
    return sum(range(10_000_000))


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def bench_system(name, start, stop, engines, calls, items, chunked_items, sum_tasks):
    """Runs every figure on one system; returns a dict of figures."""
    res = {}
    t_start, (handle, rc) = timed(start)
    res["ready_s"] = t_start
    try:
        view = rc.load_balanced_view()
        view.apply_sync(identity, 0)  # warm the engines' workers
        samples = []
        for _ in range(calls):
            t = time.perf_counter()
            view.apply_sync(identity, 1)
            samples.append(time.perf_counter() - t)
        res["apply_ms"] = statistics.median(samples) * 1e3
        t, out = timed(lambda: view.map_sync(identity, range(items), chunksize=1))
        assert list(out) == list(range(items))
        res["map1_tasks_s"] = items / t
        chunk = max(1, chunked_items // (engines * 32))
        t, out = timed(lambda: view.map_sync(identity, range(chunked_items),
                                             chunksize=None if name == "ferrocluster"
                                             else chunk))
        assert len(out) == chunked_items
        res["chunked_items_s"] = chunked_items / t
        if sum_tasks:
            t, out = timed(lambda: view.map_sync(seed_task, range(sum_tasks), chunksize=1))
            res["sum_s"] = t
    finally:
        stop(handle)
    return res


def start_ours(engines):
    import ferrocluster as fc

    def start():
        c = fc.Cluster(n=engines)
        return c, c.start_and_connect_sync()

    return start, lambda c: c.stop_cluster_sync()


def start_ipp(engines):
    import ipyparallel as ipp

    def start():
        c = ipp.Cluster(n=engines, log_level=40)
        rc = c.start_and_connect_sync()
        rc.wait_for_engines(engines)
        return c, rc

    return start, lambda c: c.stop_cluster_sync()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", type=int, default=2)
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--chunked-items", type=int, default=1_000_000)
    p.add_argument("--sum-tasks", type=int, default=100)
    p.add_argument("--quick", action="store_true", help="fewer calls, items and sum tasks")
    p.add_argument("--no-ipp", action="store_true", help="only ferrocluster")
    a = p.parse_args()
    if a.quick:
        a.calls, a.items, a.chunked_items, a.sum_tasks = 200, 2000, 200_000, 10

    systems = [("ferrocluster", start_ours)]
    if not a.no_ipp:
        try:
            import ipyparallel
            systems.append(("ipyparallel %s" % ipyparallel.__version__, start_ipp))
        except ImportError:
            print("ipyparallel not installed (pip install ipyparallel==9.2.0): ours only",
                  file=sys.stderr)
    results = {}
    for name, make in systems:
        print("running %s ..." % name, file=sys.stderr)
        start, stop = make(a.engines)
        ipp_items = a.items if name == "ferrocluster" else min(a.items, 2000)
        results[name] = bench_system(name, start, stop, a.engines, a.calls, ipp_items,
                                     a.chunked_items, a.sum_tasks)

    ceiling = None
    if a.sum_tasks:
        print("running the seed task locally ...", file=sys.stderr)
        serial = timed(lambda: seed_task(0))[0] * a.sum_tasks
        with multiprocessing.Pool(a.engines) as pool:
            pool.map(identity, range(a.engines))
            local = timed(lambda: pool.map(seed_task, range(a.sum_tasks), chunksize=1))[0]
        ceiling = serial / local
        for r in results.values():
            r["speedup"] = serial / r["sum_s"]

    rows = [
        ("Cluster(n=%d) to ready" % a.engines, "ready_s", "s", False, "<= 0.5 s"),
        ("apply_sync round trip (median)", "apply_ms", "ms", False, "<= 0.5 ms"),
        ("map one item per task", "map1_tasks_s", "tasks/s", True, ">= 30,000/s"),
        ("map, chunked", "chunked_items_s", "items/s", True, ">= 1,000,000/s"),
    ]
    if a.sum_tasks:
        rows.append(("sum(range(10M)) x%d speed-up" % a.sum_tasks, "speedup", "x", True,
                     "ceiling %.2fx" % ceiling))
    names = list(results)
    head = "%-34s" % "figure" + "".join("%22s" % n for n in names)
    if len(names) > 1:
        head += "%12s" % "ours/theirs"
    print(head + "   aim")
    for label, key, unit, higher, aim in rows:
        line = "%-34s" % label
        for n in names:
            v = results[n][key]
            line += "%22s" % ("%.3g %s" % (v, unit) if v < 1000 else "{:,.0f} {}".format(v, unit))
        if len(names) > 1:
            ours, theirs = results[names[0]][key], results[names[1]][key]
            ratio = ours / theirs if higher else theirs / ours
            line += "%11.1fx" % ratio
        print(line + "   " + aim)
    if len(names) > 1:
        print("(ours/theirs: how many times better ferrocluster is; IPyparallel's one-item map "
              "ran %d items)" % min(a.items, 2000))
    if ceiling is not None:
        print("machine ceiling: %d local processes run the seed tasks %.2fx faster than one"
              % (a.engines, ceiling))


if __name__ == "__main__":
    main()
