"""Client: a connection to a cluster's controller, and the views made from it."""

import json
import os
import threading
import time
import weakref

from . import _errors
from ._native import NativeClient
from ._result import AsyncResult, task_name
from ._view import DirectView, LoadBalancedView, _task_ids

# Every open client of this process, closed by close_all() (a task's worker at its exit).
_open = weakref.WeakSet()
_task_client = None
_task_client_lock = threading.Lock()

#: Set by an engine in its Python worker's environment: the engine's id. With it,
#: ``CLUSTER_CLIENT_FILE`` names the client connection file of the cluster running the task.
TASK_ENGINE_ENV = "CLUSTER_TASK_ENGINE"


def task_client():
    """The client of the cluster running this task, for a function running on an engine
    (made once per worker and kept; the worker closes it when it ends). Outside a task it
    is ``Client()``, kept the same way."""
    global _task_client
    with _task_client_lock:
        c = _task_client
        if c is None or c.closed or c._pid != os.getpid():
            if os.environ.get(TASK_ENGINE_ENV) and not os.environ.get("CLUSTER_CLIENT_FILE"):
                raise _errors.ConnectionFileError(
                    "engine %s did not find the cluster's client connection file beside its "
                    "engine.json, so its tasks cannot reach the cluster's shared objects: "
                    "copy the profile's security/client.json there (beside engine.json) and "
                    "restart the engine" % os.environ.get(TASK_ENGINE_ENV))
            c = _task_client = Client()
        return c


def close_all():
    """Closes every client this process opened (a task's worker calls it when it ends, so
    the controller hears the goodbye and gives back their locks at once)."""
    for c in list(_open):
        try:
            c.close()
        except Exception:
            pass


def cluster_dir(path=None):
    """The folder holding the profiles: ``path``, ``$CLUSTER_DIR``, else ``~/.cluster``."""
    if path:
        return os.path.abspath(os.path.expanduser(path))
    env = os.environ.get("CLUSTER_DIR")
    if env:
        return os.path.abspath(env)
    return os.path.join(os.path.expanduser("~"), ".cluster")


def client_file(profile=None, connection_file=None, cluster_dir_=None):
    """The client connection file: ``connection_file``, ``$CLUSTER_CLIENT_FILE``, else the
    profile's (``profile``, ``$CLUSTER_PROFILE``, else ``default``) ``security/client.json``."""
    if connection_file:
        return os.path.abspath(os.path.expanduser(connection_file))
    if profile is None:
        env = os.environ.get("CLUSTER_CLIENT_FILE")
        if env:
            return os.path.abspath(env)
        profile = os.environ.get("CLUSTER_PROFILE") or "default"
    return os.path.join(cluster_dir(cluster_dir_), "profile_%s" % profile, "security",
                        "client.json")


class Client:
    """A connection to a cluster (IPyparallel's ``Client``).

    ``Client()`` reads ``$CLUSTER_CLIENT_FILE``, else the profile ``$CLUSTER_PROFILE``
    (default ``default``) under ``$CLUSTER_DIR`` (default ``~/.cluster``); or pass
    ``profile=``, ``connection_file=`` (``url_file=``) and ``cluster_dir=``.
    ``rc[:]``/``rc[0]``/``rc[::2]`` are DirectViews, ``rc.load_balanced_view()`` a
    LoadBalancedView. Use it as a context manager, or call ``close()``.
    """

    def __init__(self, url_file=None, profile=None, connection_file=None, cluster_dir=None,
                 timeout=10, **_ignored):
        path = client_file(profile, connection_file or url_file, cluster_dir)
        if not os.path.exists(path):
            where = "profile %r" % profile if profile else path
            raise _errors.ConnectionFileError(
                "no client connection file at %s (for %s): is a cluster running? Start one "
                "with `ferrocluster start -n 4` (or `cluster start`), or ferrocluster.Cluster(), "
                "or pass connection_file=/profile=/cluster_dir=" % (path, where))
        self._file = path
        self._pid = os.getpid()
        self._native = NativeClient(path, float(timeout))
        _open.add(self)
        self._dispatcher = None
        self._dispatcher_lock = threading.Lock()
        self._dispatcher_ident = None
        self._results = weakref.WeakSet()  # AsyncResults not known to be finished
        self.block = False
        self.profile = profile

    # -- plumbing --------------------------------------------------------------------

    def _native_client(self):
        return self._native

    def _notify(self, result):
        """Settle ``result`` on the dispatcher thread when its tasks finish."""
        self._start_dispatcher()
        result._batch.notify(self._native, result)

    def _track(self, result):
        self._results.add(result)

    def _pending(self, jobs=None):
        """The unfinished AsyncResults among ``jobs`` (AsyncResults; all of this client's
        when None)."""
        if jobs is None:
            jobs = list(self._results)
        elif isinstance(jobs, AsyncResult):
            jobs = [jobs]
        else:
            jobs = [j for j in jobs if isinstance(j, AsyncResult)]
        return [j for j in jobs if not j.ready()]

    @property
    def outstanding(self):
        """Ids (``client:seq``) of this client's tasks not finished yet."""
        out = set()
        for ar in self._pending():
            out.update(ar.msg_ids)
        return out

    def wait(self, jobs=None, timeout=-1):
        """Waits for ``jobs`` (AsyncResults; default: everything this client submitted)
        up to ``timeout`` seconds (-1 or None: no limit); True when they all finished."""
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        for ar in self._pending(jobs):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not ar.wait(left):
                return False
        return True

    def wait_interactive(self, jobs=None, interval=1.0, timeout=-1):
        """``wait`` with a progress line per unfinished submission (see
        ``AsyncResult.wait_interactive``)."""
        for ar in self._pending(jobs):
            ar.wait_interactive(interval=interval, timeout=timeout)

    def _on_dispatcher(self):
        return threading.get_ident() == self._dispatcher_ident

    def _start_dispatcher(self):
        if self._dispatcher is not None:
            return
        with self._dispatcher_lock:
            if self._dispatcher is not None:
                return
            t = threading.Thread(target=self._dispatch, name="ferrocluster-dispatch",
                                 daemon=True)
            self._dispatcher = t
            t.start()

    def _dispatch(self):
        self._dispatcher_ident = threading.get_ident()
        native = self._native
        while True:
            objs = native.completions(0.5)
            if objs is None:
                return
            for obj in objs:
                try:
                    obj._settle()
                except Exception:  # a callback's error is the callback's
                    import traceback
                    traceback.print_exc()

    # -- engines ---------------------------------------------------------------------

    @property
    def ids(self):
        """Registered engine ids, sorted."""
        return sorted(self._native.ids())

    def __len__(self):
        return len(self.ids)

    def wait_for_engines(self, n=None, timeout=-1, block=True):
        """Waits until ``n`` engines (default: those registered now, at least one) are
        registered, up to ``timeout`` seconds (-1 or None: no limit)."""
        if n is None:
            n = max(1, len(self.ids))
        t = 1e9 if timeout is None or timeout < 0 else float(timeout)
        try:
            return sorted(self._native.wait_for_engines(int(n), t))
        except _errors.TimeoutError as e:
            raise _errors.TimeoutError(
                "%s (waited %s s for %d engines; %d registered)" % (e, timeout, n,
                                                                     len(self.ids))) from None

    def __getitem__(self, key):
        ids = self.ids
        if isinstance(key, int):
            if key not in ids:
                raise IndexError("no engine %d (engines: %s)" % (key, ids))
            return DirectView(self, targets=key)
        if isinstance(key, slice):
            return DirectView(self, targets=ids[key])
        if isinstance(key, (list, tuple)):
            missing = [k for k in key if k not in ids]
            if missing:
                raise IndexError("no engines %s (engines: %s)" % (missing, ids))
            return DirectView(self, targets=list(key))
        raise TypeError("index a Client with an engine id, a slice or a list of ids")

    def direct_view(self, targets="all", **flags):
        """A DirectView; ``targets='all'`` follows the engines registered at each call."""
        return DirectView(self, targets=targets, **flags)

    def load_balanced_view(self, targets=None, **flags):
        """A LoadBalancedView (among ``targets`` when given)."""
        return LoadBalancedView(self, targets=targets, **flags)

    def executor(self, targets=None, **flags):
        """A ``concurrent.futures.Executor`` over a load-balanced view."""
        return self.load_balanced_view(targets, **flags).executor

    # -- requests --------------------------------------------------------------------

    def status(self):
        """The controller's status report (engines, queues, tasks, addresses) as a dict."""
        return json.loads(self._native.status_json())

    def queue_status(self, targets=None, verbose=False):
        """``{engine_id: {'queue': n, 'completed': n, 'failed': n}, 'unassigned': n,
        'waiting': n}`` (IPyparallel's shape)."""
        q = json.loads(self._native.queue_status_json())
        out = {}
        wanted = None if targets is None else set(
            [targets] if isinstance(targets, int) else targets)
        for e in q["engines"]:
            if wanted is None or e["id"] in wanted:
                out[e["id"]] = {"queue": e["outstanding"], "completed": e["completed"],
                                "failed": e["failed"]}
        out["unassigned"] = q["unassigned"]
        out["waiting"] = q["waiting"]
        return out

    def abort(self, jobs=None, targets=None, block=None):
        """Aborts tasks that have not started: AsyncResults or task ids (default: none);
        returns ``{'aborted': [...], 'running': [...], 'finished': [...], 'unknown': [...]}``
        with ``client:seq`` names."""
        ids = _task_ids(jobs)
        if not ids:
            return {"aborted": [], "running": [], "finished": [], "unknown": []}
        aborted, running, finished, unknown = self._native.abort(ids)
        name = lambda v: [task_name(t) for t in v]  # noqa: E731
        return {"aborted": name(aborted), "running": name(running),
                "finished": name(finished), "unknown": name(unknown)}

    def purge_results(self, jobs=(), targets=(), block=None):
        """Forgets results stored by the controller: of ``jobs`` (AsyncResults or ids), or
        all of them with ``jobs='all'``."""
        if jobs == "all":
            self._native.purge([])
            return
        ids = _task_ids(jobs)
        if ids:
            self._native.purge(ids)

    def purge_everything(self):
        self.purge_results("all")

    def shutdown(self, targets="all", hub=False, block=None):
        """Stops the engines (all of them), and the controller too when ``hub``."""
        if targets not in ("all", None):
            raise ValueError("shutdown stops every engine (targets='all'); stop single "
                             "engines with their own process tools")
        self._native.shutdown(bool(hub))

    def close(self, linger=None):
        """Closes the connection; pending results end with ConnectionLostError."""
        self._native.close()

    @property
    def closed(self):
        return self._native.closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<ferrocluster.Client %s (%s)>" % (
            self._file, "closed" if self.closed else self._native.address)

    # -- shared objects --------------------------------------------------------------

    def Queue(self, name, maxsize=0):
        """The cluster's queue ``name`` (made on first use), like ``queue.Queue``; see
        ``ferrocluster.Queue``."""
        from ._objects import Queue
        return Queue(self, name, maxsize)

    def Namespace(self, name="default"):
        """Shared values with attribute access, like ``Manager().Namespace()``:
        ``rc.Namespace()`` is the cluster's shared one; see ``ferrocluster.Namespace``."""
        from ._objects import Namespace
        return Namespace(self, name)

    def Lock(self, name, lease=None):
        """The cluster's lock ``name``, like ``threading.Lock``, held by a lease of
        ``lease`` seconds (renewed while held; a dead holder releases it); see
        ``ferrocluster.Lock``."""
        from ._objects import Lock
        return Lock(self, name, lease)

    def Semaphore(self, name, value=1, lease=None):
        """The cluster's semaphore ``name`` of ``value`` permits; see
        ``ferrocluster.Semaphore``."""
        from ._objects import Semaphore
        return Semaphore(self, name, value, lease)

    def Event(self, name):
        """The cluster's event ``name``, like ``threading.Event``."""
        from ._objects import Event
        return Event(self, name)

    def objects(self):
        """The cluster's shared objects: a list of dicts (``name``, ``kind`` and what the
        controller says about each)."""
        return json.loads(self._native.objects_json())

    # -- magics ----------------------------------------------------------------------

    def activate(self, targets="all", suffix=""):
        """Registers ``%px``/``%%px``/``%pxresult``/``%autopx`` in IPython for a DirectView."""
        from . import _magics
        view = self.direct_view(targets)
        _magics.register(view, suffix)
        return view


def _is_async_result(x):
    return isinstance(x, AsyncResult)
