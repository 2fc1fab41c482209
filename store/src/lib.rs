//! The controller's task store: every task's record and result in SQLite, so that the hub
//! keeps only live tasks in memory, history can be queried, and a restarted controller picks
//! up where the last one died.
//!
//! # What it owns
//!
//! The database file (one a profile, WAL mode) and its lock file, the schema and its
//! version, a **writer thread** that commits records in batches, the per-function figures,
//! retention (by age and size), and the queries. It knows the protocol's types (ids, work,
//! outcomes) but nothing of sockets or of the hub's rules.
//!
//! # Data flow
//!
//! ```text
//!  hub (sans-IO) --Record actions--> socket loop --Writer::send--> [channel] --> writer thread
//!                                                                                  |  one
//!                                                                                  v  transaction
//!  hub <--answer events-- socket loop <--QueryService answers-- Reader  <-- SQLite (WAL)  a batch
//! ```
//!
//! * The hub never waits on the disk. It emits records (submitted, started, requeued,
//!   finished, acknowledged, purged); the loop hands them to [`Writer::send`], which only
//!   pushes onto a channel and never blocks. The writer thread gathers what arrives within
//!   one commit interval (default 100 ms) into one transaction, folding a task's
//!   submission, start and end into a single insert when they fall in the same batch.
//! * Lookups the hub cannot answer from memory (a fetch of an old result, a resubmitted id)
//!   go to a [`QueryService`] thread over a [`Reader`] (its own connection: WAL readers never
//!   block the writer), whose answers come back to the loop as events for the hub.
//! * At start, [`Reader::recover`] gives the tasks that were queued or running when the last
//!   controller died (with their arguments, to queue them again) and what else the store can
//!   answer for.
//!
//! # Durability and faults
//!
//! A record is committed at most one commit interval (plus the commit itself) after it was
//! sent, while the writer keeps up (it costs about 2 µs of CPU a one-item task, see
//! `examples/store_bench.rs`); from then on a `kill -9` of the controller loses nothing
//! (`synchronous = NORMAL` in WAL mode: a power cut may lose the last commits, never the
//! file). Write errors (disk full,
//! I/O) do not stop the controller: the writer keeps the records, logs once, reports
//! [`Health::Degraded`], retries, and resumes by itself. Its memory is bounded by
//! `backlog_max_records` / `backlog_max_bytes`; past them records (then payloads) are dropped
//! and counted. A corrupt, foreign, newer, unreadable or locked database is refused at
//! [`Store::open`] with a message naming the file and what to do; [`Store::reset`] (for
//! `--db-reset`) moves it aside. A second controller on the same database is refused by the
//! lock file `<db>.lock`.
//!
//! # Integration (what the hub and the socket loop do)
//!
//! * Before the hub starts: [`Store::open`] (after [`Store::reset`] for `--db-reset`), then
//!   [`Reader::recover`]: queue [`Recovery::unfinished`] again (no new `Submitted` record is
//!   needed for them: the writer still counts them as queued or running), and hand out
//!   client ids above [`Recovery::max_client`].
//! * The hub emits, and the loop sends (one [`Writer::send`] per handled message):
//!   [`Record::submitted`] for every accepted task (also those waiting for dependencies),
//!   [`Record::Started`] when it gives a task to an engine, [`Record::Requeued`] when a task
//!   goes back to the queue, [`Record::finished`] for every outcome (failures that never ran
//!   too: aborted, timed out, unschedulable), [`Record::Acknowledged`] once its client has the
//!   result, [`Record::Purged`] for a client's purge.
//! * A fetch or resubmission of an id the hub no longer holds becomes a [`Query::Lookup`] on
//!   a [`QueryService`]; its [`Lookup`] answers come back as events.
//! * `cluster status`: [`Writer::health`] (`store: ok` / `store: degraded (…)`),
//!   [`Writer::counters`], [`Reader::stats`] (per-function counts, p50, p99).
//!
//! # Schema (version 1)
//!
//! * `tasks`: one row a task, keyed by its id: client, kind (call, map, command), function
//!   name or program, the command spec and options (msgpack, as on the wire), state (queued,
//!   running, ok, failed), times (submitted, started, completed, elapsed, acknowledged), the
//!   engine, the error (kind, message, engine), the argument (kept only while the task is
//!   unfinished, for a restart) and the result payload, each with its size and whether it is
//!   kept (payloads above `store_payload_max_bytes` keep their size only, and say so).
//!   Indexes: submission time (history, retention), and two small partial ones on unfinished
//!   and on failed tasks.
//! * `function_stats`: per function, the queued / running / ok / failed counts and a
//!   histogram of run times, updated in the same transaction as the rows, so that
//!   [`Reader::stats`] (p50, p99) never scans the table.
//! * `objects`, `object_items`, `object_entries`: the controller's shared queues, namespaces
//!   and events (see `objects.rs`; made on first use, no version change).
//! * `schema_version`: the layout's version; older files are migrated, newer ones refused.

mod config;
mod error;
mod hist;
mod lock;
mod objects;
mod reader;
mod record;
mod schema;
mod writer;

pub use config::{
    parse_duration, parse_optional_duration, parse_size, StoreConfig, StoreKind,
    DEFAULT_COMMIT_INTERVAL, DEFAULT_PAYLOAD_MAX_BYTES,
};
pub use error::StoreError;
pub use objects::{ObjectRecord, StoredEntry, StoredItem, StoredObject};
pub use reader::{Answer, Query, QueryService, Reader};
pub use record::{
    now_us, Finished, FunctionStats, HistoryFilter, Lookup, Payload, PayloadState, Purge, Record,
    RecoveredTask, Recovery, StoredTask, Submitted, TaskRecord, TaskState,
};
pub use writer::{Counters, Health, RetentionReport, Writer};

use lock::LockFile;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use writer::Shared;

/// An open store: its writer (for the socket loop) and a first reader (for a query thread).
#[derive(Debug)]
pub struct Store {
    /// Where records go.
    pub writer: Writer,
    /// Where queries go.
    pub reader: Reader,
}

impl Store {
    /// Opens the store `config` describes, creating the database (and its folder) when
    /// missing. Refuses a database in use by another controller ([`StoreError::InUse`]),
    /// locked by another program, corrupt, unreadable, foreign or of a newer schema, with an
    /// error naming the file and what to do.
    pub fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        let shared = Arc::new(Shared::default());
        match config.kind {
            StoreKind::None => Ok(Store {
                writer: Writer::disabled(shared.clone()),
                reader: Reader::disabled(shared),
            }),
            StoreKind::Memory => {
                let conn = Arc::new(Mutex::new(schema::open_memory()?));
                let writer = Writer::spawn(conn.clone(), config, shared.clone(), None)?;
                let reader = Reader::new(
                    conn,
                    PathBuf::from(":memory:"),
                    StoreKind::Memory,
                    config.busy_timeout,
                    None,
                    shared,
                );
                Ok(Store { writer, reader })
            }
            StoreKind::Sqlite => {
                let path = config.path.as_path();
                create_parent(path)?;
                let lock = Arc::new(LockFile::acquire(path)?);
                let conn = schema::open_file(path, config.busy_timeout)?;
                let reader_conn = schema::open_reader(path, config.busy_timeout)?;
                let writer = Writer::spawn(
                    Arc::new(Mutex::new(conn)),
                    config,
                    shared.clone(),
                    Some(lock.clone()),
                )?;
                let reader = Reader::new(
                    Arc::new(Mutex::new(reader_conn)),
                    path.to_path_buf(),
                    StoreKind::Sqlite,
                    config.busy_timeout,
                    Some(lock),
                    shared,
                );
                Ok(Store { writer, reader })
            }
        }
    }

    /// Moves the database of `config` aside, as `<file>.corrupt-<UTC time>` (with its `-wal`
    /// and `-shm` files), so that the next [`Store::open`] starts an empty one: what
    /// `--db-reset` does. Refused while another controller holds the database. Returns the
    /// new name, or `None` when there was no file.
    pub fn reset(config: &StoreConfig) -> Result<Option<PathBuf>, StoreError> {
        if config.kind != StoreKind::Sqlite {
            return Ok(None);
        }
        let path = config.path.as_path();
        if !path.exists() {
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(with_suffix(path, suffix));
            }
            return Ok(None);
        }
        let _lock = LockFile::acquire(path)?;
        let stamp = utc_stamp(now_us() / 1_000_000);
        let mut aside = with_suffix(path, &format!(".corrupt-{stamp}"));
        let mut n = 1;
        while aside.exists() {
            aside = with_suffix(path, &format!(".corrupt-{stamp}-{n}"));
            n += 1;
        }
        let io = |p: &Path, e: std::io::Error| StoreError::Unreadable {
            path: p.to_path_buf(),
            detail: format!("cannot move it aside: {e}"),
        };
        std::fs::rename(path, &aside).map_err(|e| io(path, e))?;
        for suffix in ["-wal", "-shm"] {
            let from = with_suffix(path, suffix);
            if from.exists() {
                std::fs::rename(&from, with_suffix(&aside, suffix)).map_err(|e| io(&from, e))?;
            }
        }
        tracing::warn!(
            "task store: moved {} aside to {}; starting an empty database",
            path.display(),
            aside.display()
        );
        Ok(Some(aside))
    }
}

fn create_parent(path: &Path) -> Result<(), StoreError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Unreadable {
                path: dir.to_path_buf(),
                detail: format!("cannot create the folder: {e}"),
            })
        }
        _ => Ok(()),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `20260101T120000Z` for a Unix time in seconds.
fn utc_stamp(secs: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests;
