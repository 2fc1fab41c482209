//! Tests against a small fake controller: a ROUTER socket on 127.0.0.1 that answers hello,
//! status, purge and shutdown, and "runs" tasks with a fixed set of pretend functions.

use crate::*;
use protocol::{
    ControllerStatus, DropCounts, EngineInfo, EngineStatus, FromClient, Status, TaskCounts,
    TaskError, TaskOutcome, TaskRequest, ToClient, Work,
};
use security::{Addresses, ConnectionInfo, Key, SIGNATURE_SCHEME};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use transport::{Context, Kind, Socket, Waitable};

const CLIENT_ID: u32 = 3;

#[derive(Clone)]
struct Config {
    engines: u32,
    /// Write this key into the connection file instead of the fake's own.
    file_key: Option<Key>,
    /// Answer each submit's tasks last first.
    reverse: bool,
    /// Outcomes per results message.
    batch: usize,
    /// Pause between results messages (to stream them slowly).
    pause: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            engines: 2,
            file_key: None,
            reverse: false,
            batch: 64,
            pause: Duration::ZERO,
        }
    }
}

struct Fake {
    address: String,
    file: PathBuf,
    _dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    submits: Arc<AtomicUsize>,
    tasks: Arc<AtomicUsize>,
    /// Results sent when the latest status request was answered.
    sent_at_status: Arc<AtomicUsize>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn fake(config: Config) -> Fake {
    let key = Key::generate();
    let ctx = Context::new();
    let sock = Socket::new(&ctx, Kind::Router, &key, None).unwrap();
    let address = sock.bind("tcp://127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("client.json");
    ConnectionInfo {
        protocol_version: protocol::PROTOCOL_VERSION,
        signature_scheme: SIGNATURE_SCHEME.into(),
        key: config.file_key.as_ref().unwrap_or(&key).to_hex(),
        addresses: Addresses {
            client: Some(address.clone()),
            ..Addresses::default()
        },
        location: "localhost".into(),
        controller_pid: std::process::id(),
    }
    .save(&file)
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let submits = Arc::new(AtomicUsize::new(0));
    let tasks = Arc::new(AtomicUsize::new(0));
    let sent_at_status = Arc::new(AtomicUsize::new(0));
    let state = FakeLoop {
        sock,
        config,
        stop: stop.clone(),
        submits: submits.clone(),
        tasks: tasks.clone(),
        sent_at_status: sent_at_status.clone(),
        queue: VecDeque::new(),
        sent: 0,
        address: address.clone(),
    };
    let thread = std::thread::spawn(move || state.run());
    Fake {
        address,
        file,
        _dir: dir,
        stop,
        thread: Some(thread),
        submits,
        tasks,
        sent_at_status,
    }
}

struct FakeLoop {
    sock: Socket,
    config: Config,
    stop: Arc<AtomicBool>,
    submits: Arc<AtomicUsize>,
    tasks: Arc<AtomicUsize>,
    sent_at_status: Arc<AtomicUsize>,
    queue: VecDeque<(Vec<u8>, TaskOutcome, Vec<u8>)>,
    sent: usize,
    address: String,
}

impl FakeLoop {
    fn run(mut self) {
        while !self.stop.load(Ordering::SeqCst) {
            let wait = if self.queue.is_empty() { 5 } else { 0 };
            transport::poll(&[Waitable::Socket(&self.sock)], wait).unwrap();
            while let Some(r) = self.sock.recv::<FromClient>().unwrap() {
                let route = r.route.unwrap();
                self.on_message(&route, r.msg, r.payloads);
            }
            self.stream();
        }
    }

    fn on_message(&mut self, route: &[u8], msg: FromClient, payloads: Vec<Vec<u8>>) {
        let answer = match msg {
            FromClient::Hello => ToClient::Welcome {
                client_id: ClientId(CLIENT_ID),
                engines: (0..self.config.engines)
                    .map(|i| EngineInfo {
                        id: EngineId(i),
                        host: "here".into(),
                        pid: i,
                        functions: vec![],
                    })
                    .collect(),
            },
            FromClient::Submit { tasks } => {
                self.submits.fetch_add(1, Ordering::SeqCst);
                self.tasks.fetch_add(tasks.len(), Ordering::SeqCst);
                let mut done: Vec<_> = tasks
                    .iter()
                    .zip(payloads)
                    .filter_map(|(t, p)| self.run_task(t, p))
                    .map(|(o, p)| (route.to_vec(), o, p))
                    .collect();
                if self.config.reverse {
                    done.reverse();
                }
                self.queue.extend(done);
                return;
            }
            FromClient::Status => {
                self.sent_at_status.store(self.sent, Ordering::SeqCst);
                ToClient::Status(Box::new(self.report()))
            }
            FromClient::Purge { .. } | FromClient::Shutdown { .. } => ToClient::Ack,
            FromClient::Fetch { ids } => ToClient::Pending {
                pending: vec![],
                unknown: ids,
            },
        };
        self.sock.send(Some(route), &answer, &[]).unwrap();
    }

    /// The pretend functions.
    fn run_task(&self, task: &TaskRequest, payload: Vec<u8>) -> Option<(TaskOutcome, Vec<u8>)> {
        let engine = task
            .options
            .targets
            .first()
            .copied()
            .unwrap_or(EngineId((task.id.0 % self.config.engines as u64) as u32));
        let fail = |kind, message: &str, engine| {
            Status::Err(TaskError {
                kind,
                message: message.into(),
                engine,
            })
        };
        let (status, value) = match &task.work {
            Work::Call { function } | Work::Map { function } => {
                let map = matches!(task.work, Work::Map { .. });
                match function.as_str() {
                    "echo" => (Status::Ok, payload),
                    "double" if map => {
                        let items: Vec<u64> = rmp_serde::from_slice(&payload).unwrap();
                        let out: Vec<u64> = items.iter().map(|x| x * 2).collect();
                        (Status::Ok, rmp_serde::to_vec_named(&out).unwrap())
                    }
                    "double" => {
                        let x: u64 = rmp_serde::from_slice(&payload).unwrap();
                        (Status::Ok, rmp_serde::to_vec_named(&(x * 2)).unwrap())
                    }
                    "fail_on_13" => {
                        let items: Vec<u64> = rmp_serde::from_slice(&payload).unwrap();
                        if items.contains(&13) {
                            (
                                fail(ErrorKind::Remote, "13 is unlucky", Some(engine)),
                                vec![],
                            )
                        } else {
                            (Status::Ok, payload)
                        }
                    }
                    "whoami" => (Status::Ok, rmp_serde::to_vec_named(&engine.0).unwrap()),
                    "fail" => (fail(ErrorKind::Remote, "boom", Some(engine)), vec![]),
                    "lost" => (
                        fail(ErrorKind::EngineLost, "engine 1 died", Some(engine)),
                        vec![],
                    ),
                    "hold" => return None,
                    _ => (
                        fail(ErrorKind::UnknownFunction, "no engine offers it", None),
                        vec![],
                    ),
                }
            }
            Work::Command(spec) => {
                let out = CommandOutput {
                    status: Some(0),
                    signal: None,
                    stdout: format!("{} {}", spec.program, spec.args.join(" ")).into_bytes(),
                    stderr: vec![],
                    truncated: false,
                };
                (Status::Ok, rmp_serde::to_vec_named(&out).unwrap())
            }
        };
        let outcome = TaskOutcome {
            id: task.id,
            engine: Some(engine),
            status,
            started_us: 1,
            elapsed_us: 1500,
        };
        Some((outcome, value))
    }

    /// Sends up to one batch of queued results.
    fn stream(&mut self) {
        if self.queue.is_empty() {
            return;
        }
        let n = self.config.batch.min(self.queue.len());
        let route = self.queue[0].0.clone();
        let mut results = Vec::new();
        let mut payloads = Vec::new();
        while results.len() < n && self.queue.front().is_some_and(|q| q.0 == route) {
            let (_, outcome, payload) = self.queue.pop_front().unwrap();
            results.push(outcome);
            payloads.push(payload);
        }
        self.sent += results.len();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        self.sock
            .send(Some(&route), &ToClient::Results { results }, &refs)
            .unwrap();
        if !self.config.pause.is_zero() {
            std::thread::sleep(self.config.pause);
        }
    }

    fn report(&self) -> StatusReport {
        StatusReport {
            controller: ControllerStatus {
                pid: 1,
                host: "here".into(),
                scheduler: "leastload".into(),
                hwm: "auto".into(),
                engine_address: String::new(),
                client_address: self.address.clone(),
                heartbeat_address: String::new(),
                notify_address: String::new(),
                uptime_s: 1.0,
                clients: 1,
            },
            engines: (0..self.config.engines)
                .map(|i| EngineStatus {
                    id: EngineId(i),
                    host: "here".into(),
                    pid: i,
                    state: "alive".into(),
                    outstanding: 0,
                    completed: 0,
                    hwm: 1,
                })
                .collect(),
            tasks: TaskCounts::default(),
            dropped: DropCounts::default(),
        }
    }
}

fn quick() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_millis(300),
    }
}

const SECOND: Option<Duration> = Some(Duration::from_secs(5));

#[test]
fn hello_welcome_and_requests() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    assert_eq!(client.address(), f.address);
    assert_eq!(client.client_id(), ClientId(CLIENT_ID));
    assert_eq!(client.ids().unwrap(), vec![EngineId(0), EngineId(1)]);
    assert_eq!(
        client.wait_for_engines(2, Duration::from_secs(1)).unwrap(),
        vec![EngineId(0), EngineId(1)]
    );
    let err = client
        .wait_for_engines(3, Duration::from_millis(200))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }));
    assert!(err.to_string().contains("3 engines (2 registered"), "{err}");
    let report = client.status().unwrap();
    assert_eq!(report.controller.client_address, f.address);
    client.purge().unwrap();
    client.shutdown(false).unwrap();
}

#[test]
fn apply_round_trip_and_metadata() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let ar = view.apply::<_, u64>("double", &21u64).unwrap();
    assert_eq!(ar.id().client(), ClientId(CLIENT_ID));
    assert!(ar.wait(SECOND));
    assert!(ar.ready());
    assert!(ar.engine().is_some());
    assert_eq!(ar.elapsed(), Some(Duration::from_micros(1500)));
    assert_eq!(ar.get(SECOND).unwrap(), 42);

    let s: String = view.apply("echo", &"hi").unwrap().get(SECOND).unwrap();
    assert_eq!(s, "hi");
    // A result of the wrong type is a decode error naming the task.
    let ar = view.apply::<_, u64>("echo", &"text").unwrap();
    let id = ar.id();
    let err = ar.get(SECOND).unwrap_err();
    assert!(matches!(err, Error::Decode { .. }));
    assert!(err.to_string().contains(&id.to_string()), "{err}");

    let out = view
        .command(CommandSpec {
            program: "echo".into(),
            args: vec!["a".into()],
            ..Default::default()
        })
        .unwrap()
        .get(SECOND)
        .unwrap();
    assert!(out.success());
    assert_eq!(out.stdout, b"echo a");
}

#[test]
fn many_threads_share_one_client() {
    let f = fake(Config::default());
    let client = Arc::new(Client::connect_file(&f.file).unwrap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                let view = client.load_balanced_view();
                for i in 0..200u64 {
                    let x = t * 1000 + i;
                    let y: u64 = view.apply("double", &x).unwrap().get(SECOND).unwrap();
                    assert_eq!(y, 2 * x);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn map_keeps_order_across_chunks_answered_out_of_order() {
    let f = fake(Config {
        reverse: true,
        batch: 1,
        ..Config::default()
    });
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view().chunksize(7);
    let m = view.map::<_, u64>("double", 0..1000u64).unwrap();
    assert_eq!(m.len(), 1000);
    assert_eq!(m.tasks(), 143);
    assert!(m.wait(SECOND));
    assert_eq!(m.progress(), (1000, 1000));
    let out = m.get(SECOND).unwrap();
    assert_eq!(out, (0..1000u64).map(|x| 2 * x).collect::<Vec<_>>());
    assert_eq!(f.tasks.load(Ordering::SeqCst), 143);
    assert_eq!(f.submits.load(Ordering::SeqCst), 1);

    // One item per task.
    let m = client
        .load_balanced_view()
        .chunksize(1)
        .map::<_, u64>("double", [5u64, 6, 7])
        .unwrap();
    assert_eq!(m.tasks(), 3);
    assert_eq!(m.get(SECOND).unwrap(), vec![10, 12, 14]);

    // An empty map is ready at once and sends nothing.
    let m = view.map::<u64, u64>("double", []).unwrap();
    assert!(m.is_empty() && m.ready());
    assert_eq!(m.get(None).unwrap(), Vec::<u64>::new());
}

#[test]
fn automatic_chunking_makes_thirty_two_tasks_per_engine_in_one_message() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let m = client
        .load_balanced_view()
        .map::<_, ()>("echo", std::iter::repeat_n((), 10_000))
        .unwrap();
    assert_eq!(m.tasks(), 64);
    assert_eq!(m.get(SECOND).unwrap().len(), 10_000);
    assert_eq!(f.tasks.load(Ordering::SeqCst), 64);
    assert_eq!(f.submits.load(Ordering::SeqCst), 1);
}

#[test]
fn large_items_spread_over_several_submit_messages() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let items: Vec<String> = (0..10).map(|i| format!("{i}").repeat(300_000)).collect();
    let m = client
        .load_balanced_view()
        .map::<_, String>("echo", items.clone())
        .unwrap();
    assert_eq!(m.get(SECOND).unwrap(), items);
    assert!(f.submits.load(Ordering::SeqCst) >= 3);
}

#[test]
fn json_values_round_trip() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let value = serde_json::json!({
        "a": [1, 2.5, "x", null, true, -3],
        "b": {"nested": [u64::MAX]},
        "c": "text",
    });
    let back = view.apply_json("echo", value.clone()).unwrap().get(SECOND);
    assert_eq!(back.unwrap(), value);
    let items = vec![
        serde_json::json!(1),
        serde_json::json!("two"),
        serde_json::json!([3, {"four": 4.5}]),
    ];
    let back = view
        .chunksize(2)
        .map_json("echo", items.clone())
        .unwrap()
        .get(SECOND);
    assert_eq!(back.unwrap(), items);
}

#[test]
fn direct_view_runs_on_each_engine_in_order() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let ids = [EngineId(1), EngineId(0), EngineId(1)];
    let dv = client.direct_view(&ids);
    let results = dv.apply::<_, u32>("whoami", &()).unwrap();
    assert_eq!(results.len(), 3);
    let got: Vec<u32> = results
        .into_iter()
        .map(|r| {
            assert!(r.wait(SECOND));
            let engine = r.engine().unwrap();
            let v = r.get(None).unwrap();
            assert_eq!(engine.0, v);
            v
        })
        .collect();
    assert_eq!(got, vec![1, 0, 1]);
    assert_eq!(f.submits.load(Ordering::SeqCst), 1);
    let outs = dv
        .command(CommandSpec {
            program: "hostname".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(outs.len(), 3);
    for o in outs {
        assert!(o.get(SECOND).unwrap().success());
    }
    assert!(client
        .direct_view(&[])
        .apply::<_, ()>("noop", &())
        .unwrap()
        .is_empty());
}

#[test]
fn remote_failures_map_to_errors() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let err = view
        .apply::<_, ()>("fail", &())
        .unwrap()
        .get(SECOND)
        .unwrap_err();
    match &err {
        Error::Remote {
            engine,
            kind,
            message,
        } => {
            assert!(engine.is_some());
            assert_eq!(*kind, ErrorKind::Remote);
            assert_eq!(message, "boom");
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_retryable());

    let err = view
        .apply::<_, ()>("lost", &())
        .unwrap()
        .get(SECOND)
        .unwrap_err();
    assert!(matches!(err, Error::EngineLost { .. }), "{err:?}");
    assert!(err.is_retryable());

    let err = view
        .apply::<_, ()>("nope", &())
        .unwrap()
        .get(SECOND)
        .unwrap_err();
    match &err {
        Error::UnknownFunction { function, .. } => assert_eq!(function, "nope"),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("\"nope\""), "{err}");

    // A map fails with its failed chunk's error.
    let err = view
        .chunksize(5)
        .map::<_, u64>("fail_on_13", 0..20u64)
        .unwrap()
        .get(SECOND)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Remote { message, .. } if message == "13 is unlucky"),
        "{err:?}"
    );
}

#[test]
fn get_timeout_names_the_task() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let ar = view.apply::<_, ()>("hold", &()).unwrap();
    let id = ar.id();
    assert!(!ar.ready());
    assert!(!ar.wait(Some(Duration::from_millis(20))));
    let start = Instant::now();
    let err = ar.get(Some(Duration::from_millis(100))).unwrap_err();
    assert!(start.elapsed() >= Duration::from_millis(100));
    match &err {
        Error::Timeout { what } => assert_eq!(what, &format!("task {id}")),
        other => panic!("{other:?}"),
    }
    assert!(id.to_string().starts_with("3:"));
    assert_eq!(err.to_string(), format!("timed out waiting for task {id}"));

    let m = view.chunksize(1).map::<_, ()>("hold", [(), ()]).unwrap();
    let err = m.get(Some(Duration::from_millis(50))).unwrap_err();
    assert!(err.to_string().contains("map of 2 items"), "{err}");
}

#[test]
fn connect_timeout_with_another_key_names_the_address() {
    let f = fake(Config {
        file_key: Some(Key::generate()),
        ..Config::default()
    });
    let start = Instant::now();
    let err = Client::connect_file_with(&f.file, quick()).unwrap_err();
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(3));
    assert!(matches!(err, Error::ConnectTimeout { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&f.address), "{text}");
    assert!(text.contains(&f.file.display().to_string()), "{text}");
    assert!(text.contains("cluster start"), "{text}");
}

#[test]
fn bad_connection_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let err = Client::connect_file(&missing).unwrap_err();
    assert!(matches!(
        err,
        Error::BadConnectionFile(security::ConnectionFileError::Missing { .. })
    ));
    assert!(err.to_string().contains(&missing.display().to_string()));

    let corrupt = dir.path().join("corrupt.json");
    std::fs::write(&corrupt, "{ not json").unwrap();
    let err = Client::connect_file(&corrupt).unwrap_err();
    assert!(matches!(
        err,
        Error::BadConnectionFile(security::ConnectionFileError::Corrupt { .. })
    ));
    assert!(err.to_string().contains(&corrupt.display().to_string()));
}

#[test]
fn status_is_answered_while_results_stream() {
    let f = fake(Config {
        batch: 10,
        pause: Duration::from_millis(1),
        ..Config::default()
    });
    let client = Arc::new(Client::connect_file(&f.file).unwrap());
    let view = client.load_balanced_view().chunksize(1);
    let m = view.map::<_, u64>("double", 0..2000u64).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while m.progress().0 == 0 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    let other = {
        let client = client.clone();
        std::thread::spawn(move || client.status().map(|s| s.engines.len()))
    };
    let report = client.status().unwrap();
    assert_eq!(report.engines.len(), 2);
    assert_eq!(other.join().unwrap().unwrap(), 2);
    let sent = f.sent_at_status.load(Ordering::SeqCst);
    assert!(
        sent > 0 && sent < 2000,
        "status answered after {sent} results"
    );
    assert_eq!(
        m.get(SECOND).unwrap(),
        (0..2000u64).map(|x| 2 * x).collect::<Vec<_>>()
    );
}

#[test]
fn a_silent_controller_ends_waits_with_connection_lost() {
    let f = fake(Config::default());
    let client = Client::connect_file_with(&f.file, quick()).unwrap();
    let ar = client
        .load_balanced_view()
        .apply::<_, ()>("hold", &())
        .unwrap();
    drop(f);
    let start = Instant::now();
    let err = ar.get(None).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, Error::ConnectionLost { .. }), "{err:?}");
    assert!(err.is_retryable());
    // Later submissions fail at once.
    let err = client
        .load_balanced_view()
        .apply::<_, ()>("echo", &())
        .unwrap_err();
    assert!(matches!(err, Error::ConnectionLost { .. }), "{err:?}");
}

#[test]
fn a_held_task_keeps_waiting_while_the_controller_answers_probes() {
    let f = fake(Config::default());
    let client = Client::connect_file_with(&f.file, quick()).unwrap();
    let ar = client
        .load_balanced_view()
        .apply::<_, ()>("hold", &())
        .unwrap();
    // Well past the 0.9 s silence limit: probes are answered, so it is still waiting.
    let err = ar.get(Some(Duration::from_millis(1500))).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
}

#[test]
fn dropping_the_client_ends_pending_waits() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let ar = view.apply::<_, ()>("hold", &()).unwrap();
    drop(client);
    let err = ar.get(None).unwrap_err();
    assert!(err.to_string().contains("dropped"), "{err}");
    assert!(matches!(
        view.apply::<_, ()>("echo", &()),
        Err(Error::ConnectionLost { .. })
    ));
    drop(f);
}

/// Not a timed assertion: prints the round trip against the fake for comparison.
#[test]
fn round_trip_latency() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let mut times = Vec::new();
    for i in 0..500u64 {
        let start = Instant::now();
        let _: u64 = view.apply("double", &i).unwrap().get(SECOND).unwrap();
        times.push(start.elapsed());
    }
    times.sort();
    eprintln!(
        "apply round trip against the fake: median {:?}, p90 {:?}",
        times[times.len() / 2],
        times[times.len() * 9 / 10]
    );
}

/// Not a timed assertion: prints throughputs against the fake for comparison.
#[test]
fn throughput() {
    let f = fake(Config {
        batch: 4096,
        ..Config::default()
    });
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let n = 20_000u64;
    let start = Instant::now();
    let results: Vec<AsyncResult<u64>> =
        (0..n).map(|i| view.apply("double", &i).unwrap()).collect();
    for r in results {
        r.get(SECOND).unwrap();
    }
    let applies = n as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    view.clone()
        .chunksize(1)
        .map::<_, u64>("double", 0..n)
        .unwrap()
        .get(SECOND)
        .unwrap();
    let one_item = n as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let big: u64 = if cfg!(debug_assertions) {
        200_000
    } else {
        1_000_000
    };
    view.map::<_, u64>("double", 0..big)
        .unwrap()
        .get(SECOND)
        .unwrap();
    let chunked = big as f64 / start.elapsed().as_secs_f64();
    eprintln!(
        "against the fake: {applies:.0} applies/s, {one_item:.0} one-item map tasks/s, {chunked:.0} chunked map items/s"
    );
}
