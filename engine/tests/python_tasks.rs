//! Python tasks through a real engine against a fake controller: a task past its time limit
//! has its worker killed at the deadline, and the next Python task gets a fresh worker.
//! Uses `CLUSTER_PYTHON`, else `python3`; skipped, with a note, without cloudpickle there.

use cluster_engine::{Engine, EngineOptions, PYTHON_ENV};
use protocol::{Assignment, ClientId, ErrorKind, FromEngine, Status, TaskId, ToEngine, Work};
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::FakeController;

fn python() -> Option<String> {
    let py = std::env::var(PYTHON_ENV).unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import cloudpickle"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: {py:?} has no cloudpickle");
        return None;
    }
    Some(py)
}

/// `pickle.dumps(eval(expr))` by `py`.
fn pickled(py: &str, expr: &str) -> Vec<u8> {
    let code =
        format!("import pickle, sys, os, time\nsys.stdout.buffer.write(pickle.dumps({expr}))");
    let out = Command::new(py).args(["-c", &code]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[derive(serde::Serialize)]
struct Request<'a> {
    op: &'a str,
    #[serde(with = "serde_bytes")]
    function: &'a [u8],
    #[serde(with = "serde_bytes")]
    args: &'a [u8],
}

#[derive(serde::Deserialize)]
struct Reply {
    #[serde(with = "serde_bytes")]
    value: Vec<u8>,
}

fn call(
    py: &str,
    seq: u64,
    function: &str,
    args: &str,
    timeout_ms: Option<u64>,
) -> (Assignment, Vec<u8>) {
    let f = pickled(py, function);
    let a = pickled(py, args);
    let payload = protocol::encode(&Request {
        op: "call",
        function: &f,
        args: &a,
    })
    .unwrap();
    let task = Assignment {
        id: TaskId::new(ClientId(3), seq),
        work: Work::Call {
            function: "python".into(),
        },
        timeout_ms,
        start_within_ms: None,
    };
    (task, payload)
}

/// The next outcome's status, and its payload.
fn next_outcome(fake: &mut FakeController) -> (TaskId, Status, Vec<u8>) {
    loop {
        let got = fake.recv_engine();
        if let FromEngine::Results { results } = got.msg {
            let o = results.into_iter().next().unwrap();
            return (
                o.id,
                o.status,
                got.payloads.into_iter().next().unwrap_or_default(),
            );
        }
    }
}

fn alive(pid: i32) -> bool {
    // A zombie (exited, not yet reaped) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            != Some("Z")
    })
}

#[test]
fn a_python_task_past_its_time_limit_has_its_worker_killed_at_the_deadline() {
    let Some(py) = python() else { return };
    let mut fake = FakeController::new();
    let options = EngineOptions::new(fake.file.clone());
    let engine_py = py.clone();
    let thread =
        std::thread::spawn(move || Engine::builder().python(engine_py).build().run(options));
    let engine = fake.register_engine(4, 1000);

    // The worker's pid, from the worker itself.
    let (task, payload) = call(&py, 1, "os.getpid", "((), {})", None);
    fake.send_engine(
        &engine.route,
        &ToEngine::Tasks { tasks: vec![task] },
        &[&payload],
    );
    let (_, status, reply) = next_outcome(&mut fake);
    assert_eq!(status, Status::Ok);
    let reply: Reply = protocol::decode(&reply).unwrap();
    let pid: i32 = {
        let out = Command::new(&py)
            .args([
                "-c",
                "import pickle, sys; print(pickle.loads(sys.stdin.buffer.read()))",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(&reply.value)?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    assert!(alive(pid));

    let (task, payload) = call(&py, 2, "time.sleep", "((30,), {})", Some(300));
    let sent = Instant::now();
    fake.send_engine(
        &engine.route,
        &ToEngine::Tasks { tasks: vec![task] },
        &[&payload],
    );
    let (id, status, _) = next_outcome(&mut fake);
    let took = sent.elapsed();
    assert_eq!(id, TaskId::new(ClientId(3), 2));
    match status {
        Status::Err(e) => {
            assert_eq!(e.kind, ErrorKind::Timeout, "{e:?}");
            assert_eq!(e.engine, Some(engine.id));
            assert!(
                e.message.contains("engine 4") && e.message.contains("killed"),
                "{}",
                e.message
            );
        }
        Status::Ok => panic!("sleep(30) cannot have finished"),
    }
    assert!(took < Duration::from_secs(3), "{took:?}");
    // Killed at the deadline, not when the next Python task comes.
    let deadline = Instant::now() + Duration::from_secs(3);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !alive(pid),
        "worker {pid} still runs after its task's time limit"
    );

    // The engine is free at once, with a fresh worker.
    let (task, payload) = call(&py, 3, "os.getpid", "((), {})", None);
    fake.send_engine(
        &engine.route,
        &ToEngine::Tasks { tasks: vec![task] },
        &[&payload],
    );
    let (_, status, _) = next_outcome(&mut fake);
    assert_eq!(status, Status::Ok);

    fake.send_engine(&engine.route, &ToEngine::Shutdown, &[]);
    thread.join().unwrap().unwrap();
}
