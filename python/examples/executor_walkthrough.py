"""Seed 004's ProcessPoolExecutor walk-through, against the cluster's executor: submit, map,
result, wait, as_completed, add_done_callback, cancel."""

import concurrent.futures as cf
import time

import ferrocluster as fc


def slow_square(x, delay=0.05):
    time.sleep(delay)
    return x * x


if __name__ == "__main__":
    with fc.Cluster(n=2) as rc, rc.executor() as pool:
        f = pool.submit(slow_square, 7)
        print("submit/result:", f.result())
        print("map:", list(pool.map(slow_square, range(6))))
        futures = [pool.submit(slow_square, i) for i in range(6)]
        done, not_done = cf.wait(futures, return_when=cf.ALL_COMPLETED)
        print("wait: %d done, %d not done" % (len(done), len(not_done)))
        print("as_completed:", sorted(f.result() for f in cf.as_completed(futures)))
        seen = []
        f = pool.submit(slow_square, 3)
        f.add_done_callback(lambda fut: seen.append(fut.result()))
        f.result()
        deadline = time.time() + 5
        while not seen and time.time() < deadline:
            time.sleep(0.01)
        print("add_done_callback saw:", seen)
        busy = [pool.submit(slow_square, 0, 0.5) for _ in range(4)]
        late = pool.submit(slow_square, 9)
        print("cancel a queued task:", late.cancel(), "cancelled:", late.cancelled())
        cf.wait(busy)
