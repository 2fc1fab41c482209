"""The seed's remote queue, on the cluster.

The seed (chapter 13, "remote processes") runs a ``multiprocessing.managers.BaseManager``
server holding a queue, a producer that puts 0..999 in it, and consumers on other machines
that take numbers until the queue is empty and compute ``primes(n)`` for each: together the
first 1000 primes. Here the controller holds the queue (``rc.Queue``), this script is the
producer, and the consumers are tasks on the engines: the queue handle travels to them as
an argument and reaches the same queue through the cluster that runs them.

    python python/examples/shared_queue.py [engines]
"""

import queue
import sys

import ferrocluster as fc


# The seed's functions, as written there (constants.py): primes(n) is the n-th prime,
# counting from 0.
def primes(n):
    for i, prime in enumerate(prime_generator()):
        if i == n:
            return prime


def prime_generator():
    n = 2
    primes = set()
    while True:
        for p in primes:
            if n % p == 0:
                break
        else:
            primes.add(n)
            yield n
        n += 1


def consumer(jobs):
    """The seed's client: takes numbers until the queue is empty. (The seed checks
    ``queue.empty()`` before ``get()``, which waits forever when another consumer takes the
    last number in between; ``get_nowait()`` cannot.)"""
    done = []
    while True:
        try:
            n = jobs.get_nowait()
        except queue.Empty:
            return done
        done.append((n, primes(n)))


def first_primes(count, limit=8000):
    """A sieve, to check the result."""
    composite = bytearray(limit)
    out = []
    for n in range(2, limit):
        if not composite[n]:
            out.append(n)
            composite[n * n::n] = b"\x01" * len(range(n * n, limit, n))
    return out[:count]


def main(engines=2):
    with fc.Cluster(n=engines) as rc:
        jobs = rc.Queue("jobs")
        for i in range(1000):              # the seed's producer
            jobs.put(i)
        print("queued:", jobs.qsize())
        # One consumer on every engine, all draining the same queue.
        per_engine = rc[:].apply_sync(consumer, jobs)
        found = dict(pair for part in per_engine for pair in part)
        got = [found[i] for i in range(1000)]
        print("numbers taken per consumer:", [len(part) for part in per_engine])
        print("first 10:", got[:10], "... 1000th:", got[-1])
        assert sorted(found) == list(range(1000)), "every number is taken exactly once"
        assert got == first_primes(1000), "the first 1000 primes"
        assert jobs.empty()
        return got


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
