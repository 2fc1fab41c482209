"""Views: LoadBalancedView (the scheduler picks engines) and DirectView (named engines,
and their Python namespaces), with IPyparallel's methods and flags.

Functions travel cloudpickled; arguments too. A map pickles its function once and each
chunk's items once (a chunk is one task); the engine's worker unpickles the function once.
Functions given by name (a ``str``) are the engines' Rust functions (``noop``,
``nth_prime``…), whose arguments and results travel as msgpack (from and to JSON values).
"""

import builtins
import concurrent.futures
import contextlib
import io
import itertools
import json
import pickle
import shlex
import threading
import time
from collections import deque

import cloudpickle

from . import _errors
from ._native import auto_chunk_counts, json_to_msgpack
from ._result import (AsyncMapResult, AsyncResult, decode_command, decode_json,
                      decode_python)

_PROTOCOL = pickle.HIGHEST_PROTOCOL
_FLAGS = ("block", "targets", "retries", "timeout", "after", "follow", "chunksize",
          "ordered")


class _Pickling(threading.local):
    """One cloudpickle Pickler per thread, kept: making a Pickler costs more than pickling
    a small value with it (a one-item map pickles one tuple per task)."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.pickler = cloudpickle.Pickler(self.buf, protocol=_PROTOCOL)
        self.busy = False


_pickling = _Pickling()


def _dumps(obj):
    p = _pickling
    if p.busy:  # pickling from inside a pickle (a __reduce__ that submits): a fresh one
        return cloudpickle.dumps(obj, protocol=_PROTOCOL)
    p.busy = True
    try:
        p.buf.seek(0)
        p.buf.truncate()
        p.pickler.clear_memo()
        # cloudpickle's per-dump state (keyed by ids of globals dicts) must not outlive the
        # dump: another dict may get the same id later.
        refs = getattr(p.pickler, "globals_ref", None)
        if refs:
            refs.clear()
        p.pickler.dump(obj)
        return p.buf.getvalue()
    except BaseException:
        # A failed dump leaves the pickler in an unknown state.
        p.buf = io.BytesIO()
        p.pickler = cloudpickle.Pickler(p.buf, protocol=_PROTOCOL)
        raise
    finally:
        p.busy = False


def _task_ids(deps):
    """Task ids (numbers) from AsyncResults, ids, ``client:seq`` strings, or lists of them."""
    if deps is None:
        return []
    if isinstance(deps, (AsyncResult, int, str)):
        deps = [deps]
    out = []
    for d in deps:
        if isinstance(d, AsyncResult):
            out.extend(d.task_ids)
        elif isinstance(d, int):
            out.append(d)
        elif isinstance(d, str):
            client, seq = d.split(":")
            out.append((int(client) << 40) | int(seq))
        else:
            out.extend(_task_ids(d))
    return out


def _name(f):
    return getattr(f, "__name__", None) or type(f).__name__


def _split(seq, parts):
    """``parts`` contiguous slices of a sequence, sizes differing by at most one."""
    n = len(seq)
    out, start = [], 0
    for i in range(parts):
        size = n // parts + (1 if i < n % parts else 0)
        out.append(seq[start:start + size])
        start += size
    return out


class View:
    """What both views share: flags, apply, map, imap, decorators, commands."""

    def __init__(self, client, targets=None, **flags):
        self.client = client
        self.block = False
        self.targets = targets
        self.retries = 0
        self.timeout = None
        self.after = None
        self.follow = None
        self.chunksize = None
        self.ordered = True
        self.set_flags(**flags)

    # -- flags -----------------------------------------------------------------------

    def set_flags(self, **flags):
        """Sets flags: ``block``, ``targets``, ``retries``, ``timeout`` (seconds), ``after``,
        ``follow``, ``chunksize``, ``ordered``."""
        for k, v in flags.items():
            if k not in _FLAGS:
                raise KeyError("unknown flag %r (known: %s)" % (k, ", ".join(_FLAGS)))
            setattr(self, k, v)

    @contextlib.contextmanager
    def temp_flags(self, **flags):
        """``with view.temp_flags(retries=2, timeout=5): …`` sets flags for the block."""
        saved = {k: getattr(self, k) for k in flags}
        self.set_flags(**flags)
        try:
            yield self
        finally:
            self.set_flags(**saved)

    def _options(self, targets=None):
        timeout = self.timeout
        if timeout is not None and timeout <= 0:
            timeout = None
        return dict(
            targets=list(targets if targets is not None else self._lb_targets()),
            retries=int(self.retries or 0),
            timeout=timeout,
            after=_task_ids(self.after),
            follow=_task_ids(self.follow),
        )

    def _lb_targets(self):
        return []

    def _block(self, block):
        return self.block if block is None else block

    # -- submitting ------------------------------------------------------------------

    def _native(self):
        return self.client._native_client()

    def _submit_python(self, op, fblob, payloads, fname, items=None, each=None,
                       options=None, map_result=False, ordered=True, single=True):
        opts = options if options is not None else self._options()
        batch = self._native().submit(
            "python", payloads, items=items, each_target=each, name=fname,
            python_op=op, python_function=fblob, **opts)
        if map_result:
            return AsyncMapResult(self.client, batch, decode_python, fname, ordered=ordered,
                                  items=sum(items) if items else len(payloads))
        return AsyncResult(self.client, batch, decode_python, fname, single=single)

    def _submit_rust(self, name, payloads, items=None, each=None, map=False,
                     map_result=False, ordered=True, single=True):
        batch = self._native().submit(name, payloads, items=items, each_target=each, map=map,
                                      **self._options())
        if map_result:
            return AsyncMapResult(self.client, batch, decode_json, name, ordered=ordered,
                                  items=sum(items) if items else len(payloads))
        return AsyncResult(self.client, batch, decode_json, name, single=single)

    # -- apply -----------------------------------------------------------------------

    def apply(self, f, *args, **kwargs):
        """Calls ``f(*args, **kwargs)`` remotely: the value when the view blocks, else an
        AsyncResult."""
        ar = self.apply_async(f, *args, **kwargs)
        return ar.get() if self.block else ar

    def apply_sync(self, f, *args, **kwargs):
        return self.apply_async(f, *args, **kwargs).get()

    def apply_async(self, f, *args, **kwargs):
        raise NotImplementedError

    def _rust_arg(self, args, kwargs):
        if kwargs:
            raise TypeError("Rust functions take one argument, not keyword arguments")
        value = None if not args else args[0] if len(args) == 1 else list(args)
        return bytes(json_to_msgpack(json.dumps(value)))

    # -- map -------------------------------------------------------------------------

    def map(self, f, *sequences, block=None, chunksize=None, ordered=None):
        """``f`` applied to each item (several sequences: to each tuple of items, as the
        built-in ``map``): a list when blocking, else an AsyncMapResult."""
        ar = self.map_async(f, *sequences, chunksize=chunksize, ordered=ordered)
        return ar.get() if self._block(block) else ar

    def map_sync(self, f, *sequences, chunksize=None, ordered=None):
        return self.map_async(f, *sequences, chunksize=chunksize, ordered=ordered).get()

    def _engines_for_chunking(self):
        targets = self._lb_targets()
        return len(targets) if targets else max(1, self.client._native_client().engines_known())

    def map_async(self, f, *sequences, chunksize=None, ordered=None):
        if not sequences:
            raise TypeError("map needs at least one sequence")
        if ordered is None:
            ordered = self.ordered
        star = len(sequences) > 1
        items = list(zip(*sequences)) if star else list(sequences[0])
        n = len(items)
        chunksize = chunksize if chunksize is not None else self.chunksize
        if chunksize:
            counts = [chunksize] * (n // chunksize) + ([n % chunksize] if n % chunksize else [])
        else:
            counts = auto_chunk_counts(n, self._engines_for_chunking())
        chunks, start = [], 0
        for c in counts:
            chunks.append(items[start:start + c])
            start += c
        if isinstance(f, str):
            payloads = [bytes(json_to_msgpack(json.dumps([list(a) if star else a
                                                           for a in chunk])))
                        for chunk in chunks]
            return self._submit_rust(f, payloads, items=counts, map=True, map_result=True,
                                     ordered=ordered)
        fblob = _dumps(f)
        payloads = [_dumps((chunk, star)) for chunk in chunks]
        return self._submit_python("map", fblob, payloads, _name(f), items=counts,
                                   map_result=True, ordered=ordered)

    def imap(self, f, *iterables, ordered=True, max_outstanding=None, chunksize=None):
        """Results of ``f`` over iterables of any length (generators too), in order (or
        as they finish), with at most ``max_outstanding`` tasks in flight. Without a
        chunksize, chunks start at one item and grow while tasks are short."""
        star = len(iterables) > 1
        source = iter(zip(*iterables) if star else iterables[0])
        engines = self._engines_for_chunking()
        limit = max_outstanding or max(4, 4 * engines)
        fixed = chunksize
        size = fixed or 1
        fblob = None if isinstance(f, str) else _dumps(f)
        pending = deque()
        exhausted = False
        while True:
            while not exhausted and len(pending) < limit:
                chunk = list(itertools.islice(source, size))
                if not chunk:
                    exhausted = True
                    break
                if fblob is None:
                    payload = bytes(json_to_msgpack(json.dumps(
                        [list(a) if star else a for a in chunk])))
                    ar = self._submit_rust(f, [payload], items=[len(chunk)], map=True,
                                           map_result=True)
                else:
                    ar = self._submit_python("map", fblob, [_dumps((chunk, star))], _name(f),
                                             items=[len(chunk)], map_result=True)
                ar._t0 = time.monotonic()
                pending.append(ar)
            if not pending:
                return
            if ordered:
                ar = pending.popleft()
            else:
                done, _ = concurrent.futures.wait(
                    pending, return_when=concurrent.futures.FIRST_COMPLETED)
                ar = next(a for a in pending if a in done)
                pending.remove(ar)
            values = ar.get()
            if fixed is None:
                took = time.monotonic() - ar._t0
                if took < 0.01 * max(1, len(pending)) and size < 4096:
                    size *= 2
                elif took > 0.2 and size > 1:
                    size //= 2
            yield from values

    # -- decorators ------------------------------------------------------------------

    def remote(self, block=None, **flags):
        """Decorator: calling the function runs it remotely (``apply``)."""
        def wrap(f):
            return RemoteFunction(self, f, block=block, **flags)
        return wrap

    def parallel(self, block=None, chunksize=None, **flags):
        """Decorator: calling the function with a sequence runs it on parts of the
        sequence, one part per engine, and joins the results; ``.map(seq)`` applies it
        element-wise."""
        def wrap(f):
            return ParallelFunction(self, f, block=block, chunksize=chunksize, **flags)
        return wrap

    # -- commands and executors ------------------------------------------------------

    def _specs(self, command, env=None, cwd=None, stdin=None):
        if isinstance(command, str):
            argv = shlex.split(command)
        else:
            argv = [str(a) for a in command]
        if not argv:
            raise ValueError("a command needs a program")
        spec = {"program": argv[0], "args": argv[1:],
                "env": [[str(k), str(v)] for k, v in (env or {}).items()], "cwd": cwd}
        if stdin is not None:
            spec["stdin"] = list(stdin.encode() if isinstance(stdin, str) else stdin)
        return argv, json.dumps(spec)

    # -- what the client does, for this view's tasks --------------------------------

    def wait(self, jobs=None, timeout=-1):
        """Waits for ``jobs`` (AsyncResults; default: everything the client submitted);
        True when they all finished."""
        return self.client.wait(jobs, timeout)

    def abort(self, jobs=None, targets=None, block=None):
        """Aborts tasks that have not started (see ``Client.abort``)."""
        return self.client.abort(jobs)

    def queue_status(self, targets=None, verbose=False):
        """The engines' queues (see ``Client.queue_status``), of this view's engines."""
        if targets is None:
            targets = self._lb_targets() or None
        return self.client.queue_status(targets, verbose)

    def purge_results(self, jobs=(), targets=()):
        """Forgets stored results (see ``Client.purge_results``)."""
        return self.client.purge_results(jobs)

    def shutdown(self, targets=None, hub=False, block=None):
        """Stops the engines (see ``Client.shutdown``)."""
        return self.client.shutdown(hub=hub)

    @property
    def outstanding(self):
        return self.client.outstanding

    def use_cloudpickle(self):
        """Functions and values always travel with cloudpickle here: nothing to switch."""

    def use_pickle(self):
        """Kept for IPyparallel's code: cloudpickle (a superset of pickle) is always used."""

    def use_dill(self):
        """Kept for IPyparallel's code: cloudpickle is used (it pickles what dill does for
        functions, closures and lambdas)."""

    @property
    def executor(self):
        """A ``concurrent.futures.Executor`` submitting through this view."""
        from ._executor import ViewExecutor
        return ViewExecutor(self)


class LoadBalancedView(View):
    """Tasks go to whichever engine the controller's scheduler picks (among ``targets``
    when set). ``block`` is False by default."""

    def _lb_targets(self):
        t = self.targets
        if t is None:
            return []
        if isinstance(t, int):
            return [t]
        return list(t)

    def apply_async(self, f, *args, **kwargs):
        if isinstance(f, str):
            return self._submit_rust(f, [self._rust_arg(args, kwargs)])
        return self._submit_python("call", _dumps(f), [_dumps((args, kwargs))], _name(f))

    def command(self, command, env=None, cwd=None, stdin=None, block=None, timeout=None):
        """Runs a program (a list of words, or a string split like a shell) on one engine;
        a ``subprocess.CompletedProcess``."""
        argv, spec = self._specs(command, env, cwd, stdin)
        opts = self._options()
        opts.pop("timeout")
        batch = self._native().submit_commands([spec], timeout=timeout, **opts)
        ar = AsyncResult(self.client, batch, lambda p: decode_command(p, argv), argv[0])
        return ar.get() if self._block(block) else ar

    def __repr__(self):
        return "<LoadBalancedView targets=%s>" % (self.targets or "any")


class DirectView(View):
    """Runs each call on every one of its engines, and reaches their Python namespaces:
    ``push``/``pull``, ``dv['a'] = 1``/``dv['a']``, ``execute``, ``scatter``/``gather``,
    ``sync_imports``. A view of one engine (``rc[0]``) gives single values."""

    def _ids(self, targets=None):
        t = self.targets if targets is None else targets
        if t is None or t == "all":
            ids = self.client.ids
        elif isinstance(t, int):
            ids = [t]
        else:
            ids = list(t)
        if not ids:
            raise _errors.NoEnginesError("this view has no engines (are any registered?)")
        return ids

    def _single(self, targets=None):
        t = self.targets if targets is None else targets
        return isinstance(t, int)

    def _lb_targets(self):
        return self._ids()

    def _each(self, op, fblob, payload, fname, targets=None):
        ids = self._ids(targets)
        opts = self._options(targets=[])
        return self._submit_python(op, fblob, [payload] * len(ids), fname, each=ids,
                                   options=opts, single=self._single(targets))

    def apply_async(self, f, *args, **kwargs):
        if isinstance(f, str):
            ids = self._ids()
            return self._submit_rust(f, [self._rust_arg(args, kwargs)] * len(ids), each=ids,
                                     single=self._single())
        return self._each("call", _dumps(f), _dumps((args, kwargs)), _name(f))

    def map_async(self, f, *sequences, chunksize=None, ordered=None):
        """``f`` over the items, split as IPyparallel's DirectView does: one contiguous
        part per engine of the view (sizes differing by at most one, in engine order, as
        ``scatter`` splits), each engine mapping ``f`` over its part; the results in item
        order. ``chunksize`` and ``ordered`` are the load-balanced view's and do not apply."""
        if not sequences:
            raise TypeError("map needs at least one sequence")
        star = len(sequences) > 1
        items = list(zip(*sequences)) if star else list(sequences[0])
        ids = self._ids()
        parts = [(e, p) for e, p in zip(ids, _split(items, len(ids))) if p]
        each = [e for e, _ in parts]
        counts = [len(p) for _, p in parts]
        if isinstance(f, str):
            payloads = [bytes(json_to_msgpack(json.dumps([list(a) if star else a for a in p])))
                        for _, p in parts]
            batch = self._native().submit(f, payloads, items=counts, map=True, each_target=each,
                                          **self._options(targets=[]))
            return AsyncMapResult(self.client, batch, decode_json, f, items=len(items))
        payloads = [_dumps((p, star)) for _, p in parts]
        return self._submit_python("map", _dumps(f), payloads, _name(f), items=counts,
                                   each=each, options=self._options(targets=[]),
                                   map_result=True)

    def push(self, ns, targets=None, block=None):
        """Puts the names and values of dict ``ns`` into each engine's namespace."""
        if not isinstance(ns, dict):
            raise TypeError("push takes a dict of names and values")
        ar = self._each("push", b"", _dumps(ns), "push", targets)
        return ar.get() if self._block(block) else ar

    def pull(self, names, targets=None, block=None):
        """The value of ``names`` (a name, or a list of names) on each engine."""
        if not isinstance(names, str):
            names = list(names)
        ar = self._each("pull", b"", _dumps(names), "pull", targets)
        return ar.get() if self._block(block) else ar

    def execute(self, code, silent=True, targets=None, block=None):
        """Runs Python source code in each engine's namespace; its prints are kept on the
        result (``ar.stdout``, ``ar.display_outputs()``)."""
        ar = self._each("execute", b"", code.encode(), "execute", targets)
        return ar.get() if self._block(block) else ar

    def run(self, filename, targets=None, block=None):
        """Runs a Python file's code on each engine."""
        with open(filename) as fh:
            return self.execute(fh.read(), targets=targets, block=block)

    def scatter(self, key, seq, targets=None, block=None, flatten=False):
        """Splits ``seq`` into contiguous parts, one per engine, and stores part i as ``key``
        on the i-th engine (``flatten``: a part of one item is stored as that item)."""
        ids = self._ids(targets)
        parts = _split(list(seq), len(ids))
        payloads = [_dumps({key: (p[0] if flatten and len(p) == 1 else p)}) for p in parts]
        ar = self._submit_python("push", b"", payloads, "scatter", each=ids,
                                 options=self._options(targets=[]), single=False)
        return ar.get() if self._block(block) else ar

    def gather(self, key, targets=None, block=None):
        """The parts stored as ``key`` on each engine, joined in engine order."""
        ids = self._ids(targets)
        ar = self._submit_python("pull", b"", [_dumps(key)] * len(ids), "gather", each=ids,
                                 options=self._options(targets=[]), single=False,
                                 map_result=True)
        return ar.get() if self._block(block) else ar

    def __setitem__(self, key, value):
        self.push({key: value}, block=True)

    def __getitem__(self, key):
        return self.pull(key, block=True)

    def update(self, ns):
        self.push(ns, block=True)

    def get(self, key_s):
        return self.pull(key_s, block=True)

    def clear(self, targets=None, block=None):
        """Empties each engine's namespace (builtins stay)."""
        return self.execute(
            "for _k in [k for k in globals() if not k.startswith('__')]:\n"
            "    del globals()[_k]\n", targets=targets, block=block)

    @contextlib.contextmanager
    def sync_imports(self, local=True, quiet=False):
        """``with dv.sync_imports(): import numpy``: imports here (unless ``local`` is
        False) and on every engine."""
        modules = []
        real_import = builtins.__import__

        def record(name, globals=None, locals=None, fromlist=(), level=0):
            if level == 0 and not (globals or {}).get("__name__", "").startswith("ferrocluster"):
                modules.append((name, tuple(fromlist or ())))
            if local:
                return real_import(name, globals, locals, fromlist, level)
            return None

        builtins.__import__ = record
        try:
            yield
        finally:
            builtins.__import__ = real_import
        lines = []
        for name, fromlist in modules:
            if fromlist:
                lines.append("from %s import %s" % (name, ", ".join(fromlist)))
            else:
                lines.append("import %s" % name)
            if not quiet:
                print("importing %s on engine(s)" % (", ".join(fromlist) or name))
        if lines:
            self.execute("\n".join(lines), block=True)

    def command(self, command, env=None, cwd=None, stdin=None, block=None, timeout=None):
        """Runs a program on every engine of the view; one CompletedProcess each."""
        argv, spec = self._specs(command, env, cwd, stdin)
        ids = self._ids()
        opts = self._options(targets=[])
        opts.pop("timeout")
        batch = self._native().submit_commands([spec] * len(ids), each_target=ids,
                                               timeout=timeout, **opts)
        ar = AsyncResult(self.client, batch, lambda p: decode_command(p, argv), argv[0],
                         single=self._single())
        return ar.get() if self._block(block) else ar

    def activate(self, suffix=""):
        """Makes this view the one ``%px``, ``%%px``, ``%pxresult`` and ``%autopx`` (with
        ``suffix`` after their names) run on, in IPython."""
        from . import _magics
        _magics.register(self, suffix)

    def __len__(self):
        return len(self._ids())

    def __repr__(self):
        return "<DirectView %s>" % (self.targets if self.targets is not None else "all")


class RemoteFunction:
    """A function that runs remotely when called (``@view.remote()``)."""

    def __init__(self, view, f, block=None, **flags):
        self.view, self.func, self.block, self.flags = view, f, block, flags
        self.__name__ = getattr(f, "__name__", "remote_function")
        self.__doc__ = getattr(f, "__doc__", None)

    def __call__(self, *args, **kwargs):
        block = self.view.block if self.block is None else self.block
        with self.view.temp_flags(**self.flags):
            ar = self.view.apply_async(self.func, *args, **kwargs)
        return ar.get() if block else ar


class ParallelFunction(RemoteFunction):
    """``@view.parallel()``: called with a sequence, runs on parts of it (one per engine)
    and joins the results; ``.map(*seqs)`` applies the function element-wise."""

    def __init__(self, view, f, block=None, chunksize=None, **flags):
        super().__init__(view, f, block=block, **flags)
        self.chunksize = chunksize

    def __call__(self, seq, *more):
        block = self.view.block if self.block is None else self.block
        n = max(1, self.view._engines_for_chunking())
        seqs = [list(s) for s in (seq,) + more]
        parts = [_split(s, n) for s in seqs]
        calls = [tuple(p[i] for p in parts) for i in range(n)]
        calls = [c for c in calls if len(c[0])]
        fblob = _dumps(self.func)
        payloads = [_dumps((c, {})) for c in calls]
        with self.view.temp_flags(**self.flags):
            if isinstance(self.view, DirectView):
                ids = self.view._ids()[:len(calls)]
                ar = self.view._submit_python("call", fblob, payloads, self.__name__,
                                              each=ids, options=self.view._options(targets=[]),
                                              single=False)
            else:
                ar = self.view._submit_python("call", fblob, payloads, self.__name__,
                                              single=False)
        joined = _JoinedResult(ar)
        return joined.get() if block else joined

    def map(self, *sequences):
        block = self.view.block if self.block is None else self.block
        with self.view.temp_flags(**self.flags):
            ar = self.view.map_async(self.func, *sequences, chunksize=self.chunksize)
        return ar.get() if block else ar


class _JoinedResult:
    """The parts' results of a parallel call, joined into one list when they are lists."""

    def __init__(self, ar):
        self._ar = ar

    def get(self, timeout=None):
        parts = self._ar.get(timeout)
        if all(isinstance(p, (list, tuple)) for p in parts):
            out = []
            for p in parts:
                out.extend(p)
            return out
        return parts

    def __getattr__(self, name):
        return getattr(self._ar, name)
