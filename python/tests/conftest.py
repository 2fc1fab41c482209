"""Real clusters on loopback for the tests: every process is stopped by pid afterwards."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

import ferrocluster as fc


def pids_of(cluster):
    """{"controller": pid, "engines": [pids]} from the profile's run/ records."""
    run = os.path.join(cluster.profile_dir, "run")
    out = {"controller": None, "engines": []}
    for name in os.listdir(run):
        with open(os.path.join(run, name)) as fh:
            rec = json.load(fh)
        if name == "controller.json":
            out["controller"] = rec["pid"]
        elif name.startswith("engine-"):
            out["engines"].append(rec["pid"])
    return out


def alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A zombie (exited, not yet reaped) counts as gone.
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def eventually(cond, timeout=10.0, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def kill_all(cluster, pids):
    for pid in [pids["controller"], *pids["engines"]]:
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def processes_under(path):
    """Pids of live processes whose command line or environment mention ``path``."""
    key = path.encode()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as fh:
                text = fh.read()
            with open("/proc/%s/environ" % entry, "rb") as fh:
                text += fh.read()
        except OSError:
            continue
        if key in text and alive(int(entry)):
            out.append(int(entry))
    return out


@pytest.fixture(scope="session", autouse=True)
def every_process_is_stopped(tmp_path_factory):
    """Every cluster of the suite lives under pytest's temporary folder (``Cluster()``'s
    own folders too); at the end no process may be left that mentions it."""
    base = str(tmp_path_factory.getbasetemp())
    saved = tempfile.tempdir
    tempfile.tempdir = str(tmp_path_factory.mktemp("clusters"))
    yield
    tempfile.tempdir = saved
    fc._cluster._stop_leftovers()
    eventually(lambda: not processes_under(base), 10)
    left = processes_under(base)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    assert not left, "processes left running by the suite: %s" % left


@pytest.fixture(scope="session")
def cluster():
    c = fc.Cluster(n=2)
    rc = c.start_and_connect_sync()
    pids = pids_of(c)
    yield c, rc
    c.stop_cluster_sync()
    assert eventually(lambda: not any(alive(p) for p in [pids["controller"], *pids["engines"]]))
    kill_all(c, pids)


@pytest.fixture
def rc(cluster):
    return cluster[1]


@pytest.fixture
def fresh():
    """A cluster of its own for tests that kill processes."""
    made = []

    def make(n=2, **kw):
        c = fc.Cluster(n=n, **kw)
        rc = c.start_and_connect_sync()
        made.append((c, pids_of(c)))
        return c, rc

    yield make
    for c, pids in made:
        c.stop_cluster_sync()
        kill_all(c, pids)


def run_python(code, **kw):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, **kw)
