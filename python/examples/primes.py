"""The seed's first 1000 primes, with its own prime_generator() sent as a Python function."""

import ferrocluster as fc


def prime_generator():
    """Yields primes by trial division by the primes found so far (the seed's code)."""
    primes = []
    candidate = 2
    while True:
        if all(candidate % p for p in primes):
            primes.append(candidate)
            yield candidate
        candidate += 1


def primes(n):
    """The first n primes."""
    out = []
    for p in prime_generator():
        if len(out) == n:
            return out
        out.append(p)


def nth_prime(i):
    return primes(i + 1)[-1]


if __name__ == "__main__":
    with fc.Cluster(n=2) as rc:
        view = rc.load_balanced_view()
        got = view.map_sync(nth_prime, range(1000))
        assert got == primes(1000), "the cluster's primes differ from local ones"
        print("first 10:", got[:10], "... 1000th:", got[-1])
