//! Simulated engines: many engines in one process, for benchmarks and tests of a controller
//! holding thousands of them (`cluster bench scale`).
//!
//! Each simulated engine is a real peer on the wire: its own two connections (tasks and
//! heartbeats) to the controller, a registration offering `noop`, pongs for every ping, and
//! an immediate `nil` result for every task (an array of nils for a map chunk). What it does
//! not do is run anything: no registry, no command runner, no worker thread. Up to 400
//! engines share a thread and a libzmq context.
//!
//! ```text
//! SimEngines::start(engine.json, n) ─> threads of ≤400 engines ─> Register each
//!   poll all sockets: Ping → Pong, Registered → counted, Tasks → Results (nil)
//! close(id)  ─> that engine's sockets dropped (the controller sees the disconnect)
//! stop()     ─> threads end, tasks run per engine id
//! ```

use protocol::{
    EngineId, FromEngine, Heartbeat, Registration, Status, TaskOutcome, ToEngine, Work,
    PROTOCOL_VERSION,
};
use security::ConnectionInfo;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use transport::{poll, Context, Encryption, Kind, Socket, TransportError, Waitable};

/// Engines one simulator thread (and libzmq context) holds: 800 sockets.
const PER_THREAD: usize = 400;

/// What can go wrong with simulated engines.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The engine connection file is missing or bad (the message names it).
    #[error(transparent)]
    ConnectionFile(#[from] security::ConnectionFileError),
    /// A socket failed: the controller's address in the file is wrong, or libzmq ran out of
    /// something (file descriptors: raise `ulimit -n` for thousands of engines).
    /// (The transport's error is in the message, not also a `source()`.)
    #[error("simulated engines: {0}")]
    Transport(TransportError),
    /// A simulator thread could not be started or ended abnormally.
    #[error("simulated engines: {0}")]
    Thread(String),
    /// The engine asked to close is not among the simulated ones (or was closed already).
    #[error("simulated engine {0} is not connected")]
    NoSuchEngine(EngineId),
}

impl From<TransportError> for SimError {
    fn from(e: TransportError) -> SimError {
        SimError::Transport(e)
    }
}

/// One simulated engine: its two connections and what it did.
struct SimEngine {
    uuid: String,
    tasks: Socket,
    beats: Socket,
    id: Option<EngineId>,
    ran: u64,
}

/// State shared by the simulator threads and their owner.
struct Shared {
    stop: AtomicBool,
    registered: AtomicUsize,
    tasks: AtomicU64,
    /// Engine id whose connections to close (`u32::MAX`: none).
    close: AtomicU32,
    closed_at: Mutex<Option<Instant>>,
}

/// Tasks one engine ran, by engine id.
type Ran = Vec<(Option<EngineId>, u64)>;

/// Simulated engines connected to one controller; see the [module documentation](self).
#[derive(Debug)]
pub struct SimEngines {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<Result<Ran, SimError>>>,
    count: usize,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("registered", &self.registered.load(Ordering::Relaxed))
            .field("tasks", &self.tasks.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SimEngines {
    /// Connects `n` simulated engines with the engine connection file `engine_file` and sends
    /// their registrations; [`SimEngines::registered`] counts the answers.
    pub fn start(engine_file: &Path, n: usize) -> Result<SimEngines, SimError> {
        let (info, key) =
            ConnectionInfo::load(engine_file, PROTOCOL_VERSION, &["engine", "heartbeat"])?;
        let engine_addr = info.addresses.engine.clone().unwrap_or_default();
        let hb_addr = info.addresses.heartbeat.clone().unwrap_or_default();
        let encryption = Encryption::endpoint(info.encrypted());
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            registered: AtomicUsize::new(0),
            tasks: AtomicU64::new(0),
            close: AtomicU32::new(u32::MAX),
            closed_at: Mutex::new(None),
        });
        let tag = run_tag();
        let mut threads = Vec::new();
        for start in (0..n).step_by(PER_THREAD) {
            let ctx = Context::new();
            let mut engines = Vec::new();
            for i in start..n.min(start + PER_THREAD) {
                let uuid = format!("sim-{tag:08x}-{i:06}");
                let connect = |address: &str| -> Result<Socket, SimError> {
                    let mut sock = Socket::new(&ctx, Kind::Dealer, &key, Some(uuid.as_bytes()))?;
                    sock.set_encryption(encryption);
                    sock.connect(address)?;
                    Ok(sock)
                };
                let mut engine = SimEngine {
                    tasks: connect(&engine_addr)?,
                    beats: connect(&hb_addr)?,
                    uuid: uuid.clone(),
                    id: None,
                    ran: 0,
                };
                engine.tasks.send(None, &registration(uuid, i), &[])?;
                engines.push(engine);
            }
            let shared = Arc::clone(&shared);
            let thread = std::thread::Builder::new()
                .name("sim-engines".into())
                .spawn(move || simulate(engines, &shared, ctx))
                .map_err(|e| SimError::Thread(format!("cannot start a thread: {e}")))?;
            threads.push(thread);
        }
        Ok(SimEngines {
            shared,
            threads,
            count: n,
        })
    }

    /// Engines started.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Engines that got their `Registered` answer.
    pub fn registered(&self) -> usize {
        self.shared.registered.load(Ordering::Relaxed)
    }

    /// Tasks run so far, all engines together.
    pub fn tasks_run(&self) -> u64 {
        self.shared.tasks.load(Ordering::Relaxed)
    }

    /// Waits until every engine has registered, or `timeout`; returns how many have.
    pub fn wait_registered(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        while self.registered() < self.count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.registered()
    }

    /// Closes engine `id`'s two connections (as a killed engine's would close) and returns
    /// when that happened.
    pub fn close(&self, id: EngineId, timeout: Duration) -> Result<Instant, SimError> {
        *lock(&self.shared.closed_at) = None;
        self.shared.close.store(id.0, Ordering::Relaxed);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) = *lock(&self.shared.closed_at) {
                return Ok(at);
            }
            if Instant::now() > deadline {
                self.shared.close.store(u32::MAX, Ordering::Relaxed);
                return Err(SimError::NoSuchEngine(id));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Stops every engine (their connections close) and returns the tasks each ran.
    pub fn stop(mut self) -> Result<HashMap<EngineId, u64>, SimError> {
        self.shared.stop.store(true, Ordering::Relaxed);
        let mut per_engine = HashMap::new();
        for thread in std::mem::take(&mut self.threads) {
            let ran = thread
                .join()
                .map_err(|_| SimError::Thread("a simulator thread panicked".into()))??;
            per_engine.extend(ran.into_iter().filter_map(|(id, n)| Some((id?, n))));
        }
        Ok(per_engine)
    }
}

impl Drop for SimEngines {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn registration(uuid: String, i: usize) -> FromEngine {
    FromEngine::Register(Registration {
        uuid,
        host: "simulated".into(),
        pid: i as u32,
        functions: vec!["noop".into()],
        slots: 1,
        engine_id: None,
        held: Vec::new(),
        launch: None,
    })
}

/// A tag that keeps the uuids of two runs apart (a controller that outlives a run would
/// otherwise give the next run's engines their old ids).
fn run_tag() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    t ^ std::process::id().rotate_left(16)
}

/// The result payload of `noop` for a task: nil, or an array of as many nils as the chunk
/// has items for a map chunk.
fn noop_result(work: &Work, payload: &[u8]) -> Vec<u8> {
    let Work::Map { .. } = work else {
        return vec![0xc0];
    };
    let n = crate::msgpack::split_array(payload).map_or(0, |a| a.items.len());
    let mut out = Vec::with_capacity(n + 5);
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if let Ok(n16) = u16::try_from(n) {
        out.push(0xdc);
        out.extend_from_slice(&n16.to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.resize(out.len() + n, 0xc0);
    out
}

/// One simulator thread: its engines until told to stop.
fn simulate(mut engines: Vec<SimEngine>, shared: &Shared, _ctx: Context) -> Result<Ran, SimError> {
    while !shared.stop.load(Ordering::Relaxed) {
        let close = shared.close.load(Ordering::Relaxed);
        if close != u32::MAX {
            if let Some(i) = engines.iter().position(|e| e.id == Some(EngineId(close))) {
                drop(engines.swap_remove(i));
                *lock(&shared.closed_at) = Some(Instant::now());
                shared.close.store(u32::MAX, Ordering::Relaxed);
            }
        }
        let items: Vec<Waitable<'_>> = engines
            .iter()
            .flat_map(|e| [Waitable::Socket(&e.tasks), Waitable::Socket(&e.beats)])
            .collect();
        let flags = poll(&items, 20)?;
        drop(items);
        let ready: Vec<bool> = flags.chunks(2).map(|f| f[0] || f[1]).collect();
        for (e, _) in engines.iter_mut().zip(ready).filter(|(_, r)| *r) {
            answer_pings(e)?;
            answer_tasks(e, shared)?;
        }
    }
    Ok(engines.iter().map(|e| (e.id, e.ran)).collect())
}

fn answer_pings(e: &mut SimEngine) -> Result<(), SimError> {
    while let Some(got) = e.beats.recv::<Heartbeat>()? {
        if let Heartbeat::Ping { seq } = got.msg {
            let pong = Heartbeat::Pong {
                seq,
                uuid: e.uuid.clone(),
                usage: None,
            };
            e.beats.send(None, &pong, &[])?;
        }
    }
    Ok(())
}

fn answer_tasks(e: &mut SimEngine, shared: &Shared) -> Result<(), SimError> {
    while let Some(got) = e.tasks.recv::<ToEngine>()? {
        match got.msg {
            ToEngine::Registered { engine_id, .. } => {
                if e.id.is_none() {
                    shared.registered.fetch_add(1, Ordering::Relaxed);
                }
                e.id = Some(engine_id);
            }
            ToEngine::Tasks { tasks } => {
                let mut args = got.payloads.iter();
                let mut payloads = Vec::with_capacity(tasks.len());
                let mut results = Vec::with_capacity(tasks.len());
                for t in tasks {
                    let arg = args.next().map(Vec::as_slice).unwrap_or(&[]);
                    payloads.push(noop_result(&t.work, arg));
                    results.push(TaskOutcome {
                        id: t.id,
                        engine: e.id,
                        status: Status::Ok,
                        started_us: 1,
                        elapsed_us: 1,
                    });
                }
                e.ran += results.len() as u64;
                shared
                    .tasks
                    .fetch_add(results.len() as u64, Ordering::Relaxed);
                let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
                e.tasks
                    .send(None, &FromEngine::Results { results }, &refs)?;
            }
            ToEngine::Shutdown | ToEngine::Refused { .. } => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noop_answers_a_chunk_with_as_many_nils() {
        let map = Work::Map {
            function: "noop".into(),
        };
        for n in [0usize, 3, 15, 16, 300, 70_000] {
            let arg = rmp_serde::to_vec(&vec![(); n]).unwrap();
            let out: Vec<()> = rmp_serde::from_slice(&noop_result(&map, &arg)).unwrap();
            assert_eq!(out.len(), n);
        }
        let one = Work::Call {
            function: "noop".into(),
        };
        assert_eq!(noop_result(&one, &[0xc0]), [0xc0]);
    }
}
