//! The socket loop around the core: registration, the heartbeat thread, receiving task
//! batches, sending result batches, and leaving on `Shutdown` or a signal.

use protocol::{EngineId, FromEngine, Heartbeat, Registration, ToEngine, PROTOCOL_VERSION};
use security::{ConnectionInfo, Key};
use signal_hook::SigId;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use transport::{poll, Context, Kind, Socket, TransportError, Waitable};

use crate::core::{Batch, Core};
use crate::exec::{Executor, Whoami};
use crate::{Engine, EngineError, EngineOptions};

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
    let mut sock =
        Socket::new(&ctx, Kind::Dealer, &key, Some(uuid.as_bytes())).map_err(on_engine)?;
    sock.connect(&engine_addr).map_err(on_engine)?;
    // Started before registering, so its connection is up by the time the controller pings.
    let heartbeat = HeartbeatThread::start(&ctx, &key, &uuid, &heartbeat_addr)?;

    let functions = engine.function_names();
    tracing::debug!(uuid, controller = %engine_addr, "registering {} functions", functions.len());
    sock.send(
        None,
        &FromEngine::Register(Registration {
            uuid: uuid.clone(),
            host: host.clone(),
            pid,
            functions,
            slots: 1,
        }),
        &[],
    )
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

    let whoami = protocol::encode(&Whoami {
        engine_id,
        pid,
        host,
    })
    .map_err(|e| EngineError::Internal(format!("cannot encode whoami: {e}")))?;
    let executor = Executor {
        registry: &engine.registry,
        engine: engine_id,
        max_output: engine.max_output_bytes,
        whoami,
    };
    let mut session = Session {
        sock,
        core: Core::default(),
        engine_addr: &engine_addr,
    };
    let result = session.serve(&executor, &signals, &heartbeat, options.lonely_timeout);
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

/// The registered engine's socket and core.
struct Session<'a> {
    sock: Socket,
    core: Core,
    engine_addr: &'a str,
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
        executor: &Executor<'_>,
        signals: &Signals,
        heartbeat: &HeartbeatThread,
        lonely_timeout: Duration,
    ) -> Result<String, EngineError> {
        let registered_at = heartbeat.now_ms();
        loop {
            if let Some(sig) = signals.received() {
                return Ok(format!("received {sig}"));
            }
            let silent = heartbeat.silence_ms(registered_at);
            if silent > lonely_timeout.as_millis() as u64 {
                return Err(EngineError::ControllerLost {
                    address: self.engine_addr.to_owned(),
                    silent: Duration::from_millis(silent),
                });
            }
            if self.receive()? {
                return Ok("the controller asked it to shut down".into());
            }
            if let Some(queued) = self.core.next_task() {
                if self.core.flush_before(&queued.task.work) {
                    self.flush()?;
                }
                let (outcome, payload, ran) = executor.run(&queued.task, &queued.payload);
                if let Some(function) = ran {
                    self.core
                        .on_ran(function, Duration::from_micros(outcome.elapsed_us));
                }
                if self.core.must_flush_for(payload.len()) {
                    self.flush()?;
                }
                self.core.on_outcome(outcome, payload, Instant::now());
                // Pick up what arrived meanwhile, so the flush rule sees the real queue.
                let shutdown = self.receive()?;
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

    /// Takes every waiting message without blocking; true when one was `Shutdown`.
    fn receive(&mut self) -> Result<bool, EngineError> {
        loop {
            let got = match self.sock.recv::<ToEngine>() {
                Ok(Some(got)) => got,
                Ok(None) if self.sock.readable() => continue,
                Ok(None) => return Ok(false),
                Err(e) => return Err(self.transport_err(e)),
            };
            match got.msg {
                ToEngine::Tasks { tasks } => self.core.on_tasks(tasks, got.payloads),
                ToEngine::Shutdown => return Ok(true),
                ToEngine::Registered { engine_id, .. } => {
                    tracing::debug!("ignoring a repeated registration answer (engine {engine_id})")
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
        uuid: &str,
        address: &str,
    ) -> Result<HeartbeatThread, EngineError> {
        let on_err = |source| EngineError::Transport {
            address: address.to_owned(),
            source,
        };
        let mut sock =
            Socket::new(ctx, Kind::Dealer, key, Some(uuid.as_bytes())).map_err(on_err)?;
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
