//! The socket loop around the core: registration, the heartbeat thread, receiving task
//! batches, sending result batches, and leaving on `Shutdown` or a signal.
//!
//! Losing the controller is not the end: libzmq reconnects by itself, and when no ping has
//! come for a while (the controller died, restarted, or declared this engine dead) the engine
//! registers again with its uuid and former id, and goes on. Only after the lonely timeout
//! without any ping does it give up.
//!
//! Functions with a time limit run on a helper thread: one that overruns is reported as timed
//! out and abandoned there (a thread cannot be stopped from outside), and the engine goes on
//! with a fresh helper. Commands are killed at their limit instead.

use protocol::{
    Assignment, EngineId, ErrorKind, FromEngine, Heartbeat, Registration, Status, TaskError,
    TaskId, TaskOutcome, ToEngine, Work, PROTOCOL_VERSION,
};
use security::{ConnectionInfo, Key};
use signal_hook::SigId;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use transport::{poll, Context, Encryption, Kind, Socket, TransportError, Waitable};

use crate::core::{Batch, Core};
use crate::exec::{Executor, Whoami};
use crate::registry::Registry;
use crate::{Engine, EngineError, EngineOptions};

/// Silence (no ping) after which the engine registers again, at least.
const REREGISTER_AFTER_MIN: Duration = Duration::from_secs(2);

/// Longest pause between registration attempts while the controller is silent.
const REREGISTER_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How often the loops wake up to notice signals and stop requests.
const TICK_MS: i64 = 100;

/// How long closing the engine socket may wait to deliver the last results and `Unregister`.
const GOODBYE_LINGER_MS: i32 = 2000;

/// Runs an engine until shutdown; see [`Engine::run`].
pub(crate) fn run(engine: Engine, options: EngineOptions) -> Result<(), EngineError> {
    let file = options.connection_file.as_path();
    let (info, key) = ConnectionInfo::load(file, PROTOCOL_VERSION, &["engine", "heartbeat"])?;
    // `load` checked that both are present.
    let engine_addr = info.addresses.engine.clone().unwrap_or_default();
    let heartbeat_addr = info.addresses.heartbeat.clone().unwrap_or_default();
    let uuid = format!("{:032x}", rand::random::<u128>());
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let pid = std::process::id();

    let signals = Signals::install()?;
    let ctx = Context::new();
    let on_engine = |source| EngineError::Transport {
        address: engine_addr.clone(),
        source,
    };
    let window = Duration::from_secs(info.replay_window_s);
    let encryption = Encryption::endpoint(info.encrypted());
    let mut sock =
        Socket::new(&ctx, Kind::Dealer, &key, Some(uuid.as_bytes())).map_err(on_engine)?;
    sock.set_replay_window(window);
    sock.set_encryption(encryption);
    sock.connect(&engine_addr).map_err(on_engine)?;
    // A controller that comes back (`--reuse`) is told at once who this engine is and what it
    // holds, instead of after heartbeats have been missing for a while. (Watched after the
    // connect, as the client does: set up before it, clients hung now and then.)
    sock.watch_link(&ctx).map_err(on_engine)?;
    // Started before registering, so its connection is up by the time the controller pings.
    let heartbeat =
        HeartbeatThread::start(&ctx, &key, (window, encryption), &uuid, &heartbeat_addr)?;

    let functions = engine.function_names();
    tracing::debug!(uuid, controller = %engine_addr, "registering {} functions", functions.len());
    let registration = Registration {
        uuid: uuid.clone(),
        host: host.clone(),
        pid,
        functions,
        slots: 1,
        engine_id: None,
        held: Vec::new(),
    };
    sock.send(None, &FromEngine::Register(registration.clone()), &[])
        .map_err(on_engine)?;

    let registered = wait_registered(&mut sock, &signals, &options, &engine_addr, file);
    let (engine_id, period_ms) = match registered {
        Ok(Some(r)) => r,
        Ok(None) => {
            heartbeat.stop();
            return Ok(());
        }
        Err(e) => {
            heartbeat.stop();
            return Err(e);
        }
    };
    tracing::info!(
        "registered as engine {engine_id} (uuid {uuid}, pid {pid}) with the controller at {engine_addr}; heartbeat every {period_ms} ms"
    );

    let runner = Runner {
        registry: Arc::new(engine.registry.clone()),
        max_output: engine.max_output_bytes,
        pid,
        host,
        worker: None,
    };
    let mut session = Session {
        sock,
        core: Core::default(),
        engine_addr: &engine_addr,
        engine_id,
        registration,
        period: Duration::from_millis(period_ms.max(1)),
        registered_at: heartbeat.now_ms(),
        next_attempt: None,
        backoff: Duration::ZERO,
        arrivals: HashMap::new(),
    };
    let result = session.serve(runner, &signals, &heartbeat, options.lonely_timeout);
    let engine_id = session.engine_id;
    match &result {
        Ok(reason) => {
            tracing::info!("engine {engine_id} leaving: {reason}");
            let goodbye = session.goodbye();
            if let Err(e) = &goodbye {
                tracing::warn!("engine {engine_id} could not say goodbye: {e}");
            }
        }
        Err(e) => tracing::error!("engine {engine_id} stopping: {e}"),
    }
    drop(session);
    heartbeat.stop();
    result.map(|_| ())
}

/// Waits for `Registered`; `Ok(None)` when told to stop first.
fn wait_registered(
    sock: &mut Socket,
    signals: &Signals,
    options: &EngineOptions,
    address: &str,
    file: &Path,
) -> Result<Option<(EngineId, u64)>, EngineError> {
    let deadline = Instant::now() + options.register_timeout;
    let on_err = |source| EngineError::Transport {
        address: address.to_owned(),
        source,
    };
    loop {
        if let Some(sig) = signals.received() {
            tracing::info!("stopping before registration: received {sig}");
            return Ok(None);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(EngineError::RegisterTimeout {
                address: address.to_owned(),
                file: file.to_owned(),
                waited: options.register_timeout,
            });
        }
        let wait = deadline
            .duration_since(now)
            .as_millis()
            .min(TICK_MS as u128) as i64;
        poll(&[Waitable::Socket(sock)], wait.max(1)).map_err(on_err)?;
        loop {
            let Some(got) = sock.recv::<ToEngine>().map_err(on_err)? else {
                if sock.readable() {
                    continue;
                }
                break;
            };
            match got.msg {
                ToEngine::Registered {
                    engine_id,
                    heartbeat_period_ms,
                } => return Ok(Some((engine_id, heartbeat_period_ms))),
                ToEngine::Refused { reason } => {
                    return Err(EngineError::Refused {
                        address: address.to_owned(),
                        reason,
                    })
                }
                ToEngine::Shutdown => {
                    tracing::info!("told to shut down before registration finished");
                    return Ok(None);
                }
                ToEngine::Tasks { tasks } => {
                    tracing::warn!("ignoring {} tasks sent before registration", tasks.len());
                }
            }
        }
    }
}

/// What runs tasks: the registry, and the helper thread for tasks with a time limit.
struct Runner {
    registry: Arc<Registry>,
    max_output: usize,
    pid: u32,
    host: String,
    worker: Option<Worker>,
}

/// A task for the helper thread (with the engine id to run it as), and its answer.
type Job = (EngineId, Assignment, Vec<u8>);
type Done = (TaskOutcome, Vec<u8>, Option<String>);

/// The helper thread that runs functions with a time limit.
struct Worker {
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<Done>,
}

/// The executor of engine `engine` (rebuilt when a re-registration changes the id).
fn executor_for<'r>(
    registry: &'r Registry,
    engine: EngineId,
    max_output: usize,
    pid: u32,
    host: &str,
) -> Result<Executor<'r>, EngineError> {
    let whoami = protocol::encode(&Whoami {
        engine_id: engine,
        pid,
        host: host.to_owned(),
    })
    .map_err(|e| EngineError::Internal(format!("cannot encode whoami: {e}")))?;
    Ok(Executor {
        registry,
        engine,
        max_output,
        whoami,
    })
}

impl Runner {
    fn executor<'r>(
        &self,
        registry: &'r Registry,
        engine: EngineId,
    ) -> Result<Executor<'r>, EngineError> {
        executor_for(registry, engine, self.max_output, self.pid, &self.host)
    }

    /// Runs one task; returns its outcome, result payload and the offered function that ran.
    fn run(
        &mut self,
        executor: &Executor<'_>,
        task: &Assignment,
        payload: &[u8],
    ) -> (TaskOutcome, Vec<u8>, Option<String>) {
        let limit = task.timeout_ms.filter(|&ms| ms > 0);
        match (&task.work, limit) {
            (Work::Call { .. } | Work::Map { .. }, Some(ms)) => {
                self.run_limited(executor, task, payload, Duration::from_millis(ms))
            }
            // Commands are killed at their limit by the executor itself.
            _ => {
                let (outcome, payload, ran) = executor.run(task, payload);
                (outcome, payload, ran.map(str::to_owned))
            }
        }
    }

    fn run_limited(
        &mut self,
        executor: &Executor<'_>,
        task: &Assignment,
        payload: &[u8],
        limit: Duration,
    ) -> (TaskOutcome, Vec<u8>, Option<String>) {
        let started_us = transport::now_us();
        let start = Instant::now();
        let sent = match self.worker() {
            Ok(w) => w
                .jobs
                .send((executor.engine, task.clone(), payload.to_vec()))
                .is_ok(),
            Err(e) => {
                tracing::warn!("{e}; running task {} without its time limit", task.id);
                false
            }
        };
        if !sent {
            self.worker = None;
            let (outcome, payload, ran) = executor.run(task, payload);
            return (outcome, payload, ran.map(str::to_owned));
        }
        let answer = self
            .worker
            .as_ref()
            .map(|w| w.done.recv_timeout(limit.saturating_sub(start.elapsed())));
        match answer {
            Some(Ok(done)) => done,
            _ => {
                // Abandoned: the thread finishes the call on its own and then exits, its
                // channel being gone; a fresh one takes the next task.
                self.worker = None;
                let ms = limit.as_millis();
                tracing::warn!(
                    "task {} ({}) ran past its time limit of {ms} ms; abandoned in its thread",
                    task.id,
                    task.work.name()
                );
                let outcome = TaskOutcome {
                    id: task.id,
                    engine: Some(executor.engine),
                    status: Status::Err(TaskError {
                        kind: ErrorKind::Timeout,
                        message: format!(
                            "{} ran longer than its time limit of {ms} ms and was abandoned (it goes on in a detached thread of engine {} until it returns)",
                            task.work.name(),
                            executor.engine
                        ),
                        engine: Some(executor.engine),
                    }),
                    started_us,
                    elapsed_us: start.elapsed().as_micros() as u64,
                };
                (outcome, Vec::new(), None)
            }
        }
    }

    /// The helper thread, started if needed.
    fn worker(&mut self) -> Result<&Worker, EngineError> {
        if self.worker.is_none() {
            let (jobs, job_rx) = mpsc::channel::<Job>();
            let (done_tx, done) = mpsc::channel::<Done>();
            let helper = Runner {
                registry: Arc::clone(&self.registry),
                max_output: self.max_output,
                pid: self.pid,
                host: self.host.clone(),
                worker: None,
            };
            std::thread::Builder::new()
                .name("timed-task".into())
                .spawn(move || {
                    let registry = Arc::clone(&helper.registry);
                    while let Ok((engine, task, payload)) = job_rx.recv() {
                        let done = match helper.executor(&registry, engine) {
                            Ok(executor) => {
                                let (outcome, payload, ran) = executor.run(&task, &payload);
                                (outcome, payload, ran.map(str::to_owned))
                            }
                            Err(e) => {
                                tracing::error!("{e}");
                                return;
                            }
                        };
                        if done_tx.send(done).is_err() {
                            // Abandoned while running: nobody waits for this thread.
                            return;
                        }
                    }
                })
                .map_err(EngineError::Thread)?;
            self.worker = Some(Worker { jobs, done });
        }
        self.worker
            .as_ref()
            .ok_or_else(|| EngineError::Internal("no helper thread".into()))
    }
}

/// What [`Session::receive`] found besides tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Received {
    Nothing,
    /// The controller said `Shutdown`.
    Shutdown,
    /// A registration answer changed the engine's id.
    NewId,
}

/// The registered engine's socket and core, and what re-registering needs.
struct Session<'a> {
    sock: Socket,
    core: Core,
    engine_addr: &'a str,
    engine_id: EngineId,
    registration: Registration,
    period: Duration,
    /// [`HeartbeatThread::now_ms`] at the latest registration.
    registered_at: u64,
    /// When to register again while no ping comes (`None`: not yet silent long enough).
    next_attempt: Option<Instant>,
    backoff: Duration,
    /// When each queued task with a time limit arrived.
    arrivals: HashMap<TaskId, Instant>,
}

/// The outcome of a task with a time limit that waited in this engine's queue past it: it
/// fails without running, as it would have in the controller's queue.
fn too_late(task: &Assignment, waited: Option<Duration>, engine: EngineId) -> Option<TaskOutcome> {
    let limit = Duration::from_millis(task.start_within_ms?);
    let waited = waited?;
    if waited <= limit {
        return None;
    }
    let message = format!(
        "{} did not start within its time limit of {} ms (it waited {} ms in engine {engine}'s queue); not run",
        task.work.name(),
        limit.as_millis(),
        waited.as_millis()
    );
    Some(TaskOutcome {
        id: task.id,
        engine: Some(engine),
        status: Status::Err(TaskError {
            kind: ErrorKind::Timeout,
            message,
            engine: Some(engine),
        }),
        started_us: 0,
        elapsed_us: 0,
    })
}

impl Session<'_> {
    fn transport_err(&self, source: TransportError) -> EngineError {
        EngineError::Transport {
            address: self.engine_addr.to_owned(),
            source,
        }
    }

    /// Runs tasks until told to stop; returns why.
    fn serve(
        &mut self,
        mut runner: Runner,
        signals: &Signals,
        heartbeat: &HeartbeatThread,
        lonely_timeout: Duration,
    ) -> Result<String, EngineError> {
        let registry = Arc::clone(&runner.registry);
        let mut executor = runner.executor(&registry, self.engine_id)?;
        loop {
            if let Some(sig) = signals.received() {
                return Ok(format!("received {sig}"));
            }
            let silent = Duration::from_millis(heartbeat.silence_ms(self.registered_at));
            if silent > lonely_timeout {
                return Err(EngineError::ControllerLost {
                    address: self.engine_addr.to_owned(),
                    silent,
                });
            }
            self.register_again_if_silent(silent)?;
            self.register_again_if_reconnected()?;
            match self.receive(heartbeat)? {
                Received::Shutdown => return Ok("the controller asked it to shut down".into()),
                Received::NewId => executor = runner.executor(&registry, self.engine_id)?,
                Received::Nothing => {}
            }
            if let Some(queued) = self.core.next_task() {
                if self.core.flush_before(&queued.task.work) {
                    self.flush()?;
                }
                let waited = self.arrivals.remove(&queued.task.id).map(|t| t.elapsed());
                let (outcome, payload, ran) = match too_late(&queued.task, waited, self.engine_id) {
                    Some(outcome) => (outcome, Vec::new(), None),
                    None => {
                        if queued.task.timeout_ms.is_some_and(|ms| ms > 0) {
                            self.started(queued.task.id)?;
                        }
                        runner.run(&executor, &queued.task, &queued.payload)
                    }
                };
                if let Some(function) = ran {
                    self.core
                        .on_ran(&function, Duration::from_micros(outcome.elapsed_us));
                }
                if self.core.must_flush_for(payload.len()) {
                    self.flush()?;
                }
                self.core.on_outcome(outcome, payload, Instant::now());
                // Pick up what arrived meanwhile, so the flush rule sees the real queue.
                let received = self.receive(heartbeat)?;
                let shutdown = received == Received::Shutdown;
                if received == Received::NewId {
                    executor = runner.executor(&registry, self.engine_id)?;
                }
                if shutdown || self.core.flush_due(Instant::now()) {
                    self.flush()?;
                }
                if shutdown {
                    return Ok("the controller asked it to shut down".into());
                }
                continue;
            }
            self.flush()?;
            poll(&[Waitable::Socket(&self.sock)], TICK_MS).map_err(|e| self.transport_err(e))?;
        }
    }

    /// No ping for a while: the controller died, restarted, or thinks this engine dead.
    /// Registers again (same uuid, asking for the same id), backing off while unanswered;
    /// the controller acknowledges a registration it already has without fuss.
    fn register_again_if_silent(&mut self, silent: Duration) -> Result<(), EngineError> {
        let threshold = (self.period * 2).max(REREGISTER_AFTER_MIN);
        if silent < threshold {
            self.next_attempt = None;
            self.backoff = Duration::ZERO;
            return Ok(());
        }
        let now = Instant::now();
        if self.next_attempt.is_some_and(|t| now < t) {
            return Ok(());
        }
        if self.next_attempt.is_none() {
            tracing::warn!(
                "no heartbeat from the controller at {} for {:.1} s; registering again as engine {}",
                self.engine_addr,
                silent.as_secs_f64(),
                self.engine_id
            );
        }
        self.backoff = (self.backoff * 2)
            .max(self.period.max(Duration::from_millis(500)))
            .min(REREGISTER_BACKOFF_MAX);
        self.next_attempt = Some(now + self.backoff);
        self.send_registration()
    }

    /// The connection to the controller went down and came back: register again now (a
    /// controller that did not restart acknowledges it without fuss).
    fn register_again_if_reconnected(&mut self) -> Result<(), EngineError> {
        if !self.sock.reconnected() {
            return Ok(());
        }
        tracing::info!(
            "the connection to the controller at {} came back; registering again as engine {}",
            self.engine_addr,
            self.engine_id
        );
        self.send_registration()
    }

    /// Sends this engine's registration, asking for its id and naming the tasks it holds;
    /// finished results go first, so that a controller that restarted has them before it
    /// counts this engine in.
    fn send_registration(&mut self) -> Result<(), EngineError> {
        self.flush()?;
        let mut registration = self.registration.clone();
        registration.engine_id = Some(self.engine_id);
        // A controller that restarted knows nothing of these; they run here, not again.
        registration.held = self.core.queued_ids();
        self.sock
            .send(None, &FromEngine::Register(registration), &[])
            .map_err(|e| self.transport_err(e))
    }

    /// Takes every waiting message without blocking.
    fn receive(&mut self, heartbeat: &HeartbeatThread) -> Result<Received, EngineError> {
        let mut received = Received::Nothing;
        loop {
            let got = match self.sock.recv::<ToEngine>() {
                Ok(Some(got)) => got,
                // `recv` skips bad messages itself; poll reports any still waiting.
                Ok(None) => return Ok(received),
                Err(e) => return Err(self.transport_err(e)),
            };
            match got.msg {
                ToEngine::Tasks { tasks } => {
                    let now = Instant::now();
                    for t in tasks.iter().filter(|t| t.start_within_ms.is_some()) {
                        self.arrivals.insert(t.id, now);
                    }
                    self.core.on_tasks(tasks, got.payloads)
                }
                ToEngine::Shutdown => return Ok(Received::Shutdown),
                ToEngine::Registered {
                    engine_id,
                    heartbeat_period_ms,
                } => {
                    if self.next_attempt.is_some() {
                        tracing::info!(
                            "registered again with the controller at {} as engine {engine_id}",
                            self.engine_addr
                        );
                    }
                    // Silence counts from here: pings resume within a period.
                    self.registered_at = heartbeat.now_ms();
                    self.next_attempt = None;
                    self.backoff = Duration::ZERO;
                    self.period = Duration::from_millis(heartbeat_period_ms.max(1));
                    if engine_id != self.engine_id {
                        tracing::warn!(
                            "engine {} is engine {engine_id} from now on (its id was taken)",
                            self.engine_id
                        );
                        self.engine_id = engine_id;
                        received = Received::NewId;
                    }
                }
                ToEngine::Refused { reason } => {
                    tracing::warn!("ignoring a refusal after registration: {reason}")
                }
            }
        }
    }

    /// Sends the waiting outcomes, if any, as one message.
    fn flush(&mut self) -> Result<(), EngineError> {
        let Some(Batch { outcomes, payloads }) = self.core.take_batch() else {
            return Ok(());
        };
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        self.sock
            .send(None, &FromEngine::Results { results: outcomes }, &refs)
            .map_err(|e| self.transport_err(e))
    }

    /// Tells the controller a task with a run-time limit starts now, so that its safety timer
    /// does not count the wait in this engine's queue.
    fn started(&mut self, id: TaskId) -> Result<(), EngineError> {
        self.sock
            .send(None, &FromEngine::Started { ids: vec![id] }, &[])
            .map_err(|e| self.transport_err(e))
    }

    /// Sends what is finished and `Unregister`, and lets closing wait to deliver them.
    /// Tasks still queued are not run; the controller treats them as lost with the engine.
    fn goodbye(&mut self) -> Result<(), EngineError> {
        if self.core.queued() > 0 {
            tracing::info!(
                "leaving {} queued tasks to the controller",
                self.core.queued()
            );
        }
        self.sock
            .set_linger(GOODBYE_LINGER_MS)
            .map_err(|e| self.transport_err(e))?;
        self.flush()?;
        self.sock
            .send(None, &FromEngine::Unregister, &[])
            .map_err(|e| self.transport_err(e))
    }
}

/// SIGTERM and SIGINT handlers: the first sets a flag the loops look at; a second one while
/// the flag is set exits at once (for a task that will not finish).
struct Signals {
    flag: Arc<AtomicBool>,
    which: Arc<AtomicUsize>,
    ids: Vec<SigId>,
}

impl Signals {
    fn install() -> Result<Signals, EngineError> {
        let flag = Arc::new(AtomicBool::new(false));
        let which = Arc::new(AtomicUsize::new(0));
        let mut ids = Vec::new();
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            let installed = (|| -> std::io::Result<()> {
                // Order matters: the exit check runs before this signal sets the flag.
                ids.push(signal_hook::flag::register_conditional_shutdown(
                    sig,
                    128 + sig,
                    Arc::clone(&flag),
                )?);
                ids.push(signal_hook::flag::register(sig, Arc::clone(&flag))?);
                ids.push(signal_hook::flag::register_usize(
                    sig,
                    Arc::clone(&which),
                    sig as usize,
                )?);
                Ok(())
            })();
            if let Err(e) = installed {
                for id in ids {
                    signal_hook::low_level::unregister(id);
                }
                return Err(EngineError::Signals(e));
            }
        }
        Ok(Signals { flag, which, ids })
    }

    /// The signal received, if any.
    fn received(&self) -> Option<&'static str> {
        if !self.flag.load(Ordering::Relaxed) {
            return None;
        }
        Some(match self.which.load(Ordering::Relaxed) as i32 {
            signal_hook::consts::SIGINT => "SIGINT",
            _ => "SIGTERM",
        })
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// The thread answering pings. It never runs user code, so a busy engine still answers.
struct HeartbeatThread {
    stop: Arc<AtomicBool>,
    /// Milliseconds since `base` (plus one, so 0 means never) at the last ping.
    last_ping: Arc<AtomicU64>,
    base: Instant,
    handle: JoinHandle<()>,
}

impl HeartbeatThread {
    fn start(
        ctx: &Context,
        key: &Key,
        (replay_window, encryption): (Duration, Encryption),
        uuid: &str,
        address: &str,
    ) -> Result<HeartbeatThread, EngineError> {
        let on_err = |source| EngineError::Transport {
            address: address.to_owned(),
            source,
        };
        let mut sock =
            Socket::new(ctx, Kind::Dealer, key, Some(uuid.as_bytes())).map_err(on_err)?;
        sock.set_replay_window(replay_window);
        sock.set_encryption(encryption);
        sock.connect(address).map_err(on_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let last_ping = Arc::new(AtomicU64::new(0));
        let base = Instant::now();
        let handle = {
            let stop = Arc::clone(&stop);
            let last_ping = Arc::clone(&last_ping);
            let uuid = uuid.to_owned();
            let address = address.to_owned();
            std::thread::Builder::new()
                .name("heartbeat".into())
                .spawn(move || {
                    if let Err(e) = answer_pings(&mut sock, &uuid, &stop, &last_ping, base) {
                        tracing::error!(
                            "heartbeat socket to {address} failed, no longer answering pings: {e}"
                        );
                    }
                })
                .map_err(EngineError::Thread)?
        };
        Ok(HeartbeatThread {
            stop,
            last_ping,
            base,
            handle,
        })
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64 + 1
    }

    /// Milliseconds since the last ping, or since `since` (a [`Self::now_ms`] reading) if
    /// that is later.
    fn silence_ms(&self, since: u64) -> u64 {
        let last = self.last_ping.load(Ordering::Relaxed).max(since);
        self.now_ms().saturating_sub(last)
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
    }
}

fn answer_pings(
    sock: &mut Socket,
    uuid: &str,
    stop: &AtomicBool,
    last_ping: &AtomicU64,
    base: Instant,
) -> Result<(), TransportError> {
    while !stop.load(Ordering::Relaxed) {
        poll(&[Waitable::Socket(sock)], TICK_MS)?;
        loop {
            let got = match sock.recv::<Heartbeat>()? {
                Some(got) => got,
                None if sock.readable() => continue,
                None => break,
            };
            if let Heartbeat::Ping { seq } = got.msg {
                last_ping.store(base.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
                sock.send(
                    None,
                    &Heartbeat::Pong {
                        seq,
                        uuid: uuid.to_owned(),
                    },
                    &[],
                )?;
            }
        }
    }
    Ok(())
}
