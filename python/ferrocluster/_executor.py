"""A ``concurrent.futures.Executor`` over a view (seed 004's ProcessPoolExecutor walk-through
works unchanged against it)."""

import concurrent.futures
import threading
import time

from . import _errors


class ViewExecutor(concurrent.futures.Executor):
    """``submit`` is ``view.apply_async``; ``map`` is a chunked ``view.map_async`` whose
    results are yielded in order; ``shutdown(wait=True)`` waits for what was submitted."""

    def __init__(self, view):
        self.view = view
        self._lock = threading.Lock()
        self._shutdown = False
        self._futures = set()

    def _track(self, ar):
        with self._lock:
            self._futures.add(ar)
        ar.add_done_callback(self._forget)
        return ar

    def _forget(self, ar):
        with self._lock:
            self._futures.discard(ar)

    def _check(self, what):
        if self._shutdown:
            raise _errors.ShutdownError(
                "this executor was shut down: %s was not submitted" % what)

    def submit(self, fn, /, *args, **kwargs):
        self._check(getattr(fn, "__name__", "a task"))
        return self._track(self.view.apply_async(fn, *args, **kwargs))

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        self._check("a map of %s" % getattr(fn, "__name__", "a function"))
        deadline = None if timeout is None else time.monotonic() + timeout
        ar = self._track(self.view.map_async(fn, *iterables,
                                             chunksize=chunksize if chunksize > 1 else None))

        def results():
            if deadline is None:
                yield from ar
                return
            ar.result(max(0.0, deadline - time.monotonic()))
            yield from ar
        return results()

    def shutdown(self, wait=True, *, cancel_futures=False):
        with self._lock:
            self._shutdown = True
            futures = list(self._futures)
        if cancel_futures:
            for f in futures:
                f.cancel()
        if wait:
            concurrent.futures.wait(futures)
