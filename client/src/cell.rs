//! [`Cell`]: where the I/O thread puts the outcomes of one submission's tasks, and where
//! every way of waiting for them meets.
//!
//! One cell serves one `apply` (one part), one `map` (one part per chunk), or one direct
//! call (one part per engine). The I/O thread fills parts under the cell's lock; callers
//! wait on its condition variable (blocking calls and iterators), register a [`Waker`]
//! (`.await`), or leave a callback (`add_done_callback`, and the `wait`/`as_completed`
//! helpers, which are built on callbacks). Wakers and callbacks run after the lock is
//! released, so a callback may look at the result it was called for.
//!
//! Payloads stay raw bytes here: decoding into the caller's type happens on the caller's
//! thread, outside the lock, so the I/O thread never waits for a decoder.

use crate::error::Error;
use protocol::{EngineId, ErrorKind, Status, TaskError, TaskId, TaskOutcome};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant, SystemTime};

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

/// How a part's payload holds its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// One value per part (`apply`, direct calls, commands).
    Values,
    /// A msgpack array of `sizes[i]` values per part (map chunks).
    Chunks,
}

/// One finished task.
#[derive(Debug, Clone)]
pub(crate) struct Part {
    pub(crate) status: Status,
    /// `None` once an iterator has taken it (it decodes each part once, and frees it).
    pub(crate) payload: Option<Arc<Vec<u8>>>,
    pub(crate) engine: Option<EngineId>,
    pub(crate) started_us: u64,
    pub(crate) elapsed_us: u64,
    pub(crate) received: SystemTime,
}

/// Something to run once a cell reaches a state: a callback and its trigger.
type Callback = Box<dyn FnOnce() + Send>;

pub(crate) struct CellState {
    pub(crate) parts: Vec<Option<Part>>,
    pub(crate) remaining: usize,
    pub(crate) items_done: usize,
    pub(crate) failures: usize,
    pub(crate) lost: Option<Lost>,
    /// Part indices in the order they were filled (for unordered iteration).
    pub(crate) arrivals: Vec<u32>,
    /// Threads blocked on the condition variable; nobody to notify when zero (a notify costs
    /// a system call even without waiters).
    waiters: usize,
    wakers: Vec<Waker>,
    callbacks: Vec<Callback>,
}

impl std::fmt::Debug for CellState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CellState")
            .field("remaining", &self.remaining)
            .field("failures", &self.failures)
            .field("lost", &self.lost)
            .finish()
    }
}

impl CellState {
    /// Every part filled, or none can be any more.
    pub(crate) fn finished(&self) -> bool {
        self.remaining == 0 || self.lost.is_some()
    }

    /// A `get` would not block: finished, or a part failed (the first error wins).
    pub(crate) fn settled(&self) -> bool {
        self.finished() || self.failures > 0
    }
}

/// Wakers and callbacks collected under a cell's lock, to run after it is released.
#[derive(Default)]
#[must_use = "collected wake-ups must be run"]
pub(crate) struct Wakeups {
    wakers: Vec<Waker>,
    callbacks: Vec<Callback>,
}

impl Wakeups {
    /// Wakes the tasks and runs the callbacks. A panicking callback is logged and does not
    /// stop the others (or the I/O thread that usually runs them).
    pub(crate) fn run(self) {
        for waker in self.wakers {
            waker.wake();
        }
        for callback in self.callbacks {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(callback)).is_err() {
                tracing::warn!("a done callback panicked");
            }
        }
    }
}

thread_local! {
    /// Set on the client's I/O thread, where done callbacks run: a blocking wait there would
    /// wait for the very thread that has to deliver the result.
    static ON_IO_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the current thread as the I/O thread.
pub(crate) fn mark_io_thread() {
    ON_IO_THREAD.with(|f| f.set(true));
}

/// True on the I/O thread (inside a done callback).
pub(crate) fn on_io_thread() -> bool {
    ON_IO_THREAD.with(|f| f.get())
}

/// Where the outcomes of one submission's tasks land; see the module docs.
pub(crate) struct Cell {
    state: Mutex<CellState>,
    cond: Condvar,
    /// Function or program name, for messages and [`Error::UnknownFunction`].
    pub(crate) name: String,
    /// Items per part (all 1 for [`Layout::Values`]).
    pub(crate) sizes: Vec<usize>,
    pub(crate) layout: Layout,
    /// Part `i` is task `first + i`.
    pub(crate) first: TaskId,
    pub(crate) submitted: SystemTime,
    /// Command tasks: results are [`protocol::CommandOutput`]s (metadata shows their output).
    pub(crate) command: bool,
}

impl std::fmt::Debug for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cell")
            .field("name", &self.name)
            .field("first", &self.first)
            .field("parts", &self.sizes.len())
            .finish()
    }
}

impl Cell {
    /// A cell for tasks `first`, `first + 1`, … carrying `sizes[i]` items each.
    pub(crate) fn new(
        name: String,
        first: TaskId,
        sizes: Vec<usize>,
        layout: Layout,
        command: bool,
    ) -> Arc<Cell> {
        let tasks = sizes.len();
        Arc::new(Cell {
            state: Mutex::new(CellState {
                parts: (0..tasks).map(|_| None).collect(),
                remaining: tasks,
                items_done: 0,
                failures: 0,
                lost: None,
                arrivals: Vec::new(),
                waiters: 0,
                wakers: Vec::new(),
                callbacks: Vec::new(),
            }),
            cond: Condvar::new(),
            name,
            sizes,
            layout,
            first,
            submitted: SystemTime::now(),
            command,
        })
    }

    /// Total items over all parts.
    pub(crate) fn items(&self) -> usize {
        self.sizes.iter().sum()
    }

    /// The id of part `index`'s task.
    pub(crate) fn task_id(&self, index: usize) -> TaskId {
        TaskId(self.first.0 + index as u64)
    }

    /// Locks the state; a poisoned lock still holds consistent data (every update is a few
    /// assignments that cannot panic halfway), so it is used as is.
    pub(crate) fn lock(&self) -> MutexGuard<'_, CellState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records part `index`'s outcome, under a lock the caller holds (so that the I/O thread
    /// fills several parts of one cell under one lock); wake-ups go into `wakeups`.
    pub(crate) fn fill(
        &self,
        state: &mut CellState,
        index: usize,
        outcome: TaskOutcome,
        payload: Vec<u8>,
        wakeups: &mut Wakeups,
    ) {
        // Out of range or already filled (a duplicate, or a task cancelled here): ignore.
        if !matches!(state.parts.get(index), Some(None)) {
            return;
        }
        self.put(
            state,
            index,
            Part {
                status: outcome.status,
                payload: Some(Arc::new(payload)),
                engine: outcome.engine,
                started_us: outcome.started_us,
                elapsed_us: outcome.elapsed_us,
                received: SystemTime::now(),
            },
            wakeups,
        );
    }

    fn put(&self, state: &mut CellState, index: usize, part: Part, wakeups: &mut Wakeups) {
        let was_settled = state.settled();
        if matches!(part.status, Status::Err(_)) {
            state.failures += 1;
        }
        state.parts[index] = Some(part);
        state.remaining -= 1;
        state.items_done += self.sizes.get(index).copied().unwrap_or(1);
        state.arrivals.push(index as u32);
        // Iterators wait for single parts, so every fill matters to a blocked thread.
        if state.waiters > 0 {
            self.cond.notify_all();
        }
        if !was_settled && state.settled() || state.finished() {
            wakeups.wakers.append(&mut state.wakers);
        }
        if state.finished() {
            wakeups.callbacks.append(&mut state.callbacks);
        }
    }

    /// Ends every wait: the connection is gone.
    pub(crate) fn fail(&self, lost: &Lost) {
        let mut wakeups = Wakeups::default();
        {
            let mut state = self.lock();
            if state.lost.is_some() || state.remaining == 0 {
                return;
            }
            state.lost = Some(lost.clone());
            if state.waiters > 0 {
                self.cond.notify_all();
            }
            wakeups.wakers.append(&mut state.wakers);
            wakeups.callbacks.append(&mut state.callbacks);
        }
        wakeups.run();
    }

    /// Ends the parts in `indices` that have no outcome yet with an [`ErrorKind::Aborted`]
    /// error saying `message`; returns how many it ended. A result that arrives for them
    /// later is ignored.
    pub(crate) fn cancel(&self, indices: impl IntoIterator<Item = usize>, message: &str) -> usize {
        let mut wakeups = Wakeups::default();
        let mut ended = 0;
        {
            let mut state = self.lock();
            if state.lost.is_some() {
                return 0;
            }
            for index in indices {
                if !matches!(state.parts.get(index), Some(None)) {
                    continue;
                }
                let part = Part {
                    status: Status::Err(TaskError {
                        kind: ErrorKind::Aborted,
                        message: message.to_owned(),
                        engine: None,
                    }),
                    payload: Some(Arc::default()),
                    engine: None,
                    started_us: 0,
                    elapsed_us: 0,
                    received: SystemTime::now(),
                };
                self.put(&mut state, index, part, &mut wakeups);
                ended += 1;
            }
        }
        wakeups.run();
        ended
    }

    /// Runs `f` once the cell is finished: at once (on this thread) if it already is, else
    /// on the thread that finishes it (usually the I/O thread).
    pub(crate) fn on_finish(&self, f: Callback) {
        {
            let mut state = self.lock();
            if !state.finished() {
                state.callbacks.push(f);
                return;
            }
        }
        Wakeups {
            wakers: Vec::new(),
            callbacks: vec![f],
        }
        .run();
    }

    /// Registers `waker` unless `done(state)` already holds; true when it does.
    pub(crate) fn poll_ready(&self, waker: &Waker, done: impl Fn(&CellState) -> bool) -> bool {
        let mut state = self.lock();
        if done(&state) {
            return true;
        }
        if !state.wakers.iter().any(|w| w.will_wake(waker)) {
            state.wakers.push(waker.clone());
        }
        false
    }

    /// Waits until `done(state)` or the deadline; returns the state lock and whether `done`.
    ///
    /// On the I/O thread (inside a done callback) it never blocks: the result it would wait
    /// for could only be delivered by this very thread.
    pub(crate) fn wait_until(
        &self,
        deadline: Option<Instant>,
        done: impl Fn(&CellState) -> bool,
    ) -> (MutexGuard<'_, CellState>, bool) {
        let mut state = self.lock();
        if done(&state) {
            return (state, true);
        }
        if on_io_thread() {
            return (state, false);
        }
        state.waiters += 1;
        let reached = loop {
            if done(&state) {
                break true;
            }
            match deadline {
                None => state = self.cond.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break false;
                    }
                    state = self
                        .cond
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        };
        state.waiters -= 1;
        (state, reached)
    }
}

/// The deadline `timeout` from now (`None`: no deadline; a huge timeout saturates).
pub(crate) fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// The error of a failed part.
pub(crate) fn part_error(cell: &Cell, index: usize, err: &TaskError) -> Error {
    if err.kind == ErrorKind::Aborted {
        return Error::Aborted {
            what: format!("task {}", cell.task_id(index)),
            message: err.message.clone(),
        };
    }
    Error::from_task(err.clone(), &cell.name)
}
