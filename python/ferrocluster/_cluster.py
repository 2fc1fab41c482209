"""Cluster: start a controller and engines (like ``ipp.Cluster``), connect, stop them all."""

import asyncio
import atexit
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import weakref

from . import _errors
from ._client import Client

_LIVE = weakref.WeakSet()


def program():
    """How to run the ``cluster`` program that this package carries."""
    return [sys.executable, "-m", "ferrocluster"]


@atexit.register
def _stop_leftovers():
    for c in list(_LIVE):
        try:
            c.stop_cluster_sync()
        except Exception:
            pass


class Cluster:
    """A local cluster: ``with Cluster(n=4) as rc: …`` starts a controller and ``n``
    engines (default: the profile's ``engines`` setting, else the physical cores), yields a
    connected :class:`Client`, and stops every process on exit, also after an exception or
    Ctrl-C. Without ``profile`` and ``cluster_dir`` it lives in a temporary folder of its
    own; with them, in that profile (which ``Client(profile=…)`` and the ``cluster``
    command then reach too).

    Engines run Python tasks with ``python`` (default: this interpreter,
    ``sys.executable``). ``start_and_connect_sync()`` / ``stop_cluster_sync()`` do the same
    without ``with``.
    """

    def __init__(self, n=None, profile=None, cluster_dir=None, *, python=None, ip=None,
                 scheduler=None, hwm=None, timeout=60, **_ignored):
        self.n = n
        self.profile = profile or "default"
        self._temp = None
        if cluster_dir is None and profile is None:
            self._temp = tempfile.mkdtemp(prefix="ferrocluster-")
            cluster_dir = self._temp
        self.cluster_dir = cluster_dir
        self.python = python or os.environ.get("CLUSTER_PYTHON") or sys.executable
        self.ip = ip
        self.scheduler = scheduler
        self.hwm = hwm
        self.timeout = timeout
        self._client = None
        self._started = False

    def _env(self):
        env = dict(os.environ)
        env["CLUSTER_PROGRAM"] = json.dumps(program())
        env["CLUSTER_PYTHON"] = self.python
        if self.cluster_dir is not None:
            env["CLUSTER_DIR"] = os.path.abspath(self.cluster_dir)
        env["CLUSTER_PROFILE"] = self.profile
        return env

    def _run(self, *args, check=True):
        cmd = program() + list(args)
        done = subprocess.run(cmd, env=self._env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=self.timeout + 30)
        if check and done.returncode != 0:
            raise _errors.ClusterError("`cluster %s` failed (exit %d): %s" % (
                " ".join(args), done.returncode, (done.stderr or done.stdout).strip()))
        return done

    @property
    def profile_dir(self):
        from ._client import cluster_dir
        return os.path.join(cluster_dir(self.cluster_dir), "profile_%s" % self.profile)

    @property
    def connection_file(self):
        return os.path.join(self.profile_dir, "security", "client.json")

    def start_cluster_sync(self):
        """Starts the controller and engines; returns when the engines are ready."""
        args = ["start"]
        if self.n is not None:
            args += ["-n", str(int(self.n))]
        if self.ip:
            args += ["--ip", self.ip]
        if self.scheduler:
            args += ["--scheduler", self.scheduler]
        if self.hwm is not None:
            args += ["--hwm", str(self.hwm)]
        _LIVE.add(self)
        self._started = True
        try:
            self._run(*args)
        except BaseException:
            self.stop_cluster_sync()
            raise
        return self

    def connect_client_sync(self, **kwargs):
        """A Client of this cluster."""
        return Client(connection_file=self.connection_file, **kwargs)

    def start_and_connect_sync(self, activate=False):
        """Starts the cluster and returns a connected Client (all engines registered)."""
        self.start_cluster_sync()
        try:
            self._client = self.connect_client_sync()
            if self.n:
                self._client.wait_for_engines(self.n, timeout=self.timeout)
            if activate:
                self._client.activate()
        except BaseException:
            self.stop_cluster_sync()
            raise
        return self._client

    def stop_cluster_sync(self):
        """Stops every process of the cluster (asking nicely first) and closes the client."""
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                pass
            self._client = None
        if self._started:
            self._started = False
            try:
                self._run("stop", check=False)
            except BaseException:
                pass
            self._kill_recorded()
        _LIVE.discard(self)
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None

    def _kill_recorded(self):
        """Whatever `stop` left running (it was interrupted, or a process hung): SIGKILL by
        the pids the profile recorded."""
        run = os.path.join(self.profile_dir, "run")
        for path in glob.glob(os.path.join(run, "*.json")):
            try:
                with open(path) as fh:
                    pid = json.load(fh).get("pid")
            except (OSError, ValueError):
                continue
            if isinstance(pid, int) and pid > 0:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    # IPyparallel's coroutine names (``await cluster.start_and_connect()`` in notebooks):
    # the sync calls, in a thread.

    async def start_cluster(self):
        return await asyncio.to_thread(self.start_cluster_sync)

    async def start_and_connect(self, activate=False):
        return await asyncio.to_thread(self.start_and_connect_sync, activate)

    async def connect_client(self, **kwargs):
        return await asyncio.to_thread(self.connect_client_sync, **kwargs)

    async def stop_cluster(self):
        return await asyncio.to_thread(self.stop_cluster_sync)

    async def __aenter__(self):
        return await self.start_and_connect()

    async def __aexit__(self, *exc):
        await self.stop_cluster()

    def __enter__(self):
        return self.start_and_connect_sync()

    def __exit__(self, *exc):
        self.stop_cluster_sync()

    def __repr__(self):
        return "<ferrocluster.Cluster n=%s profile=%r dir=%s%s>" % (
            self.n, self.profile, self.cluster_dir, " running" if self._started else "")

