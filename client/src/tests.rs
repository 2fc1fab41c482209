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

/// The fake's doubling function, typed.
const DOUBLE: Function<u64, u64> = Function::new("double");

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
        replay_window_s: 300,
        encryption: "none".into(),
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
        store: Default::default(),
        held: Default::default(),
        delayed: Vec::new(),
        route: Vec::new(),
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
    /// Each engine's store: (engine, name) → msgpack value.
    store: std::collections::HashMap<(u32, String), Vec<u8>>,
    /// "hold" tasks: never answered unless aborted.
    held: std::collections::HashSet<TaskId>,
    /// "later" tasks: answered at their time.
    delayed: Vec<(Instant, Vec<u8>, TaskOutcome, Vec<u8>)>,
    /// Route of the client whose message is being handled.
    route: Vec<u8>,
}

impl FakeLoop {
    fn run(mut self) {
        while !self.stop.load(Ordering::SeqCst) {
            let wait = if self.queue.is_empty() { 2 } else { 0 };
            transport::poll(&[Waitable::Socket(&self.sock)], wait).unwrap();
            while let Some(r) = self.sock.recv::<FromClient>().unwrap() {
                let route = r.route.unwrap();
                self.on_message(&route, r.msg, r.payloads);
            }
            let now = Instant::now();
            let (due, later) = std::mem::take(&mut self.delayed)
                .into_iter()
                .partition(|d| d.0 <= now);
            self.delayed = later;
            let due: Vec<_> = due;
            self.queue
                .extend(due.into_iter().map(|(_, route, o, p)| (route, o, p)));
            self.stream();
        }
    }

    fn on_message(&mut self, route: &[u8], msg: FromClient, payloads: Vec<Vec<u8>>) {
        self.route = route.to_vec();
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
                instance: 1,
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
            FromClient::Abort { ids } => {
                let mut aborted = Vec::new();
                let mut finished = Vec::new();
                for id in ids {
                    if self.held.remove(&id) {
                        aborted.push(id);
                        let outcome = TaskOutcome {
                            id,
                            engine: None,
                            status: Status::Err(TaskError {
                                kind: ErrorKind::Aborted,
                                message: "aborted by the fake".into(),
                                engine: None,
                            }),
                            started_us: 0,
                            elapsed_us: 0,
                        };
                        self.queue.push_back((route.to_vec(), outcome, vec![]));
                    } else {
                        finished.push(id);
                    }
                }
                ToClient::Aborted {
                    aborted,
                    running: vec![],
                    finished,
                    unknown: vec![],
                }
            }
            FromClient::QueueStatus => ToClient::Error {
                message: "not supported by the fake controller".into(),
            },
            FromClient::Goodbye => return,
        };
        self.sock.send(Some(route), &answer, &[]).unwrap();
    }

    /// The pretend functions.
    fn run_task(&mut self, task: &TaskRequest, payload: Vec<u8>) -> Option<(TaskOutcome, Vec<u8>)> {
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
                    "hold" => {
                        self.held.insert(task.id);
                        return None;
                    }
                    "later" => {
                        let ms: u64 = rmp_serde::from_slice(&payload).unwrap();
                        let outcome = TaskOutcome {
                            id: task.id,
                            engine: Some(engine),
                            status: Status::Ok,
                            started_us: 1,
                            elapsed_us: ms * 1000,
                        };
                        let at = Instant::now() + Duration::from_millis(ms);
                        self.delayed
                            .push((at, self.route.clone(), outcome, payload));
                        return None;
                    }
                    // The store built-ins, for JSON-like values.
                    "__push" => {
                        let values: std::collections::BTreeMap<String, serde_json::Value> =
                            rmp_serde::from_slice(&payload).unwrap();
                        for (name, value) in values {
                            let bytes = rmp_serde::to_vec_named(&value).unwrap();
                            self.store.insert((engine.0, name), bytes);
                        }
                        (Status::Ok, vec![0xc0])
                    }
                    "__pull" => {
                        let name: String = rmp_serde::from_slice(&payload).unwrap();
                        match self.store.get(&(engine.0, name)) {
                            Some(v) => (Status::Ok, v.clone()),
                            None => (
                                fail(ErrorKind::Remote, "no such name", Some(engine)),
                                vec![],
                            ),
                        }
                    }
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
                instance: 1,
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
    let ar = view.apply::<u64, u64>("double", &21u64).unwrap();
    assert_eq!(ar.id().client(), ClientId(CLIENT_ID));
    assert!(ar.wait(SECOND));
    assert!(ar.ready());
    assert!(ar.engine().is_some());
    assert_eq!(ar.elapsed(), Some(Duration::from_micros(1500)));
    assert_eq!(ar.get(SECOND).unwrap(), 42);

    let s: String = view.apply("echo", "hi").unwrap().get(SECOND).unwrap();
    assert_eq!(s, "hi");
    // A result of the wrong type is a decode error naming the task.
    let ar = view.apply::<&str, u64>("echo", "text").unwrap();
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
                    let y: u64 = view.apply("double", x).unwrap().get(SECOND).unwrap();
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
    let m = view.map::<u64, u64>("double", Vec::<u64>::new()).unwrap();
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
        .map::<String, String>("echo", &items)
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
    let results = dv.apply::<(), u32>("whoami", ()).unwrap();
    assert_eq!(results.len(), 3);
    assert!(results.wait(SECOND));
    let engines: Vec<u32> = results
        .metadata()
        .iter()
        .map(|m| m.engine.unwrap().0)
        .collect();
    let got = results.get(None).unwrap();
    assert_eq!(got, engines);
    assert_eq!(got, vec![1, 0, 1]);
    assert_eq!(f.submits.load(Ordering::SeqCst), 1);
    let outs = dv
        .command(CommandSpec {
            program: "hostname".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(outs.len(), 3);
    for o in outs.get(SECOND).unwrap() {
        assert!(o.success());
    }
    assert!(client
        .direct_view(&[])
        .apply::<(), ()>("noop", &())
        .unwrap()
        .is_empty());
}

#[test]
fn remote_failures_map_to_errors() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let err = view
        .apply::<(), ()>("fail", &())
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
        .apply::<(), ()>("lost", &())
        .unwrap()
        .get(SECOND)
        .unwrap_err();
    assert!(matches!(err, Error::EngineLost { .. }), "{err:?}");
    assert!(err.is_retryable());

    let err = view
        .apply::<(), ()>("nope", &())
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
    let ar = view.apply::<(), ()>("hold", &()).unwrap();
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
    assert!(
        err.to_string().contains("map of hold over 2 items"),
        "{err}"
    );
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
        .apply::<(), ()>("hold", &())
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
        .apply::<(), ()>("echo", &())
        .unwrap_err();
    assert!(matches!(err, Error::ConnectionLost { .. }), "{err:?}");
}

#[test]
fn a_held_task_keeps_waiting_while_the_controller_answers_probes() {
    let f = fake(Config::default());
    let client = Client::connect_file_with(&f.file, quick()).unwrap();
    let ar = client
        .load_balanced_view()
        .apply::<(), ()>("hold", &())
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
    let ar = view.apply::<(), ()>("hold", &()).unwrap();
    drop(client);
    let err = ar.get(None).unwrap_err();
    assert!(err.to_string().contains("dropped"), "{err}");
    assert!(matches!(
        view.apply::<(), ()>("echo", &()),
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
        let _: u64 = view.apply(DOUBLE, i).unwrap().get(SECOND).unwrap();
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
    let results: Vec<AsyncResult<u64>> = (0..n).map(|i| view.apply(DOUBLE, i).unwrap()).collect();
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

// ---- Typed handles, futures, callbacks, cancel, iteration, helpers, imap, executor ----

/// A minimal executor for the `Future` tests: polls on this thread, parks between wakes.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context as TaskContext, Poll, Wake, Waker};
    struct Parker {
        thread: std::thread::Thread,
        woken: AtomicBool,
    }
    impl Wake for Parker {
        fn wake(self: Arc<Self>) {
            self.woken.store(true, Ordering::SeqCst);
            self.thread.unpark();
        }
    }
    let parker = Arc::new(Parker {
        thread: std::thread::current(),
        woken: AtomicBool::new(false),
    });
    let waker = Waker::from(parker.clone());
    let mut cx = TaskContext::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        while !parker.woken.swap(false, Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "never woken");
            std::thread::park_timeout(Duration::from_millis(100));
        }
    }
}

/// Polls all futures together in one task; outputs in the order given.
async fn join_all<F: std::future::Future + Unpin>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Option<F>> = futures.into_iter().map(Some).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if let Some(fut) = f {
                if let std::task::Poll::Ready(v) = std::pin::Pin::new(fut).poll(cx) {
                    *out = Some(v);
                    *f = None;
                }
            }
        }
        if futures.iter().all(Option::is_none) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

const LATER: Function<u64, u64> = Function::new("later");

#[test]
fn typed_handles_check_types_and_accept_values_or_references() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    // Integer literals take the handle's type; values or references both do.
    assert_eq!(view.apply(DOUBLE, 21).unwrap().get(SECOND).unwrap(), 42);
    let x = 5u64;
    let by_ref = &x;
    assert_eq!(view.apply(DOUBLE, by_ref).unwrap().get(SECOND).unwrap(), 10);
    let items: Vec<u64> = (0..100).collect();
    let doubled = view.map(DOUBLE, &items).unwrap().get(SECOND).unwrap();
    assert_eq!(doubled, items.iter().map(|x| x * 2).collect::<Vec<_>>());
    assert_eq!(view.map(DOUBLE, 0..10).unwrap().get(SECOND).unwrap()[9], 18);
    // Generic stock handles, and names as `String`.
    let echo = stock::echo::<String>();
    assert_eq!(
        view.apply(echo, "hi".to_string())
            .unwrap()
            .get(SECOND)
            .unwrap(),
        "hi"
    );
    let name = String::from("double");
    assert_eq!(
        view.apply::<u64, u64>(&name, 4)
            .unwrap()
            .get(SECOND)
            .unwrap(),
        8
    );
}

#[test]
fn results_are_futures() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    // Awaited before the result arrives: the I/O thread's wake-up resumes the task.
    assert_eq!(block_on(view.apply(LATER, 50).unwrap()).unwrap(), 50);
    let slow = view.apply(LATER, 80).unwrap();
    let fast = view.apply(LATER, 10).unwrap();
    let start = Instant::now();
    let both = block_on(join_all(vec![slow, fast]));
    assert!(start.elapsed() < Duration::from_millis(1500));
    assert_eq!(
        both.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        vec![80, 10]
    );
    let m = view.clone().chunksize(3).map(DOUBLE, 0..10).unwrap();
    let out = block_on(m);
    assert_eq!(out.unwrap(), (0..10).map(|x| x * 2).collect::<Vec<_>>());
    // A failure comes out of `.await` as the error.
    let err = block_on(view.apply::<(), ()>("fail", ()).unwrap()).unwrap_err();
    assert!(matches!(err, Error::Remote { .. }), "{err:?}");
}

#[test]
fn done_callbacks_run_once_when_done_and_may_look_but_not_wait() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let (tx, rx) = std::sync::mpsc::channel();
    let ar = view.apply(LATER, 30).unwrap();
    let held = view.apply::<(), ()>("hold", ()).unwrap();
    let tx1 = tx.clone();
    ar.add_done_callback(move |r| {
        // It may read its own result; waiting for another task fails at once.
        let own = r.get(None);
        let other = held.get(None);
        tx1.send((own.unwrap(), other.unwrap_err().to_string()))
            .unwrap();
    });
    let (own, other) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(own, 30);
    assert!(other.contains("done callback"), "{other}");
    // Already done: runs at once, on this thread.
    let here = std::thread::current().id();
    ar.add_done_callback(move |_| {
        tx.send((0, format!("{:?}", std::thread::current().id() == here)))
            .unwrap()
    });
    assert_eq!(rx.try_recv().unwrap().1, "true");
    // Maps call back when every chunk is in.
    let (tx, rx) = std::sync::mpsc::channel();
    let m = view.chunksize(2).map(DOUBLE, 0..10).unwrap();
    m.add_done_callback(move |m| tx.send(m.progress()).unwrap());
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), (10, 10));
}

#[test]
fn cancel_ends_waits_with_aborted_and_done_tasks_stay_done() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let held = view.apply::<(), ()>("hold", ()).unwrap();
    let id = held.id();
    assert_eq!(held.successful(), None);
    assert!(held.cancel());
    assert!(held.ready() && held.cancelled());
    assert_eq!(held.successful(), Some(false));
    let err = held.get(SECOND).unwrap_err();
    assert!(
        matches!(&err, Error::Aborted { what, .. } if what == &format!("task {id}")),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert!(!held.cancel(), "a second cancel finds it done");
    let done = view.apply(DOUBLE, 1).unwrap();
    assert!(done.wait(SECOND));
    assert!(!done.cancel() && !done.cancelled());
    assert!(!done.abort().unwrap());
    // abort: the controller aborts what is queued.
    let held = view.apply::<(), ()>("hold", ()).unwrap();
    assert!(held.abort().unwrap());
    assert!(matches!(held.get(SECOND), Err(Error::Aborted { .. })));
    // A map cancels its unfinished chunks only.
    let m = view
        .chunksize(1)
        .map::<(), ()>("hold", [(), (), ()])
        .unwrap();
    assert_eq!(m.cancel(), 3);
    assert!(m.ready());
    assert_eq!(m.metadata()[0].state, TaskState::Failed(ErrorKind::Aborted));
}

#[test]
fn metadata_tells_where_and_when() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let before = std::time::SystemTime::now();
    let ar = view.apply(DOUBLE, 1).unwrap();
    let pending = ar.metadata();
    assert!(pending.submitted >= before);
    assert_eq!(pending.function, "double");
    ar.wait(SECOND);
    let m = ar.metadata();
    assert_eq!(m.task, ar.id());
    assert_eq!(m.state, TaskState::Succeeded);
    assert!(m.engine.is_some());
    assert_eq!(m.elapsed, Some(Duration::from_micros(1500)));
    assert_eq!(
        m.completed
            .unwrap()
            .duration_since(m.started.unwrap())
            .unwrap(),
        Duration::from_micros(1500)
    );
    assert!(m.received.unwrap() >= m.submitted);
    assert_eq!(m.stdout, None);
    let cmd = view
        .command(
            Command::new("echo")
                .arg("out")
                .timeout(Duration::from_secs(1)),
        )
        .unwrap();
    cmd.wait(SECOND);
    assert_eq!(cmd.metadata().stdout.as_deref(), Some(&b"echo out"[..]));
    let many = view
        .commands(["true", "false"])
        .unwrap()
        .get(SECOND)
        .unwrap();
    assert_eq!(many[1].stdout, b"false ");
}

#[test]
fn maps_stream_in_item_order_or_completion_order() {
    let f = fake(Config {
        reverse: true,
        batch: 1,
        pause: Duration::from_millis(1),
        ..Config::default()
    });
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view().chunksize(10);
    let ordered: Vec<u64> = view
        .map(DOUBLE, 0..100)
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ordered, (0..100).map(|x| x * 2).collect::<Vec<_>>());
    // The fake answers each submission last chunk first.
    let unordered: Vec<(usize, u64)> = view
        .map(DOUBLE, 0..100)
        .unwrap()
        .unordered()
        .map(|(i, r)| (i, r.unwrap()))
        .collect();
    assert_eq!(unordered[0], (90, 180));
    let mut sorted = unordered.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..100).map(|x| (x, 2 * x as u64)).collect::<Vec<_>>()
    );
    // A failed chunk yields its error for each of its items; the rest are values.
    let items: Vec<Result<u64, Error>> = view
        .map::<u64, u64>("fail_on_13", 0..30u64)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(items.len(), 30);
    assert!(items[..10].iter().all(Result::is_ok) && items[20..].iter().all(Result::is_ok));
    assert!(items[10..20].iter().all(Result::is_err));
    // return_exceptions: the same, in one call.
    let each = view
        .map::<u64, u64>("fail_on_13", 0..30u64)
        .unwrap()
        .get_return_exceptions(SECOND)
        .unwrap();
    assert_eq!(each.iter().filter(|r| r.is_err()).count(), 10);
    assert_eq!(*each[29].as_ref().unwrap(), 29);
    // A timeout while iterating names the item and the iterator can go on.
    let mut it = client
        .load_balanced_view()
        .chunksize(1)
        .map::<u64, u64>("later", [300u64, 1])
        .unwrap()
        .into_iter()
        .timeout(Duration::from_millis(20));
    let err = it.next().unwrap().unwrap_err();
    assert!(err.to_string().contains("item 0 of later"), "{err}");
    assert!(err.is_retryable());
}

#[test]
fn wait_and_as_completed_like_concurrent_futures() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let tasks: Vec<AsyncResult<u64>> = [200u64, 10, 100]
        .iter()
        .map(|&ms| view.apply(LATER, ms).unwrap())
        .collect();
    let first = wait(&tasks, SECOND, ReturnWhen::FirstCompleted);
    assert_eq!(first.done.len(), 1);
    assert_eq!(first.done[0].id(), tasks[1].id());
    let order: Vec<u64> = as_completed(tasks.iter().cloned(), SECOND)
        .map(|t| t.unwrap().get(None).unwrap())
        .collect();
    assert_eq!(order, vec![10, 100, 200]);
    let all = wait(&tasks, SECOND, ReturnWhen::AllCompleted);
    assert_eq!((all.done.len(), all.not_done.len()), (3, 0));

    // Mixed handles, keys handed back, a timeout, and the first exception.
    let held = view.apply::<(), ()>("hold", ()).unwrap();
    let failing = view.apply::<(), ()>("fail", ()).unwrap();
    let map = view.map(DOUBLE, 0..10).unwrap();
    let mixed: Vec<(&str, &dyn Completion)> =
        vec![("held", &held), ("failing", &failing), ("map", &map)];
    let w = wait(mixed.clone(), SECOND, ReturnWhen::FirstException);
    assert!(w.done.iter().any(|(k, _)| *k == "failing"));
    assert!(w.not_done.iter().any(|(k, _)| *k == "held"));
    let w = wait(
        mixed.clone(),
        Some(Duration::from_millis(50)),
        ReturnWhen::AllCompleted,
    );
    assert_eq!(w.not_done.iter().map(|p| p.0).collect::<Vec<_>>(), ["held"]);
    let results: Vec<Result<&str, String>> = as_completed(mixed, Some(Duration::from_millis(50)))
        .map(|r| r.map(|(k, _)| k).map_err(|e| e.to_string()))
        .collect();
    assert_eq!(results.len(), 3);
    assert!(
        results[2].as_ref().unwrap_err().contains("1 of 3 tasks"),
        "{results:?}"
    );
}

#[test]
fn imap_streams_an_endless_iterator_with_bounded_tasks_in_flight() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let mut it = view.imap(DOUBLE, 0u64..).max_outstanding(3);
    for i in 0..20_000u64 {
        assert_eq!(it.next().unwrap().unwrap(), 2 * i);
        // Never more read than handed out plus three chunks.
        assert!(it.items_read() <= i + 1 + 3 * it.current_chunksize() as u64);
    }
    // The fake reports 1.5 ms per chunk, so chunks grow from one item towards ~5 ms.
    assert!(it.current_chunksize() > 1, "{it:?}");
    drop(it);
    // Unordered: every item once.
    let mut seen: Vec<u64> = view
        .clone()
        .chunksize(7)
        .imap(DOUBLE, (0..1000u64).map(|x| x * 3))
        .unordered()
        .map(|(i, r)| {
            assert_eq!(r.unwrap(), i * 6);
            i
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    // Errors come at their item; nothing is read before the first `next`.
    let read = std::cell::Cell::new(0);
    let lazy = view.imap(DOUBLE, (0..10u64).inspect(|_| read.set(read.get() + 1)));
    assert_eq!(read.get(), 0);
    assert_eq!(lazy.count(), 10);
    let failing: Vec<bool> = view
        .clone()
        .chunksize(5)
        .imap::<u64, u64>("fail_on_13", 0..20u64)
        .map(|r| r.is_ok())
        .collect();
    assert_eq!(failing.iter().filter(|ok| !**ok).count(), 5);
}

#[test]
fn executor_submits_maps_and_shuts_down() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let pool = client.executor();
    let futures: Vec<AsyncResult<u64>> = (0..50).map(|i| pool.submit(DOUBLE, i).unwrap()).collect();
    let sum: u64 = pool.map(DOUBLE, 0..100).map(Result::unwrap).sum();
    assert_eq!(sum, 9900);
    let slow = pool.submit(LATER, 100).unwrap();
    let start = Instant::now();
    pool.shutdown(true);
    assert!(
        start.elapsed() >= Duration::from_millis(50),
        "shutdown(true) waited"
    );
    assert!(slow.ready() && futures.iter().all(AsyncResult::ready));
    assert_eq!(pool.pending(), 0);
    assert!(matches!(
        pool.submit(DOUBLE, 1),
        Err(Error::Shutdown { .. })
    ));
    let refused: Vec<_> = pool.map(DOUBLE, 0..3).collect();
    assert!(
        matches!(refused[..], [Err(Error::Shutdown { .. })]),
        "{refused:?}"
    );
    // cancel_pending cancels what waits.
    let pool = client.executor();
    let held: Vec<_> = (0..3)
        .map(|_| pool.submit::<(), ()>("hold", ()).unwrap())
        .collect();
    assert_eq!(pool.pending(), 3);
    assert_eq!(pool.cancel_pending(), 3);
    pool.shutdown(true);
    assert!(held.iter().all(AsyncResult::cancelled));
}

#[test]
fn direct_views_push_pull_scatter_and_gather() {
    let f = fake(Config {
        engines: 3,
        ..Config::default()
    });
    let client = Client::connect_file(&f.file).unwrap();
    let dv = client.direct_view(&[EngineId(0), EngineId(1), EngineId(2)]);
    dv.push("k", &"v").unwrap().get(SECOND).unwrap();
    let pulled: Vec<String> = dv.pull("k").unwrap().get(SECOND).unwrap();
    assert_eq!(pulled, ["v", "v", "v"]);
    dv.scatter("xs", 0..10u64).unwrap().get(SECOND).unwrap();
    let parts: Vec<Vec<u64>> = dv.pull("xs").unwrap().get(SECOND).unwrap();
    assert_eq!(parts, vec![vec![0, 1, 2, 3], vec![4, 5, 6], vec![7, 8, 9]]);
    let back: Vec<u64> = dv.gather("xs", SECOND).unwrap();
    assert_eq!(back, (0..10).collect::<Vec<_>>());
    let err = dv.gather::<u64>("nothing", SECOND).unwrap_err();
    assert!(matches!(err, Error::Remote { .. }), "{err:?}");
    // Fewer items than engines: some get empty lists.
    dv.scatter("few", ["a", "b"]).unwrap().get(SECOND).unwrap();
    assert_eq!(dv.gather::<String>("few", SECOND).unwrap(), ["a", "b"]);
}
