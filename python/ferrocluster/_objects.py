"""Shared objects living in the controller: queues, namespaces, locks, semaphores, events.

Made from a client (``rc.Queue("jobs")``, ``rc.Namespace()``, ``rc.Lock("name")``,
``rc.Semaphore("name", 2)``, ``rc.Event("name")``), named, and created on first use; every
client of the cluster (tasks on its engines too, see ``task_client``) that uses the same
name reaches the same object. They behave like their ``queue``/``threading``/
``multiprocessing.managers`` namesakes.

Values travel as items: bytes with a format tag. Python puts pickles (cloudpickle, so
lambdas and classes of ``__main__`` travel by value); items put in msgpack (by the ``cluster``
command or Rust clients) come back as Python values (decoded by the extension), and raw
``Bytes`` items as ``bytes``.

Blocking calls wait in the controller with the GIL released. In the main thread of a
program with Python's SIGINT handler, a long wait is made of short ones so that Ctrl-C
interrupts it (a waiter then rejoins the back of the line each slice); elsewhere (other
threads, tasks on engines) it is one wait, served first come first served.
"""

import os
import pickle
import queue as _queue
import signal
import threading
import time

from ._native import DEFAULT_LEASE_S, ITEM_PICKLE, decode_item

_PROTOCOL = pickle.HIGHEST_PROTOCOL
# Values whose plain pickle is the same as cloudpickle's, and much quicker to make.
_PLAIN = frozenset([int, float, str, bytes, bool, type(None), complex])
#: Seconds a lock or semaphore lease lasts unless ``lease=`` says otherwise: how long a
#: holder that vanished without its connection closing (a partition, a hung machine) keeps
#: the others waiting. (A holder process that dies closes its connection: its leases are
#: freed within milliseconds.) The client renews its leases while it holds them.
LEASE_S = DEFAULT_LEASE_S
# Longest single wait in the controller while Ctrl-C must be able to interrupt.
_SLICE_S = 0.5

_cloudpickle = None


def dumps(value):
    """A value as an item: ``(format, bytes)``."""
    global _cloudpickle
    if type(value) in _PLAIN:
        return ITEM_PICKLE, pickle.dumps(value, _PROTOCOL)
    if _cloudpickle is None:
        import cloudpickle
        _cloudpickle = cloudpickle
    try:
        return ITEM_PICKLE, _cloudpickle.dumps(value, _PROTOCOL)
    except Exception as e:
        raise TypeError("cannot pickle %s for a shared object: %s" % (type(value).__name__, e)
                        ) from e


def loads(item):
    """An item (``(format, payload)`` from the extension) as a Python value: pickles are
    unpickled; msgpack items arrive decoded and bytes items as bytes."""
    fmt, payload = item
    if fmt == ITEM_PICKLE:
        return pickle.loads(payload)
    return payload


def _check_timeout(timeout):
    """``None`` (forever) or a number of seconds >= 0."""
    if timeout is None:
        return None
    try:
        t = float(timeout)
    except (TypeError, ValueError):
        raise TypeError("a timeout is a number of seconds or None, not %r" % (timeout,)
                        ) from None
    if t < 0:
        raise ValueError("'timeout' must be a non-negative number")
    if t != t:
        raise ValueError("'timeout' must be a number, not NaN")
    return t


def _sliced():
    """Whether a long wait must be cut into short ones for Ctrl-C (see the module docs)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if os.environ.get("CLUSTER_TASK_ENGINE"):
        return False  # a task on an engine: the engine stops it, not Ctrl-C
    try:
        return signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, signal.SIG_DFL, None)
    except (ValueError, TypeError):
        return False


def _wait(op, timeout):
    """Runs ``op(seconds or None)`` (one wait in the controller, ``None`` when it timed
    out) for ``timeout`` seconds (``None``: forever), in slices when Ctrl-C must work."""
    if not _sliced() or (timeout is not None and timeout <= _SLICE_S):
        return op(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = _SLICE_S if deadline is None else min(_SLICE_S,
                                                      max(0.0, deadline - time.monotonic()))
        got = op(left)
        if got is not None:
            return got
        if deadline is not None and time.monotonic() >= deadline:
            return None


def _client_of(owner):
    return owner._native_client()


class _Object:
    """A named object of one client; pickles as its kind and name, and unpickles inside a
    task as the same object reached through the task's client (``task_client()``)."""

    _kind = None

    def __reduce__(self):
        return (_rebuild, (self._kind, self._args()))

    def _args(self):
        return (self.name,)

    def __repr__(self):
        return "<ferrocluster.%s %r>" % (type(self).__name__, self.name)


def _rebuild(kind, args):
    from ._client import task_client
    return getattr(task_client(), kind)(*args)


class Queue(_Object):
    """A FIFO queue in the controller, like ``queue.Queue`` / ``multiprocessing.Queue``.

    ``maxsize`` (0: no limit) makes ``put`` wait while the queue holds that many items.
    ``get``/``put`` raise ``queue.Empty``/``queue.Full`` when they cannot finish in time
    (``block=False``: at once). Waiters are served first come first served.
    """

    _kind = "Queue"

    def __init__(self, client, name, maxsize=0):
        if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 0:
            raise ValueError("maxsize is a number of items >= 0 (0: no limit), not %r"
                             % (maxsize,))
        self.name = name
        self.maxsize = maxsize
        self._native = _client_of(client).queue(name, maxsize)

    def _args(self):
        return (self.name, self.maxsize)

    def put(self, item, block=True, timeout=None):
        """Puts ``item`` at the back; waits while the queue is full (``maxsize``) for up to
        ``timeout`` seconds (``None``: as long as it takes), else raises ``queue.Full``."""
        fmt, data = dumps(item)
        if not block:
            if not self._native.put(fmt, data, 0.0):
                raise _queue.Full
            return
        if not _wait(lambda t: self._native.put(fmt, data, t) or None, _check_timeout(timeout)):
            raise _queue.Full

    def put_many(self, items, timeout=None):
        """Puts ``items`` at the back in order, sent all at once instead of a round trip
        each (much quicker for many small items); each may wait up to ``timeout`` seconds
        while the queue is full, else ``queue.Full`` is raised (the items before it are in).
        """
        encoded = [dumps(item) for item in items]
        if encoded and not self._native.put_many(encoded, _check_timeout(timeout)):
            raise _queue.Full

    def put_nowait(self, item):
        """``put(item, block=False)``."""
        self.put(item, block=False)

    def get(self, block=True, timeout=None):
        """Takes the item at the front; waits for one for up to ``timeout`` seconds
        (``None``: as long as it takes), else raises ``queue.Empty``."""
        if not block:
            got = self._native.get(0.0)
        else:
            got = _wait(self._native.get, _check_timeout(timeout))
        if got is None:
            raise _queue.Empty
        return loads(got)

    def get_nowait(self):
        """``get(block=False)``."""
        return self.get(block=False)

    def qsize(self):
        """Items in the queue now (others may change it at once)."""
        return self._native.qsize()

    def empty(self):
        return self.qsize() == 0

    def full(self):
        return self.maxsize > 0 and self.qsize() >= self.maxsize

    def __len__(self):
        return self.qsize()


class Namespace(_Object):
    """Named values shared by every client, like ``Manager().Namespace()``: ``ns.x = 1``,
    ``ns.x``, ``del ns.x`` (``AttributeError`` for a missing name), and also ``ns["x"]``.

    ``keys()`` lists the names, ``compare_and_set(name, expected, new)`` replaces the value
    only while it still equals ``expected``. ``rc.Namespace()`` is the cluster's shared one
    (``"default"``); ``rc.Namespace("other")`` another. Names starting with ``_`` are
    attributes of this handle only, as in ``Manager().Namespace()``.
    """

    _kind = "Namespace"
    MISSING = object()

    def __init__(self, client, name="default"):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "_native", _client_of(client).namespace(name))

    # -- mapping ---------------------------------------------------------------------

    def __getitem__(self, key):
        got = self._native.get(_key(key))
        if got is None:
            raise KeyError(key)
        return loads(got)

    def __setitem__(self, key, value):
        fmt, data = dumps(value)
        self._native.set(_key(key), fmt, data)

    def __delitem__(self, key):
        if not self._native.delete(_key(key)):
            raise KeyError(key)

    def __contains__(self, key):
        return self._native.get(_key(key)) is not None

    def __iter__(self):
        return iter(self.keys())

    def keys(self):
        """The names set now, sorted."""
        return sorted(self._native.keys())

    def items(self):
        """``(name, value)`` pairs (each read on its own: others may change them)."""
        out = []
        for k in self.keys():
            got = self._native.get(k)
            if got is not None:
                out.append((k, loads(got)))
        return out

    def to_dict(self):
        return dict(self.items())

    def compare_and_set(self, key, expected, new):
        """Sets ``key`` to ``new`` if its value equals ``expected`` now; True when it did.
        ``Namespace.MISSING`` as ``expected`` means "not set", as ``new`` "delete it". The
        values are compared as Python values (``==``), so a value read with ``ns.key`` is
        always a good ``expected``."""
        key = _key(key)
        new_item = None if new is Namespace.MISSING else dumps(new)
        while True:
            current = self._native.get_raw(key)
            if current is None:
                if expected is not Namespace.MISSING:
                    return False
            elif expected is Namespace.MISSING or not _equal(
                    loads(decode_item(*current)), expected):
                return False
            if self._native.compare_and_set(key, current, new_item):
                return True
            # Changed between our read and the swap: look again.

    # -- attributes ------------------------------------------------------------------

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        got = self._native.get(name)
        if got is None:
            raise AttributeError("shared namespace %r has no value %r" % (self.name, name))
        return loads(got)

    def __setattr__(self, name, value):
        if name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        self[name] = value

    def __delattr__(self, name):
        if name.startswith("_"):
            object.__delattr__(self, name)
            return
        if not self._native.delete(name):
            raise AttributeError("shared namespace %r has no value %r" % (self.name, name))

    def __dir__(self):
        return sorted(set(object.__dir__(self)) | set(self.keys()))

    def __repr__(self):
        try:
            inner = ", ".join("%s=%r" % kv for kv in self.items())
        except Exception as e:  # a closed client: say so instead of failing repr
            inner = "<%s>" % e
        return "Namespace(%s)" % inner


def _key(key):
    if not isinstance(key, str):
        raise TypeError("a shared namespace's names are strings, not %s" % type(key).__name__)
    return key


def _equal(a, b):
    try:
        return bool(a == b)
    except Exception:
        return False


class _Leased(_Object):
    """Shared by Lock and Semaphore: each acquire takes a lease the controller gives back
    when this client disconnects or dies, or when the lease runs out."""

    def __init__(self):
        self._leases = []
        self._guard = threading.Lock()

    def acquire(self, blocking=True, timeout=-1):
        """Takes it, waiting up to ``timeout`` seconds (-1: as long as it takes;
        ``blocking=False``: not at all); True when taken (``threading.Lock``'s rules)."""
        if not blocking:
            if timeout != -1:
                raise ValueError("can't specify a timeout for a non-blocking call")
            lease = self._native.acquire(0.0)
        else:
            if timeout is None or timeout == -1:
                t = None
            else:
                t = _check_timeout(timeout)
            lease = _wait(self._native.acquire, t)
        if lease is None:
            return False
        with self._guard:
            self._leases.append(lease)
        return True

    def release(self):
        """Gives back the last lease this handle took."""
        with self._guard:
            if not self._leases:
                raise RuntimeError("release of %s %r that this handle does not hold"
                                   % (type(self).__name__, self.name))
            lease = self._leases.pop()
        self._native.release(lease)

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    def held(self):
        """How many leases this handle holds."""
        return len(self._leases)


def _lease(lease):
    if lease is None:
        return None
    t = _check_timeout(lease)
    if t == 0:
        raise ValueError("a lease lasts more than 0 seconds")
    return t


class Lock(_Leased):
    """A lock in the controller, like ``threading.Lock`` across machines: ``acquire``,
    ``release``, ``with rc.Lock("name"):``. A holder that disconnects or dies, or whose
    lease (``lease`` seconds, default ``LEASE_S``, renewed while held) runs out, releases
    it."""

    _kind = "Lock"

    def __init__(self, client, name, lease=None):
        super().__init__()
        self.name = name
        self.lease = lease
        self._native = _client_of(client).lock(name, _lease(lease))

    def _args(self):
        return (self.name, self.lease)

    def locked(self):
        """Whether this handle holds it (the controller is not asked)."""
        return bool(self._leases)


class Semaphore(_Leased):
    """A semaphore of ``value`` permits in the controller (``threading.BoundedSemaphore``
    across machines: a handle releases only what it acquired)."""

    _kind = "Semaphore"

    def __init__(self, client, name, value=1, lease=None):
        super().__init__()
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError("a semaphore has 1 or more permits, not %r" % (value,))
        self.name = name
        self.value = value
        self.lease = lease
        self._native = _client_of(client).semaphore(name, value, _lease(lease))

    def _args(self):
        return (self.name, self.value, self.lease)


class Event(_Object):
    """An event flag in the controller, like ``threading.Event``: ``set``, ``clear``,
    ``is_set``, ``wait(timeout)``."""

    _kind = "Event"

    def __init__(self, client, name):
        self.name = name
        self._native = _client_of(client).event(name)

    def set(self):
        self._native.set()

    def clear(self):
        self._native.clear()

    def is_set(self):
        return self._native.is_set()

    isSet = is_set

    def wait(self, timeout=None):
        """Waits until it is set, up to ``timeout`` seconds (``None``: as long as it
        takes); True when it is set."""
        got = _wait(lambda t: self._native.wait(t) or None, _check_timeout(timeout))
        return bool(got)


__all__ = ["Queue", "Namespace", "Lock", "Semaphore", "Event", "dumps", "loads"]
