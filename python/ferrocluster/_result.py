"""AsyncResult and AsyncMapResult: ``concurrent.futures.Future`` subclasses over a batch of
tasks submitted by the Rust client.

A result holds a native batch (one part per task). Blocking waits happen in Rust with the
GIL released; the decoded value is computed once, by whichever thread first sees the batch
finished (a waiting caller, or the client's dispatcher thread, which the I/O thread wakes
when the batch finishes). The dispatcher is only asked for futures somebody may wait on
through the ``concurrent.futures`` machinery (callbacks, ``wait``, ``as_completed``): a plain
``get()`` costs no thread hop.
"""

import concurrent.futures
import pickle
import subprocess
import sys
import threading
import time

from . import _errors
from ._native import command_output, msgpack_to_json, python_reply

_SEQ_BITS = 40
_NO_OUTPUT = ("", "")
_FINISHED = ("FINISHED", "CANCELLED", "CANCELLED_AND_NOTIFIED")


def task_name(task_id):
    """``client:seq``, as the Rust side and the ``cluster`` command print task ids."""
    return "%d:%d" % (task_id >> _SEQ_BITS, task_id & ((1 << _SEQ_BITS) - 1))


# How each kind of task's payload becomes a value.

def decode_python(payload):
    reply = python_reply(payload)
    if reply is None or reply[0] is None:
        raise _errors.ClusterError("a Python task's result payload does not decode")
    value, stdout, stderr = reply[0], reply[1], reply[2]
    return pickle.loads(value), stdout, stderr


def decode_json(payload):
    import json
    return json.loads(msgpack_to_json(payload)), "", ""


def decode_command(payload, args=None):
    code, sig, stdout, stderr, _truncated = command_output(payload)
    if code is None and sig is not None:
        code = -sig
    done = subprocess.CompletedProcess(args, code, stdout, stderr)
    return done, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace")


_KIND_ERRORS = {
    "engine_lost": _errors.EngineError,
    "unknown_function": _errors.UnknownFunctionError,
    "timeout": _errors.TaskTimeout,
    "aborted": _errors.TaskAborted,
    "dependency": _errors.DependencyError,
    "unschedulable": _errors.ImpossibleDependency,
    "connection_lost": _errors.ConnectionLostError,
}


def task_error(kind, message, engine, payload, task_id):
    """The exception for a failed task, and its captured (stdout, stderr)."""
    reply = python_reply(payload) if payload else None
    if reply is not None and reply[3] is not None:
        _, stdout, stderr, ename, evalue, tb = reply
        return _errors.RemoteError(ename, evalue, tb, engine, task_name(task_id), stdout,
                                   stderr), stdout, stderr
    if kind in ("remote", "bad_arguments", "command_failed"):
        ename = {"remote": "RemoteError", "bad_arguments": "BadArguments",
                 "command_failed": "CommandFailed"}[kind]
        return _errors.RemoteError(ename, message, "", engine, task_name(task_id)), "", ""
    cls = _KIND_ERRORS.get(kind, _errors.ClusterError)
    where = " on engine %s" % engine if engine is not None else ""
    return cls("task %s%s: %s" % (task_name(task_id), where, message)), "", ""


class AsyncResult(concurrent.futures.Future):
    """The pending result of one submission: ``get(timeout)``, ``ready()``, ``wait()``,
    ``successful()``, ``metadata``, ``engine_id``, ``elapsed``, ``stdout``, ``stderr``, and
    everything a ``concurrent.futures.Future`` has.

    One task gives one value; a direct view's apply gives one value per engine (a list,
    or the value itself for a single-engine view).
    """

    _notified = False

    def __init__(self, client, batch, decode, fname, *, single=True, items=None):
        self._client = client
        self._batch = batch
        self._decode = decode
        self._fname = fname
        self._single = single
        self._items = items
        self._settle_lock = threading.Lock()
        self._settled = False
        self._outputs = None  # [(stdout, stderr)] per task once settled
        self._partial = {}  # decoded values by task index (iteration, settle)
        super().__init__()
        client._track(self)

    # concurrent.futures' wait() and as_completed() append to _waiters directly: the first
    # such use asks the dispatcher to settle this future when its tasks finish.
    @property
    def _waiters(self):
        if not self._settled and not self._notified:
            self._want_notice()
        return self.__dict__["_waiters_list"]

    @_waiters.setter
    def _waiters(self, value):
        self.__dict__["_waiters_list"] = value

    def _want_notice(self):
        self._notified = True
        self._client._notify(self)

    def add_done_callback(self, fn):
        if not self._settled and not self._notified:
            self._want_notice()
        super().add_done_callback(fn)

    # -- identity --------------------------------------------------------------------

    @property
    def task_ids(self):
        """The tasks' ids (numbers)."""
        return self._batch.task_ids()

    @property
    def msg_ids(self):
        """The tasks' ids as ``client:seq`` strings (IPyparallel's name)."""
        return [task_name(t) for t in self._batch.task_ids()]

    @property
    def msg_id(self):
        ids = self.msg_ids
        return ids[0] if len(ids) == 1 else ids

    def __len__(self):
        return len(self._batch)

    def _what(self):
        ids = self._batch.task_ids()
        if len(ids) == 1:
            return "task %s (%s)" % (task_name(ids[0]), self._fname)
        if not ids:
            return "an empty submission of %s" % self._fname
        return "%d tasks of %s (%s to %s)" % (len(ids), self._fname, task_name(ids[0]),
                                              task_name(ids[-1]))

    # -- waiting ---------------------------------------------------------------------

    def ready(self):
        """True when every task finished (or the connection ended)."""
        return self._settled or self._batch.ready()

    def done(self):
        if not super().done() and self._batch.ready():
            self._settle()
        return super().done()

    def wait(self, timeout=None):
        """Waits up to ``timeout`` seconds (``None`` or -1: no limit); True when ready."""
        if timeout is not None and timeout < 0:
            timeout = None
        if self._settled:
            return True
        if self._client._on_dispatcher():
            # A callback waiting here would wait for the thread that must deliver.
            return self.ready()
        if self._batch.wait(timeout):
            self._settle()
            return True
        return False

    def result(self, timeout=None):
        if not self.wait(timeout):
            raise _errors.TimeoutError(
                "timed out after %s s waiting for %s" % (timeout, self._what()))
        return super().result(0)

    def exception(self, timeout=None):
        if not self.wait(timeout):
            raise _errors.TimeoutError(
                "timed out after %s s waiting for %s" % (timeout, self._what()))
        return super().exception(0)

    def get(self, timeout=None):
        """The value, waiting up to ``timeout`` seconds; raises the remote exception
        (``RemoteError``) or ``TimeoutError`` naming the task."""
        if timeout is not None and timeout < 0:
            timeout = None
        return self.result(timeout)

    def successful(self):
        """True when it finished without error, False when it failed, None while running."""
        if not self.ready():
            return None
        self._settle()
        return not self.cancelled() and super().exception(0) is None

    def wait_interactive(self, interval=0.1, timeout=-1, widget=None, file=None):
        """Waits, showing progress by items done: a tqdm bar when tqdm is installed (a
        notebook widget under Jupyter, through ``tqdm.auto``), else one line of text on
        ``file`` (stderr) rewritten in place. ``timeout`` (seconds, -1 or None: no limit)
        ends the wait early; the tasks go on. ``widget=False`` forces the text line."""
        if timeout is not None and timeout < 0:
            timeout = None
        file = file if file is not None else sys.stderr
        start = time.monotonic()
        total_tasks = len(self._batch)
        tqdm = None
        if widget is not False:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
        total_items = self._batch.progress()[2]
        bar = tqdm(total=total_items, unit="item", file=file) if tqdm else None
        shown = 0

        def line(tasks, items):
            text = "%d/%d tasks" % (tasks, total_tasks)
            if total_items != total_tasks:
                text += " (%d/%d items)" % (items, total_items)
            return "%s finished after %.1f s" % (text, time.monotonic() - start)

        try:
            while not self.wait(interval):
                tasks, items, _ = self._batch.progress()
                if bar is not None:
                    bar.update(items - shown)
                    shown = items
                else:
                    print("\r" + line(tasks, items), end="", file=file, flush=True)
                if timeout is not None and time.monotonic() - start > timeout:
                    break
        finally:
            tasks, items, _ = self._batch.progress()
            if bar is not None:
                bar.update(items - shown)
                bar.close()
            else:
                print("\r" + line(tasks, items), file=file, flush=True)

    def cancel(self):
        """Cancels the tasks that have not started (the controller aborts them); True when
        some were, and the result is then cancelled."""
        with self._settle_lock:
            if self._settled:
                return False
            if self._batch.cancel() == 0:
                return False
            self._settled = True
        return super().cancel()

    def abort(self):
        """IPyparallel's name for :meth:`cancel`."""
        return self.cancel()

    # -- settling --------------------------------------------------------------------

    def _value_of(self, index):
        """(ok, value or exception, stdout, stderr) of a finished task."""
        out = self._batch.outcome(index)
        if out is None:
            return None
        ok, kind, message, engine, payload, _started, _elapsed, _received = out
        tid = self._batch.task_id(index)
        if ok:
            try:
                value, stdout, stderr = self._decode(payload)
            except Exception as e:  # an unpicklable result, a missing module here
                err = _errors.ClusterError(
                    "cannot decode the result of task %s (%s) from engine %s: %s: %s"
                    % (task_name(tid), self._fname, engine, type(e).__name__, e))
                err.__cause__ = e
                return False, err, "", ""
            return True, value, stdout, stderr
        err, stdout, stderr = task_error(kind, message, engine, payload, tid)
        return False, err, stdout, stderr

    def _combine(self, values):
        return values[0] if self._single else values

    def _settle(self):
        with self._settle_lock:
            if self._settled:
                return
            n = len(self._batch)
            values, errors, outputs = [], [], []
            # Python results without output, decoded in one native call (a one-item map
            # has thousands); the rest one by one.
            fast = (self._batch.python_values() if self._decode is decode_python
                    and not self._partial and self._batch.ready() else None)
            for i in range(n):
                blob = fast[i] if fast is not None else None
                if blob is not None:
                    try:
                        values.append(pickle.loads(blob))
                        outputs.append(_NO_OUTPUT)
                        continue
                    except Exception:
                        pass  # the slow path names the task in its error
                got = self._partial.pop(i, None) or self._value_of(i)
                if got is None:  # not finished: only when called too early
                    return
                ok, value, stdout, stderr = got
                outputs.append((stdout, stderr))
                if ok:
                    values.append(value)
                else:
                    errors.append(value)
            self._outputs = outputs
            self._settled = True
        if errors:
            if len(errors) > 1 and not self._single and all(
                    isinstance(e, _errors.RemoteError) for e in errors):
                exc = _errors.CompositeError(
                    "%d of %d tasks of %s raised" % (len(errors), n, self._fname), errors)
            else:
                exc = errors[0]
            self._set(exc=exc)
        else:
            try:
                value = self._combine(values)
            except Exception as e:
                self._set(exc=e)
            else:
                self._set(value=value)

    def _set(self, value=None, exc=None):
        try:
            if exc is not None:
                self.set_exception(exc)
            else:
                self.set_result(value)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled meanwhile

    def get_dict(self, timeout=None):
        """The values keyed by the engine that produced each (IPyparallel's): for a direct
        view's apply, one per engine. ValueError when an engine ran several of the tasks."""
        values = self.get(timeout)
        if self._single:
            values = [values]
        engines = self.engine_id
        engines = [engines] if not isinstance(engines, list) else engines
        if len(set(engines)) != len(engines):
            raise ValueError("cannot make a dict of %s: engines %s ran more than one task "
                             "each" % (self._what(), engines))
        return dict(zip(engines, values))

    @property
    def sent(self):
        """True: the tasks are handed to the client's I/O thread when the call returns."""
        return True

    def wait_for_send(self, timeout=None):
        """IPyparallel's: returns True at once (see ``sent``)."""
        return True

    # -- metadata --------------------------------------------------------------------

    def _meta(self, index):
        tid = self._batch.task_id(index)
        m = {
            "msg_id": task_name(tid),
            "task_id": tid,
            "function": self._fname,
            "submitted": self._batch.submitted(),
            "engine_id": None,
            "started": None,
            "completed": None,
            "received": None,
            "elapsed": None,
            "status": "pending",
            "error": None,
            "stdout": "",
            "stderr": "",
        }
        out = self._batch.outcome(index)
        if out is None:
            return m
        ok, kind, message, engine, _payload, started, elapsed, received = out
        m.update(engine_id=engine, received=received, status="ok" if ok else "error",
                 error=None if ok else "%s: %s" % (kind, message))
        if started is not None:
            m.update(started=started, completed=started + elapsed, elapsed=elapsed)
        if self._outputs is not None:
            m["stdout"], m["stderr"] = self._outputs[index]
        return m

    @property
    def metadata(self):
        """Where and when each task ran: a dict (one task), or a list of dicts."""
        metas = [self._meta(i) for i in range(len(self._batch))]
        return metas[0] if self._single else metas

    @property
    def engine_id(self):
        m = self.metadata
        return m["engine_id"] if isinstance(m, dict) else [x["engine_id"] for x in m]

    @property
    def elapsed(self):
        """Seconds from submission to the last result (or to now while running)."""
        submitted = self._batch.submitted()
        if not self.ready():
            return time.time() - submitted
        received = [m["received"] for m in (self.metadata if not self._single
                                            else [self.metadata]) if m["received"]]
        return (max(received) if received else time.time()) - submitted

    @property
    def wall_time(self):
        return self.elapsed

    @property
    def serial_time(self):
        """Seconds the tasks ran on their engines, added up."""
        metas = self.metadata if not self._single else [self.metadata]
        return sum(m["elapsed"] or 0.0 for m in metas)

    @property
    def progress(self):
        """Tasks finished so far."""
        return self._batch.progress()[0]

    def _output(self, which):
        if not self.ready():
            return "" if self._single else [""] * len(self._batch)
        self._settle()
        outs = [o[which] for o in (self._outputs or [])]
        return (outs[0] if outs else "") if self._single else outs

    @property
    def stdout(self):
        """What the task printed (a list for several tasks)."""
        return self._output(0)

    @property
    def stderr(self):
        return self._output(1)

    def display_outputs(self):
        """Prints each engine's captured output, as ``[stdout:N] …``."""
        metas = self.metadata if not self._single else [self.metadata]
        outs = self._outputs or []
        for m, (out, err) in zip(metas, outs):
            if out:
                print("[stdout:%s] %s" % (m["engine_id"], out), end="" if out.endswith("\n")
                      else "\n")
            if err:
                print("[stderr:%s] %s" % (m["engine_id"], err), end="" if err.endswith("\n")
                      else "\n", file=sys.stderr)

    def __repr__(self):
        state = "finished" if self.ready() else "pending"
        return "<%s: %s, %s>" % (type(self).__name__, self._what(), state)


class AsyncMapResult(AsyncResult):
    """The pending result of a map: a list in item order. Iterating it yields the values
    as their chunks arrive (in item order, or in arrival order for ``ordered=False``)."""

    def __init__(self, client, batch, decode, fname, *, ordered=True, items=None):
        super().__init__(client, batch, decode, fname, single=False, items=items)
        self.ordered = ordered

    def _combine(self, values):
        out = []
        for chunk in values:
            out.extend(chunk)
        return out

    def __len__(self):
        return self._items if self._items is not None else len(self._batch)

    def _chunk(self, index):
        got = self._partial.get(index)
        if got is None:
            got = self._value_of(index)
            self._partial[index] = got
        ok, value, _out, _err = got
        if not ok:
            raise value
        return value

    def __iter__(self):
        n = len(self._batch)
        if self.ordered:
            for i in range(n):
                while not self._batch.wait_task(i, 0.5):
                    pass
                yield from self._chunk(i)
        else:
            seen = 0
            while seen < n:
                order, over = self._batch.arrivals(seen, 0.5)
                for i in order[seen:]:
                    yield from self._chunk(i)
                seen = len(order)
                if over and seen < n:
                    # The connection ended: the rest raise.
                    for i in range(n):
                        if i not in order:
                            yield from self._chunk(i)
                    return
