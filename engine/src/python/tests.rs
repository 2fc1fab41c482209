//! Runs real Python workers (the `python3` on PATH, or `CLUSTER_PYTHON`). Skipped, with a
//! note, where that interpreter lacks cloudpickle.

use super::*;
use crate::context::Store;
use protocol::EngineId;
use std::process::Command;

fn python() -> Option<OsString> {
    let py = interpreter(None);
    let ok = Command::new(&py)
        .args(["-c", "import cloudpickle"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: {py:?} has no cloudpickle");
        return None;
    }
    Some(py)
}

/// `pickle.dumps(eval(expr))` by the test's Python, with `import`s of `modules` first.
fn pickled(py: &OsString, modules: &str, expr: &str) -> Vec<u8> {
    let code = format!(
        "import pickle, sys{}{modules}\nsys.stdout.buffer.write(pickle.dumps({expr}))",
        if modules.is_empty() { "" } else { ", " }
    );
    let out = Command::new(py).args(["-c", &code]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `repr(pickle.loads(bytes))` by the test's Python.
fn unpickled(py: &OsString, bytes: &[u8]) -> String {
    let mut child = Command::new(py)
        .args([
            "-c",
            "import pickle, sys; print(repr(pickle.loads(sys.stdin.buffer.read())), end='')",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[derive(Serialize)]
struct Req<'a> {
    op: &'a str,
    #[serde(with = "serde_bytes")]
    function: &'a [u8],
    #[serde(with = "serde_bytes")]
    args: &'a [u8],
}

fn req(op: &str, function: &[u8], args: &[u8]) -> Vec<u8> {
    protocol::encode(&Req { op, function, args }).unwrap()
}

#[derive(Deserialize, Debug)]
struct Ok_ {
    #[serde(with = "serde_bytes")]
    value: Vec<u8>,
    stdout: String,
}

#[derive(Deserialize, Debug)]
struct Err_ {
    ename: String,
    traceback: String,
}

fn ctx() -> Context {
    Context::new(EngineId(3), Arc::new(Store::default()))
}

#[test]
fn calls_maps_output_and_the_namespace() {
    let Some(py) = python() else { return };
    let rt = Runtime::new(py.clone());
    let add = pickled(&py, "operator", "operator.add");
    let out = rt
        .run(
            &ctx(),
            &req("call", &add, &pickled(&py, "", "((2, 3), {})")),
        )
        .unwrap();
    let out: Ok_ = protocol::decode(&out).unwrap();
    assert_eq!(unpickled(&py, &out.value), "5");

    // The function is cached by the worker: a second call sends it again on the wire but
    // not down the pipe, and still works.
    let out = rt
        .run(
            &ctx(),
            &req("call", &add, &pickled(&py, "", "(('a', 'b'), {})")),
        )
        .unwrap();
    let out: Ok_ = protocol::decode(&out).unwrap();
    assert_eq!(unpickled(&py, &out.value), "'ab'");

    let neg = pickled(&py, "operator", "operator.neg");
    let out = rt
        .run(
            &ctx(),
            &req("map", &neg, &pickled(&py, "", "([1, 2], False)")),
        )
        .unwrap();
    let out: Ok_ = protocol::decode(&out).unwrap();
    assert_eq!(unpickled(&py, &out.value), "[-1, -2]");

    let print = pickled(&py, "builtins", "builtins.print");
    let out = rt
        .run(
            &ctx(),
            &req("call", &print, &pickled(&py, "", "(('hi',), {})")),
        )
        .unwrap();
    let out: Ok_ = protocol::decode(&out).unwrap();
    assert_eq!(out.stdout, "hi\n");

    rt.run(&ctx(), &req("push", b"", &pickled(&py, "", "{'a': 5}")))
        .unwrap();
    rt.run(&ctx(), &req("execute", b"", b"b = a + 1\nprint('side')"))
        .unwrap();
    let out = rt
        .run(&ctx(), &req("pull", b"", &pickled(&py, "", "['a', 'b']")))
        .unwrap();
    let out: Ok_ = protocol::decode(&out).unwrap();
    assert_eq!(unpickled(&py, &out.value), "[5, 6]");
}

#[test]
fn exceptions_carry_type_message_and_traceback() {
    let Some(py) = python() else { return };
    let rt = Runtime::new(py.clone());
    let div = pickled(&py, "operator", "operator.truediv");
    let err = rt
        .run(
            &ctx(),
            &req("call", &div, &pickled(&py, "", "((1, 0), {})")),
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Remote);
    assert!(
        err.message
            .starts_with("ZeroDivisionError: division by zero"),
        "{}",
        err.message
    );
    let details: Err_ = protocol::decode(&err.payload).unwrap();
    assert_eq!(details.ename, "ZeroDivisionError");
    assert!(
        details.traceback.contains("Traceback"),
        "{}",
        details.traceback
    );

    let err = rt
        .run(&ctx(), &req("pull", b"", &pickled(&py, "", "'nothing'")))
        .unwrap_err();
    assert!(err.message.starts_with("NameError"), "{}", err.message);

    let err = rt.run(&ctx(), b"\x01\x02").unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadArguments);
    let err = rt.run(&ctx(), &req("dance", b"", b"")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadArguments);
}

#[test]
fn a_dying_worker_fails_its_task_and_the_next_gets_a_fresh_one() {
    let Some(py) = python() else { return };
    let rt = Runtime::new(py.clone());
    rt.run(&ctx(), &req("push", b"", &pickled(&py, "", "{'a': 5}")))
        .unwrap();
    let exit = pickled(&py, "os", "os._exit");
    let err = rt
        .run(&ctx(), &req("call", &exit, &pickled(&py, "", "((3,), {})")))
        .unwrap_err();
    assert!(err.message.contains("engine 3"), "{}", err.message);
    assert!(
        err.message.contains("exited with status 3"),
        "{}",
        err.message
    );
    let details: Err_ = protocol::decode(&err.payload).unwrap();
    assert_eq!(details.ename, "WorkerDied");

    let segv = pickled(&py, "ctypes", "ctypes.string_at");
    let err = rt
        .run(&ctx(), &req("call", &segv, &pickled(&py, "", "((0,), {})")))
        .unwrap_err();
    assert!(err.message.contains("SIGSEGV"), "{}", err.message);

    // A fresh worker, with an empty namespace.
    let err = rt
        .run(&ctx(), &req("pull", b"", &pickled(&py, "", "'a'")))
        .unwrap_err();
    assert!(err.message.starts_with("NameError"), "{}", err.message);
}

#[test]
fn a_missing_interpreter_names_itself_and_what_to_do() {
    let rt = Runtime::new("/nonexistent/bin/python9".into());
    let err = rt.run(&ctx(), &req("execute", b"", b"pass")).unwrap_err();
    assert!(
        err.message.contains("/nonexistent/bin/python9"),
        "{}",
        err.message
    );
    assert!(err.message.contains("--python"), "{}", err.message);
    assert!(err.message.contains("engine 3"), "{}", err.message);
    // Not a Python at all.
    let rt = Runtime::new("false".into());
    let err = rt.run(&ctx(), &req("execute", b"", b"pass")).unwrap_err();
    assert!(err.message.contains("Python 3"), "{}", err.message);
}

#[test]
fn an_interpreter_without_cloudpickle_says_what_to_install() {
    let Some(py) = python() else { return };
    // A Python started with -I (isolated) still finds cloudpickle in site-packages, so hide
    // it with a shim that fails to import.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cloudpickle.py"),
        "raise ImportError('hidden')",
    )
    .unwrap();
    let shim = dir.path().join("py");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\nPYTHONPATH={} exec {} \"$@\"\n",
            dir.path().display(),
            py.to_string_lossy()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let rt = Runtime::new(shim.clone().into());
    let err = rt.run(&ctx(), &req("execute", b"", b"pass")).unwrap_err();
    assert!(err.message.contains("cloudpickle"), "{}", err.message);
    assert!(
        err.message.contains("pip install cloudpickle"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains(&*shim.to_string_lossy()),
        "{}",
        err.message
    );
}

#[test]
fn a_batch_keeps_each_tasks_result_output_and_failure() {
    let Some(py) = python() else { return };
    let rt = Runtime::new(py.clone());
    let print = pickled(&py, "builtins", "builtins.print");
    let add = pickled(&py, "operator", "operator.add");
    let div = pickled(&py, "operator", "operator.truediv");
    let neg = pickled(&py, "operator", "operator.neg");
    let exit = pickled(&py, "os", "os._exit");
    let tasks = [
        req("call", &print, &pickled(&py, "", "(('one',), {})")),
        req("call", &add, &pickled(&py, "", "((2, 3), {})")),
        req("call", &div, &pickled(&py, "", "((1, 0), {})")),
        req("push", b"", &pickled(&py, "", "{'a': 5}")),
        req("execute", b"", b"print('a is', a)"),
        // The same function again in the batch: its pickle goes down the pipe once.
        req("call", &add, &pickled(&py, "", "((4, 5), {})")),
        b"\x01\x02".to_vec(),
        req("call", &exit, &pickled(&py, "", "((4,), {})")),
        // After the death: a fresh worker, with an empty namespace.
        req("pull", b"", &pickled(&py, "", "'a'")),
        req("map", &neg, &pickled(&py, "", "([1, 2], False)")),
        req("call", &add, &pickled(&py, "", "((1, 1), {})")),
    ];
    let refs: Vec<&[u8]> = tasks.iter().map(Vec::as_slice).collect();
    let ran = rt.run_batch(&ctx(), &refs);
    assert_eq!(ran.len(), tasks.len());
    let ok = |i: usize| -> Ok_ {
        let bytes = ran[i]
            .result
            .as_ref()
            .unwrap_or_else(|e| panic!("task {i}: {e:?}"));
        protocol::decode(bytes).unwrap()
    };
    let err = |i: usize| -> &CallError {
        ran[i]
            .result
            .as_ref()
            .err()
            .unwrap_or_else(|| panic!("task {i} should fail"))
    };
    assert_eq!(ok(0).stdout, "one\n");
    assert_eq!(unpickled(&py, &ok(1).value), "5");
    assert_eq!(ok(1).stdout, "", "each task's output is its own");
    assert!(
        err(2).message.starts_with("ZeroDivisionError"),
        "{:?}",
        err(2)
    );
    ok(3);
    assert_eq!(ok(4).stdout, "a is 5\n");
    assert_eq!(unpickled(&py, &ok(5).value), "9");
    assert_eq!(err(6).kind, ErrorKind::BadArguments);
    let died = err(7);
    assert!(died.message.contains("exited with status 4") && died.message.contains("engine 3"));
    let details: Err_ = protocol::decode(&died.payload).unwrap();
    assert_eq!(details.ename, "WorkerDied");
    assert!(err(8).message.starts_with("NameError"), "{:?}", err(8));
    assert_eq!(unpickled(&py, &ok(9).value), "[-1, -2]");
    assert_eq!(
        unpickled(&py, &ok(10).value),
        "2",
        "the function is sent again"
    );
    // The tasks that ran start one after the other (the undecodable one never ran).
    let starts: Vec<Duration> = (0..ran.len())
        .filter(|&i| i != 6)
        .map(|i| ran[i].offset)
        .collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
}

#[test]
fn a_death_among_held_back_replies_fails_only_the_task_that_kills_the_worker() {
    let Some(py) = python() else { return };
    let rt = Runtime::new(py.clone());
    let add = pickled(&py, "operator", "operator.add");
    let exit = pickled(&py, "os", "os._exit");
    // Quick calls: their replies are held back, so the death leaves several unanswered.
    let mut tasks: Vec<Vec<u8>> = (0..20)
        .map(|i| {
            req(
                "call",
                &add,
                &pickled(&py, "", &format!("(({i}, 1), {{}})")),
            )
        })
        .collect();
    tasks.insert(10, req("call", &exit, &pickled(&py, "", "((5,), {})")));
    let refs: Vec<&[u8]> = tasks.iter().map(Vec::as_slice).collect();
    let ran = rt.run_batch(&ctx(), &refs);
    for (i, r) in ran.iter().enumerate() {
        match (&r.result, i) {
            (Err(e), 10) => assert!(e.message.contains("exited with status 5"), "{e:?}"),
            (Ok(bytes), _) if i != 10 => {
                let out: Ok_ = protocol::decode(bytes).unwrap();
                let want = if i < 10 { i + 1 } else { i };
                assert_eq!(unpickled(&py, &out.value), want.to_string(), "task {i}");
            }
            (r, _) => panic!("task {i}: {r:?}"),
        }
    }
}

#[test]
fn a_function_that_does_not_unpickle_fails_every_task_of_it() {
    let Some(py) = python() else { return };
    let rt = Runtime::new(py.clone());
    // GLOBAL of a module no one has.
    let missing = b"cno_such_module_here\nf\n.".to_vec();
    let args = pickled(&py, "", "((1,), {})");
    let tasks = [req("call", &missing, &args), req("call", &missing, &args)];
    let refs: Vec<&[u8]> = tasks.iter().map(Vec::as_slice).collect();
    for r in rt.run_batch(&ctx(), &refs) {
        let e = r.result.unwrap_err();
        assert!(
            e.message.starts_with("ModuleNotFoundError"),
            "{}",
            e.message
        );
    }
    let e = rt.run(&ctx(), &req("call", &missing, &args)).unwrap_err();
    assert!(
        e.message.starts_with("ModuleNotFoundError"),
        "{}",
        e.message
    );
}

#[test]
fn a_busy_worker_can_be_killed_and_the_next_task_gets_a_fresh_one() {
    let Some(py) = python() else { return };
    let rt = Arc::new(Runtime::new(py.clone()));
    assert!(rt.kill_busy().is_none(), "nothing runs");
    rt.run(&ctx(), &req("push", b"", &pickled(&py, "", "{'a': 5}")))
        .unwrap();
    let sleep = pickled(&py, "time", "time.sleep");
    let args = pickled(&py, "", "((30,), {})");
    let task = req("call", &sleep, &args);
    let runner = {
        let rt = Arc::clone(&rt);
        std::thread::spawn(move || rt.run(&ctx(), &task))
    };
    let start = Instant::now();
    let said = loop {
        if let Some(said) = rt.kill_busy() {
            break said;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never busy");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(said.contains("was killed"), "{said}");
    let err = runner.join().unwrap().unwrap_err();
    assert!(err.message.contains("SIGKILL"), "{}", err.message);
    assert!(start.elapsed() < Duration::from_secs(5));
    let err = rt
        .run(&ctx(), &req("pull", b"", &pickled(&py, "", "'a'")))
        .unwrap_err();
    assert!(
        err.message.starts_with("NameError"),
        "a fresh worker: {}",
        err.message
    );
}

/// Not a test: prints one-item task rates of the worker, one frame a task against batch
/// frames, interleaved, best and median of 7 rounds
/// (`cargo test -p cluster-engine --release -- --ignored --nocapture worker_rates`).
#[test]
#[ignore]
fn worker_rates() {
    let Some(py) = python() else { return };
    let rt = Runtime::new(py.clone());
    let f = pickled(&py, "operator", "operator.pos");
    let task = req("map", &f, &pickled(&py, "", "([1], False)"));
    let n = 10_000;
    rt.run(&ctx(), &task).unwrap();
    let sizes = [1, 4, 16, 64];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); sizes.len()];
    for _ in 0..7 {
        for (k, &size) in sizes.iter().enumerate() {
            let start = Instant::now();
            let mut done = 0;
            while done < n {
                if size == 1 {
                    rt.run(&ctx(), &task).unwrap();
                } else {
                    let refs: Vec<&[u8]> = (0..size).map(|_| task.as_slice()).collect();
                    rt.run_batch(&ctx(), &refs);
                }
                done += size;
            }
            rates[k].push(done as f64 / start.elapsed().as_secs_f64());
        }
    }
    for (size, mut r) in sizes.into_iter().zip(rates) {
        r.sort_by(f64::total_cmp);
        println!(
            "batch {size:>2}: best {:>7.0} tasks/s ({:.1} µs a task), median {:>7.0}",
            r[r.len() - 1],
            1e6 / r[r.len() - 1],
            r[r.len() / 2]
        );
    }
}

#[test]
fn tasks_find_the_cluster_and_the_worker_closes_their_clients_when_the_engine_stops() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let client_file = dir.path().join("client.json");
    std::fs::write(&client_file, "{}").unwrap();
    let marker = dir.path().join("closed");
    let mut rt = Runtime::new(py.clone());
    rt.client_file = Some(client_file.clone());
    // A stand-in for the package's client module: its close_all() leaves a marker.
    let code = format!(
        "import os, sys, types\n\
         m = types.ModuleType('ferrocluster._client')\n\
         m.close_all = lambda: open({marker:?}, 'w').close()\n\
         sys.modules['ferrocluster._client'] = m\n\
         env = (os.environ.get('CLUSTER_TASK_ENGINE'), os.environ.get('CLUSTER_CLIENT_FILE'))\n"
    );
    rt.run(&ctx(), &req("execute", b"", code.as_bytes()))
        .unwrap();
    let out = rt
        .run(&ctx(), &req("pull", b"", &pickled(&py, "", "'env'")))
        .unwrap();
    let out: Ok_ = protocol::decode(&out).unwrap();
    assert_eq!(
        unpickled(&py, &out.value),
        format!("('3', '{}')", client_file.display())
    );
    assert!(!marker.exists());
    drop(rt);
    assert!(
        marker.exists(),
        "the worker closes its clients before it exits"
    );
}

#[test]
fn without_a_client_file_beside_engine_json_tasks_get_no_client_file() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut rt = Runtime::new(py.clone());
    rt.client_file = Some(dir.path().join("client.json"));
    rt.run(
        &ctx(),
        &req(
            "execute",
            b"",
            b"import os\nfile = os.environ.get('CLUSTER_CLIENT_FILE', 'unset')",
        ),
    )
    .unwrap();
    let out = rt
        .run(&ctx(), &req("pull", b"", &pickled(&py, "", "'file'")))
        .unwrap();
    let out: Ok_ = protocol::decode(&out).unwrap();
    let inherited = std::env::var("CLUSTER_CLIENT_FILE").unwrap_or_else(|_| "unset".into());
    assert_eq!(
        unpickled(&py, &out.value),
        format!("{inherited:?}").replace('"', "'")
    );
}
