"""The seed's sum(range(10_000_000)) x N on the cluster, next to this machine's own ceiling
(the same tasks on two local processes): this VM's vCPUs do not always run two CPU-bound
loops at full speed, so the ceiling is measured, not assumed."""

import multiprocessing
import sys
import time

import ferrocluster as fc


def task(_):
    return sum(range(10_000_000))


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    t = time.perf_counter()
    task(0)
    serial = (time.perf_counter() - t) * n
    with multiprocessing.Pool(2) as pool:
        t = time.perf_counter()
        pool.map(task, range(n), chunksize=1)
        local = time.perf_counter() - t
    with fc.Cluster(n=2) as rc:
        view = rc.load_balanced_view()
        t = time.perf_counter()
        results = view.map_sync(task, range(n), chunksize=1)
        cluster = time.perf_counter() - t
    assert results == [49999995000000] * n
    print("serial %.2f s (estimated), 2 local processes %.2f s (ceiling %.2fx), "
          "cluster of 2 engines %.2f s (%.2fx)" % (serial, local, serial / local, cluster,
                                                    serial / cluster))
