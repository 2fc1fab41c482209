//! Raw tasks: payloads in and out as bytes, for clients in other languages built on this
//! crate (the Python extension).
//!
//! [`Client::submit_raw`] submits tasks whose payloads the caller encoded; the result is a
//! [`RawBatch`], one part per task, whose outcomes are read as they arrive: status, engine,
//! times and the result payload as the engine sent it (also for failed tasks, whose payload
//! may carry details, as Python tasks' exceptions do). Everything else (ids, batching into
//! submit messages, resubmission after a controller restart, cancelling) is the same code
//! the typed views use.

use crate::cell::{deadline, Cell, Layout};
use crate::client::Client;
use crate::error::Error;
use crate::result::cancel_cells;
use crate::shared::Shared;
use crate::submit::{submit, NewTask, MAX_PAYLOAD};
use protocol::{EngineId, Status, TaskError, TaskId, TaskOptions, TaskRequest, Work};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One task to submit with [`Client::submit_raw`].
#[derive(Debug, Clone)]
pub struct RawTask {
    /// What runs.
    pub work: Work,
    /// Where and how.
    pub options: TaskOptions,
    /// The argument payload, sent as is.
    pub payload: Vec<u8>,
    /// Items the task carries (for progress counts; 1 unless it is a chunk of a map).
    pub items: usize,
}

/// The outcome of one task of a [`RawBatch`].
#[derive(Debug)]
pub enum RawOutcome {
    /// Not finished yet.
    Pending,
    /// Finished: successfully or not.
    Done(RawPart),
    /// The connection ended before the outcome arrived.
    Lost(Error),
}

/// A finished task of a [`RawBatch`].
#[derive(Debug, Clone)]
pub struct RawPart {
    /// The error, when it failed.
    pub error: Option<TaskError>,
    /// The result payload as the engine sent it (empty for most failures).
    pub payload: Arc<Vec<u8>>,
    /// The engine that ran it.
    pub engine: Option<EngineId>,
    /// When it started on its engine (the engine's clock; `None` if it never ran).
    pub started: Option<SystemTime>,
    /// Its run time on the engine.
    pub elapsed: Duration,
    /// When its outcome reached this client.
    pub received: SystemTime,
}

/// Tasks submitted together by [`Client::submit_raw`].
#[derive(Clone)]
pub struct RawBatch {
    cell: Arc<Cell>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RawBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawBatch")
            .field("name", &self.cell.name)
            .field("first", &self.cell.first)
            .field("tasks", &self.cell.sizes.len())
            .finish()
    }
}

impl Client {
    /// Submits tasks with payloads encoded by the caller (see [`RawBatch`]); `name` names
    /// them in messages. Payloads above the message limit are refused with
    /// [`Error::TooLarge`] before anything is sent.
    pub fn submit_raw(&self, name: &str, tasks: Vec<RawTask>) -> Result<RawBatch, Error> {
        let shared = self.load_balanced_view().shared;
        for (i, task) in tasks.iter().enumerate() {
            if task.payload.len() > MAX_PAYLOAD {
                return Err(Error::TooLarge {
                    what: format!("the payload of task {i} of {name}"),
                    size: task.payload.len(),
                    limit: MAX_PAYLOAD,
                });
            }
        }
        let first = shared.task_ids(tasks.len().max(1));
        let command = tasks.iter().any(|t| matches!(t.work, Work::Command(_)));
        let sizes = tasks.iter().map(|t| t.items).collect();
        let cell = Cell::new(name.to_owned(), first, sizes, Layout::Values, command);
        let new: Vec<NewTask> = tasks
            .into_iter()
            .enumerate()
            .map(|(i, t)| NewTask {
                request: TaskRequest {
                    id: TaskId(first.0 + i as u64),
                    work: t.work,
                    options: t.options,
                },
                payload: t.payload,
                cell: cell.clone(),
                index: i as u32,
            })
            .collect();
        if !new.is_empty() {
            submit(&shared, new)?;
        }
        Ok(RawBatch { cell, shared })
    }

    /// Engines registered, as last heard from the controller (no round trip).
    pub fn engines_known(&self) -> usize {
        self.load_balanced_view()
            .shared
            .engines
            .load(Ordering::Relaxed)
    }
}

impl RawBatch {
    /// Tasks in the batch.
    pub fn len(&self) -> usize {
        self.cell.sizes.len()
    }

    /// True when it has no tasks.
    pub fn is_empty(&self) -> bool {
        self.cell.sizes.is_empty()
    }

    /// The id of task `index`.
    pub fn task_id(&self, index: usize) -> TaskId {
        self.cell.task_id(index)
    }

    /// Every task finished (or the connection ended).
    pub fn ready(&self) -> bool {
        self.cell.lock().finished()
    }

    /// Tasks finished so far, and items finished out of all items.
    pub fn progress(&self) -> (usize, usize, usize) {
        let state = self.cell.lock();
        let tasks = self.len() - state.remaining;
        (tasks, state.items_done, self.cell.items())
    }

    /// Waits until every task finished (or the connection ended), at most `timeout`; true
    /// when they did.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        self.cell.wait_until(deadline(timeout), |s| s.finished()).1
    }

    /// Waits until task `index` finished, at most `timeout`; true when it did (or the
    /// connection ended).
    pub fn wait_task(&self, index: usize, timeout: Option<Duration>) -> bool {
        self.cell
            .wait_until(deadline(timeout), |s| {
                s.lost.is_some() || s.parts.get(index).is_none_or(Option::is_some)
            })
            .1
    }

    /// Waits until more than `seen` tasks finished, at most `timeout`; returns the indices
    /// of the tasks in the order they finished (all of them so far), and whether the batch
    /// is over (all finished, or the connection ended).
    pub fn arrivals(&self, seen: usize, timeout: Option<Duration>) -> (Vec<usize>, bool) {
        let (state, _) = self.cell.wait_until(deadline(timeout), |s| {
            s.arrivals.len() > seen || s.finished()
        });
        let order = state.arrivals.iter().map(|&i| i as usize).collect();
        (order, state.finished())
    }

    /// The result payloads of the tasks that finished successfully, by index (`None` for
    /// the others: running, failed or lost), read at once; for callers that decode a whole
    /// batch, who then ask [`RawBatch::outcome`] only about the rest.
    pub fn ok_payloads(&self) -> Vec<Option<Arc<Vec<u8>>>> {
        let state = self.cell.lock();
        state
            .parts
            .iter()
            .map(|part| match part {
                Some(part) if part.status == Status::Ok => part.payload.clone(),
                _ => None,
            })
            .collect()
    }

    /// The outcome of task `index` so far.
    pub fn outcome(&self, index: usize) -> RawOutcome {
        let state = self.cell.lock();
        match state.parts.get(index) {
            Some(Some(part)) => RawOutcome::Done(RawPart {
                error: match &part.status {
                    Status::Ok => None,
                    Status::Err(e) => Some(e.clone()),
                },
                payload: part.payload.clone().unwrap_or_default(),
                engine: part.engine,
                started: (part.started_us > 0)
                    .then(|| SystemTime::UNIX_EPOCH + Duration::from_micros(part.started_us)),
                elapsed: Duration::from_micros(part.elapsed_us),
                received: part.received,
            }),
            _ => match &state.lost {
                Some(lost) => RawOutcome::Lost(lost.error()),
                None => RawOutcome::Pending,
            },
        }
    }

    /// When the batch was submitted.
    pub fn submitted(&self) -> SystemTime {
        self.cell.submitted
    }

    /// Runs `f` once every task finished (or the connection ended): at once if they have,
    /// else on the client's I/O thread, which it must not hold up (hand the news to another
    /// thread).
    pub fn on_finish(&self, f: impl FnOnce() + Send + 'static) {
        self.cell.on_finish(Box::new(f));
    }

    /// Cancels the tasks that have not started (the controller aborts them); returns how
    /// many. Running ones go on and keep their results.
    pub fn cancel(&self) -> usize {
        cancel_cells(&self.shared, &[&self.cell])
    }
}

/// Item counts of the chunks an automatic map makes of `items` items over `engines` engines
/// (what [`crate::LoadBalancedView::map`] does with chunksize 0), for callers that encode
/// their own chunks.
pub fn auto_chunk_counts(items: usize, engines: usize) -> Vec<usize> {
    if items == 0 {
        return Vec::new();
    }
    crate::submit::auto_counts(items, engines)
}
