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
