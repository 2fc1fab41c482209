//! The writer: a thread that owns the write connection and turns records into batched
//! transactions, keeps the per-function figures, enforces retention, and rides out write
//! errors without losing what it was sent.

use crate::hist::Histogram;
use crate::lock::LockFile;
use crate::record::{Finished, Payload, PayloadState, Purge, Record, Submitted, TaskState};
use crate::{StoreConfig, StoreError};
use protocol::{ErrorKind, Status, TaskId, TaskOptions, Work};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A batch commits early once it holds this many records, so that one transaction (and the
/// memory of its coalescing map) stays small whatever the rate.
const MAX_BATCH_RECORDS: usize = 100_000;
/// Rows one retention transaction deletes, and most one retention pass deletes before it
/// lets records through again (the rest follows right after).
const RETENTION_CHUNK: i64 = 10_000;
const RETENTION_PASS_ROWS: u64 = 200_000;
/// First and longest wait between two tries to write while writing fails.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// The function name under which outcomes with no recorded submission are counted.
pub(crate) const UNKNOWN_FUNCTION: &str = "(unknown)";

/// Whether the store is writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Records are being committed.
    Ok,
    /// Records are not being committed (disk full, I/O error, backlog full): why. The
    /// controller goes on serving from memory; the writer keeps retrying and resumes by
    /// itself (see [`Counters::dropped_records`] for anything lost meanwhile).
    Degraded(String),
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Health::Ok => f.write_str("ok"),
            Health::Degraded(why) => write!(f, "degraded ({why})"),
        }
    }
}

/// The writer's counters since the store was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Records committed.
    pub committed_records: u64,
    /// Transactions committed (batches).
    pub commits: u64,
    /// Records sent and not yet committed.
    pub backlog_records: u64,
    /// Payload bytes sent and not yet committed.
    pub backlog_bytes: u64,
    /// Records dropped because the backlog was full (lost history).
    pub dropped_records: u64,
    /// Payloads dropped (metadata kept) because the backlog's bytes were full.
    pub dropped_payloads: u64,
    /// Failed tries to commit.
    pub write_errors: u64,
    /// Finished records deleted by retention (age or size).
    pub retention_deleted: u64,
    /// Bytes of the database in use (pages holding data).
    pub db_bytes: u64,
}

/// State shared by the writer handle, its thread and the readers.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    backlog_records: AtomicUsize,
    backlog_bytes: AtomicU64,
    committed_records: AtomicU64,
    commits: AtomicU64,
    dropped_records: AtomicU64,
    dropped_payloads: AtomicU64,
    write_errors: AtomicU64,
    retention_deleted: AtomicU64,
    db_bytes: AtomicU64,
    /// Set by senders while they drop records, cleared once the backlog has room again.
    backlog_full: AtomicBool,
    /// Why writing fails, while it does.
    failing: Mutex<Option<String>>,
}

impl Shared {
    pub(crate) fn health(&self) -> Health {
        if let Some(why) = self
            .failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Health::Degraded(why);
        }
        if self.backlog_full.load(Ordering::Relaxed) {
            return Health::Degraded(format!(
                "the writer fell behind: {} records dropped",
                self.dropped_records.load(Ordering::Relaxed)
            ));
        }
        Health::Ok
    }

    pub(crate) fn counters(&self) -> Counters {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counters {
            committed_records: r(&self.committed_records),
            commits: r(&self.commits),
            backlog_records: self.backlog_records.load(Ordering::Relaxed) as u64,
            backlog_bytes: r(&self.backlog_bytes),
            dropped_records: r(&self.dropped_records),
            dropped_payloads: r(&self.dropped_payloads),
            write_errors: r(&self.write_errors),
            retention_deleted: r(&self.retention_deleted),
            db_bytes: r(&self.db_bytes),
        }
    }

    fn set_failing(&self, why: Option<String>) {
        *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }
}

/// What retention did ([`Writer::enforce_retention`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Records deleted for their age.
    pub by_age: u64,
    /// Records deleted to bring the database under `max_db_bytes`.
    pub by_size: u64,
    /// Database bytes in use afterwards.
    pub db_bytes: u64,
}

type Reply<T> = mpsc::Sender<Result<T, StoreError>>;

/// Messages to the writer thread.
pub(crate) enum Msg {
    Records {
        records: Vec<Record>,
        /// What the sender added to the backlog counters for them.
        counted: usize,
        bytes: u64,
        /// Payloads were stripped by the backlog bound: absent ones read back as `Backlog`.
        stripped: bool,
    },
    Purge(Purge, Option<Reply<u64>>),
    /// Changes to the shared objects (`objects.rs`), applied in order.
    Objects(Vec<crate::ObjectRecord>),
    Flush(Reply<()>),
    Retention(u64, Reply<RetentionReport>),
    Shutdown,
}

/// The sending side of the store: cheap, never blocks, never fails (see [`Writer::send`]).
/// Dropping it commits what was sent and stops the thread.
#[derive(Debug)]
pub struct Writer {
    tx: Option<mpsc::Sender<Msg>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    max_records: usize,
    max_bytes: u64,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Records { records, .. } => write!(f, "Records({})", records.len()),
            Msg::Purge(p, _) => write!(f, "Purge({p:?})"),
            Msg::Objects(r) => write!(f, "Objects({})", r.len()),
            Msg::Flush(_) => f.write_str("Flush"),
            Msg::Retention(t, _) => write!(f, "Retention({t})"),
            Msg::Shutdown => f.write_str("Shutdown"),
        }
    }
}

impl Writer {
    /// A writer that discards everything (`db = "none"`).
    pub(crate) fn disabled(shared: Arc<Shared>) -> Writer {
        Writer {
            tx: None,
            shared,
            thread: None,
            max_records: 0,
            max_bytes: 0,
        }
    }

    /// Starts the thread on `conn` (already checked by `schema`).
    pub(crate) fn spawn(
        conn: Arc<Mutex<Connection>>,
        config: &StoreConfig,
        shared: Arc<Shared>,
        lock: Option<Arc<LockFile>>,
    ) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::channel();
        let path = if config.kind == crate::StoreKind::Memory {
            PathBuf::from(":memory:")
        } else {
            config.path.clone()
        };
        let mut thread = WriterThread {
            conn,
            path,
            config: config.clone(),
            shared: shared.clone(),
            rx,
            pending: Vec::new(),
            pending_records: 0,
            batch_started: None,
            state: State::default(),
            failing_since: None,
            retry_delay: RETRY_FIRST,
            retry_at: None,
            next_retention: Instant::now(),
            _lock: lock,
            stopped_cleanly: false,
        };
        thread
            .reload()
            .map_err(|e| StoreError::from_sqlite(&thread.path, e))?;
        thread.refresh_size();
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || thread.run())
            .map_err(|e| StoreError::Unreadable {
                path: config.path.clone(),
                detail: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(Writer {
            tx: Some(tx),
            shared,
            thread: Some(handle),
            max_records: config.backlog_max_records,
            max_bytes: config.backlog_max_bytes,
        })
    }

    /// Sends one record (see [`Writer::send`]).
    pub fn record(&self, record: Record) {
        self.send(vec![record]);
    }

    /// Sends records to be committed within one commit interval. Never blocks: past
    /// `backlog_max_records` unwritten records the records are dropped (counted in
    /// [`Counters::dropped_records`], health degraded), past `backlog_max_bytes` their
    /// payloads are (metadata kept, read back as [`PayloadState::Backlog`]). Purges are
    /// never dropped.
    pub fn send(&self, mut records: Vec<Record>) {
        let Some(tx) = &self.tx else { return };
        if records.is_empty() {
            return;
        }
        let mut counted = records
            .iter()
            .filter(|r| !matches!(r, Record::Purged(_)))
            .count();
        let before = self
            .shared
            .backlog_records
            .fetch_add(counted, Ordering::Relaxed);
        if before + counted > self.max_records {
            self.shared
                .backlog_records
                .fetch_sub(counted, Ordering::Relaxed);
            self.shared
                .dropped_records
                .fetch_add(counted as u64, Ordering::Relaxed);
            if !self.shared.backlog_full.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "task store: {} records wait to be written (backlog_max_records); dropping \
                     new records until the writer catches up",
                    before
                );
            }
            records.retain(|r| matches!(r, Record::Purged(_)));
            counted = 0;
            if records.is_empty() {
                return;
            }
        }
        let mut bytes: u64 = records.iter().map(Record::payload_bytes).sum();
        let mut stripped = false;
        if bytes > 0 {
            let before = self
                .shared
                .backlog_bytes
                .fetch_add(bytes, Ordering::Relaxed);
            if before + bytes > self.max_bytes {
                self.shared
                    .backlog_bytes
                    .fetch_sub(bytes, Ordering::Relaxed);
                let n = records.iter().filter(|r| r.payload_bytes() > 0).count();
                self.shared
                    .dropped_payloads
                    .fetch_add(n as u64, Ordering::Relaxed);
                records.iter_mut().for_each(Record::strip_payload);
                bytes = 0;
                stripped = true;
            }
        }
        // A send fails only once the thread has stopped; the records go nowhere then.
        let _ = tx.send(Msg::Records {
            records,
            counted,
            bytes,
            stripped,
        });
    }

    /// Sends changes to the shared objects, committed with the next batch (in order, after
    /// everything sent before). Never blocks; never dropped (the hub bounds the objects'
    /// bytes itself).
    pub fn send_objects(&self, records: Vec<crate::ObjectRecord>) {
        if let (Some(tx), false) = (&self.tx, records.is_empty()) {
            let _ = tx.send(Msg::Objects(records));
        }
    }

    /// Deletes finished records; the receiver gets how many once committed (drop it if the
    /// count does not matter). Ordered after every record sent before.
    pub fn purge(&self, purge: Purge) -> mpsc::Receiver<Result<u64, StoreError>> {
        let (reply, answer) = mpsc::channel();
        match &self.tx {
            Some(tx) => {
                if tx.send(Msg::Purge(purge, Some(reply.clone()))).is_err() {
                    let _ = reply.send(Err(StoreError::Closed));
                }
            }
            None => {
                let _ = reply.send(Ok(0));
            }
        }
        answer
    }

    /// Waits until everything sent before is committed. For tests, tools and shutdown; the
    /// hub's loop never calls it. While writing fails it answers that error at once (the
    /// records stay queued for the next try).
    pub fn flush(&self) -> Result<(), StoreError> {
        let Some(tx) = &self.tx else { return Ok(()) };
        let (reply, answer) = mpsc::channel();
        tx.send(Msg::Flush(reply)).map_err(|_| StoreError::Closed)?;
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    /// Runs retention now, as if the time were `now_us` (the writer runs it by itself every
    /// `retention_check`); waits for the answer.
    pub fn enforce_retention(&self, now_us: u64) -> Result<RetentionReport, StoreError> {
        let Some(tx) = &self.tx else {
            return Ok(RetentionReport::default());
        };
        let (reply, answer) = mpsc::channel();
        tx.send(Msg::Retention(now_us, reply))
            .map_err(|_| StoreError::Closed)?;
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    /// Whether records are being written (for `cluster status`: `store: ok`).
    pub fn health(&self) -> Health {
        self.shared.health()
    }

    /// The writer's counters.
    pub fn counters(&self) -> Counters {
        self.shared.counters()
    }

    /// Commits what was sent and stops the thread; an error says records could not be
    /// written (they are lost).
    pub fn close(mut self) -> Result<(), StoreError> {
        let flushed = self.flush();
        self.stop();
        flushed
    }

    fn stop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Msg::Shutdown);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A task not finished, as the writer tracks it for the figures.
#[derive(Debug, Clone, Copy)]
struct Live {
    function: u32,
    state: TaskState,
}

#[derive(Debug, Default, Clone)]
struct FnStats {
    queued: i64,
    running: i64,
    ok: i64,
    failed: i64,
    hist: Histogram,
}

impl FnStats {
    fn count(&mut self, state: TaskState, delta: i64) {
        match state {
            TaskState::Queued => self.queued += delta,
            TaskState::Running => self.running += delta,
            TaskState::Ok => self.ok += delta,
            TaskState::Failed => self.failed += delta,
        }
    }
}

/// The writer's memory of the database: unfinished tasks and per-function figures. Bounded
/// by the number of unfinished tasks (which the hub holds anyway) and of function names.
/// Reloaded from the database after a failed transaction, so it never drifts from it.
#[derive(Debug, Default)]
struct State {
    live: HashMap<TaskId, Live>,
    names: Vec<String>,
    by_name: HashMap<String, u32>,
    stats: HashMap<u32, FnStats>,
    touched: HashSet<u32>,
    stale: bool,
}

impl State {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.by_name.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.by_name.insert(name.to_owned(), i);
        i
    }

    fn stats(&mut self, f: u32) -> &mut FnStats {
        self.touched.insert(f);
        self.stats.entry(f).or_default()
    }

    /// Takes a deleted finished record out of the figures.
    fn forget(&mut self, function: &str, state: i64, elapsed: Option<i64>) {
        let f = self.intern(function);
        let s = self.stats(f);
        s.count(TaskState::from_code(state), -1);
        if let Some(e) = elapsed {
            s.hist.remove(e.max(0) as u64);
        }
    }
}

/// What one batch does to one task's row, gathered from all its records in the batch: a new
/// row when the batch has its submission (for short tasks the start and the outcome too, so
/// one insert does it all), else the changes to a row of an earlier batch.
struct Row<'a> {
    id: TaskId,
    sub: Option<&'a Submitted>,
    function: u32,
    state: TaskState,
    /// Started or requeued in this batch.
    moved: bool,
    engine: Option<u32>,
    started_us: Option<u64>,
    finished: Option<&'a Finished>,
    acked_us: Option<u64>,
    stripped: bool,
}

impl Row<'_> {
    fn update(id: TaskId, function: u32) -> Self {
        Row {
            id,
            sub: None,
            function,
            state: TaskState::Queued,
            moved: false,
            engine: None,
            started_us: None,
            finished: None,
            acked_us: None,
            stripped: false,
        }
    }
}

struct WriterThread {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    config: StoreConfig,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Msg>,
    /// Messages received and not yet committed, in order.
    pending: Vec<Msg>,
    pending_records: usize,
    batch_started: Option<Instant>,
    state: State,
    failing_since: Option<Instant>,
    retry_delay: Duration,
    retry_at: Option<Instant>,
    next_retention: Instant,
    _lock: Option<Arc<LockFile>>,
    /// False until the thread ends as asked; a panic leaves it false (see `Drop`).
    stopped_cleanly: bool,
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        if !self.stopped_cleanly {
            tracing::error!(path = %self.path.display(), "task store: the writer thread stopped unexpectedly");
            self.shared.set_failing(Some(
                "the writer thread stopped unexpectedly; records are not written until the \
                 controller restarts"
                    .into(),
            ));
        }
    }
}

fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(|p| p.into_inner())
}

fn describe(e: &rusqlite::Error) -> String {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(C::DiskFull) => format!("disk full: {e}"),
        Some(C::SystemIoFailure) => format!("I/O error: {e}"),
        Some(C::DatabaseCorrupt | C::NotADatabase) => {
            format!("database corrupt: {e}; restart the controller with --db-reset")
        }
        Some(C::DatabaseBusy | C::DatabaseLocked) => {
            format!("database locked by another program: {e}")
        }
        Some(C::ReadOnly | C::PermissionDenied) => format!("database not writable: {e}"),
        _ => e.to_string(),
    }
}

pub(crate) fn kind_code(work: &Work) -> i64 {
    match work {
        Work::Call { .. } => 0,
        Work::Map { .. } => 1,
        Work::Command(_) => 2,
    }
}

pub(crate) fn error_kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Remote => "remote",
        ErrorKind::UnknownFunction => "unknown_function",
        ErrorKind::BadArguments => "bad_arguments",
        ErrorKind::EngineLost => "engine_lost",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Aborted => "aborted",
        ErrorKind::Unschedulable => "unschedulable",
        ErrorKind::CommandFailed => "command_failed",
        ErrorKind::Dependency => "dependency",
    }
}

/// How a payload is kept: the bytes to write and the state to record.
fn keep(
    payload: Option<&Payload>,
    size: u64,
    max: u64,
    stripped: bool,
) -> (Option<&[u8]>, PayloadState) {
    match payload {
        Some(p) if p.len() as u64 > max => (None, PayloadState::TooLarge),
        Some(p) => (Some(p.as_slice()), PayloadState::Kept),
        None if stripped && size > 0 => (None, PayloadState::Backlog),
        None if size > max => (None, PayloadState::TooLarge),
        None => (None, PayloadState::Absent),
    }
}

const INSERT_ROW: &str = "INSERT INTO tasks (id, client, kind, function, command, options, state,
        submitted_us, started_us, completed_us, elapsed_us, engine, error_kind, error_message,
        error_engine, argument_size, argument, argument_state, result_size, result, result_state,
        acked_us)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
        ?19, ?20, ?21, ?22)
    ON CONFLICT (id) DO NOTHING";

const REPLACE_ROW: &str = "UPDATE tasks SET client = ?2, kind = ?3, function = ?4, command = ?5,
        options = ?6, state = ?7, submitted_us = ?8, started_us = ?9, completed_us = ?10,
        elapsed_us = ?11, engine = ?12, error_kind = ?13, error_message = ?14,
        error_engine = ?15, argument_size = ?16, argument = ?17, argument_state = ?18,
        result_size = ?19, result = ?20, result_state = ?21, acked_us = ?22
    WHERE id = ?1";

/// An outcome for a row written in an earlier batch (or none: then a row with what the
/// outcome says).
const FINISH_ROW: &str = "INSERT INTO tasks (id, client, kind, function, state, submitted_us,
        started_us, completed_us, elapsed_us, engine, error_kind, error_message, error_engine,
        argument_size, argument_state, result_size, result, result_state, acked_us)
    VALUES (?1, ?2, -1, ?3, ?4, ?5, ?6, ?5, ?7, ?8, ?9, ?10, ?11, 0, 3, ?12, ?13, ?14, ?15)
    ON CONFLICT (id) DO UPDATE SET state = excluded.state,
        started_us = coalesce(excluded.started_us, started_us),
        completed_us = excluded.completed_us, elapsed_us = excluded.elapsed_us,
        engine = coalesce(excluded.engine, engine), error_kind = excluded.error_kind,
        error_message = excluded.error_message, error_engine = excluded.error_engine,
        argument = NULL, argument_state = 3, result_size = excluded.result_size,
        result = excluded.result, result_state = excluded.result_state,
        acked_us = coalesce(excluded.acked_us, acked_us)";

const DELETED: &str = "RETURNING function, state, elapsed_us";

impl WriterThread {
    /// When the pending batch must be committed: a commit interval after its first record,
    /// or at the next try while writing fails.
    fn due(&self) -> Option<Instant> {
        if self.pending.is_empty() {
            return None;
        }
        Some(match (self.retry_at, self.batch_started) {
            (Some(retry), _) => retry,
            (None, Some(start)) => start + self.config.commit_interval,
            (None, None) => Instant::now(),
        })
    }

    fn run(mut self) {
        loop {
            let now = Instant::now();
            let wake = self
                .due()
                .map_or(self.next_retention, |d| d.min(self.next_retention));
            let mut urgent = false;
            match self.rx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(msg) => {
                    urgent = self.take(msg);
                    // Drain what else is there, so the channel stays short, but no longer
                    // than the batch may wait (a steady stream never times out).
                    let mut n = 0u32;
                    while self.pending_records < MAX_BATCH_RECORDS {
                        n = n.wrapping_add(1);
                        if n & 255 == 0 && self.due().is_some_and(|d| Instant::now() >= d) {
                            break;
                        }
                        match self.rx.try_recv() {
                            Ok(msg) => urgent |= self.take(msg),
                            Err(_) => break,
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.pending.push(Msg::Shutdown);
                    let _ = self.commit_pending();
                    self.stopped_cleanly = true;
                    return;
                }
            }
            let now = Instant::now();
            let full = self.pending_records >= MAX_BATCH_RECORDS && self.retry_at.is_none();
            if (urgent || full || self.due().is_some_and(|d| now >= d))
                && self.commit_pending() == Flow::Stop
            {
                self.stopped_cleanly = true;
                return;
            }
            if Instant::now() >= self.next_retention && self.retry_at.is_none() {
                let more = self.retention(crate::now_us(), None).1;
                self.next_retention = Instant::now()
                    + if more {
                        Duration::ZERO
                    } else {
                        self.config.retention_check
                    };
            }
        }
    }

    /// Queues a message; true when it asks for an immediate commit.
    fn take(&mut self, msg: Msg) -> bool {
        if self.pending.is_empty() {
            self.batch_started = Some(Instant::now());
        }
        let urgent = match &msg {
            Msg::Records { records, .. } => {
                self.pending_records += records.len();
                false
            }
            Msg::Purge(..) | Msg::Objects(_) => false,
            Msg::Flush(_) | Msg::Retention(..) | Msg::Shutdown => true,
        };
        self.pending.push(msg);
        urgent
    }

    /// Commits the pending messages in one transaction, then answers them. On failure keeps
    /// the records for the next try (answering flushes with the error) and says so once.
    fn commit_pending(&mut self) -> Flow {
        let msgs = std::mem::take(&mut self.pending);
        self.pending_records = 0;
        self.batch_started = None;
        let result = self.commit(&msgs);
        match result {
            Ok((purged, wrote)) => {
                if wrote {
                    self.shared.commits.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(since) = self.failing_since.take() {
                    tracing::info!(
                        path = %self.path.display(),
                        "task store: writing again after {:.1} s",
                        since.elapsed().as_secs_f64()
                    );
                    self.shared.set_failing(None);
                }
                self.retry_at = None;
                self.retry_delay = RETRY_FIRST;
                self.refresh_size();
                // Counters first, so that whoever a reply wakes sees them up to date.
                let (mut records, mut counted, mut bytes) = (0u64, 0usize, 0u64);
                for msg in &msgs {
                    if let Msg::Records {
                        records: r,
                        counted: c,
                        bytes: b,
                        ..
                    } = msg
                    {
                        records += r.len() as u64;
                        counted += c;
                        bytes += b;
                    }
                }
                self.shared
                    .committed_records
                    .fetch_add(records, Ordering::Relaxed);
                let left = self
                    .shared
                    .backlog_records
                    .fetch_sub(counted, Ordering::Relaxed);
                self.shared
                    .backlog_bytes
                    .fetch_sub(bytes, Ordering::Relaxed);
                if left.saturating_sub(counted) <= self.config.backlog_max_records / 2
                    && self.shared.backlog_full.swap(false, Ordering::Relaxed)
                {
                    tracing::info!("task store: the writer caught up; records are kept again");
                }
                let mut purged = purged.into_iter();
                let mut flow = Flow::Go;
                for msg in msgs {
                    match msg {
                        Msg::Records { .. } | Msg::Objects(_) => {}
                        Msg::Purge(_, reply) => {
                            let n = purged.next().unwrap_or(0);
                            if let Some(reply) = reply {
                                let _ = reply.send(Ok(n));
                            }
                        }
                        Msg::Flush(reply) => {
                            let _ = reply.send(Ok(()));
                        }
                        Msg::Retention(now_us, reply) => {
                            let (report, _) = self.retention(now_us, Some(&reply));
                            if let Some(report) = report {
                                let _ = reply.send(Ok(report));
                            }
                        }
                        Msg::Shutdown => flow = Flow::Stop,
                    }
                }
                flow
            }
            Err(e) => {
                self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
                self.state.stale = true;
                let why = describe(&e);
                if self.failing_since.is_none() {
                    self.failing_since = Some(Instant::now());
                    tracing::warn!(
                        path = %self.path.display(),
                        "task store: cannot write ({why}); the controller goes on from memory, \
                         keeps the records and retries"
                    );
                }
                self.shared.set_failing(Some(why.clone()));
                self.retry_at = Some(Instant::now() + self.retry_delay);
                self.retry_delay = (self.retry_delay * 2).min(RETRY_MAX);
                let mut stop = false;
                for msg in msgs {
                    match msg {
                        Msg::Flush(reply) => {
                            let _ = reply.send(Err(StoreError::Degraded(why.clone())));
                        }
                        Msg::Retention(_, reply) => {
                            let _ = reply.send(Err(StoreError::Degraded(why.clone())));
                        }
                        Msg::Shutdown => stop = true,
                        other => {
                            if let Msg::Records { records, .. } = &other {
                                self.pending_records += records.len();
                            }
                            self.pending.push(other);
                        }
                    }
                }
                if !self.pending.is_empty() {
                    self.batch_started = Some(Instant::now());
                }
                if stop {
                    tracing::error!(
                        path = %self.path.display(),
                        "task store: stopping with {} records not written ({why})",
                        self.pending_records
                    );
                    Flow::Stop
                } else {
                    Flow::Go
                }
            }
        }
    }

    /// One transaction for `msgs`: the number of rows each purge deleted, and whether there
    /// was anything to write.
    fn commit(&mut self, msgs: &[Msg]) -> Result<(Vec<u64>, bool), rusqlite::Error> {
        let conn = self.conn.clone();
        let conn = lock(&conn);
        if self.state.stale {
            self.reload_with(&conn)?;
        }
        if !msgs
            .iter()
            .any(|m| matches!(m, Msg::Records { .. } | Msg::Purge(..) | Msg::Objects(_)))
        {
            return Ok((Vec::new(), false));
        }
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = self
            .apply(&conn, msgs)
            .and_then(|purged| conn.execute_batch("COMMIT").map(|_| (purged, true)));
        if result.is_err() {
            // SQLite may have rolled back by itself (disk full); then this fails harmlessly.
            let _ = conn.execute_batch("ROLLBACK");
        }
        result
    }

    fn apply(&mut self, conn: &Connection, msgs: &[Msg]) -> Result<Vec<u64>, rusqlite::Error> {
        let mut rows: Vec<Row<'_>> = Vec::new();
        let mut index: HashMap<TaskId, usize> = HashMap::new();
        let mut purged = Vec::new();
        for msg in msgs {
            match msg {
                Msg::Records {
                    records, stripped, ..
                } => {
                    for record in records {
                        self.apply_record(conn, record, *stripped, &mut rows, &mut index)?;
                    }
                }
                Msg::Purge(purge, _) => {
                    self.write_rows(conn, &mut rows, &mut index)?;
                    purged.push(self.purge(conn, purge)?);
                }
                Msg::Objects(records) => {
                    crate::objects::create_tables(conn)?;
                    for record in records {
                        crate::objects::apply(conn, record)?;
                    }
                }
                _ => {}
            }
        }
        self.write_rows(conn, &mut rows, &mut index)?;
        self.write_stats(conn)?;
        Ok(purged)
    }

    fn apply_record<'a>(
        &mut self,
        conn: &Connection,
        record: &'a Record,
        stripped: bool,
        rows: &mut Vec<Row<'a>>,
        index: &mut HashMap<TaskId, usize>,
    ) -> Result<(), rusqlite::Error> {
        // The row of this batch for `id`, made on first use.
        fn row<'a, 'b>(
            rows: &'b mut Vec<Row<'a>>,
            index: &mut HashMap<TaskId, usize>,
            id: TaskId,
            function: u32,
        ) -> &'b mut Row<'a> {
            let i = *index.entry(id).or_insert_with(|| {
                rows.push(Row::update(id, function));
                rows.len() - 1
            });
            &mut rows[i]
        }
        let st = &mut self.state;
        match record {
            Record::Submitted(sub) => {
                let id = sub.request.id;
                let function = st.intern(sub.request.work.name());
                if let Some(old) = st.live.insert(
                    id,
                    Live {
                        function,
                        state: TaskState::Queued,
                    },
                ) {
                    st.stats(old.function).count(old.state, -1);
                } else if let Some(prev) = index.get(&id).and_then(|&i| rows[i].finished) {
                    // Finished earlier in this batch, submitted again.
                    let name = st.names[rows[index[&id]].function as usize].clone();
                    let code = if matches!(prev.outcome.status, Status::Ok) {
                        2
                    } else {
                        3
                    };
                    st.forget(&name, code, Some(prev.outcome.elapsed_us as i64));
                }
                st.stats(function).count(TaskState::Queued, 1);
                let r = row(rows, index, id, function);
                *r = Row::update(id, function);
                r.sub = Some(sub);
                r.stripped = stripped;
            }
            Record::Started {
                id,
                engine,
                time_us,
            } => {
                let Some(live) = st.live.get_mut(id) else {
                    return Ok(()); // finished or unknown: nothing starts
                };
                let (function, was) = (live.function, live.state);
                live.state = TaskState::Running;
                st.stats(function).count(was, -1);
                st.stats(function).count(TaskState::Running, 1);
                let r = row(rows, index, *id, function);
                r.function = function;
                r.state = TaskState::Running;
                r.moved = true;
                r.engine = Some(engine.0);
                r.started_us = Some(*time_us);
            }
            Record::Requeued { id } => {
                let Some(live) = st.live.get_mut(id) else {
                    return Ok(());
                };
                let (function, was) = (live.function, live.state);
                live.state = TaskState::Queued;
                st.stats(function).count(was, -1);
                st.stats(function).count(TaskState::Queued, 1);
                let r = row(rows, index, *id, function);
                r.function = function;
                r.state = TaskState::Queued;
                r.moved = true;
                r.engine = None;
            }
            Record::Finished(fin) => {
                let id = fin.outcome.id;
                let ok = matches!(fin.outcome.status, Status::Ok);
                let state = if ok { TaskState::Ok } else { TaskState::Failed };
                let pending = index
                    .get(&id)
                    .map(|&i| (rows[i].function, rows[i].finished));
                let function = if let Some(live) = st.live.remove(&id) {
                    st.stats(live.function).count(live.state, -1);
                    live.function
                } else if let Some((function, Some(prev))) = pending {
                    // A second outcome in this batch: it replaces the first.
                    let name = st.names[function as usize].clone();
                    let code = if matches!(prev.outcome.status, Status::Ok) {
                        2
                    } else {
                        3
                    };
                    st.forget(&name, code, Some(prev.outcome.elapsed_us as i64));
                    function
                } else {
                    // Not live: finished in an earlier batch (a duplicate outcome), or never
                    // recorded.
                    let old: Option<(String, i64, Option<i64>)> = conn
                        .prepare_cached(
                            "SELECT function, state, elapsed_us FROM tasks WHERE id = ?1",
                        )?
                        .query_row(params![id.0 as i64], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        })
                        .optional()?;
                    match old {
                        Some((name, code, elapsed)) => {
                            if TaskState::from_code(code).finished() {
                                st.forget(&name, code, elapsed);
                            }
                            st.intern(&name)
                        }
                        None => st.intern(UNKNOWN_FUNCTION),
                    }
                };
                let s = st.stats(function);
                s.count(state, 1);
                s.hist.add(fin.outcome.elapsed_us);
                let r = row(rows, index, id, function);
                r.function = function;
                r.state = state;
                r.finished = Some(fin);
                r.stripped |= stripped;
            }
            Record::Acknowledged { id, time_us } => {
                let function = st.live.get(id).map_or(0, |l| l.function);
                row(rows, index, *id, function).acked_us = Some(*time_us);
            }
            Record::Purged(purge) => {
                self.write_rows(conn, rows, index)?;
                self.purge(conn, purge)?;
            }
        }
        Ok(())
    }

    /// Writes this batch's rows: new ones (a submission, with whatever followed it) in one
    /// insert each, changes to rows of earlier batches in one statement each.
    fn write_rows(
        &mut self,
        conn: &Connection,
        rows: &mut Vec<Row<'_>>,
        index: &mut HashMap<TaskId, usize>,
    ) -> Result<(), rusqlite::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let max = self.config.payload_max_bytes;
        let mut insert = conn.prepare_cached(INSERT_ROW)?;
        let mut replaced = Vec::new();
        for row in rows.iter() {
            let Some(sub) = row.sub else {
                self.update_row(conn, row)?;
                continue;
            };
            let req = &sub.request;
            let command = match &req.work {
                Work::Command(spec) => protocol::encode(spec).ok(),
                _ => None,
            };
            let options = (req.options != TaskOptions::default())
                .then(|| protocol::encode(&req.options).ok())
                .flatten();
            // A finished task needs no argument any more.
            let (argument, argument_state) = if row.finished.is_some() {
                (None, PayloadState::Absent)
            } else {
                keep(sub.argument.as_ref(), sub.argument_size, max, row.stripped)
            };
            let fin = row.finished;
            let (result, result_state) = match fin {
                Some(f) => keep(f.result.as_ref(), f.result_size, max, row.stripped),
                None => (None, PayloadState::Absent),
            };
            let (ekind, emessage, eengine) = match fin {
                Some(f) => error_columns(&f.outcome.status),
                None => (None, None, None),
            };
            let started = match fin {
                Some(f) if f.outcome.started_us > 0 => Some(f.outcome.started_us),
                _ => row.started_us,
            };
            let engine = fin
                .and_then(|f| f.outcome.engine.map(|e| e.0))
                .or(row.engine);
            let values = params![
                req.id.0 as i64,
                sub.client.0,
                kind_code(&req.work),
                self.state.names[row.function as usize],
                command,
                options,
                row.state.code(),
                sub.submitted_us as i64,
                started.map(|t| t as i64),
                fin.map(|f| f.completed_us as i64),
                fin.map(|f| f.outcome.elapsed_us as i64),
                engine,
                ekind,
                emessage,
                eengine,
                sub.argument_size as i64,
                argument,
                argument_state.code(),
                fin.map(|f| f.result_size as i64),
                result,
                result_state.code(),
                row.acked_us.map(|t| t as i64),
            ];
            if insert.execute(values)? == 0 {
                // The id has a row already (a resubmission): take the old one out of the
                // figures if it had finished (a live one was, on submission), then replace.
                let old: (String, i64, Option<i64>) = conn
                    .prepare_cached("SELECT function, state, elapsed_us FROM tasks WHERE id = ?1")?
                    .query_row(params![req.id.0 as i64], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })?;
                if TaskState::from_code(old.1).finished() {
                    replaced.push(old);
                }
                conn.prepare_cached(REPLACE_ROW)?.execute(values)?;
            }
        }
        for (function, state, elapsed) in replaced {
            self.state.forget(&function, state, elapsed);
        }
        rows.clear();
        index.clear();
        Ok(())
    }

    /// Changes to a row written by an earlier batch.
    fn update_row(&self, conn: &Connection, row: &Row<'_>) -> Result<(), rusqlite::Error> {
        let acked = row.acked_us.map(|t| t as i64);
        if let Some(fin) = row.finished {
            let (result, result_state) = keep(
                fin.result.as_ref(),
                fin.result_size,
                self.config.payload_max_bytes,
                row.stripped,
            );
            let (kind, message, err_engine) = error_columns(&fin.outcome.status);
            let started = (fin.outcome.started_us > 0)
                .then_some(fin.outcome.started_us)
                .or(row.started_us);
            conn.prepare_cached(FINISH_ROW)?.execute(params![
                row.id.0 as i64,
                row.id.client().0,
                self.state.names[row.function as usize],
                row.state.code(),
                fin.completed_us as i64,
                started.map(|t| t as i64),
                fin.outcome.elapsed_us as i64,
                fin.outcome.engine.map(|e| e.0).or(row.engine),
                kind,
                message,
                err_engine,
                fin.result_size as i64,
                result,
                result_state.code(),
                acked,
            ])?;
        } else if row.moved {
            conn.prepare_cached(
                "UPDATE tasks SET state = ?2, engine = ?3, started_us = coalesce(?4, started_us),
                    acked_us = coalesce(?5, acked_us)
                 WHERE id = ?1 AND state < 2",
            )?
            .execute(params![
                row.id.0 as i64,
                row.state.code(),
                row.engine,
                row.started_us.map(|t| t as i64),
                acked,
            ])?;
        } else if acked.is_some() {
            conn.prepare_cached("UPDATE tasks SET acked_us = ?2 WHERE id = ?1")?
                .execute(params![row.id.0 as i64, acked])?;
        }
        Ok(())
    }

    fn purge(&mut self, conn: &Connection, purge: &Purge) -> Result<u64, rusqlite::Error> {
        let mut deleted = 0u64;
        match purge {
            Purge::All => {
                deleted = conn.execute("DELETE FROM tasks WHERE state >= 2", [])? as u64;
                let fs: Vec<u32> = self.state.stats.keys().copied().collect();
                for f in fs {
                    let s = self.state.stats(f);
                    s.ok = 0;
                    s.failed = 0;
                    s.hist.clear();
                }
            }
            Purge::Before(t) => {
                let mut stmt = conn.prepare_cached(&format!(
                    "DELETE FROM tasks WHERE submitted_us < ?1 AND state >= 2 {DELETED}"
                ))?;
                let mut rows = stmt.query(params![*t as i64])?;
                while let Some(r) = rows.next()? {
                    self.state
                        .forget(&r.get::<_, String>(0)?, r.get(1)?, r.get(2)?);
                    deleted += 1;
                }
            }
            Purge::Ids(ids) => {
                let mut stmt = conn.prepare_cached(&format!(
                    "DELETE FROM tasks WHERE id = ?1 AND state >= 2 {DELETED}"
                ))?;
                for id in ids {
                    let mut rows = stmt.query(params![id.0 as i64])?;
                    while let Some(r) = rows.next()? {
                        self.state
                            .forget(&r.get::<_, String>(0)?, r.get(1)?, r.get(2)?);
                        deleted += 1;
                    }
                }
            }
        }
        Ok(deleted)
    }

    /// Writes the figures of the functions this batch touched.
    fn write_stats(&mut self, conn: &Connection) -> Result<(), rusqlite::Error> {
        let st = &mut self.state;
        if st.touched.is_empty() {
            return Ok(());
        }
        let mut upsert = conn.prepare_cached(
            "INSERT INTO function_stats (function, queued, running, ok, failed, histogram)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (function) DO UPDATE SET queued = excluded.queued,
                running = excluded.running, ok = excluded.ok, failed = excluded.failed,
                histogram = excluded.histogram",
        )?;
        let mut delete = conn.prepare_cached("DELETE FROM function_stats WHERE function = ?1")?;
        for f in st.touched.drain() {
            let name = &st.names[f as usize];
            let s = st.stats.entry(f).or_default();
            if s.queued == 0 && s.running == 0 && s.ok == 0 && s.failed == 0 {
                delete.execute(params![name])?;
            } else {
                upsert.execute(params![
                    name,
                    s.queued,
                    s.running,
                    s.ok,
                    s.failed,
                    s.hist.encode()
                ])?;
            }
        }
        Ok(())
    }

    fn reload(&mut self) -> Result<(), rusqlite::Error> {
        let conn = self.conn.clone();
        let conn = lock(&conn);
        self.reload_with(&conn)
    }

    /// Rebuilds the writer's memory from the database: at start, and after a transaction
    /// failed (its changes to the memory rolled back with it).
    fn reload_with(&mut self, conn: &Connection) -> Result<(), rusqlite::Error> {
        let mut st = State::default();
        let mut stmt =
            conn.prepare("SELECT function, ok, failed, histogram FROM function_stats")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let f = st.intern(&r.get::<_, String>(0)?);
            let s = st.stats.entry(f).or_default();
            s.ok = r.get(1)?;
            s.failed = r.get(2)?;
            s.hist = Histogram::decode(&r.get::<_, Vec<u8>>(3)?);
        }
        // Live counts come from the rows themselves, whatever the table says.
        let mut stmt = conn.prepare("SELECT id, function, state FROM tasks WHERE state < 2")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let id = TaskId(r.get::<_, i64>(0)? as u64);
            let function = st.intern(&r.get::<_, String>(1)?);
            let state = TaskState::from_code(r.get(2)?);
            st.live.insert(id, Live { function, state });
            st.stats.entry(function).or_default().count(state, 1);
        }
        st.touched.clear();
        self.state = st;
        Ok(())
    }

    fn refresh_size(&self) {
        let conn = lock(&self.conn);
        if let Ok(bytes) = used_bytes(&conn) {
            self.shared.db_bytes.store(bytes, Ordering::Relaxed);
        }
    }

    /// One retention pass: by age, then by size, a chunk a transaction. Returns the report
    /// (or `None` when the error was sent to `reply`) and whether more is left to delete.
    fn retention(
        &mut self,
        now_us: u64,
        reply: Option<&Reply<RetentionReport>>,
    ) -> (Option<RetentionReport>, bool) {
        match self.retention_inner(now_us) {
            Ok((report, more)) => (Some(report), more),
            Err(e) => {
                self.state.stale = true;
                self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path = %self.path.display(), "task store: retention failed: {}", describe(&e));
                if let Some(reply) = reply {
                    let _ = reply.send(Err(StoreError::from_sqlite(&self.path, e)));
                    return (None, false);
                }
                (Some(RetentionReport::default()), false)
            }
        }
    }

    fn retention_inner(&mut self, now_us: u64) -> Result<(RetentionReport, bool), rusqlite::Error> {
        let conn = self.conn.clone();
        let conn = lock(&conn);
        if self.state.stale {
            self.reload_with(&conn)?;
        }
        let mut report = RetentionReport::default();
        let mut budget = RETENTION_PASS_ROWS;
        let mut more = false;
        if let Some(keep_for) = self.config.retention {
            let cutoff =
                now_us.saturating_sub(u64::try_from(keep_for.as_micros()).unwrap_or(u64::MAX));
            loop {
                let n = self.delete_oldest(&conn, Some(cutoff), RETENTION_CHUNK)?;
                report.by_age += n;
                budget = budget.saturating_sub(n);
                if n < RETENTION_CHUNK as u64 {
                    break;
                }
                if budget == 0 {
                    more = true;
                    break;
                }
            }
        }
        if let Some(max) = self.config.max_db_bytes {
            // Aim below the limit, so that the next pass is not due at once.
            let target = max - max / 10;
            loop {
                let used = used_bytes(&conn)?;
                if used <= max && (report.by_size == 0 || used <= target) {
                    break;
                }
                if budget == 0 {
                    more = true;
                    break;
                }
                // As many rows as should free the excess, at the average row size.
                let rows: i64 = self
                    .state
                    .stats
                    .values()
                    .map(|s| s.queued + s.running + s.ok + s.failed)
                    .sum();
                let per_row = used / rows.max(1) as u64;
                let excess = used.saturating_sub(target);
                let chunk = (excess / per_row.max(1) + 1).clamp(100, RETENTION_CHUNK as u64);
                let n = self.delete_oldest(&conn, None, chunk as i64)?;
                report.by_size += n;
                budget = budget.saturating_sub(n);
                if n == 0 {
                    tracing::warn!(
                        path = %self.path.display(),
                        "task store: the database is above max_db_mb and holds only \
                         unfinished tasks; nothing more can be deleted"
                    );
                    break;
                }
            }
        }
        if report.by_age + report.by_size > 0 {
            // Give the freed pages back to the file system (the pragma frees a page a step).
            let mut vacuum = conn.prepare("PRAGMA incremental_vacuum")?;
            let mut steps = vacuum.query([])?;
            while steps.next()?.is_some() {}
            self.shared
                .retention_deleted
                .fetch_add(report.by_age + report.by_size, Ordering::Relaxed);
        }
        report.db_bytes = used_bytes(&conn)?;
        self.shared
            .db_bytes
            .store(report.db_bytes, Ordering::Relaxed);
        Ok((report, more))
    }

    /// Deletes up to `limit` of the oldest finished records (submitted and finished before
    /// `cutoff`, when given) in one transaction.
    fn delete_oldest(
        &mut self,
        conn: &Connection,
        cutoff: Option<u64>,
        limit: i64,
    ) -> Result<u64, rusqlite::Error> {
        let cutoff = cutoff.map_or(i64::MAX, |c| c.min(i64::MAX as u64) as i64);
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = (|| {
            let mut n = 0;
            {
                let mut stmt = conn.prepare_cached(&format!(
                    "DELETE FROM tasks WHERE id IN (
                        SELECT id FROM tasks WHERE submitted_us < ?1 AND state >= 2
                            AND ifnull(completed_us, 0) < ?1
                        ORDER BY submitted_us LIMIT ?2) {DELETED}"
                ))?;
                let mut rows = stmt.query(params![cutoff, limit])?;
                while let Some(r) = rows.next()? {
                    self.state
                        .forget(&r.get::<_, String>(0)?, r.get(1)?, r.get(2)?);
                    n += 1;
                }
            }
            self.write_stats(conn)?;
            Ok(n)
        })();
        match result.and_then(|n| conn.execute_batch("COMMIT").map(|_| n)) {
            Ok(n) => Ok(n),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                self.state.stale = true;
                Err(e)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Go,
    Stop,
}

fn error_columns(status: &Status) -> (Option<&'static str>, Option<&str>, Option<u32>) {
    match status {
        Status::Ok => (None, None, None),
        Status::Err(e) => (
            Some(error_kind_name(e.kind)),
            Some(e.message.as_str()),
            e.engine.map(|e| e.0),
        ),
    }
}

/// Bytes of the database's pages that hold data (the file may be larger until vacuumed).
pub(crate) fn used_bytes(conn: &Connection) -> Result<u64, rusqlite::Error> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok(((pages - free).max(0) * size) as u64)
}
