//! The socket loop around the core: registration, receiving task batches, running them,
//! sending result batches, and leaving on `Shutdown` or a signal.
//!
//! | module | owns |
//! |---|---|
//! | this one | connecting, the first registration, the loop ([`Session::serve`]) and goodbye |
//! | `heartbeat` | the thread that answers pings and notes when the last one came |
//! | `runner` | running one task, inline or on a helper thread it may abandon |
//! | `signals` | SIGTERM/SIGINT handlers and the stop flag they set; SIGUSR1 (drain) |
//!
//! The decisions live in the sans-IO core (`crate::core`): when results go out, when a task
//! waited too long to start, and (`core::link`) when silence means registering again and
//! when it means giving up. This loop reads the clock and hands `now` to them.
//!
//! On SIGTERM/SIGINT the engine finishes or hands back the task it is running: a task that
//! ends within `STOP_GRACE` reports its result; a command still running then is killed and a
//! function abandoned in its thread, and either is reported as lost with the engine (the
//! controller runs it elsewhere if its retries allow). Then the engine sends what is done and
//! `Unregister`, and returns `Ok`. Tasks still queued are left to the controller.
//!
//! On SIGUSR1 (a drain: Slurm's `--signal` before the wall-time limit) the engine takes no
//! further task from its queue once the running one has finished, sends what is done, hands
//! the tasks it still holds back (`HandBack`, with their arguments: the controller queues them
//! again without spending a retry), sends `Unregister`, and returns `Ok`.

mod heartbeat;
mod runner;
mod signals;

use protocol::{
    EngineId, FromEngine, LaunchInfo, Registration, TaskId, ToEngine, PROTOCOL_VERSION,
};
use security::ConnectionInfo;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use transport::{poll, Context, Encryption, Kind, Socket, TransportError, Waitable};

use crate::core::link::{Link, Silence};
use crate::core::{Batch, Core, Next};
use crate::exec::Executor;
use crate::registry::Registry;
use crate::{Engine, EngineError, EngineOptions};
use heartbeat::HeartbeatThread;
use runner::{Done, Runner};
use signals::Signals;

/// How often the loops wake up to notice signals and stop requests.
const TICK_MS: i64 = 100;

/// How long a draining engine listens after handing its queue back, for tasks the controller
/// sent before the hand-back reached it (they go back too).
const HAND_BACK_QUIET: Duration = Duration::from_millis(100);

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
    let on_engine = |error| EngineError::Transport {
        address: engine_addr.clone(),
        error,
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
        launch: LaunchInfo::from_process_env(),
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

    let runner = Runner::new(
        Arc::new(engine.registry.clone()),
        engine.max_output_bytes,
        (pid, host, registration.launch.as_ref().map(|l| l.rank)),
        signals.stop().clone(),
    );
    let link = Link::new(engine_id, period_ms, options.lonely_timeout, Instant::now());
    let mut session = Session {
        sock,
        core: Core::default(),
        link,
        engine_addr: &engine_addr,
        registration,
    };
    let result = session.serve(runner, &signals, &heartbeat);
    let engine_id = session.link.engine_id();
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
    let on_err = |error| EngineError::Transport {
        address: address.to_owned(),
        error,
    };
    loop {
        if let Some(sig) = signals.received() {
            tracing::info!("stopping before registration: received {sig}");
            return Ok(None);
        }
        if signals.draining() {
            tracing::info!("stopping before registration: received SIGUSR1 (drain)");
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

/// What [`Session::receive`] found besides tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Received {
    Nothing,
    /// The controller said `Shutdown`.
    Shutdown,
    /// A registration answer changed the engine's id.
    NewId,
}

/// The registered engine's socket, core and link, and what re-registering needs.
struct Session<'a> {
    sock: Socket,
    core: Core,
    link: Link,
    engine_addr: &'a str,
    registration: Registration,
}

impl Session<'_> {
    fn transport_err(&self, error: TransportError) -> EngineError {
        EngineError::Transport {
            address: self.engine_addr.to_owned(),
            error,
        }
    }

    /// Runs tasks until told to stop; returns why.
    fn serve(
        &mut self,
        mut runner: Runner,
        signals: &Signals,
        heartbeat: &HeartbeatThread,
    ) -> Result<String, EngineError> {
        let registry = runner.registry();
        let mut executor = runner.executor(&registry, self.link.engine_id())?;
        loop {
            if let Some(sig) = signals.received() {
                return Ok(format!("received {sig}"));
            }
            // Checked between tasks only: the one running when SIGUSR1 came has finished.
            if signals.draining() {
                let handed = self.hand_back()?;
                return Ok(format!(
                    "received SIGUSR1 (drain), handed back {handed} queued task(s)"
                ));
            }
            self.watch_silence(Instant::now(), heartbeat.last_ping())?;
            self.register_again_if_reconnected()?;
            match self.receive()? {
                Received::Shutdown => return Ok("the controller asked it to shut down".into()),
                Received::NewId => executor = runner.executor(&registry, self.link.engine_id())?,
                Received::Nothing => {}
            }
            let Some(next) = self.core.next_task(Instant::now(), self.link.engine_id()) else {
                self.flush()?;
                poll(&[Waitable::Socket(&self.sock)], TICK_MS)
                    .map_err(|e| self.transport_err(e))?;
                continue;
            };
            let done = match next {
                Next::TooLate(outcome) => (outcome, Vec::new(), None),
                Next::Run(queued) => {
                    let work = &queued.task.work;
                    if self.core.flush_before(work) {
                        self.flush()?;
                    }
                    if queued.task.timeout_ms.is_some_and(|ms| ms > 0) {
                        self.started(queued.task.id)?;
                    }
                    let batch = match registry.get_batch(work.name()) {
                        Some(_) => self.core.take_alike(&queued),
                        None => Vec::new(),
                    };
                    if batch.is_empty() {
                        let may_be_long = self.core.may_be_long(work);
                        runner.run(&executor, queued.task, queued.payload, may_be_long)
                    } else {
                        tracing::trace!("running {} tasks as one batch", batch.len() + 1);
                        let tasks = std::iter::once(queued).chain(batch).collect();
                        // Every result of the batch joins the outbox, also after a
                        // `Shutdown`, so that goodbye sends them.
                        let mut shutdown = false;
                        for done in runner.run_batch(&executor, tasks) {
                            shutdown |= self.after(&mut executor, &runner, &registry, done)?;
                        }
                        if shutdown {
                            return Ok("the controller asked it to shut down".into());
                        }
                        continue;
                    }
                }
            };
            if self.after(&mut executor, &runner, &registry, done)? {
                return Ok("the controller asked it to shut down".into());
            }
        }
    }

    /// Hands a finished task to [`Session::on_done`] and follows up on what arrived
    /// meanwhile; true when the controller said `Shutdown`.
    fn after<'r>(
        &mut self,
        executor: &mut Executor<'r>,
        runner: &Runner,
        registry: &'r Registry,
        done: Done,
    ) -> Result<bool, EngineError> {
        let received = self.on_done(done)?;
        if received == Received::NewId {
            *executor = runner.executor(registry, self.link.engine_id())?;
        }
        Ok(received == Received::Shutdown)
    }

    /// A task finished (or was not run): its outcome joins the outbox, which goes out when
    /// the core says so. Returns what arrived meanwhile.
    fn on_done(&mut self, (outcome, payload, ran): Done) -> Result<Received, EngineError> {
        if let Some(function) = ran {
            self.core
                .on_ran(&function, Duration::from_micros(outcome.elapsed_us));
        }
        if self.core.must_flush_for(payload.len()) {
            self.flush()?;
        }
        self.core.on_outcome(outcome, payload, Instant::now());
        // Pick up what arrived meanwhile, so the flush rule sees the real queue.
        let received = self.receive()?;
        if received == Received::Shutdown || self.core.flush_due(Instant::now()) {
            self.flush()?;
        }
        Ok(received)
    }

    /// Registers again (same uuid, asking for the same id) when the link's rule says so, or
    /// gives up on a controller silent past the lonely timeout. The controller acknowledges a
    /// registration it already has without fuss.
    fn watch_silence(
        &mut self,
        now: Instant,
        last_ping: Option<Instant>,
    ) -> Result<(), EngineError> {
        match self.link.on_tick(now, last_ping) {
            Silence::Fine => Ok(()),
            Silence::Lost { silent } => Err(EngineError::ControllerLost {
                address: self.engine_addr.to_owned(),
                silent,
            }),
            Silence::RegisterAgain { silent, first } => {
                if first {
                    tracing::warn!(
                        "no heartbeat from the controller at {} for {:.1} s; registering again as engine {}",
                        self.engine_addr,
                        silent.as_secs_f64(),
                        self.link.engine_id()
                    );
                }
                self.send_registration()
            }
        }
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
            self.link.engine_id()
        );
        self.send_registration()
    }

    /// Sends this engine's registration, asking for its id and naming the tasks it holds;
    /// finished results go first, so that a controller that restarted has them before it
    /// counts this engine in.
    fn send_registration(&mut self) -> Result<(), EngineError> {
        self.flush()?;
        let mut registration = self.registration.clone();
        registration.engine_id = Some(self.link.engine_id());
        // A controller that restarted knows nothing of these; they run here, not again.
        registration.held = self.core.queued_ids();
        self.sock
            .send(None, &FromEngine::Register(registration), &[])
            .map_err(|e| self.transport_err(e))
    }

    /// Takes every waiting message without blocking.
    fn receive(&mut self) -> Result<Received, EngineError> {
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
                    self.core.on_tasks(tasks, got.payloads, Instant::now())
                }
                ToEngine::Shutdown => return Ok(Received::Shutdown),
                ToEngine::Registered {
                    engine_id,
                    heartbeat_period_ms,
                } => {
                    let answered =
                        self.link
                            .on_registered(engine_id, heartbeat_period_ms, Instant::now());
                    if answered.again {
                        tracing::info!(
                            "registered again with the controller at {} as engine {engine_id}",
                            self.engine_addr
                        );
                    }
                    if let Some(previous) = answered.previous_id {
                        tracing::warn!(
                            "engine {previous} is engine {engine_id} from now on (its id was taken)"
                        );
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

    /// Sends what is finished, then gives the tasks still queued back to the controller
    /// (`HandBack`), which runs them elsewhere without counting a retry. Tasks the controller
    /// sent before it heard of the drain may still be on their way: whatever arrives within
    /// [`HAND_BACK_QUIET`] of the last hand-back goes back too. Returns how many.
    fn hand_back(&mut self) -> Result<usize, EngineError> {
        self.flush()?;
        let mut handed = 0;
        let mut quiet_until = Instant::now() + HAND_BACK_QUIET;
        loop {
            let received = self.receive()?;
            let queued = self.core.take_queue();
            if !queued.is_empty() {
                let (tasks, payloads): (Vec<_>, Vec<_>) =
                    queued.into_iter().map(|q| (q.task, q.payload)).unzip();
                let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
                handed += tasks.len();
                self.sock
                    .send(None, &FromEngine::HandBack { tasks }, &refs)
                    .map_err(|e| self.transport_err(e))?;
                quiet_until = Instant::now() + HAND_BACK_QUIET;
            }
            let now = Instant::now();
            if received == Received::Shutdown || now >= quiet_until {
                return Ok(handed);
            }
            let wait = quiet_until.duration_since(now).as_millis().max(1) as i64;
            poll(&[Waitable::Socket(&self.sock)], wait.min(TICK_MS))
                .map_err(|e| self.transport_err(e))?;
        }
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
