"""Exceptions raised by ferrocluster (IPyparallel's names where it has one)."""

import builtins


class ClusterError(Exception):
    """Base class of every ferrocluster error."""


class ConnectionFileError(ClusterError, OSError):
    """The connection file (or profile) is missing, unreadable or corrupt; the message
    names the file and how to start a cluster."""


class ConnectTimeoutError(ClusterError, builtins.TimeoutError):
    """The controller did not answer: it is stopped, or the file holds another cluster's key."""


class ConnectionLostError(ClusterError, builtins.ConnectionError):
    """The connection to the controller ended before the result came."""


class TimeoutError(ClusterError, builtins.TimeoutError):
    """Waiting for a result ended before it came (the task may still finish); the message
    names the task."""


class TaskTimeout(TimeoutError):
    """The task itself ran (or waited) past its time limit (``timeout=`` flag)."""


class TooLargeError(ClusterError, ValueError):
    """An argument or a map chunk is larger than one message may be."""


class ShutdownError(ClusterError, RuntimeError):
    """The executor was shut down."""


class RemoteError(ClusterError):
    """A task raised an exception on its engine.

    ``engine_id``, ``ename`` (the exception's type name), ``evalue`` (its message),
    ``traceback`` (the remote traceback, as text), and the task's captured ``stdout`` and
    ``stderr``. ``task_id`` names the task.
    """

    def __init__(self, ename, evalue="", traceback="", engine_id=None, task_id=None,
                 stdout="", stderr=""):
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback
        self.engine_id = engine_id
        self.task_id = task_id
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(ename, evalue)

    def __str__(self):
        where = "engine %s" % self.engine_id if self.engine_id is not None else "the cluster"
        text = "%s: %s (task %s on %s)" % (self.ename, self.evalue, self.task_id, where)
        if self.traceback:
            text += "\n\nRemote traceback:\n" + self.traceback.rstrip()
        return text

    def render_traceback(self):
        """The remote traceback as lines (IPython shows these instead of the local one)."""
        return (self.traceback or "%s: %s" % (self.ename, self.evalue)).splitlines()

    def _render_traceback_(self):
        # IPython shows these lines instead of the local traceback.
        head = "[engine %s] " % self.engine_id
        lines = self.render_traceback()
        return [head + lines[0]] + lines[1:] if lines else [head]

    def print_traceback(self):
        print(self.traceback or "%s: %s" % (self.ename, self.evalue))


class CompositeError(RemoteError):
    """Several engines raised (a direct view's apply): ``elist`` holds each RemoteError."""

    def __init__(self, message, elist):
        self.elist = list(elist)
        first = self.elist[0]
        super().__init__(first.ename, first.evalue, first.traceback, first.engine_id,
                         first.task_id, first.stdout, first.stderr)
        self.message = message

    def __str__(self):
        lines = [self.message]
        for e in self.elist:
            lines.append("[engine %s] %s: %s" % (e.engine_id, e.ename, e.evalue))
        lines.append("")
        lines.append("First remote traceback (engine %s):" % self.elist[0].engine_id)
        lines.append(self.elist[0].traceback.rstrip())
        return "\n".join(lines)

    def render_traceback(self):
        lines = [self.message]
        for e in self.elist:
            lines.extend(e._render_traceback_())
        return lines

    def _render_traceback_(self):
        return self.render_traceback()

    def raise_exception(self, excid=0):
        raise self.elist[excid]


class EngineError(ClusterError):
    """The engine running the task died or left (retry with ``retries=``)."""


class UnknownFunctionError(ClusterError, LookupError):
    """No engine offers the named (Rust) function."""


class TaskAborted(ClusterError):
    """The task was aborted (or cancelled) before it ran."""


class DependencyError(ClusterError):
    """A task it depends on (``after``, ``follow``) failed or cannot be met."""


class ImpossibleDependency(DependencyError):
    """No engine can ever run the task (its targets do not exist)."""


class NoEnginesError(ClusterError):
    """The view has no engines to run on."""


class ObjectError(ClusterError):
    """A shared object (queue, namespace, lock, semaphore, event) refused the operation;
    the message names the object and says why."""


class ObjectNameError(ObjectError, ValueError):
    """The name cannot name a shared object (empty, too long, or characters not allowed)."""


class ObjectKindError(ObjectError, TypeError):
    """The name belongs to another kind of object (a lock used as a queue), or to a
    semaphore with another number of permits."""


class LeaseLostError(ObjectError, RuntimeError):
    """A release found its lease gone: it ran out (the holder was unreachable longer than
    the lease) or the controller freed it, so another holder may have had it meanwhile."""


class ObjectLimitError(ObjectError):
    """The object, or all objects together, would exceed the controller's limits
    (``cluster.toml``); nothing was changed."""
