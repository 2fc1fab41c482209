# The Python worker of a cluster engine (shipped inside the engine and run with `python -c`).
#
# The engine starts one worker on its first Python task and keeps it: the worker's globals
# are the engine's Python namespace between tasks. Frames travel over the worker's stdin and
# stdout pipes, which are moved to other file descriptors at once, so that user code that
# prints, reads stdin or writes to fd 1 from C cannot corrupt the channel.
#
# A frame is a 4-byte little-endian length and a body. A body is one op byte and parts, each
# a 4-byte little-endian length and bytes.
#   engine -> worker: b"c" [key, function, args]    call function(*args, **kwargs)
#                     b"m" [key, function, items]   items = (list, star): list(map(function,
#                                                   list)), or starmap when star
#                     b"p" [names_values]           push a dict into the namespace
#                     b"g" [names]                  pull a name (str) or names (list)
#                     b"e" [code]                   exec code (utf-8) in the namespace
#                     b"f" []                       forget the cached functions
#                     b"b" [request, ...]           a batch: each part is a request's body
#                                                   (op byte and parts); one reply each,
#                                                   in order; quick calls' and maps' replies
#                                                   are written together (every 0.2 ms)
#   worker -> engine: b"o" [value, stdout, stderr]  pickled value, captured output
#                     b"x" [ename, evalue, traceback, stdout, stderr]
#   first frame from the worker: b"r" [version] when ready, or b"x" [...] when it cannot
#   start (cloudpickle missing).
# `function` is empty when the engine knows the worker has `key` cached already.
#
# Tasks may open clients of the cluster (ferrocluster.task_client(), for its shared objects;
# the engine puts CLUSTER_CLIENT_FILE and CLUSTER_TASK_ENGINE in our environment): when the
# engine closes our stdin, or goes away, they are closed before we exit, so the controller
# hears their goodbyes (and gives back their locks) at once.
import io
import os
import sys
import threading


def _parts(body, pos):
    out = []
    n = len(body)
    while pos < n:
        size = int.from_bytes(body[pos:pos + 4], "little")
        pos += 4
        out.append(body[pos:pos + size])
        pos += size
    return out


def _frame(op, parts):
    chunks = [op]
    for p in parts:
        chunks.append(len(p).to_bytes(4, "little"))
        chunks.append(p)
    body = b"".join(chunks)
    return len(body).to_bytes(4, "little") + body


def _read_exact(fd, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, min(n - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _close_clients():
    client = sys.modules.get("ferrocluster._client")
    if client is not None:
        try:
            client.close_all()
        except BaseException:
            pass


def _watch_parent():
    # The engine may be killed without closing our stdin while a task runs: leave then too.
    parent = os.getppid()
    import time
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            _close_clients()
            os._exit(0)


def main():
    rfd = os.dup(0)
    wfd = os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    # Output written to fd 1 below Python (C extensions, subprocesses) goes to the engine's
    # log, beside the worker's stderr.
    os.dup2(2, 1)
    try:
        os.set_inheritable(rfd, False)
        os.set_inheritable(wfd, False)
    except OSError:
        pass
    threading.Thread(target=_watch_parent, daemon=True).start()
    try:
        import cloudpickle
    except Exception as e:  # ImportError, or a broken installation
        _write_all(wfd, _frame(b"x", [type(e).__name__.encode(), str(e).encode(), b"", b"", b""]))
        return
    import pickle
    import traceback
    from itertools import starmap

    sys.stdin = io.StringIO()
    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    # __main__ is the namespace, so that pickles that refer to __main__ names find them.
    main_mod = type(sys)("__main__")
    main_mod.__dict__.update(ns)
    ns = main_mod.__dict__
    sys.modules["__main__"] = main_mod
    functions = {}
    loads = pickle.loads
    protocol = pickle.HIGHEST_PROTOCOL
    real_out, real_err = sys.stdout, sys.stderr
    FunctionType = type(main)

    def rebind(f):
        # A function that travelled by value (defined in the client's __main__, a notebook,
        # or a module this engine does not have) looks up the names it did not capture in
        # the engine's namespace, as in IPyparallel; the names it did capture come along and
        # are put into that namespace. A function pickled by reference keeps its module.
        if not isinstance(f, FunctionType) or f.__globals__ is ns:
            return f
        module = sys.modules.get(f.__module__)
        if f.__module__ != "__main__" and getattr(module, "__dict__", None) is f.__globals__:
            return f
        for k, v in f.__globals__.items():
            if k not in ("__builtins__", "__name__", "__package__", "__file__", "__doc__"):
                ns[k] = v
        g = FunctionType(f.__code__, ns, f.__name__, f.__defaults__, f.__closure__)
        g.__kwdefaults__ = f.__kwdefaults__
        g.__dict__.update(f.__dict__)
        g.__qualname__ = f.__qualname__
        return g

    def function(key, blob):
        if blob:
            try:
                f = rebind(loads(blob))
            except BaseException as e:
                # The engine counts the function as sent: later tasks of it (in the same
                # batch too) come without its pickle and must fail the same way.
                functions[key] = e
                raise
            functions[key] = f
            return f
        f = functions.get(key)
        if f is None:
            raise RuntimeError("the engine sent no function and this worker has none cached")
        if isinstance(f, BaseException):
            raise f.with_traceback(None)
        return f

    # Results travel by cloudpickle (classes and functions defined here, by execute or in
    # __main__, go by value); one pickler is kept, because making one costs more than
    # pickling a small value with it.
    out_buf = io.BytesIO()
    pickler = cloudpickle.Pickler(out_buf, protocol=protocol)

    def dumps(value):
        out_buf.seek(0)
        out_buf.truncate()
        pickler.clear_memo()
        # Per-dump state of cloudpickle (ids of globals dicts): a stale id must not match a
        # new dict at the same address.
        refs = getattr(pickler, "globals_ref", None)
        if refs:
            refs.clear()
        pickler.dump(value)
        return out_buf.getvalue()

    def run(body):
        op = body[:1]
        parts = _parts(body, 1)
        out = io.StringIO()
        err = io.StringIO()
        sys.stdout, sys.stderr = out, err
        try:
            if op == b"c":
                f = function(parts[0], parts[1])
                args, kwargs = loads(parts[2])
                value = f(*args, **kwargs)
            elif op == b"m":
                f = function(parts[0], parts[1])
                items, star = loads(parts[2])
                value = list(starmap(f, items) if star else map(f, items))
            elif op == b"p":
                ns.update(loads(parts[0]))
                value = None
            elif op == b"g":
                names = loads(parts[0])
                if isinstance(names, str):
                    value = ns[names]
                else:
                    value = [ns[n] for n in names]
            elif op == b"e":
                code = parts[0].decode()
                exec(compile(code, "<execute>", "exec"), ns)
                value = None
            elif op == b"f":
                functions.clear()
                value = None
            else:
                raise ValueError("unknown op %r from the engine" % (op,))
            try:
                blob = dumps(value)
            except BaseException:
                # A failed dump leaves the kept pickler in an unknown state.
                pickler_reset()
                raise
            return _frame(b"o", [blob, out.getvalue().encode("utf-8", "replace"),
                                 err.getvalue().encode("utf-8", "replace")])
        except BaseException as e:  # SystemExit and KeyboardInterrupt too: report, go on
            if isinstance(e, KeyError) and op == b"g":
                e = NameError("name %s is not defined on this engine" % (e,))
            tb = e.__traceback__
            # The worker's own frame first, then the user's: show only the user's.
            if tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            tb = traceback.format_exception(type(e), e, tb)
            return _frame(b"x", [type(e).__name__.encode(), str(e).encode("utf-8", "replace"),
                                 "".join(tb).encode("utf-8", "replace"),
                                 out.getvalue().encode("utf-8", "replace"),
                                 err.getvalue().encode("utf-8", "replace")])
        finally:
            sys.stdout, sys.stderr = real_out, real_err

    def pickler_reset():
        nonlocal out_buf, pickler
        out_buf = io.BytesIO()
        pickler = cloudpickle.Pickler(out_buf, protocol=protocol)

    from time import perf_counter as clock
    FLUSH_S = 0.0002
    NAMESPACE_OPS = (b"p", b"g", b"e")

    _write_all(wfd, _frame(b"r", [sys.version.split()[0].encode()]))
    while True:
        head = _read_exact(rfd, 4)
        if head is None:
            _close_clients()
            return
        body = _read_exact(rfd, int.from_bytes(head, "little"))
        if body is None:
            _close_clients()
            return
        if body[:1] == b"b":
            # A batch: run its requests in order. Replies of calls and maps are held back
            # while they are quick and written together at least every FLUSH_S and at the
            # end, so that a stream of tiny tasks costs few writes (each wakes the engine).
            # Replies of namespace tasks (push, pull, execute) go out at once, with what
            # was held: if this process dies, the engine runs the tasks without a reply
            # again on a fresh worker, and those must not depend on a lost namespace.
            held = []
            last = clock()
            for sub in _parts(body, 1):
                held.append(run(sub))
                now = clock()
                if now - last >= FLUSH_S or sub[:1] in NAMESPACE_OPS:
                    _write_all(wfd, b"".join(held))
                    held.clear()
                    last = now
            if held:
                _write_all(wfd, b"".join(held))
        else:
            _write_all(wfd, run(body))

main()
