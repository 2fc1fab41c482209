//! The fake controller: a ROUTER socket on 127.0.0.1 (from `testkit`) served by a thread
//! that answers hello, status, purge, shutdown and abort, and "runs" tasks with a fixed set
//! of pretend functions.

use super::*;

/// How the fake behaves.
#[derive(Clone)]
pub(super) struct Config {
    pub(super) engines: u32,
    /// Write this key into the connection file instead of the fake's own.
    pub(super) file_key: Option<Key>,
    /// Answer each submit's tasks last first.
    pub(super) reverse: bool,
    /// Outcomes per results message.
    pub(super) batch: usize,
    /// Pause between results messages (to stream them slowly).
    pub(super) pause: Duration,
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

/// A running fake controller; dropping it stops its thread.
pub(super) struct Fake {
    pub(super) address: String,
    pub(super) file: PathBuf,
    /// Keeps the connection file.
    _endpoint: Endpoint,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub(super) submits: Arc<AtomicUsize>,
    pub(super) tasks: Arc<AtomicUsize>,
    /// Results sent when the latest status request was answered.
    pub(super) sent_at_status: Arc<AtomicUsize>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts a fake controller with `config`, serving in a thread of its own.
pub(super) fn fake(config: Config) -> Fake {
    let (endpoint, sock) = Endpoint::bind_with_file_key(Role::Client, config.file_key.as_ref());
    let address = endpoint.address.clone();
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
        file: endpoint.file.clone(),
        _endpoint: endpoint,
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
            FromClient::Purge { .. }
            | FromClient::PurgeBefore { .. }
            | FromClient::Shutdown { .. } => ToClient::Ack,
            FromClient::Object(request) => ToClient::Object {
                id: request.id,
                reply: protocol::ObjectReply::Error {
                    kind: protocol::ObjectErrorKind::Invalid,
                    message: "the fake controller serves no objects".into(),
                },
            },
            FromClient::History { .. } => ToClient::History {
                records: Vec::new(),
            },
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
                    rank: None,
                    job: None,
                })
                .collect(),
            tasks: TaskCounts::default(),
            dropped: DropCounts::default(),
            store: None,
            functions: None,
        }
    }
}
