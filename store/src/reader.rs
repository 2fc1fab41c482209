//! Queries, on their own connection, from any thread but the hub's; and a small query thread
//! that turns the hub's lookups into answers it can take as events.

use crate::hist::Histogram;
use crate::lock::LockFile;
use crate::record::{
    FunctionStats, HistoryFilter, Lookup, PayloadState, RecoveredTask, Recovery, StoredTask,
    TaskRecord, TaskState,
};
use crate::writer::{Counters, Health, Shared};
use crate::{StoreError, StoreKind};
use protocol::{
    ClientId, CommandSpec, EngineId, ErrorKind, TaskError, TaskId, TaskOptions, TaskRequest, Work,
};
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// The reading side of the store. Queries run on the reader's own connection (for a SQLite
/// file: WAL readers never wait for the writer), see what was committed, and may take a
/// while on a big store: call them from a thread other than the hub's (see
/// [`QueryService`]). `Send`; make one per thread with [`Reader::try_clone`].
#[derive(Debug)]
pub struct Reader {
    inner: Option<Inner>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Inner {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    kind: StoreKind,
    busy: Duration,
    _lock: Option<Arc<LockFile>>,
}

/// The columns [`record_from_row`] reads, in its order.
const COLUMNS: &str = "id, client, kind, function, command, options, state, submitted_us,
    started_us, completed_us, elapsed_us, engine, error_kind, error_message, error_engine,
    argument_size, result_size, result_state, acked_us";

fn opt_u64(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<u64>> {
    Ok(r.get::<_, Option<i64>>(i)?.map(|v| v as u64))
}

fn error_kind_from(name: &str) -> ErrorKind {
    match name {
        "unknown_function" => ErrorKind::UnknownFunction,
        "bad_arguments" => ErrorKind::BadArguments,
        "engine_lost" => ErrorKind::EngineLost,
        "timeout" => ErrorKind::Timeout,
        "aborted" => ErrorKind::Aborted,
        "unschedulable" => ErrorKind::Unschedulable,
        "command_failed" => ErrorKind::CommandFailed,
        "dependency" => ErrorKind::Dependency,
        _ => ErrorKind::Remote,
    }
}

fn work_from(kind: i64, function: &str, command: Option<&[u8]>) -> Option<Work> {
    match kind {
        0 => Some(Work::Call {
            function: function.to_owned(),
        }),
        1 => Some(Work::Map {
            function: function.to_owned(),
        }),
        2 => {
            match command.map(protocol::decode::<CommandSpec>) {
                Some(Ok(spec)) => Some(Work::Command(spec)),
                _ => {
                    tracing::warn!("task store: a command record does not decode; shown without its command line");
                    None
                }
            }
        }
        _ => None,
    }
}

fn options_from(bytes: Option<&[u8]>) -> TaskOptions {
    bytes
        .and_then(|b| protocol::decode(b).ok())
        .unwrap_or_default()
}

fn record_from_row(r: &Row<'_>) -> rusqlite::Result<TaskRecord> {
    let id = TaskId(r.get::<_, i64>(0)? as u64);
    let function: String = r.get(3)?;
    let command: Option<Vec<u8>> = r.get(4)?;
    let options: Option<Vec<u8>> = r.get(5)?;
    let state = TaskState::from_code(r.get(6)?);
    let engine = r.get::<_, Option<u32>>(11)?.map(EngineId);
    let error = match r.get::<_, Option<String>>(12)? {
        Some(kind) if state == TaskState::Failed => Some(TaskError {
            kind: error_kind_from(&kind),
            message: r.get::<_, Option<String>>(13)?.unwrap_or_default(),
            engine: r.get::<_, Option<u32>>(14)?.map(EngineId),
        }),
        _ => None,
    };
    Ok(TaskRecord {
        id,
        client: ClientId(r.get(1)?),
        work: work_from(r.get(2)?, &function, command.as_deref()),
        options: options_from(options.as_deref()),
        function,
        state,
        submitted_us: r.get::<_, i64>(7)? as u64,
        started_us: opt_u64(r, 8)?,
        completed_us: opt_u64(r, 9)?,
        elapsed_us: opt_u64(r, 10)?,
        engine,
        error,
        argument_size: r.get::<_, i64>(15)? as u64,
        result_size: opt_u64(r, 16)?,
        result: if state.finished() {
            PayloadState::from_code(r.get(17)?)
        } else {
            PayloadState::Absent
        },
        acknowledged_us: opt_u64(r, 18)?,
    })
}

impl Reader {
    pub(crate) fn disabled(shared: Arc<Shared>) -> Reader {
        Reader {
            inner: None,
            shared,
        }
    }

    pub(crate) fn new(
        conn: Arc<Mutex<Connection>>,
        path: PathBuf,
        kind: StoreKind,
        busy: Duration,
        lock: Option<Arc<LockFile>>,
        shared: Arc<Shared>,
    ) -> Reader {
        Reader {
            inner: Some(Inner {
                conn,
                path,
                kind,
                busy,
                _lock: lock,
            }),
            shared,
        }
    }

    /// Another reader: its own connection for a SQLite file (so two threads query at once),
    /// the same database for the in-memory kind.
    pub fn try_clone(&self) -> Result<Reader, StoreError> {
        let Some(inner) = &self.inner else {
            return Ok(Reader::disabled(self.shared.clone()));
        };
        let conn = match inner.kind {
            StoreKind::Sqlite => Arc::new(Mutex::new(crate::schema::open_reader(
                &inner.path,
                inner.busy,
            )?)),
            _ => inner.conn.clone(),
        };
        Ok(Reader::new(
            conn,
            inner.path.clone(),
            inner.kind,
            inner.busy,
            inner._lock.clone(),
            self.shared.clone(),
        ))
    }

    /// The writer's health, for status reports made away from the writer.
    pub fn health(&self) -> Health {
        self.shared.health()
    }

    /// The writer's counters.
    pub fn counters(&self) -> Counters {
        self.shared.counters()
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let inner = self.inner.as_ref().ok_or(StoreError::Disabled)?;
        let conn: MutexGuard<'_, Connection> = inner.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|e| StoreError::from_sqlite(&inner.path, e))
    }

    /// Records matching `filter`, newest first.
    pub fn history(&self, filter: &HistoryFilter) -> Result<Vec<TaskRecord>, StoreError> {
        let mut conds = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        if let Some(state) = filter.state {
            conds.push("state = ?");
            values.push(Value::Integer(state.code()));
        }
        if let Some(f) = &filter.function {
            conds.push("function = ?");
            values.push(Value::Text(f.clone()));
        }
        if let Some(e) = filter.engine {
            conds.push("engine = ?");
            values.push(Value::Integer(e.0.into()));
        }
        if let Some(c) = filter.client {
            conds.push("client = ?");
            values.push(Value::Integer(c.0.into()));
        }
        if let Some(t) = filter.since_us {
            conds.push("submitted_us >= ?");
            values.push(Value::Integer(t.min(i64::MAX as u64) as i64));
        }
        let mut sql = format!("SELECT {COLUMNS} FROM tasks");
        if !conds.is_empty() {
            sql += " WHERE ";
            sql += &conds.join(" AND ");
        }
        sql += " ORDER BY submitted_us DESC, id DESC";
        if let Some(n) = filter.limit {
            sql += &format!(" LIMIT {}", n.min(i64::MAX as usize));
        }
        self.with(|c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(values), record_from_row)?;
            rows.collect()
        })
    }

    /// One task's record and result payload, from any client, across restarts.
    pub fn result(&self, id: TaskId) -> Result<Option<StoredTask>, StoreError> {
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT {COLUMNS}, result FROM tasks WHERE id = ?1"
            ))?
            .query_row(params![id.0 as i64], |r| {
                let record = record_from_row(r)?;
                let payload = r.get::<_, Option<Vec<u8>>>(19)?.map(Arc::new);
                Ok(StoredTask { record, payload })
            })
            .optional()
        })
    }

    /// What the store knows of each id, in order: the answer to a hub's lookup (a fetch or
    /// a resubmission of a task the hub no longer holds). A store that is off knows nothing.
    pub fn lookup(&self, ids: &[TaskId]) -> Result<Vec<Lookup>, StoreError> {
        if self.inner.is_none() {
            return Ok(vec![Lookup::Unknown; ids.len()]);
        }
        self.with(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS}, result FROM tasks WHERE id = ?1"
            ))?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let found = stmt
                    .query_row(params![id.0 as i64], |r| {
                        let record = record_from_row(r)?;
                        Ok(match record.outcome() {
                            Some(outcome) => Lookup::Finished {
                                outcome,
                                payload: r.get::<_, Option<Vec<u8>>>(19)?.map(Arc::new),
                                payload_state: record.result,
                            },
                            None => Lookup::Unfinished(record.state),
                        })
                    })
                    .optional()?;
                out.push(found.unwrap_or(Lookup::Unknown));
            }
            Ok(out)
        })
    }

    /// Per-function counts and run-time percentiles of the records (kept up to date by the
    /// writer, so this reads a small table whatever the store's size), by function name.
    pub fn stats(&self) -> Result<Vec<FunctionStats>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT function, queued, running, ok, failed, histogram FROM function_stats
                 ORDER BY function",
            )?;
            let rows = stmt.query_map([], |r| {
                let hist = Histogram::decode(&r.get::<_, Vec<u8>>(5)?);
                let count = |i| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                Ok(FunctionStats {
                    function: r.get(0)?,
                    queued: count(1)?,
                    running: count(2)?,
                    ok: count(3)?,
                    failed: count(4)?,
                    p50_us: hist.quantile(0.5),
                    p99_us: hist.quantile(0.99),
                    mean_us: hist.mean(),
                })
            })?;
            rows.collect()
        })
    }

    /// The shared objects stored (queues with their items, namespaces with their entries,
    /// events), for a restarted controller. A store that is off holds none.
    pub fn objects(&self) -> Result<Vec<crate::StoredObject>, StoreError> {
        if self.inner.is_none() {
            return Ok(Vec::new());
        }
        self.with(crate::objects::load)
    }

    /// What a restarted controller needs: the unfinished tasks with their requests and
    /// arguments (to queue again), how many finished ones the store can answer for, and the
    /// highest client id recorded. A store that is off recovers nothing.
    pub fn recover(&self) -> Result<Recovery, StoreError> {
        if self.inner.is_none() {
            return Ok(Recovery::default());
        }
        self.with(|c| {
            let mut unfinished = Vec::new();
            let mut stmt = c.prepare(
                "SELECT id, client, kind, function, command, options, state, engine,
                    submitted_us, argument_size, argument
                 FROM tasks WHERE state < 2 ORDER BY submitted_us, id",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let id = TaskId(r.get::<_, i64>(0)? as u64);
                let function: String = r.get(3)?;
                let command: Option<Vec<u8>> = r.get(4)?;
                let Some(work) = work_from(r.get(2)?, &function, command.as_deref()) else {
                    tracing::warn!(
                        "task store: unfinished task {id} has no readable work; not recovered"
                    );
                    continue;
                };
                let options: Option<Vec<u8>> = r.get(5)?;
                let state = TaskState::from_code(r.get(6)?);
                unfinished.push(RecoveredTask {
                    request: TaskRequest {
                        id,
                        work,
                        options: options_from(options.as_deref()),
                    },
                    client: ClientId(r.get(1)?),
                    state,
                    engine: r.get::<_, Option<u32>>(7)?.map(EngineId),
                    submitted_us: r.get::<_, i64>(8)? as u64,
                    argument_size: r.get::<_, i64>(9)? as u64,
                    argument: r.get::<_, Option<Vec<u8>>>(10)?.map(Arc::new),
                });
            }
            let finished: i64 = c.query_row(
                "SELECT ifnull(sum(ok + failed), 0) FROM function_stats",
                [],
                |r| r.get(0),
            )?;
            let max_id: Option<i64> = c.query_row("SELECT max(id) FROM tasks", [], |r| r.get(0))?;
            Ok(Recovery {
                unfinished,
                finished: finished.max(0) as u64,
                max_client: max_id.map(|id| TaskId(id as u64).client()),
            })
        })
    }

    /// Ids of finished tasks in id order, `limit` at a time after `after` (a restarted hub
    /// that wants them all pages through; most only need [`Reader::lookup`]).
    pub fn finished_ids(
        &self,
        after: Option<TaskId>,
        limit: usize,
    ) -> Result<Vec<TaskId>, StoreError> {
        let after = after.map_or(i64::MIN, |t| t.0 as i64);
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id FROM tasks WHERE id > ?1 AND state >= 2 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![after, limit.min(i64::MAX as usize) as i64], |r| {
                    Ok(TaskId(r.get::<_, i64>(0)? as u64))
                })?;
            rows.collect()
        })
    }
}

/// A question for the [`QueryService`].
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// [`Reader::lookup`].
    Lookup(Vec<TaskId>),
    /// [`Reader::history`].
    History(HistoryFilter),
    /// [`Reader::result`].
    Result(TaskId),
    /// [`Reader::stats`].
    Stats,
    /// [`Reader::recover`].
    Recover,
}

/// The [`QueryService`]'s answer to a [`Query`] of the same variant.
#[derive(Debug)]
pub enum Answer {
    /// Answer to [`Query::Lookup`]: the ids asked for, with what the store knows of each.
    Lookup(Result<Vec<(TaskId, Lookup)>, StoreError>),
    /// Answer to [`Query::History`].
    History(Result<Vec<TaskRecord>, StoreError>),
    /// Answer to [`Query::Result`] (boxed: a record is large).
    Result(Result<Option<Box<StoredTask>>, StoreError>),
    /// Answer to [`Query::Stats`].
    Stats(Result<Vec<FunctionStats>, StoreError>),
    /// Answer to [`Query::Recover`].
    Recover(Result<Recovery, StoreError>),
}

/// A thread that answers queries in order, so that the hub's loop can ask without waiting:
/// the hub emits a lookup action with a tag, the loop [`QueryService::ask`]s, the service
/// calls `notify` when an answer is ready (to wake the loop's poll: a pipe, an inproc
/// socket), and the loop feeds [`QueryService::try_answer`]'s `(tag, answer)` to the hub.
#[derive(Debug)]
pub struct QueryService {
    tx: Option<mpsc::Sender<(u64, Query)>>,
    rx: mpsc::Receiver<(u64, Answer)>,
    thread: Option<JoinHandle<()>>,
}

impl QueryService {
    /// Starts the thread on `reader`.
    pub fn spawn(reader: Reader, notify: impl Fn() + Send + 'static) -> QueryService {
        let (tx, queries) = mpsc::channel::<(u64, Query)>();
        let (answers, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("store-queries".into())
            .spawn(move || {
                for (tag, query) in queries {
                    let answer = match query {
                        Query::Lookup(ids) => Answer::Lookup(
                            reader
                                .lookup(&ids)
                                .map(|found| ids.into_iter().zip(found).collect()),
                        ),
                        Query::History(filter) => Answer::History(reader.history(&filter)),
                        Query::Result(id) => {
                            Answer::Result(reader.result(id).map(|r| r.map(Box::new)))
                        }
                        Query::Stats => Answer::Stats(reader.stats()),
                        Query::Recover => Answer::Recover(reader.recover()),
                    };
                    if answers.send((tag, answer)).is_err() {
                        return;
                    }
                    notify();
                }
            })
            .ok();
        QueryService {
            tx: thread.as_ref().map(|_| tx),
            rx,
            thread,
        }
    }

    /// Queues a query; never blocks. [`StoreError::Closed`] if the thread is gone.
    pub fn ask(&self, tag: u64, query: Query) -> Result<(), StoreError> {
        self.tx
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send((tag, query))
            .map_err(|_| StoreError::Closed)
    }

    /// An answer ready now, if any.
    pub fn try_answer(&self) -> Option<(u64, Answer)> {
        self.rx.try_recv().ok()
    }

    /// The next answer, waiting at most `timeout` (tests and tools).
    pub fn wait_answer(&self, timeout: Duration) -> Option<(u64, Answer)> {
        self.rx.recv_timeout(timeout).ok()
    }
}

impl Drop for QueryService {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
