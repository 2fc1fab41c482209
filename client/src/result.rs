//! Result handles: [`AsyncResult`] for one task, [`AsyncMapResult`] for a map.
//!
//! Both wrap a [`Cell`] that the I/O thread fills with raw result payloads. Decoding happens
//! in `get`, on the caller's thread, so that the I/O thread never needs the result type and
//! several callers decode in parallel.

use crate::error::Error;
use protocol::{EngineId, Status, TaskError, TaskId, TaskOutcome};
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Why a cell will never be filled: the connection ended.
#[derive(Debug, Clone)]
pub(crate) struct Lost {
    pub(crate) address: Arc<str>,
    pub(crate) reason: Arc<str>,
}

impl Lost {
    pub(crate) fn error(&self) -> Error {
        Error::ConnectionLost {
            address: self.address.to_string(),
            reason: self.reason.to_string(),
        }
    }
}

/// One finished task.
#[derive(Debug)]
pub(crate) struct Part {
    status: Status,
    payload: Vec<u8>,
    engine: Option<EngineId>,
    elapsed_us: u64,
}

#[derive(Debug)]
pub(crate) struct CellState {
    parts: Vec<Option<Part>>,
    remaining: usize,
    items_done: usize,
    failed: bool,
    lost: Option<Lost>,
}

impl CellState {
    /// `get` would not block: everything finished, a part failed, or the connection is gone.
    fn settled(&self) -> bool {
        self.remaining == 0 || self.failed || self.lost.is_some()
    }
}

/// Where the I/O thread puts the outcomes of one submission's tasks (one task for `apply`,
/// one per chunk for `map`), and where callers wait for them.
#[derive(Debug)]
pub(crate) struct Cell {
    state: Mutex<CellState>,
    cond: Condvar,
    /// Function or program name, for [`Error::UnknownFunction`].
    name: String,
    /// Items per part (all 1 except for map chunks).
    sizes: Vec<usize>,
}

impl Cell {
    /// A cell for tasks carrying `sizes[i]` items each.
    pub(crate) fn new(name: String, sizes: Vec<usize>) -> Arc<Cell> {
        let tasks = sizes.len();
        Arc::new(Cell {
            state: Mutex::new(CellState {
                parts: (0..tasks).map(|_| None).collect(),
                remaining: tasks,
                items_done: 0,
                failed: false,
                lost: None,
            }),
            cond: Condvar::new(),
            name,
            sizes,
        })
    }

    /// Locks the state; a poisoned lock still holds consistent data (every update is a few
    /// assignments that cannot panic halfway), so it is used as is.
    pub(crate) fn lock(&self) -> MutexGuard<'_, CellState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records part `index`'s outcome (under a lock the caller holds, so that the I/O thread
    /// can fill several parts of one cell under one lock).
    pub(crate) fn fill(
        &self,
        state: &mut CellState,
        index: usize,
        outcome: TaskOutcome,
        payload: Vec<u8>,
    ) {
        // Out of range or already filled (a duplicate result): nothing to do.
        if !matches!(state.parts.get(index), Some(None)) {
            return;
        }
        let was_settled = state.settled();
        if matches!(outcome.status, Status::Err(_)) {
            state.failed = true;
        }
        state.parts[index] = Some(Part {
            status: outcome.status,
            payload,
            engine: outcome.engine,
            elapsed_us: outcome.elapsed_us,
        });
        state.remaining -= 1;
        state.items_done += self.sizes.get(index).copied().unwrap_or(1);
        // Waiters only care about the moment `get` stops blocking (or the end, for `wait`).
        if (!was_settled && state.settled()) || state.remaining == 0 {
            self.cond.notify_all();
        }
    }

    /// Ends every wait: the connection is gone.
    pub(crate) fn fail(&self, lost: &Lost) {
        let mut state = self.lock();
        if state.lost.is_none() && state.remaining > 0 {
            state.lost = Some(lost.clone());
            self.cond.notify_all();
        }
    }

    /// Waits until `done(state)` or the timeout; returns the state lock and whether `done`.
    fn wait_until(
        &self,
        timeout: Option<Duration>,
        done: impl Fn(&CellState) -> bool,
    ) -> (MutexGuard<'_, CellState>, bool) {
        let mut state = self.lock();
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if done(&state) {
                return (state, true);
            }
            match deadline {
                None => state = self.cond.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return (state, false);
                    }
                    state = self
                        .cond
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }
}

fn finished(state: &CellState) -> bool {
    state.remaining == 0 || state.lost.is_some()
}

/// The error of part `index`, if it failed.
fn part_error(cell: &Cell, part: &Part) -> Option<Error> {
    match &part.status {
        Status::Ok => None,
        Status::Err(err) => Some(Error::from_task(
            TaskError {
                kind: err.kind,
                message: err.message.clone(),
                engine: err.engine,
            },
            &cell.name,
        )),
    }
}

fn decode<T: DeserializeOwned>(payload: &[u8], what: impl FnOnce() -> String) -> Result<T, Error> {
    rmp_serde::from_slice(payload).map_err(|e| Error::Decode {
        what: what(),
        message: e.to_string(),
    })
}

/// The pending result of one task, typed by what the function returns.
///
/// It never waits forever by itself: when the connection to the controller ends (the
/// controller stops answering, or the [`crate::Client`] is dropped), waits end and `get`
/// returns [`Error::ConnectionLost`].
pub struct AsyncResult<R> {
    cell: Arc<Cell>,
    id: TaskId,
    _type: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("id", &self.id)
            .field("ready", &self.ready())
            .finish()
    }
}

impl<R> AsyncResult<R> {
    pub(crate) fn new(cell: Arc<Cell>, id: TaskId) -> AsyncResult<R> {
        AsyncResult {
            cell,
            id,
            _type: PhantomData,
        }
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// True when the task has finished (or can no longer finish: connection lost).
    pub fn ready(&self) -> bool {
        finished(&self.cell.lock())
    }

    /// Waits up to `timeout` (`None`: until it ends); true if the task is done.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        self.cell.wait_until(timeout, finished).1
    }

    /// Waits up to `timeout` (`None`: until it ends) and decodes the result.
    ///
    /// Errors: [`Error::Timeout`] naming the task when `timeout` passes first;
    /// [`Error::ConnectionLost`]; the task's own failure ([`Error::Remote`],
    /// [`Error::EngineLost`], [`Error::UnknownFunction`]); [`Error::Decode`] when the result
    /// is not an `R`.
    pub fn get(self, timeout: Option<Duration>) -> Result<R, Error>
    where
        R: DeserializeOwned,
    {
        let (mut state, done) = self.cell.wait_until(timeout, finished);
        if !done {
            return Err(Error::Timeout {
                what: format!("task {}", self.id),
            });
        }
        let Some(part) = state.parts.first_mut().and_then(Option::take) else {
            // Not filled, so `lost` is set (or `get` was somehow called twice: impossible,
            // it takes `self`).
            return Err(state.lost.as_ref().map_or_else(
                || Error::Timeout {
                    what: format!("task {}", self.id),
                },
                Lost::error,
            ));
        };
        drop(state);
        if let Some(err) = part_error(&self.cell, &part) {
            return Err(err);
        }
        let id = self.id;
        decode(&part.payload, || format!("the result of task {id}"))
    }

    /// The engine that ran the task, once it is done (`None` before, or if it never ran).
    pub fn engine(&self) -> Option<EngineId> {
        self.cell.lock().parts.first()?.as_ref()?.engine
    }

    /// How long the task ran on its engine, once it is done.
    pub fn elapsed(&self) -> Option<Duration> {
        let state = self.cell.lock();
        let part = state.parts.first()?.as_ref()?;
        Some(Duration::from_micros(part.elapsed_us))
    }
}

/// The pending results of a map: one value per item, in item order, computed by tasks that
/// each carry a chunk of items.
pub struct AsyncMapResult<R> {
    /// `None` for an empty map (nothing was submitted).
    cell: Option<Arc<Cell>>,
    first: Option<TaskId>,
    len: usize,
    _type: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for AsyncMapResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncMapResult")
            .field("first_task", &self.first)
            .field("len", &self.len)
            .field("progress", &self.progress())
            .finish()
    }
}

impl<R> AsyncMapResult<R> {
    pub(crate) fn new(cell: Option<Arc<Cell>>, first: Option<TaskId>, len: usize) -> Self {
        AsyncMapResult {
            cell,
            first,
            len,
            _type: PhantomData,
        }
    }

    /// Number of items (and of results).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a map of no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The id of the first chunk's task (chunk `i` has the `i`-th following id); `None` for an
    /// empty map.
    pub fn first_task(&self) -> Option<TaskId> {
        self.first
    }

    /// Number of tasks (chunks) the items travel in.
    pub fn tasks(&self) -> usize {
        self.cell.as_ref().map_or(0, |c| c.sizes.len())
    }

    /// True when every chunk has finished (or can no longer finish: connection lost).
    pub fn ready(&self) -> bool {
        self.cell.as_ref().is_none_or(|c| finished(&c.lock()))
    }

    /// Waits up to `timeout` (`None`: until it ends); true if every chunk is done.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        match &self.cell {
            None => true,
            Some(c) => c.wait_until(timeout, finished).1,
        }
    }

    /// (items done, total items); failed chunks count as done.
    pub fn progress(&self) -> (usize, usize) {
        match &self.cell {
            None => (0, 0),
            Some(c) => (c.lock().items_done, self.len),
        }
    }

    /// Waits up to `timeout` (`None`: until it ends) and returns the results in item order.
    ///
    /// The first error wins: as soon as a chunk fails, `get` returns the error of the
    /// earliest failed chunk received so far, without waiting for the others.
    /// [`Error::Timeout`] names the map's tasks and how far it got.
    pub fn get(self, timeout: Option<Duration>) -> Result<Vec<R>, Error>
    where
        R: DeserializeOwned,
    {
        let Some(cell) = &self.cell else {
            return Ok(Vec::new());
        };
        let (mut state, done) = cell.wait_until(timeout, CellState::settled);
        if !done {
            return Err(Error::Timeout {
                what: self.describe(state.items_done),
            });
        }
        if state.failed {
            if let Some(err) = state
                .parts
                .iter()
                .flatten()
                .find_map(|p| part_error(cell, p))
            {
                return Err(err);
            }
        }
        if let Some(lost) = &state.lost {
            return Err(lost.error());
        }
        let parts: Vec<Part> = state.parts.iter_mut().filter_map(Option::take).collect();
        drop(state);
        let mut out = Vec::with_capacity(self.len);
        for (i, part) in parts.into_iter().enumerate() {
            let what = || format!("the results of map task {}", self.task_id(i));
            let chunk: Vec<R> = decode(&part.payload, what)?;
            let expected = cell.sizes.get(i).copied().unwrap_or(0);
            if chunk.len() != expected {
                return Err(Error::Decode {
                    what: what(),
                    message: format!("{} values for {expected} items", chunk.len()),
                });
            }
            out.extend(chunk);
        }
        Ok(out)
    }

    fn task_id(&self, index: usize) -> String {
        match self.first {
            Some(first) => TaskId(first.0 + index as u64).to_string(),
            None => "?".to_owned(),
        }
    }

    fn describe(&self, done: usize) -> String {
        let tasks = self.tasks();
        let range = if tasks > 1 {
            format!("tasks {}…{}", self.task_id(0), self.task_id(tasks - 1))
        } else {
            format!("task {}", self.task_id(0))
        };
        format!("map of {} items ({range}; {done} items done)", self.len)
    }
}
