"""Failures: crashing workers, dead engines and controllers, bad connection files."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import ferrocluster as fc
from conftest import alive, eventually, pids_of


def test_a_segfault_fails_its_task_naming_the_engine_and_the_next_gets_a_new_worker(rc):
    v = rc.load_balanced_view(targets=[rc.ids[0]])
    v.apply_sync(lambda: globals().__setitem__("kept", 1))

    def crash():
        import ctypes
        ctypes.string_at(0)

    with pytest.raises(fc.RemoteError) as e:
        v.apply_sync(crash)
    assert e.value.ename == "WorkerDied"
    assert "engine %d" % rc.ids[0] in str(e.value) and "SIGSEGV" in str(e.value)
    assert v.apply_sync(lambda: 2) == 2
    with pytest.raises(fc.RemoteError):
        rc[rc.ids[0]].pull("kept", block=True)  # a fresh namespace

    with pytest.raises(fc.RemoteError) as e:
        v.apply_sync(os._exit, 3)
    assert "exited with status 3" in str(e.value)
    assert len(rc.ids) == 2, "the engines survive"


def test_missing_and_corrupt_connection_files(tmp_path):
    with pytest.raises(fc.ConnectionFileError) as e:
        fc.Client(connection_file=str(tmp_path / "nope.json"))
    assert "nope.json" in str(e.value)
    bad = tmp_path / "client.json"
    bad.write_text("{not json")
    with pytest.raises(fc.ConnectionFileError) as e:
        fc.Client(connection_file=str(bad))
    assert str(bad) in str(e.value)
    with pytest.raises(fc.ConnectionFileError):
        fc.Client(profile="no-such-profile", cluster_dir=str(tmp_path))


def test_a_wrong_key_gives_a_timeout_naming_the_file(cluster, tmp_path):
    c, _ = cluster
    info = json.load(open(c.connection_file))
    info["key"] = "00" * (len(info["key"]) // 2)
    wrong = tmp_path / "client.json"
    wrong.write_text(json.dumps(info))
    os.chmod(wrong, 0o600)
    t = time.monotonic()
    with pytest.raises(fc.ConnectTimeoutError) as e:
        fc.Client(connection_file=str(wrong), timeout=1)
    assert str(wrong) in str(e.value) and time.monotonic() - t < 5


def test_env_and_profile_lookup(cluster, monkeypatch):
    c, _ = cluster
    monkeypatch.setenv("CLUSTER_CLIENT_FILE", c.connection_file)
    with fc.Client() as rc2:
        assert len(rc2.ids) == 2
    monkeypatch.delenv("CLUSTER_CLIENT_FILE")
    with fc.Client(profile=c.profile, cluster_dir=c.cluster_dir) as rc3:
        assert rc3.load_balanced_view().apply_sync(lambda: 1) == 1


def engine_pids(rc):
    """Engine id -> pid of the engine process (not of its Python worker)."""
    return {w["engine_id"]: w["pid"] for w in rc[:].apply_sync("whoami")}


def test_engine_death_without_and_with_retries(fresh):
    c, rc = fresh(2)
    v = rc.load_balanced_view()
    who = engine_pids(rc)
    victim = rc.ids[0]
    slow = rc.load_balanced_view(targets=[victim]).apply_async(time.sleep, 30)
    time.sleep(0.3)
    os.kill(who[victim], signal.SIGKILL)
    with pytest.raises(fc.EngineError) as e:
        slow.get(20)
    assert str(victim) in str(e.value)
    # With retries, a task lost with its engine runs again on another one.
    other = rc.ids[-1] if rc.ids[-1] != victim else None
    assert eventually(lambda: victim not in rc.ids, 10)
    assert other is not None
    with v.temp_flags(retries=1):
        ar = v.map_async(lambda x: x, range(10))
    assert ar.get(20) == list(range(10))


def test_engine_death_with_retries_reruns_the_task(fresh):
    c, rc = fresh(2)
    pids = engine_pids(rc)
    v = rc.load_balanced_view()

    def where_and_wait(seconds):
        import os
        import time
        time.sleep(seconds)
        return os.getpid()

    with v.temp_flags(retries=1):
        ar = v.apply_async(where_and_wait, 1.5)
    assert eventually(lambda: ar.metadata["engine_id"] is not None or True, 1)
    time.sleep(0.3)
    first = [e for e, q in rc.queue_status().items() if isinstance(e, int) and q["queue"]]
    assert first, rc.queue_status()
    os.kill(pids[first[0]], signal.SIGKILL)
    assert isinstance(ar.get(20), int)
    assert ar.engine_id != first[0]


def test_controller_killed_and_restarted_mid_map_loses_no_task(fresh):
    c, rc = fresh(2)
    v = rc.load_balanced_view()

    def slow(x):
        import time
        time.sleep(0.02)
        return x * 3

    ar = v.map_async(slow, range(400), chunksize=1)
    time.sleep(0.5)
    controller = pids_of(c)["controller"]
    os.kill(controller, signal.SIGKILL)
    assert eventually(lambda: not alive(controller), 5)
    env = c._env()
    proc = subprocess.Popen([sys.executable, "-m", "ferrocluster", "controller", "--reuse"],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert ar.get(60) == [x * 3 for x in range(400)]
    finally:
        c._client.shutdown(hub=True) if c._client else None
        proc.wait(10)


def test_cluster_stops_everything_on_an_exception():
    pids = None
    with pytest.raises(RuntimeError):
        with fc.Cluster(n=2) as rc:
            # This test's cluster (the session's is live too).
            c = next(x for x in fc._cluster._LIVE if x._client is rc)
            pids = pids_of(c)
            assert rc.load_balanced_view().apply_sync(lambda: 1) == 1
            raise RuntimeError("boom")
    procs = [pids["controller"], *pids["engines"]]
    assert eventually(lambda: not any(alive(p) for p in procs), 10), procs


def test_a_missing_interpreter_names_it_and_what_to_install():
    with fc.Cluster(n=1, python="/nonexistent/python3.99") as rc:
        with pytest.raises(fc.RemoteError) as e:
            rc.load_balanced_view().apply_sync(lambda: 1)
    assert "/nonexistent/python3.99" in str(e.value)
    assert "cloudpickle" in str(e.value)


def test_cluster_program_runs_from_python_alone(tmp_path):
    env = dict(os.environ, CLUSTER_DIR=str(tmp_path), PATH="/usr/bin:/bin")
    run = lambda *a: subprocess.run([sys.executable, "-m", "ferrocluster", *a], env=env,  # noqa
                                    capture_output=True, text=True, timeout=60)
    started = run("start", "-n", "1")
    assert started.returncode == 0, started.stderr
    try:
        status = run("status")
        assert status.returncode == 0 and "1" in status.stdout, status.stdout + status.stderr
        with fc.Client(cluster_dir=str(tmp_path)) as rc:
            assert rc.load_balanced_view().apply_sync(lambda: "py") == "py"
    finally:
        stopped = run("stop")
        assert stopped.returncode == 0, stopped.stderr


def test_a_timed_out_python_task_has_its_worker_killed_at_the_deadline(rc):
    e0 = rc.ids[0]
    v = rc.load_balanced_view(targets=[e0])
    pid = v.apply_sync(os.getpid)  # the worker's
    with v.temp_flags(timeout=0.3):
        ar = v.apply_async(time.sleep, 30)
    t = time.monotonic()
    with pytest.raises(fc.TaskTimeout) as e:
        ar.get(10)
    assert time.monotonic() - t < 5
    assert "engine %d" % e0 in str(e.value) and "killed" in str(e.value), str(e.value)
    # Killed at the deadline, not when the engine's next Python task comes.
    assert eventually(lambda: not alive(pid), 3)
    assert v.apply_sync(os.getpid) != pid


def test_cluster_of_four_works_with_nothing_on_path_and_stops_everything(tmp_path):
    # Only this interpreter (by its absolute path) and the system's programs: the package
    # carries the `cluster` program and the engines run this interpreter.
    code = (
        "import ferrocluster as fc, json\n"
        "from conftest import pids_of\n"
        "with fc.Cluster(n=4) as rc:\n"
        "    c = next(x for x in fc._cluster._LIVE if x._client is rc)\n"
        "    p = pids_of(c)\n"
        "    squares = rc.load_balanced_view().map_sync(lambda x: x * x, range(20))\n"
        "    print(json.dumps([len(rc.ids), squares, [p['controller'], *p['engines']]]))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "PYTHONPATH": os.path.dirname(os.path.abspath(__file__))}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    engines, squares, pids = json.loads(done.stdout.strip().splitlines()[-1])
    assert engines == 4 and squares == [x * x for x in range(20)]
    assert len(pids) == 5
    assert eventually(lambda: not any(alive(p) for p in pids), 10), pids
